//! The contract between the Hotswap host and a guest module (ABI version 1).
//!
//! Version 1 has grown optional parts since it was first written (HTTP, warming, keeping the
//! state in place), each an optional export that a host which does not know it ignores: a
//! module that uses one still runs, by value, on a host that predates it, and every module
//! written before still runs on this host. That is why the number did not change.
//!
//! This crate is the single place where the contract lives. The host (`hotswap`) checks modules
//! against it and the Rust guest SDK (`hotswap-guest`) implements it, but nothing here is
//! Rust-specific: `guests/wat/counter.wat` implements it by hand.
//!
//! # Module shape
//!
//! A guest is a core WebAssembly module (not a component). Its only imports may be WASI
//! preview 1 (`wasi_snapshot_preview1`) and the host namespace [`HOST_MODULE`]. It exports its
//! linear memory as [`MEMORY`] and the functions in [`EXPORTS`]. All integers are little-endian;
//! `i32` values that are addresses or lengths are read as unsigned.
//!
//! | export | signature | meaning |
//! |---|---|---|
//! | `hotswap_abi_version` | `() -> i32` | must return [`ABI_VERSION`] |
//! | `hotswap_state_version` | `() -> i32` | the state version this code writes (and reads without migration) |
//! | `hotswap_output` | `() -> i32` | address of the 8-byte *output descriptor* |
//! | `hotswap_reserve` | `(len: i32) -> i32` | address of an *input buffer* of at least `len` bytes; `0` if it cannot allocate |
//! | `hotswap_start` | `() -> i32` (status) | fresh start: build the initial state, run the start-up hook |
//! | `hotswap_import_state` | `(len: i32, version: i32) -> i32` (status) | input: state bytes written by state version `version` |
//! | `hotswap_export_state` | `() -> i32` (status) | output: the state bytes |
//! | `hotswap_message` | `(len: i32) -> i32` (status) | input: the message; output: the reply |
//! | `hotswap_tick` | `(now_ms: i64) -> i32` (status) | a timer event; `now_ms` is Unix time in milliseconds; output ignored |
//!
//! If the module exports `_initialize` (a WASI reactor, which `cdylib` crates are), the host calls
//! it once, first.
//!
//! # Buffers and who owns them
//!
//! * **Input.** Before a call that takes input (`hotswap_message`, `hotswap_import_state`) the
//!   host writes the input into the input buffer and passes its length. The buffer belongs to the
//!   guest's allocator but is the host's to write: it stays valid, and the guest does not write
//!   it, until the next `hotswap_reserve` call. The host calls `hotswap_reserve` only when an
//!   input is larger than the capacity it last reserved, and reuses the buffer otherwise.
//! * **Output.** Every status-returning call leaves its output (reply, state bytes or error
//!   message) in guest memory and describes it in the output descriptor: two `u32`s, the
//!   output's address then its length. The descriptor's own address, returned once by
//!   `hotswap_output`, is fixed for the instance's lifetime. The output stays valid until the
//!   next call into the guest; the host copies what it keeps.
//! * **State, in pieces.** During `hotswap_export_state` (and only then) a guest may hand its
//!   state over in pieces by calling the host import `hotswap.state_chunk(ptr: i32, len: i32)`
//!   ([`HOST_STATE_CHUNK`]) as often as it likes: the host copies `ptr..ptr + len` before the
//!   import returns, so one small buffer serves for every piece. The state is every piece in
//!   call order, followed by the call's output. A guest that never calls it leaves its whole
//!   state as the output. Streaming keeps the old instance from growing its memory by the size
//!   of its state during a swap's pause; the host copies each piece straight into the new
//!   instance's input buffer. A state larger than the memory limit traps the export.
//! * The host bounds-checks every address and length a guest hands back and treats a violation
//!   as a broken contract: the call fails and the instance is treated as lost.
//!
//! # Status codes
//!
//! [`STATUS_OK`]: the call succeeded and the output holds its result.
//! [`STATUS_ERROR`]: the call failed and the output holds a UTF-8 message saying why. Any other
//! value breaks the contract. From `hotswap_import_state`, an error is a *refusal*: the new code
//! cannot take that state, and the host keeps the old version running.
//!
//! A trap is a failure too. A guest may explain a trap first by calling the host import
//! `hotswap.abort(ptr: i32, len: i32)` ([`HOST_ABORT`]) with a UTF-8 message; the import never
//! returns (it traps with that message). The Rust SDK calls it from its panic hook, so a panic's
//! message reaches the host.
//!
//! # HTTP (optional)
//!
//! An app that serves HTTP also exports `hotswap_http: (len: i32) -> i32` ([`HTTP_FN`]): the
//! input is one request encoded as MessagePack (the `hotswap-msgpack` crate's encoding, which is `rmp-serde`'s), the output one response, both as maps with
//! named fields: [`http::Request`] `{method, path, query, headers: [[name, value]], body}` and
//! [`http::Response`] `{status, headers, body}`, where header values and bodies are binary.
//! The host requires this export only when it serves HTTP (`hotswap run --http`), and then also
//! of every version swapped in. An error status or a trap answers 500.
//!
//! # Warming (optional)
//!
//! A guest may export `hotswap_warm: (bytes: i32) -> ()` ([`WARM_FN`]). Before a swap's pause,
//! while the old version still serves, the host calls it on the new instance with about how
//! much more linear memory the imported state will need (the old instance's memory size minus
//! the new one's). The guest should make that much heap ready: allocate it, write one byte per
//! page, and free it, so that decoding the state lands on pages already faulted in instead of
//! growing memory during the pause. It has no output and no status; a guest that cannot
//! allocate simply returns. The host keeps `bytes` within the instance's memory limit.
//!
//! # Order of calls
//!
//! 1. `_initialize` (if exported), `hotswap_abi_version` (refused unless it is [`ABI_VERSION`]),
//!    `hotswap_state_version`, `hotswap_output`.
//! 2. For an instance about to take state, before the pause: `hotswap_reserve` for the state's
//!    size and `hotswap_warm` (if exported).
//! 3. Exactly one of `hotswap_start` (first version of an app) or `hotswap_import_state` (a swap:
//!    the state exported by the previous version, with that version's state version). After an
//!    import, and before the swap commits, the host calls `hotswap_export_state` once on the new
//!    instance and discards the result: a version that cannot export what it imported would
//!    leave the app unable to move on, so it is refused while the old version still runs.
//! 4. Any number of `hotswap_message`, `hotswap_tick` and `hotswap_http`, one at a time.
//! 5. At a swap, `hotswap_export_state` (with any number of `hotswap.state_chunk` calls from
//!    inside it), which must not change the state. If the swap fails after
//!    that, the instance keeps receiving events as if nothing happened.
//!
//! A swap that keeps the state in place (below) calls nothing on the old instance, and on the
//! new one (instantiated on the old one's memory) step 1 and then `hotswap_adopt` in place of
//! steps 2 and 3.
//!
//! # Keeping the state in place (optional)
//!
//! By default the state crosses a swap by value: the old code encodes it, the new code decodes
//! it, and the pause grows with the state's size. An app whose next version lays its state out
//! in memory exactly as the running one does can skip both: the new instance is given the
//! running instance's linear memory, state and all, and the pause is the same at any size
//! (BENCHMARKS.md, "In place": 40 to 60 µs from 1,000 to 1,000,000 records).
//!
//! ## What such an app does
//!
//! * It exports `hotswap_layout: () -> i32` ([`LAYOUT_FN`]): status, and as output a UTF-8
//!   *layout description*: text that is equal for two builds exactly when they lay the state
//!   out the same way. The Rust SDK writes one line each for the SDK's version, the compiler's
//!   (`rustc --version`), the allocator's and the heap's base, and the target, then one line
//!   per type reachable from the state, numbered in the order first reached, with its size,
//!   alignment and, for a struct, each field's name, type and offset (enums: each variant and
//!   its fields' types; see `hotswap_guest::InPlace`).
//! * It exports `hotswap_adopt: () -> i32` ([`ADOPT_FN`]): status. Called on an instance whose
//!   linear memory is the memory of an instance of an earlier version (whose description was
//!   equal), instead of `hotswap_start` or `hotswap_import_state`: the code takes over the state
//!   it finds there. It must not allocate or free, nor write anything the old version reads
//!   (a refusal must leave the memory as the old version left it, but for the output
//!   descriptor, which every call rewrites), so an error's message lies in static data.
//! * It keeps everything that must survive (its allocator's state, the root of its state, every
//!   heap block) at or above [`IN_PLACE_HEAP_BASE`], at addresses that do not depend on the
//!   module: the Rust SDK puts a header at exactly that address (`dlmalloc`'s state, the
//!   runtime's address, the layout's fingerprint) and allocates above it. Nothing in the state
//!   points into the module's code or static data (no `fn`, `dyn`, `&'static`, and no
//!   `HashMap`, whose empty table points at a static): the SDK makes that a compile error.
//! * Its static data and initial memory lie below [`IN_PLACE_HEAP_BASE`], and it keeps nothing
//!   live below its lowest data segment between calls (Rust puts its stack there).
//!
//! ## What the host checks, before the pause
//!
//! A swap goes in place only if all of these hold; otherwise it goes by value, and the swap
//! line (and `by_value_because` in JSON) says which one failed:
//!
//! 1. both versions export `hotswap_layout` and `hotswap_adopt`;
//! 2. their state versions are equal (a higher one means the new code migrates: by value);
//! 3. their layout descriptions are byte for byte equal (the reason names the most telling
//!    differing line: the SDK, compiler, allocator or target first, then the app's own types);
//! 4. the app is not durable (a durable app's swap snapshots the state, which needs it by
//!    value);
//! 5. each module has exactly one memory, every active data segment sits at a constant address
//!    (exactly `i32.const N`), and its initial memory ends at or below [`IN_PLACE_HEAP_BASE`];
//! 6. the running instance is not possibly damaged (after a trap its state is moved by value,
//!    into a fresh instance), and its memory is within the memory limit.
//!
//! ## The pause
//!
//! The host saves and then zeroes the bytes from the new module's lowest data segment (or from
//! 0, if it has none) to the end of its initial memory (below the heap: the old module's static
//! data and bss, which the new module's replace), instantiates the new module on the running
//! memory (its data segments are written, `_initialize` runs), and calls `hotswap_adopt`, all
//! within the pause's `--timeout`. If any step fails, the new instance is dropped, the memory's
//! size and the saved bytes are put back, the swap is refused, and the old instance (which has
//! not run since) serves on: it finds its memory as it left it, so far as the new code kept to
//! the rule for `hotswap_adopt` above (the host restores only the size and those bytes). After
//! the commit the old instance is dropped; the memory lives on in the new one. Of the old
//! version, only what is in the heap remains: its state, and the heap blocks its statics owned
//! (Rust's stdout buffer once it printed, a `OnceLock`'s value), which nothing points to any
//! more: a small leak at each swap for an app that keeps such things.
//!
//! ## Why this design
//!
//! Two designs were weighed (issue 12). Keeping the state in a host-owned region that the guest
//! reaches through host calls (as `ic-stable-structures` does over a `Memory` trait) is sound
//! and language-neutral, but every access becomes a host call and a copy: BENCHMARKS.md
//! ("Design 2's access cost") measures that against a load from linear memory. Adopting the
//! linear memory (as Motoko's enhanced orthogonal persistence does) costs nothing per event
//! (measured: kv 0.94–0.95×, todo 1.02–1.03× the by-value build's time per event, within the
//! 5% budget) and makes the pause independent of the state's size; its price is the constraints
//! above, which the SDK enforces, and a layout description the host must be able to trust as
//! far as the guest's own safety goes. A module that lies about its layout can only corrupt its
//! own state (for its own code, that is undefined behaviour), which any new version could do
//! anyway; the host's memory safety never depends on the description.
//!
//! # State versions
//!
//! `hotswap_state_version` returns a number from 0 to [`MAX_STATE_VERSION`]; the host refuses a
//! module that returns anything else. A swap never lowers it: the host refuses, before the
//! pause, a new version whose state version is lower than the running one's (going back to older
//! code is a rollback, not a swap).
//!
//! The state bytes are opaque to the host; the guest chooses their encoding (the Rust SDK uses
//! MessagePack with named fields, through the `hotswap-msgpack` crate; the host decodes it only
//! to show the state). An import whose `version` equals the code's state version is read
//! directly; an older `version` is migrated by the code; a newer one must be refused. The host
//! never alters state bytes; it copies them once, from the old instance's memory into the new
//! instance's input buffer.
#![deny(missing_docs)]
#![no_std]

