//! Write apps that [Hotswap](https://crates.io/crates/hotswap) can replace while they run.
//!
//! An app is one type that holds all of its state. Implement [`App`] for it and register it with
//! [`export_app!`]; build the crate as a `cdylib` for `wasm32-wasip1`. Hotswap then delivers
//! events to it one at a time, and when a new version of the module is swapped in, the state is
//! encoded by the old code, handed to the new code and decoded there (migrated if its shape
//! changed), so existing state runs the new code at once.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! #[serde(default)] // fields added later start at their default: no migration needed
//! struct Counter {
//!     value: i64,
//! }
//!
//! impl hotswap_guest::App for Counter {
//!     fn message(&mut self, input: &[u8]) -> Vec<u8> {
//!         self.value += 1;
//!         format!("{} -> {}", String::from_utf8_lossy(input), self.value).into_bytes()
//!     }
//! }
//!
//! hotswap_guest::export_app!(Counter);
//! ```
//!
//! # How state crosses a swap
//!
//! By value, never by pointer: the old code serializes the state with serde into MessagePack
//! with named fields, and the new code deserializes it. That gives these evolution rules:
//!
//! * **Add a field** (with `#[serde(default)]` on the struct or the field) or **remove a field**:
//!   keep [`App::STATE_VERSION`] as it is. Missing fields take their default, unknown ones are
//!   skipped.
//! * **Anything else** (rename a field, change its type, restructure): raise
//!   [`App::STATE_VERSION`] and implement [`App::migrate`], which receives the old version's bytes.
//!   Keep the old shape as a type in the new source and read it with [`decode`], like Erlang's
//!   `code_change`.
//! * State written by a **newer** state version than the code knows is refused with a message,
//!   and the host keeps the old version running.
//!
//! A panic in any handler reaches the host as an error carrying the panic's message.
#![deny(missing_docs)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

pub use hotswap_abi as abi;
use http::ResponseExt as _;

/// An app: the type that holds all of its state, and its event handlers.
///
/// The bounds say what can cross a swap: the state must have a starting value (`Default`) and be
/// serializable both ways.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Hotswap app: it does not implement `hotswap_guest::App`",
    label = "`export_app!` needs the type that holds the app's state and implements `App`",
    note = "derive `Default, Serialize, Deserialize` on `{Self}` and write `impl hotswap_guest::App for {Self} {{ fn message(&mut self, input: &[u8]) -> Vec<u8> {{ .. }} }}`"
)]
pub trait App: Default + Serialize + DeserializeOwned + 'static {
    /// The version of the state's shape. Raise it when a change needs [`App::migrate`]; adding or
    /// removing fields does not.
    const STATE_VERSION: u32 = 1;

    /// Runs once when the app starts with no prior state (not after a swap).
    fn start(&mut self) {}

    /// Handles one message and returns the reply.
    fn message(&mut self, input: &[u8]) -> Vec<u8>;

    /// Handles a timer tick; `now_ms` is Unix time in milliseconds.
    fn tick(&mut self, now_ms: u64) {
        let _ = now_ms;
    }

    /// Handles an HTTP request (when the host serves HTTP: `hotswap run --http ADDR`).
    ///
    /// The default answers 404. A panic here answers 500 and is logged by the host.
    fn http(&mut self, request: &http::Request) -> http::Response {
        let _ = request;
        http::Response::text(404, "not found: this app does not serve HTTP")
    }

    /// Builds the state from state bytes written by an older state version, `from_version`.
    ///
    /// Called only when `from_version < STATE_VERSION`. Decode the old shape with [`decode`] and
    /// convert it; return an error to refuse the swap (the old version keeps running). The default
    /// refuses every older version.
    fn migrate(from_version: u32, old_state: &[u8]) -> Result<Self, MigrateError> {
        let _ = old_state;
        Err(MigrateError::new(format!(
            "no migration from state version {from_version} to {}: implement `App::migrate`",
            Self::STATE_VERSION
        )))
    }
}

/// HTTP requests and responses, as the ABI encodes them.
pub mod http {
    pub use hotswap_abi::http::{Bytes, Request, Response};

    /// Conveniences for building responses.
    pub trait ResponseExt {
        /// A response with this status and a `text/plain` body.
        fn text(status: u16, body: impl Into<String>) -> Self;
        /// Adds a header.
        fn header(self, name: &str, value: impl Into<String>) -> Self;
    }

