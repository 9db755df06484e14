//! Compiled modules kept on disk (`--compile-cache DIR`), so that a restarted host, or a swap
//! back to a version compiled before, does not compile again: a realistic guest takes a second
//! or more to compile (BENCHMARKS.md, "Compile").
//!
//! A file is named by the module's SHA-256 and a hash of everything in the engine's settings
//! that compiled code depends on (wasmtime's `Engine::precompile_compatibility_hash`), so a host
//! built with another wasmtime, or configured otherwise, never reads another's files. It holds
//! the compiled code, then the module's SHA-256 and the code's own SHA-256, both checked before
//! the code is used: a file cut short, damaged, or renamed from another module's is passed
//! over. Loading compiled code is trusting it (it runs as it is), so a file is read only if it
//! is a regular file (not a symlink) owned by this user and writable by nobody else, in a
//! directory that is the same, checked at every load. Files are written whole under a name of
//! their own, synced, and renamed into place. Anything unexpected is passed over: the module
//! is compiled as if nothing were cached, and the file is replaced. The directory is never
//! pruned: it holds one file per module compiled (about the size of the module's code).

use crate::compile::ModuleHash;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
        trusted(&self.dir, true).ok()?;
        let bytes = read_trusted(&self.path(hash)).ok()??;
        let code = verified(&bytes, hash)?;
        // SAFETY: the file is this user's and nobody else can write it or its directory
        // (`trusted`, checked just now), it holds code `store` wrote for these module bytes
        // (the trailer's two hashes), and wasmtime checks the code's header against this
        // engine before using it; a file it refuses is compiled again.
        unsafe { Module::deserialize(engine, code) }.ok()
    }

    /// Keeps a compiled module; best effort (a full disk only costs the next compile).
    pub(crate) fn store(&self, hash: &ModuleHash, module: &Module) -> Result<(), String> {
        let mut bytes = module.serialize().map_err(|e| format!("{e:#}"))?;
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&hash.0);
        bytes.extend_from_slice(&digest);
        let path = self.path(hash);
        // A name no other thread or process uses: written by one writer, whole, then renamed.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let temporary = path.with_extension(format!("tmp-{}-{unique}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_all()))
            .and_then(|()| std::fs::rename(&temporary, &path))
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        Ok(())
    }
}

/// The compiled code in a cache file's bytes, if its trailer names `hash` and the code's own
/// SHA-256.
fn verified<'a>(bytes: &'a [u8], hash: &ModuleHash) -> Option<&'a [u8]> {
    let code_len = bytes.len().checked_sub(64)?;
    let (code, trailer) = bytes.split_at(code_len);
    let (module, digest) = trailer.split_at(32);
    (module == hash.0 && digest == Sha256::digest(code).as_slice()).then_some(code)
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