/// The ABI version this crate describes. A module whose `hotswap_abi_version` returns anything
/// else is refused before the running app is touched.
pub const ABI_VERSION: u32 = 1;

/// The name under which a guest exports its linear memory.
pub const MEMORY: &str = "memory";

/// The optional WASI reactor initializer, called once before anything else.
pub const INITIALIZE: &str = "_initialize";

/// The host's own import namespace.
pub const HOST_MODULE: &str = "hotswap";

/// `hotswap.abort(ptr: i32, len: i32)`: trap with the UTF-8 message at `ptr..ptr + len`.
pub const HOST_ABORT: &str = "abort";

/// `hotswap.state_chunk(ptr: i32, len: i32)`: during `hotswap_export_state` only, append the
/// bytes at `ptr..ptr + len` to the state being exported (see the module docs).
pub const HOST_STATE_CHUNK: &str = "state_chunk";

/// The import namespace of WASI preview 1, which the host provides.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// Success: the output holds the call's result.
pub const STATUS_OK: i32 = 0;

/// Failure: the output holds a UTF-8 message.
pub const STATUS_ERROR: i32 = 1;

/// A WebAssembly value type used by the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValType {
    /// `i32`: addresses, lengths, status codes, versions.
    I32,
    /// `i64`: timestamps.
    I64,
}

