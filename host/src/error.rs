//! Typed errors: what went wrong in a call into a guest, and why a swap was refused.
//!
//! Each message states its cause once; wrapping types add their step, never repeat the cause.

use std::path::PathBuf;
use std::time::Duration;

/// Why a call into a guest failed. Text that came from the guest is escaped and capped
/// ([`crate::text`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest returned [`hotswap_abi::STATUS_ERROR`] with this message (the instance is fine).
    #[error("{0}")]
    Failed(String),
    /// The guest panicked (it called `hotswap.abort`) with this message.
    #[error("guest panicked: {0}")]
    Panic(String),
    /// The guest trapped.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest ran past the call time limit (or blocked in WASI that long) and was interrupted.
    #[error("guest ran longer than the {} ms call limit (--timeout) and was interrupted", .0.as_millis())]
    Timeout(Duration),
    /// The guest needed more memory than the limit allows.
    #[error(
        "guest {} the {} memory limit (--max-memory; raise it on a running host with `hotswap limits --max-memory MIB`)",
        wanted.map_or_else(|| "needed more than".to_owned(), |w| format!("tried to grow its memory to {}, past", crate::text::bytes(w))),
        crate::text::bytes(*limit)
    )]
    MemoryLimit {
        /// How much it asked for, when known.
        wanted: Option<usize>,
        /// The limit.
        limit: usize,
    },
    /// The guest called WASI `proc_exit`.
    #[error("guest exited with status {0} (WASI `proc_exit`)")]
    Exit(i32),
    /// The guest broke the ABI contract: a bad pointer, length or status.
    #[error("guest broke the ABI: {0}")]
    Abi(String),
}

impl CallError {
    /// Whether the instance must be treated as lost after this error: anything but a reported
    /// failure may have left the guest mid-operation (stack unreclaimed, state half-updated).
    pub fn instance_lost(&self) -> bool {
        !matches!(self, CallError::Failed(_))
    }
}

/// The ABI checks a module must pass before it is instantiated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// No memory exported under the ABI's name.
    #[error("the module does not export its memory as `memory`")]
    NoMemory,
    /// A required function is not exported.
    #[error("the module does not export `{0}`, which Hotswap ABI version {abi} requires (the SDK's `export_app!` generates it)", abi = hotswap_abi::ABI_VERSION)]
    MissingExport(&'static str),
    /// A required export has the wrong type.
    #[error("`{name}` is {found}, but the ABI requires a function {expected}")]
    WrongSignature {
        /// The export.
        name: &'static str,
        /// What the module has.
        found: String,
        /// What the ABI requires.
        expected: String,
    },
    /// An import from outside WASI preview 1 and the `hotswap` namespace.
    #[error(
        "the module imports `{module}::{name}`; a guest may import only `{}` and {}",
        hotswap_abi::WASI_MODULE,
        host_imports()
    )]
    ForeignImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// An import the host cannot provide (unknown WASI function, wrong type).
    #[error("the host cannot satisfy the module's imports: {0}")]
    Imports(String),
    /// The module's state version is outside the ABI's range.
    #[error(
        "the module's state version is {0}, outside the ABI's range 0..={max}",
        max = hotswap_abi::MAX_STATE_VERSION
    )]
    StateVersion(i32),
    /// The module speaks another ABI version.
    #[error("the module speaks Hotswap ABI version {found}; this host speaks version {expected}")]
    AbiVersion {
        /// What the module returned from `hotswap_abi_version`.
        found: i32,
        /// [`hotswap_abi::ABI_VERSION`].
        expected: u32,
    },
}