    impl ResponseExt for Response {
        fn text(status: u16, body: impl Into<String>) -> Self {
            Response {
                status,
                headers: Vec::new(),
                body: Bytes(body.into().into_bytes()),
            }
            .header("content-type", "text/plain; charset=utf-8")
        }

        fn header(mut self, name: &str, value: impl Into<String>) -> Self {
            self.headers
                .push((name.to_owned(), Bytes(value.into().into_bytes())));
            self
        }
    }
}

/// Why state could not be taken over: shown by the host when it refuses a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateError(String);

impl MigrateError {
    /// A refusal with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MigrateError {}

impl From<String> for MigrateError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for MigrateError {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// Decodes state bytes as `T`: use it in [`App::migrate`] to read an old version's shape.
pub fn decode<T: DeserializeOwned>(state: &[u8]) -> Result<T, MigrateError> {
    hotswap_msgpack::from_slice(state).map_err(|e| {
        MigrateError::new(format!(
            "cannot decode the state as `{}`: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// Serde helpers that make large state decode faster during a swap's pause.
pub mod de {
    use serde::Deserialize;
    use serde::de::{Deserializer, MapAccess, Visitor};
    use std::collections::BTreeMap;
    use std::fmt;
    use std::marker::PhantomData;

    /// Decodes a `BTreeMap` in bulk, for use as
    /// `#[serde(deserialize_with = "hotswap_guest::de::btree_map")]` on a map field.
    ///
    /// serde's own `BTreeMap` decoding inserts one entry at a time, searching the tree from its
    /// root for each. A map is encoded in key order, so collecting the entries and building the
    /// tree from them in one pass gives the same map about three times faster (measured
    /// natively on 36,158 string entries, 1 MB: 3.6 ms instead of 10.7 ms; BENCHMARKS.md has
    /// the effect on the swap pause). Entries out of order are sorted; on duplicate keys the
    /// last one wins, as with repeated inserts.
    pub fn btree_map<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        btree_map_from::<D, K, V, V>(deserializer)
    }

    /// [`btree_map`] for a migration: decodes each value as the old type `Old` and converts it
    /// into the new `V` as it goes, so a map whose value type changed is built once, in bulk,
    /// with no intermediate map. In [`App::migrate`](crate::App::migrate), on the old shape's
    /// field:
    ///
    /// ```
    /// # use std::collections::BTreeMap;
    /// # use serde::{Deserialize, Deserializer};
    /// struct Record { value: String, writes: u32 }
    ///
    /// impl From<String> for Record {
    ///     fn from(value: String) -> Self {
    ///         Record { value, writes: 1 }
    ///     }
    /// }
    ///
    /// /// The old shape: values were plain strings; read them as records.
    /// #[derive(Deserialize)]
    /// struct StoreV1 {
    ///     #[serde(deserialize_with = "records_from_strings")]
    ///     entries: BTreeMap<String, Record>,
    /// }
    ///
    /// fn records_from_strings<'de, D: Deserializer<'de>>(
    ///     d: D,
    /// ) -> Result<BTreeMap<String, Record>, D::Error> {
    ///     hotswap_guest::de::btree_map_from::<D, String, String, Record>(d)
    /// }
    /// ```
    pub fn btree_map_from<'de, D, K, Old, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        Old: Deserialize<'de> + Into<V>,
    {
        struct Entries<K, Old, V>(PhantomData<(K, Old, V)>);

        impl<'de, K, Old, V> Visitor<'de> for Entries<K, Old, V>
        where
            K: Deserialize<'de> + Ord,
            Old: Deserialize<'de> + Into<V>,
        {
            type Value = BTreeMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // The size hint comes from the (untrusted) bytes: cap what it reserves up front.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
                while let Some((key, value)) = map.next_entry::<K, Old>()? {
                    entries.push((key, value.into()));
                }
                Ok(BTreeMap::from_iter(entries))
            }
        }

        deserializer.deserialize_map(Entries::<K, Old, V>(PhantomData))
    }
}

/// Encodes a value the way the SDK encodes state (MessagePack, named fields).
///
/// Useful in tests of [`App::migrate`], to produce an old version's bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail; a Serialize impl that errors is the app's bug.
    if let Err(e) = hotswap_msgpack::write(&mut out, value) {
        panic!("cannot encode `{}`: {e}", std::any::type_name::<T>());
    }
    out
}

/// Registers the app type: generates the module's exports that the host calls.
///
/// Call it once, at the top level of the `cdylib` crate, with the type that implements [`App`]:
///
/// ```ignore
/// hotswap_guest::export_app!(Counter);
/// ```
#[macro_export]
macro_rules! export_app {
    ($app:ty) => {
        const _: () = {
            static RUNTIME: $crate::__private::Slot<$app> = $crate::__private::Slot::new();

            #[unsafe(export_name = "hotswap_abi_version")]
            extern "C" fn hotswap_abi_version() -> i32 {
                $crate::abi::ABI_VERSION as i32
            }
            #[unsafe(export_name = "hotswap_state_version")]
            extern "C" fn hotswap_state_version() -> i32 {
                RUNTIME.state_version()
            }
            #[unsafe(export_name = "hotswap_output")]
            extern "C" fn hotswap_output() -> i32 {
                RUNTIME.output()
            }
            #[unsafe(export_name = "hotswap_reserve")]
            extern "C" fn hotswap_reserve(len: i32) -> i32 {
                RUNTIME.reserve(len)
            }
            #[unsafe(export_name = "hotswap_warm")]
            extern "C" fn hotswap_warm(bytes: i32) {
                $crate::__private::warm_heap(bytes as u32 as usize)
            }
            #[unsafe(export_name = "hotswap_start")]
            extern "C" fn hotswap_start() -> i32 {
                RUNTIME.start()
            }
            #[unsafe(export_name = "hotswap_import_state")]
            extern "C" fn hotswap_import_state(len: i32, version: i32) -> i32 {
                RUNTIME.import_state(len, version)
            }
            #[unsafe(export_name = "hotswap_export_state")]
            extern "C" fn hotswap_export_state() -> i32 {
                RUNTIME.export_state()
            }
            #[unsafe(export_name = "hotswap_message")]
            extern "C" fn hotswap_message(len: i32) -> i32 {
                RUNTIME.message(len)
            }
            #[unsafe(export_name = "hotswap_http")]
            extern "C" fn hotswap_http(len: i32) -> i32 {
                RUNTIME.http(len)
            }
            #[unsafe(export_name = "hotswap_tick")]
            extern "C" fn hotswap_tick(now_ms: i64) -> i32 {
                RUNTIME.tick(now_ms)
            }
        };
    };
    ($($other:tt)*) => {
        ::core::compile_error!(concat!(
            "`export_app!` takes exactly one type, the one that implements `hotswap_guest::App`: ",
            "write `hotswap_guest::export_app!(MyApp);` (got `", stringify!($($other)*), "`)"
        ));
    };
}

/// The guard against taking over an unrelated app's state.
///
/// MessagePack with named fields lets fields come and go, and `#[serde(default)]` fills in
/// what is missing. The flip side: state with *none* of the app's fields would decode into an
/// all-default state, and the real state would be silently lost (say, a module of a different
/// app written over the watched file). So at an import without migration, the state must share
/// at least one top-level field with the app's state type, or it is refused.
mod fields {
    use crate::MigrateError;
    use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    /// Refuses `state` if it is a non-empty map none of whose keys is a field of `A`. Stops at
    /// the first shared field, so it reads little of a large state.
    pub(crate) fn check_shared<A: DeserializeOwned>(state: &[u8]) -> Result<(), MigrateError> {
        let Some(fields) = struct_fields::<A>() else {
            return Ok(());
        };
        let mut decoder = hotswap_msgpack::Deserializer::new(state);
        // A state that is not a map (or does not decode) is for `decode` to judge.
        let Ok(Some(found)) = (&mut decoder).deserialize_any(ForeignKeys(fields)) else {
            return Ok(());
        };
        Err(MigrateError::new(format!(
            "the state has none of this app's fields (it has {}; this app's state has {}): it was \
             written by a different app; if this app replaced all of its fields, raise \
             STATE_VERSION and implement `migrate`",
            found.join(", "),
            fields.join(", ")
        )))
    }

    /// The field names of a struct that derives `Deserialize` (`None` for anything else).
    fn struct_fields<A: DeserializeOwned>() -> Option<&'static [&'static str]> {
        let mut capture = Capture(None);
        let _ = A::deserialize(&mut capture);
        capture.0
    }

    /// A deserializer that only records the field list that `deserialize_struct` is given.
    struct Capture(Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for &mut Capture {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(de::Error::custom("fields captured"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    /// Visits the state's top-level map: `None` as soon as a key is one of the fields, else
    /// the keys it has.
    struct ForeignKeys(&'static [&'static str]);

    impl<'de> Visitor<'de> for ForeignKeys {
        type Value = Option<Vec<String>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut keys = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if self.0.contains(&key.as_str()) {
                    return Ok(None);
                }
                keys.push(key);
                map.next_value::<IgnoredAny>()?;
            }
            Ok((!keys.is_empty()).then_some(keys))
        }
    }
}

#[doc(hidden)]
pub mod __private {
    //! The runtime behind [`export_app!`](crate::export_app). Not public API.
    use crate::{App, MigrateError};
    use hotswap_abi::{STATUS_ERROR, STATUS_OK};
    use std::cell::UnsafeCell;
    use std::cmp::Ordering;

    /// Everything the exports share: the app and the ABI's buffers.
    struct Runtime<A> {
        app: Option<A>,
        /// The input buffer: host-written up to its capacity (see the ABI's buffer rules).
        input: Vec<u8>,
        /// The last call's output.
        output: Vec<u8>,
        /// The output descriptor: `[ptr, len]` of `output`.
        descriptor: [u32; 2],
    }

    /// How many bytes of encoded state the export hands the host at a time
    /// (`hotswap.state_chunk`): small enough to stay in the L1 cache, large enough that the
    /// calls out cost nothing next to the encoding. Measured on 10,000 records (BENCHMARKS.md):
    /// 16 KiB and 64 KiB pieces pause alike, 256 KiB ones longer (the buffer itself lands on
    /// fresh pages).
    const STATE_CHUNK: usize = 16 << 10;

    /// The static slot that [`export_app!`](crate::export_app) declares.
    pub struct Slot<A: App>(UnsafeCell<Runtime<A>>);

    // SAFETY: a wasm32-wasip1 guest has one thread, and the host makes one call at a time and
    // never re-enters the guest, so the slot is never accessed concurrently.
    unsafe impl<A: App> Sync for Slot<A> {}

    impl<A: App> Slot<A> {
        #[allow(clippy::new_without_default)]
        pub const fn new() -> Self {
            Self(UnsafeCell::new(Runtime {
                app: None,
                input: Vec::new(),
                output: Vec::new(),
                descriptor: [0, 0],
            }))
        }

        #[allow(clippy::mut_from_ref)]
        fn runtime(&self) -> &mut Runtime<A> {
            // SAFETY: see the `Sync` impl: each export takes this reference once, and no two
            // exports run at the same time.
            unsafe { &mut *self.0.get() }
        }

        pub fn state_version(&self) -> i32 {
            A::STATE_VERSION as i32
        }

        pub fn output(&self) -> i32 {
            self.runtime().descriptor.as_ptr() as usize as i32
        }

        pub fn reserve(&self, len: i32) -> i32 {
            let input = &mut self.runtime().input;
            let len = len as u32 as usize;
            if input.capacity() < len {
                *input = Vec::new();
                if input.try_reserve_exact(len).is_err() {
                    return 0;
                }
            }
            input.as_ptr() as usize as i32
        }

        pub fn start(&self) -> i32 {
            install_panic_hook();
            let rt = self.runtime();
            let mut app = A::default();
            app.start();
            rt.app = Some(app);
            rt.succeed(Vec::new())
        }

        pub fn import_state(&self, len: i32, version: i32) -> i32 {
            install_panic_hook();
            let rt = self.runtime();
            let version = version as u32;
            let state = host_written(&rt.input, len);
            let imported = match version.cmp(&A::STATE_VERSION) {
                Ordering::Equal => {
                    crate::fields::check_shared::<A>(state).and_then(|()| crate::decode::<A>(state))
                }
                Ordering::Less => A::migrate(version, state),
                Ordering::Greater => Err(MigrateError::new(format!(
                    "the state was written by state version {version}, newer than this code's \
                     state version {}: this code cannot read it",
                    A::STATE_VERSION
                ))),
            };
            match imported {
                Ok(app) => {
                    rt.app = Some(app);
                    rt.succeed(Vec::new())
                }
                Err(e) => rt.fail(e.message()),
            }
        }

        pub fn export_state(&self) -> i32 {
            let rt = self.runtime();
            let Some(app) = &rt.app else {
                return rt.fail("the app has not started");
            };
            let mut out = std::mem::take(&mut rt.output);
            out.clear();
            // The state goes to the host a chunk at a time, so this buffer stays one chunk long
            // (plus an element) however large the state: the export neither grows memory nor
            // copies a buffer that keeps doubling. The last piece is the output.
            let _ = out.try_reserve(STATE_CHUNK + STATE_CHUNK / 4);
            #[cfg(target_arch = "wasm32")]
            let encoded =
                hotswap_msgpack::write_chunked(&mut out, STATE_CHUNK, &mut state_chunk, app);
            // Off wasm there is no host to take the pieces.
            #[cfg(not(target_arch = "wasm32"))]
            let encoded = hotswap_msgpack::write(&mut out, app);
            if let Err(e) = encoded {
                return rt.fail(&format!("cannot encode the state: {e}"));
            }
            rt.succeed(out)
        }

        pub fn message(&self, len: i32) -> i32 {
            let rt = self.runtime();
            let Some(app) = &mut rt.app else {
                return rt.fail("the app has not started");
            };
            let reply = app.message(host_written(&rt.input, len));
            rt.succeed(reply)
        }

        pub fn http(&self, len: i32) -> i32 {
            let rt = self.runtime();
            let Some(app) = &mut rt.app else {
                return rt.fail("the app has not started");
            };
            let request = match hotswap_msgpack::from_slice(host_written(&rt.input, len)) {
                Ok(request) => request,
                Err(e) => return rt.fail(&format!("cannot decode the HTTP request: {e}")),
            };
            let response = app.http(&request);
            let mut out = std::mem::take(&mut rt.output);
            out.clear();
            match hotswap_msgpack::write(&mut out, &response) {
                Ok(()) => rt.succeed(out),
                Err(e) => rt.fail(&format!("cannot encode the HTTP response: {e}")),
            }
        }

        pub fn tick(&self, now_ms: i64) -> i32 {
            let rt = self.runtime();
            let Some(app) = &mut rt.app else {
                return rt.fail("the app has not started");
            };
            app.tick(now_ms as u64);
            rt.succeed(Vec::new())
        }
    }

    /// Allocates, touches and frees `bytes` of heap, so that the allocations that follow (the
    /// import's decoding, during a swap's pause) land on pages already faulted in:
    /// `hotswap_warm`, which the host calls before the pause with the old instance's memory
    /// size minus this one's.
    pub fn warm_heap(bytes: usize) {
        let mut block: Vec<u8> = Vec::new();
        if block.try_reserve_exact(bytes).is_ok() {
            let start = block.as_mut_ptr();
            for offset in (0..bytes).step_by(4096) {
                // SAFETY: `offset < bytes <= capacity`; writing into reserved capacity is allowed.
                unsafe { start.add(offset).write_volatile(0) };
            }
        }
    }

    /// The first `len` bytes of the input buffer, which the host wrote before this call.
    fn host_written(input: &Vec<u8>, len: i32) -> &[u8] {
        let len = (len as u32 as usize).min(input.capacity());
        // SAFETY: the bytes lie within the buffer's allocation (`len <= capacity`), and the host
        // initialised them before the call, as the ABI requires.
        unsafe { std::slice::from_raw_parts(input.as_ptr(), len) }
    }

    impl<A> Runtime<A> {
        fn succeed(&mut self, output: Vec<u8>) -> i32 {
            self.output = output;
            self.descriptor = [
                self.output.as_ptr() as usize as u32,
                self.output.len() as u32,
            ];
            STATUS_OK
        }

        fn fail(&mut self, message: &str) -> i32 {
            self.succeed(message.as_bytes().to_vec());
            STATUS_ERROR
        }
    }

    /// Routes panics to the host: the message becomes the trap's message.
    fn install_panic_hook() {
        std::panic::set_hook(Box::new(|info| {
            let message = info.to_string().replace('\n', " ");
            abort(&message)
        }));
    }

    #[cfg(target_arch = "wasm32")]
    fn abort(message: &str) -> ! {
        #[link(wasm_import_module = "hotswap")]
        unsafe extern "C" {
            #[link_name = "abort"]
            fn hotswap_abort(ptr: *const u8, len: usize) -> !;
        }
        // SAFETY: the host reads `len` bytes at `ptr`, which `message` owns, and never returns.
        unsafe { hotswap_abort(message.as_ptr(), message.len()) }
    }

    /// Hands the host one piece of the state being exported (`hotswap.state_chunk`).
    #[cfg(target_arch = "wasm32")]
    fn state_chunk(piece: &[u8]) {
        #[link(wasm_import_module = "hotswap")]
        unsafe extern "C" {
            #[link_name = "state_chunk"]
            fn hotswap_state_chunk(ptr: *const u8, len: usize);
        }
        // SAFETY: the host copies `len` bytes at `ptr`, which `piece` owns, before returning.
        unsafe { hotswap_state_chunk(piece.as_ptr(), piece.len()) }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn abort(message: &str) -> ! {
        eprintln!("{message}");
        std::process::abort()
    }
}

/// A faster `memcmp` for the guest.
///
/// Rust compares strings and byte slices (`Ord`, `==`, and so the key checks of
/// [`de::btree_map`]) with `memcmp`. On `wasm32-wasip1` that comes from wasi-libc and compares one
/// byte per iteration. This one compares eight bytes per iteration and, being defined in the
/// app's own code, is linked instead of wasi-libc's. Measured on swaps of 10,000 string keys
/// sharing long prefixes: the import took 1.31 ms instead of 1.46 ms (see BENCHMARKS.md).
mod mem {
    /// Compares `n` bytes at `a` and `b` as C's `memcmp` does.
    ///
    /// # Safety
    /// `a` and `b` must be valid for reads of `n` bytes.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
        let mut i = 0;
        // SAFETY: every read lies below `n`, which the caller guarantees readable.
        unsafe {
            while i + 8 <= n {
                let x = a.add(i).cast::<u64>().read_unaligned();
                let y = b.add(i).cast::<u64>().read_unaligned();
                if x != y {
                    // Loaded little-endian: swapping the bytes makes the first byte the most
                    // significant, so the integers order as the bytes do.
                    return if x.swap_bytes() < y.swap_bytes() {
                        -1
                    } else {
                        1
                    };
                }
                i += 8;
            }
            while i < n {
                let (x, y) = (*a.add(i), *b.add(i));
                if x != y {
                    return i32::from(x) - i32::from(y);
                }
                i += 1;
            }
        }
        0
    }

    /// The guest's `memcmp`.
    ///
    /// # Safety
    /// As for [`compare`].
    #[cfg(target_arch = "wasm32")]
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the caller upholds `compare`'s contract.
        unsafe { compare(a, b, n) }
    }

    #[cfg(test)]
    mod tests {
        use std::cmp::Ordering;

        fn compare(a: &[u8], b: &[u8]) -> Ordering {
            assert_eq!(a.len(), b.len());
            // SAFETY: both slices hold `a.len()` bytes.
            unsafe { super::compare(a.as_ptr(), b.as_ptr(), a.len()) }.cmp(&0)
        }

        /// Every length up to 40, with one differing byte at every position, both ways, and
        /// bytes on both sides of 0x80 (a signed comparison would get those wrong).
        #[test]
        fn orders_as_slices_do() {
            for len in 0..40 {
                let base: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
                assert_eq!(compare(&base, &base), Ordering::Equal);
                for at in 0..len {
                    for other in [0u8, 1, 0x7f, 0x80, 0xfe, 0xff] {
                        let mut changed = base.clone();
                        changed[at] = other;
                        assert_eq!(compare(&base, &changed), base.cmp(&changed), "{len} {at}");
                        assert_eq!(compare(&changed, &base), changed.cmp(&base), "{len} {at}");
                    }
                }
            }
        }

        /// Unaligned starts.
        #[test]
        fn unaligned() {
            let a: Vec<u8> = (0..64).collect();
            let mut b = a.clone();
            b[40] = 0;
            for start in 0..8 {
                assert_eq!(
                    compare(&a[start..start + 48], &b[start..start + 48]),
                    Ordering::Greater
                );
                assert_eq!(
                    compare(&a[start..start + 16], &b[start..start + 16]),
                    Ordering::Equal
                );
            }
        }
    }
}
