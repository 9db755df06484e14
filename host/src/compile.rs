//! Step 1 of a swap: read the module's bytes (a regular file, within the size cap), hash them,
//! and compile them (or take the compiled module from the cache when these exact bytes were
//! seen before: see [`crate::Runtime`]).

use crate::error::SwapError;
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::Duration;
use wasmtime::{Engine, Module};

/// The largest module file read by default, in bytes (`--max-module-size`).
pub const DEFAULT_MAX_MODULE: u64 = 128 << 20;

/// A module's identity: the SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleHash(pub [u8; 32]);

impl ModuleHash {
    /// Hashes module bytes.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleHash(Sha256::digest(bytes).into())
    }

    /// Reads the 64 hex digits that `{:?}` writes.
    pub fn from_hex(hex: &str) -> Option<Self> {
        crate::text::from_hex(hex)?.try_into().ok().map(ModuleHash)
    }
}

/// The first 8 hex digits, as in the swap line.
impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// All 64 hex digits.
impl fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::to_hex(&self.0))
    }
}

/// A compiled module and where it came from.
#[derive(Clone)]
pub struct Compiled {
    /// What to call it in messages: the file name.
    pub name: String,
    /// The content hash.
    pub hash: ModuleHash,
    /// The compiled code.
    pub module: Module,
    /// How long compiling took (zero when it came from the cache).
    pub compile_time: Duration,
    /// Whether it came from the cache.
    pub cached: bool,
    /// What of linear memory its static data claims, or why that cannot be known (then it
    /// cannot take over a memory in place).
    pub statics: Result<crate::in_place::Statics, String>,
}

impl fmt::Display for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.hash)
    }
}

/// Reads a module file: a regular file (a FIFO, device or directory is refused without being
/// read, so reading never blocks) of at most `max_len` bytes.
pub fn read_module(path: &Path, max_len: u64) -> Result<Vec<u8>, SwapError> {
    let read_error = |error| SwapError::Read {
        path: path.to_owned(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Opening a FIFO for reading would wait for a writer.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        let kind = file_kind(&meta.file_type());
        return Err(SwapError::NotAFile {
            path: path.to_owned(),
            kind,
        });
    }
    let too_large = |len| SwapError::TooLarge {
        path: path.to_owned(),
        len,
        limit: max_len,
    };
    if meta.len() > max_len {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: read no more than one byte past the cap.
    file.take(max_len + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max_len {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// What a file that is not a regular file is, for messages.
pub(crate) fn file_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The name used for a module file in messages.
pub fn display_name(path: &Path) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // A file name is the operator's, but may hold anything: it is printed in log lines.
    crate::text::escape(&name, 200)
}

/// Compiles module bytes (binary, or WAT text when `name` ends in `.wat`).
pub(crate) fn compile(engine: &Engine, name: &str, bytes: &[u8]) -> Result<Module, SwapError> {
    if bytes.starts_with(b"\0asm") {
        Module::from_binary(engine, bytes)
    } else if bytes.is_empty() {
        return Err(SwapError::Empty);
    } else if name.ends_with(".wat") {
        Module::new(engine, bytes)
    } else {
        return Err(SwapError::NotWasm);
    }
    .map_err(|e| SwapError::Invalid(first_line(&format!("{e:#}"))))
}

/// The first line of a message from wasmtime (the rest is a backtrace or a listing).
fn first_line(text: &str) -> String {
    crate::text::escape(text.lines().next().unwrap_or_default(), 500)
}