/// Why a module could not be started or swapped in. Whatever the step, the app that was running
/// keeps running with its state untouched.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The module file could not be read.
    #[error("cannot read {}: {error}{}", path.display(), build_hint(path, error))]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (part of this message, not a separate cause).
        error: std::io::Error,
    },
    /// The module's path names something that is not a regular file.
    #[error("{} is {kind}: a module must be a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The module file is larger than the cap.
    #[error(
        "{} is {len} bytes, over the {limit}-byte limit on modules (--max-module-size)",
        path.display()
    )]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size (at least).
        len: u64,
        /// The cap.
        limit: u64,
    },
    /// The module file is empty.
    #[error("the module is empty (0 bytes)")]
    Empty,
    /// Not WebAssembly at all.
    #[error(
        "not a WebAssembly module: it does not start with `\\0asm` (a `.wat` file is read as text)"
    )]
    NotWasm,
    /// Wasmtime rejected the module.
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    /// The module failed the ABI checks.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Instantiation failed before any guest code ran.
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
    /// A call while readying the new instance failed: its start function, `_initialize`, one
    /// of the ABI's queries, or reserving and warming before the pause.
    #[error("the module failed in {step}: {error}")]
    Initialize {
        /// Which call.
        step: &'static str,
        /// How.
        error: CallError,
    },
    /// The host serves HTTP and the new version does not export `hotswap_http`.
    #[error(
        "the new version does not serve HTTP (it does not export `hotswap_http`), and this host serves HTTP"
    )]
    NoHttp,
    /// `hotswap_start` failed.
    #[error("the app failed to start: {0}")]
    Start(CallError),
    /// The new version's state version is lower than the running one's.
    #[error(
        "the new version's state version {new} is lower than the running version's {running}: a swap never goes back to an older state version"
    )]
    Downgrade {
        /// The running version's state version.
        running: u32,
        /// The new version's.
        new: u32,
    },
    /// The new instance could not adopt the state kept in place (`hotswap_adopt`).
    #[error("the new version could not adopt the state kept in place: {0}")]
    Adopt(CallError),
    /// The old instance failed to export its state.
    #[error("the running version failed to export its state: {0}")]
    Export(CallError),
    /// The new instance could not take the state's bytes into its input buffer.
    #[error("the new version could not receive the state: {0}")]
    Transfer(CallError),
    /// The new version refused the state (its `migrate` returned an error).
    #[error("the new version refused the state: {0}")]
    Refused(String),
    /// The new instance failed while importing the state.
    #[error("the new version failed while importing the state: {0}")]
    Import(CallError),
    /// The new module could not be kept in the state directory (before it may run).
    #[error("cannot keep the module in the state directory: {0}")]
    Keep(String),
    /// The new instance imported the state but could not export it again: committing would
    /// leave an app that can never move on.
    #[error("the new version imported the state but cannot export it: {0}")]
    Verify(CallError),
    /// The deployment asked for cannot run on this host, or another one is under way.
    #[error("{0}")]
    Deploy(String),
    /// The new version failed its trial on the journaled events.
    #[error("the trial failed: {0}")]
    Trial(String),
    /// The new version failed its shadow run on live events.
    #[error("the shadow run failed: {0}")]
    Shadow(String),
}

/// The host imports a guest may use, for messages.
fn host_imports() -> String {
    let names: Vec<String> = (hotswap_abi::HOST_IMPORTS.iter())
        .map(|name| format!("`{}::{name}`", hotswap_abi::HOST_MODULE))
        .collect();
    names.join(" and ")
}

impl SwapError {
    /// A [`CallError`] from importing state: a reported failure is a refusal, anything else a
    /// failure of the import itself.
    pub(crate) fn from_import(error: CallError) -> Self {
        match error {
            CallError::Failed(message) => SwapError::Refused(message),
            other => SwapError::Import(other),
        }
    }
}

/// For a module missing where cargo would have written it: why cargo may not have.
fn build_hint(path: &std::path::Path, error: &std::io::Error) -> &'static str {
    let under_wasm_target = path.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|name| name.starts_with("wasm32-"))
    });
    let is_wasm = path.extension().is_some_and(|ext| ext == "wasm");
    if error.kind() == std::io::ErrorKind::NotFound && under_wasm_target && is_wasm {
        " (cargo writes a .wasm only for a library with `crate-type = [\"cdylib\"]` under `[lib]`, named after the crate with `-` written `_`)"
    } else {
        ""
    }
}