/// One required export: its name and signature.
#[derive(Clone, Copy, Debug)]
pub struct Export {
    /// The export's name.
    pub name: &'static str,
    /// Parameter types.
    pub params: &'static [ValType],
    /// Result types.
    pub results: &'static [ValType],
}

use ValType::{I32, I64};

/// `hotswap_abi_version: () -> i32`
pub const ABI_VERSION_FN: Export = Export {
    name: "hotswap_abi_version",
    params: &[],
    results: &[I32],
};
/// `hotswap_state_version: () -> i32`
pub const STATE_VERSION_FN: Export = Export {
    name: "hotswap_state_version",
    params: &[],
    results: &[I32],
};
/// `hotswap_output: () -> i32`
pub const OUTPUT_FN: Export = Export {
    name: "hotswap_output",
    params: &[],
    results: &[I32],
};
/// `hotswap_reserve: (len: i32) -> i32`
pub const RESERVE_FN: Export = Export {
    name: "hotswap_reserve",
    params: &[I32],
    results: &[I32],
};
/// `hotswap_start: () -> status`
pub const START_FN: Export = Export {
    name: "hotswap_start",
    params: &[],
    results: &[I32],
};
/// `hotswap_import_state: (len: i32, version: i32) -> status`
pub const IMPORT_STATE_FN: Export = Export {
    name: "hotswap_import_state",
    params: &[I32, I32],
    results: &[I32],
};
/// `hotswap_export_state: () -> status`
pub const EXPORT_STATE_FN: Export = Export {
    name: "hotswap_export_state",
    params: &[],
    results: &[I32],
};
/// `hotswap_message: (len: i32) -> status`
pub const MESSAGE_FN: Export = Export {
    name: "hotswap_message",
    params: &[I32],
    results: &[I32],
};
/// `hotswap_tick: (now_ms: i64) -> status`
pub const TICK_FN: Export = Export {
    name: "hotswap_tick",
    params: &[I64],
    results: &[I32],
};

