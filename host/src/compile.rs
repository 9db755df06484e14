//! Step 1 of a swap: read the module's bytes, hash them, and compile them (or take the compiled
//! module from the cache when these exact bytes were seen before).

use crate::error::SwapError;
use crate::runtime::Runtime;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};
use wasmtime::Module;

/// A module's identity: the SHA-256 of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleHash(pub [u8; 32]);

impl ModuleHash {
    /// Hashes module bytes.
    pub fn of(bytes: &[u8]) -> Self {
        ModuleHash(Sha256::digest(bytes).into())
    }
}

/// The first 8 hex digits, as in the swap line.
impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
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
}

impl fmt::Display for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.hash)
    }
}

/// Reads a module file.
pub fn read_module(path: &Path) -> Result<Vec<u8>, SwapError> {
    std::fs::read(path).map_err(|source| SwapError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The name used for a module file in messages.
pub fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl Runtime {
    /// Compiles module bytes (binary, or WAT text when `name` ends in `.wat`).
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled, SwapError> {
        let hash = ModuleHash::of(bytes);
        if let Some(module) = self.cached(&hash) {
            let compile_time = Duration::ZERO;
            return Ok(Compiled {
                name: name.to_owned(),
                hash,
                module,
                compile_time,
                cached: true,
            });
        }
        let started = Instant::now();
        let module = if bytes.starts_with(b"\0asm") {
            Module::from_binary(&self.engine, bytes)
        } else if bytes.is_empty() {
            return Err(SwapError::Empty);
        } else if name.ends_with(".wat") {
            Module::new(&self.engine, bytes)
        } else {
            return Err(SwapError::NotWasm);
        }
        .map_err(|e| SwapError::Invalid(format!("{e:#}")))?;
        let compiled = Compiled {
            name: name.to_owned(),
            hash,
            module,
            compile_time: started.elapsed(),
            cached: false,
        };
        Ok(compiled)
    }
}
