//! Write apps that Hotswap (the `hotswap` host in this repository) can replace while they run.
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
//! * **Add a field** (with `#[serde(default)]` on the struct or the field: on every nested struct
//!   that gains one, not only the top one) or **remove a field**: keep [`App::STATE_VERSION`] as
//!   it is. Missing fields take their default, unknown ones are skipped (a struct with
//!   `#[serde(deny_unknown_fields)]` refuses them instead, and so refuses the swap).
//! * **Anything else** (rename a field, change its type, restructure): raise
//!   [`App::STATE_VERSION`] and implement [`App::migrate`], which receives the old version's bytes.
//!   Keep the old shape as a type in the new source and read it with [`decode`], like Erlang's
//!   `code_change`.
//! * Code with a **lower** state version than the running one's is refused by the host before
//!   the swap's pause (going back is a rollback, not a swap), and the SDK refuses state from a
//!   newer version too; either way the old version keeps running.
//!
//! What does not survive a swap, because it is not in the serialized state: `#[serde(skip)]`
//! fields (they come back as their default), statics and thread-locals, and anything a
//! round trip through serde changes (`Option<Option<T>>` loses `Some(None)`, an `f64` read back
//! as `f32` loses precision). Nesting deeper than 256 levels of structs, sequences and maps
//! cannot be written (the export fails with a message saying so).
//!
//! # Keeping the state in place
//!
//! Carrying the state by value costs time in proportion to its size (about 95 ms at a million
//! records of the kv example). Most new versions change code, not the state's shape; for those,
//! the state can stay where it is: derive [`InPlace`] on the state type and every struct and
//! enum it holds, and register the app with `in_place`:
//!
//! ```ignore
//! #[derive(Default, Serialize, Deserialize, hotswap_guest::InPlace)]
//! #[serde(default)]
//! struct Store {
//!     entries: std::collections::BTreeMap<String, String>,
//! }
//! // impl hotswap_guest::App for Store { .. }
//! hotswap_guest::export_app!(Store, in_place);
//! ```
//!
//! The app's heap then lives at a fixed address ([`abi::IN_PLACE_HEAP_BASE`]), with the
//! allocator's own state (the SDK sets a `dlmalloc` global allocator). At a swap to a version
//! whose *layout description* is equal (the same types with the same fields in the same order,
//! the same state version, built by the same compiler with the same SDK), the host hands the
//! new code the old memory, and the pause takes under 100 µs at any state size. Every other swap
//! goes by value as before, with the rules above, and the host's swap line says why: a field
//! added, removed, renamed or reordered, a type changed, an enum variant added, another
//! compiler. Nothing changes for the code: the same `App` methods run, and `migrate` still
//! handles a raised [`App::STATE_VERSION`].
//!
//! In place, the new code gets the old values exactly as they are, never re-decoded: an
//! invariant the new code expects but the old one did not keep (a map ordered by a different
//! `Ord` on the same key type, a cache the old code never filled) is not re-established. Raise
//! [`App::STATE_VERSION`] for such a change: the swap then goes by value through `migrate`.
//!
//! What cannot be kept in place is a compile error: `HashMap` and `HashSet` (an empty one points
//! at a static of the module's; use `BTreeMap`/`BTreeSet`), `fn` pointers, trait objects and
//! references (they point into the module's code or static data), unions, and types that
//! borrow. Statics and thread-locals still start afresh in each new instance; `#[serde(skip)]`
//! fields, which a by-value swap resets, are kept as they are (the state is never re-encoded).
//!
//! # Features
//!
//! `fast-memcmp` links a `memcmp` that compares eight bytes at a time in place of wasi-libc's
//! byte-at-a-time one; it speeds up decoding string-keyed maps (BENCHMARKS.md).
//!
//! A panic in any handler reaches the host as an error carrying the panic's message.
#![deny(missing_docs)]

// `#[derive(InPlace)]` names `::hotswap_guest`, in this crate's own tests too.
extern crate self as hotswap_guest;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use hotswap_abi as abi;
pub use hotswap_guest_derive::InPlace;
pub use layout::{Describer, InPlace};
pub use migrate::{MigrateError, decode, encode};