/// `hotswap_http: (len: i32) -> status`, optional: see the module docs.
pub const HTTP_FN: Export = Export {
    name: "hotswap_http",
    params: &[I32],
    results: &[I32],
};

/// `hotswap_warm: (bytes: i32) -> ()`, optional: see the module docs.
pub const WARM_FN: Export = Export {
    name: "hotswap_warm",
    params: &[I32],
    results: &[],
};

/// `hotswap_layout: () -> status`, optional: the output is the layout description of a state
/// kept in place (see "Keeping the state in place" in the module docs).
pub const LAYOUT_FN: Export = Export {
    name: "hotswap_layout",
    params: &[],
    results: &[I32],
};

/// `hotswap_adopt: () -> status`, optional: take over the state kept in place in the adopted
/// memory (see "Keeping the state in place" in the module docs).
pub const ADOPT_FN: Export = Export {
    name: "hotswap_adopt",
    params: &[],
    results: &[I32],
};

/// The optional exports: checked against their signatures when present.
pub const OPTIONAL_EXPORTS: &[Export] = &[HTTP_FN, WARM_FN, LAYOUT_FN, ADOPT_FN];

/// Where the heap of an app that keeps its state in place begins: every byte it keeps lies at
/// or above this address, and a module's static data (its data segments and its initial
/// memory) lies below it. 8 MiB leaves 7 MiB for static data above Rust's 1 MiB stack.
pub const IN_PLACE_HEAP_BASE: u32 = 8 << 20;

