//! Compiled modules kept on disk (`--compile-cache DIR`), so that a restarted host, or a swap
//! back to a version compiled before, does not compile again: a realistic guest takes a second
//! or more to compile (BENCHMARKS.md, "Compile").
//!
//! A file is named by the module's SHA-256 and a hash of everything in the engine's settings
//! that compiled code depends on (wasmtime's `Engine::precompile_compatibility_hash`), so a host
//! built with another wasmtime, or configured otherwise, never reads another's files. Loading
//! compiled code is trusting it (it runs as it is), so a file is read only if it is a regular
//! file owned by this user and writable by nobody else, in a directory that is the same; files
//! are written whole under a temporary name and renamed into place. Anything unexpected (a
//! file that fails these checks or that wasmtime refuses) is passed over: the module is
//! compiled as if nothing were cached, and the file is replaced.

use crate::compile::ModuleHash;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

/// The largest compiled file read back, in bytes.
const MAX_FILE: u64 = 1 << 30;

/// A directory of compiled modules for one engine configuration.
pub(crate) struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility hash, in hex: part of every file name.
    engine: String,
}

impl CompileCache {
    /// The cache in `dir` (created owner-only if missing), or why it cannot be used.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<CompileCache, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        trusted(dir, true)?;
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine = crate::text::to_hex(&hasher.0.finalize()[..16]);
        Ok(CompileCache {
            dir: dir.to_owned(),
            engine,
        })
    }

    fn path(&self, hash: &ModuleHash) -> PathBuf {
        self.dir.join(format!("{hash:?}-{}.cwasm", self.engine))
    }

    /// The module compiled before from bytes with this hash, if the cache holds it.
    pub(crate) fn load(&self, engine: &Engine, hash: &ModuleHash) -> Option<Module> {
        let path = self.path(hash);
        let bytes = read_trusted(&path).ok()??;
        // SAFETY: the file was written by `store` (of this user, for an engine with the same
        // compatibility hash, whole, by rename) and nobody else can have written it (`trusted`).
        // wasmtime checks its header against this engine before using it; a file it refuses
        // is compiled again.
        unsafe { Module::deserialize(engine, &bytes) }.ok()
    }

    /// Keeps a compiled module; best effort (a full disk only costs the next compile).
    pub(crate) fn store(&self, hash: &ModuleHash, module: &Module) -> Result<(), String> {
        let bytes = module.serialize().map_err(|e| format!("{e:#}"))?;
        let path = self.path(hash);
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| file.write_all(&bytes))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        Ok(())
    }
}

/// The file's bytes, if it exists and passes [`trusted`]; `Ok(None)` if it does not exist.
fn read_trusted(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err("not a regular file of a sensible size".into());
    }
    check_owner(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE), &mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

/// Whether `path` (a directory when `dir`) is this user's and writable by nobody else.
fn trusted(path: &Path, dir: bool) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() != dir || meta.file_type().is_symlink() {
        return Err(format!("{} is not a directory", path.display()));
    }
    check_owner(&meta).map_err(|e| format!("{}: {e}", path.display()))
}

fn check_owner(meta: &std::fs::Metadata) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "owned by user {}, not by this user ({me})",
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err("writable by other users".into());
    }
    Ok(())
}

/// Feeds `Hash` into SHA-256: a hash that does not change between runs or builds.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// Not used: the digest is read with `finalize`.
    fn finish(&self) -> u64 {
        0
    }
}