#[doc(hidden)]
#[path = "runtime.rs"]
pub mod __private;
pub mod de;
mod fields;
#[cfg(target_arch = "wasm32")]
mod heap;
/// Off wasm there is no fixed heap: an in-place app builds (so that its checks run in tests)
/// but cannot run.
#[cfg(not(target_arch = "wasm32"))]
mod heap {
    pub(crate) const HEADER_FORMAT: u32 = 1;
    pub(crate) const HEADER: (usize, usize) = (0, 1);
    pub(crate) struct Header {
        pub(crate) fingerprint: u64,
        pub(crate) root: *mut u8,
    }
    pub(crate) fn header() -> *mut Header {
        crate::__private::abort("an in-place app runs only on wasm32")
    }
}
pub mod http;
mod layout;
#[cfg(any(test, feature = "fast-memcmp"))]
mod memcmp;
mod migrate;

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
            $crate::export_app!(@exports RUNTIME, start, import_state);
        };
    };
    ($app:ty, in_place) => {
        // The heap at the ABI's fixed base, where the next version finds the state.
        #[cfg(target_arch = "wasm32")]
        #[global_allocator]
        static HOTSWAP_HEAP: $crate::__private::Heap = $crate::__private::Heap;

        const _: () = {
            // First, the error that says what is missing: the state must be `InPlace`.
            fn state_is_in_place<T: $crate::InPlace>() {}
            let _ = state_is_in_place::<$app>;
            static RUNTIME: $crate::__private::Slot<$app, true> = $crate::__private::Slot::new();
            $crate::export_app!(@exports RUNTIME, start_in_place, import_in_place);

            #[unsafe(export_name = "hotswap_layout")]
            extern "C" fn hotswap_layout() -> i32 {
                RUNTIME.layout()
            }
            #[unsafe(export_name = "hotswap_adopt")]
            extern "C" fn hotswap_adopt() -> i32 {
                RUNTIME.adopt()
            }
        };
    };
    (@exports $runtime:ident, $start:ident, $import:ident) => {
        #[unsafe(export_name = "hotswap_abi_version")]
        extern "C" fn hotswap_abi_version() -> i32 {
            $crate::abi::ABI_VERSION as i32
        }
        #[unsafe(export_name = "hotswap_state_version")]
        extern "C" fn hotswap_state_version() -> i32 {
            $runtime.state_version()
        }
        #[unsafe(export_name = "hotswap_output")]
        extern "C" fn hotswap_output() -> i32 {
            $runtime.output()
        }
        #[unsafe(export_name = "hotswap_reserve")]
        extern "C" fn hotswap_reserve(len: i32) -> i32 {
            $runtime.reserve(len)
        }
        #[unsafe(export_name = "hotswap_warm")]
        extern "C" fn hotswap_warm(bytes: i32) {
            $crate::__private::warm_heap(bytes as u32 as usize)
        }
        #[unsafe(export_name = "hotswap_start")]
        extern "C" fn hotswap_start() -> i32 {
            $runtime.$start()
        }
        #[unsafe(export_name = "hotswap_import_state")]
        extern "C" fn hotswap_import_state(len: i32, version: i32) -> i32 {
            $runtime.$import(len, version)
        }
        #[unsafe(export_name = "hotswap_export_state")]
        extern "C" fn hotswap_export_state() -> i32 {
            $runtime.export_state()
        }
        #[unsafe(export_name = "hotswap_message")]
        extern "C" fn hotswap_message(len: i32) -> i32 {
            $runtime.message(len)
        }
        #[unsafe(export_name = "hotswap_http")]
        extern "C" fn hotswap_http(len: i32) -> i32 {
            $runtime.http(len)
        }
        #[unsafe(export_name = "hotswap_tick")]
        extern "C" fn hotswap_tick(now_ms: i64) -> i32 {
            $runtime.tick(now_ms)
        }
    };
    ($($other:tt)*) => {
        ::core::compile_error!(concat!(
            "`export_app!` takes the type that implements `hotswap_guest::App`, and optionally ",
            "`in_place`: write `hotswap_guest::export_app!(MyApp);` or ",
            "`hotswap_guest::export_app!(MyApp, in_place);` (got `", stringify!($($other)*), "`)"
        ));
    };
}