/// The functions a guest may import from [`HOST_MODULE`].
pub const HOST_IMPORTS: &[&str] = &[HOST_ABORT, HOST_STATE_CHUNK];

/// The largest state version: `hotswap_state_version` returns an `i32`, which must not be
/// negative. A module outside `0..=MAX_STATE_VERSION` is refused.
pub const MAX_STATE_VERSION: u32 = i32::MAX as u32;

/// Every function a guest must export, in the order the contract lists them.
pub const EXPORTS: &[Export] = &[
    ABI_VERSION_FN,
    STATE_VERSION_FN,
    OUTPUT_FN,
    RESERVE_FN,
    START_FN,
    IMPORT_STATE_FN,
    EXPORT_STATE_FN,
    MESSAGE_FN,
    TICK_FN,
];

/// Size in bytes of the output descriptor: `{ ptr: u32, len: u32 }`.
pub const OUTPUT_DESCRIPTOR_LEN: usize = 8;

/// The HTTP request and response that `hotswap_http` takes and returns, MessagePack-encoded
/// with named fields (enable the `serde` feature for the types).
#[cfg(feature = "serde")]
pub mod http {
    extern crate alloc;
    use alloc::string::String;
    use alloc::vec::Vec;
    use serde::{Deserialize, Serialize};

    /// An HTTP request.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Request {
        /// `GET`, `POST`, ...
        pub method: String,
        /// The path, without the query: `/todos/3`.
        pub path: String,
        /// The query, without the `?`; empty if none.
        pub query: String,
        /// Headers in the order received; names are lowercase.
        pub headers: Vec<(String, Bytes)>,
        /// The body.
        pub body: Bytes,
    }

    /// An HTTP response.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Response {
        /// The status code.
        pub status: u16,
        /// Headers to send.
        pub headers: Vec<(String, Bytes)>,
        /// The body.
        pub body: Bytes,
    }

    impl Default for Response {
        fn default() -> Self {
            Response {
                status: 200,
                headers: Vec::new(),
                body: Bytes::default(),
            }
        }
    }

    /// Bytes encoded as MessagePack binary (not as an array of numbers).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Bytes(pub Vec<u8>);

    impl Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl<'de> serde::de::Visitor<'de> for Visitor {
                type Value = Bytes;
                fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
                    Ok(Bytes(v.as_bytes().to_vec()))
                }
            }
            deserializer.deserialize_bytes(Visitor)
        }
    }
}

/// The files a host keeps in its state directory (`hotswap run --state-dir DIR`): snapshots of
/// an app's state and the journal of its events, with their format versions. They are not part
/// of the contract with guests, but like it they are read by programs other than the one that
/// wrote them (a newer host after an upgrade), so they are written down here.
///
/// # Layout
///
/// | path | what |
/// |---|---|
/// | `LOCK` | held (`flock`) by the one host using the directory |
/// | `modules/<sha256 hex>.wasm` | every module the app has run, by content hash |
/// | `snapshots/<seq>.snap` | a snapshot; `<seq>` is 20 decimal digits |
/// | `journal/<seq>.log` | a journal segment whose first record has sequence number `<seq>` |
/// | `quarantine/` | files found torn or corrupt, set aside (never deleted) |
///
/// Every file is written to a temporary name, `fsync`ed, renamed into place, and its
/// directory `fsync`ed; journal segments are appended to and `fdatasync`ed instead.
///
/// # Sequence numbers
///
/// Every record of the journal (an event, a swap, a rollback) has the next sequence number,
/// from 1. A snapshot at sequence number `s` holds the state after record `s`; the directory
/// always has one, at 0 for a fresh start, written before the first event is taken.
///
/// # Snapshot (format version [`SNAPSHOT_VERSION`](persist::SNAPSHOT_VERSION))
///
/// All integers little-endian:
///
/// | bytes | field |
/// |---|---|
/// | 8 | [`SNAPSHOT_MAGIC`](persist::SNAPSHOT_MAGIC) |
/// | 4 | format version |
/// | 4 | state version of the module that exported the state |
/// | 8 | sequence number |
/// | 32 | SHA-256 of the module that exported the state (kept in `modules/`) |
/// | 8 | length of the state, `n` |
/// | `n` | the state, as `hotswap_export_state` produced it |
/// | 4 | CRC-32 (IEEE) of every byte before it |
///
/// # Journal segment (format version [`JOURNAL_VERSION`](persist::JOURNAL_VERSION))
///
/// [`JOURNAL_MAGIC`](persist::JOURNAL_MAGIC), the format version (4 bytes), then records, each `length: u32`,
/// `crc: u32` (CRC-32 of the body), `body`. The body is one MessagePack map (named fields, as
/// `rmp-serde` writes them) `{seq, record}`, where `record` is one of:
///
/// - `{"Input": {input, reads}}`: an event the app handled, in order: `input` is `{"Message":
///   bin}`, `{"Tick": now_ms}` or `{"Http": request}` (the request as `hotswap_http` takes it),
///   and `reads` is everything the guest read from WASI's clocks and random source while
///   handling it (`{"Wall": ns}`, `{"Mono": ns}`, `{"Random": bin}`), fed back in order when
///   the event is replayed;
/// - `{"Swap": {from, to}}`: a committed swap, module hashes as 64 hex digits (the snapshot at
///   this record's `seq - 1` is the state the old version exported);
/// - `{"Rollback": {swap}}`: the swap at sequence number `swap` was rolled back: the state is
///   that swap's snapshot imported into the old module, with every `Input` since replayed.
///
/// A record that is cut short or fails its CRC ends the journal: it was never acknowledged
/// (a reply is released only once its record is on disk).
pub mod persist {
    /// The first 8 bytes of a snapshot file.
    pub const SNAPSHOT_MAGIC: [u8; 8] = *b"HSWPSNAP";
    /// The snapshot format this crate describes.
    pub const SNAPSHOT_VERSION: u32 = 1;
    /// The first 8 bytes of a journal segment.
    pub const JOURNAL_MAGIC: [u8; 8] = *b"HSWPJRNL";
    /// The journal format this crate describes.
    pub const JOURNAL_VERSION: u32 = 1;
}
