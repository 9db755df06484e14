//! State that outlives the process (`hotswap run --state-dir DIR`): the directory and what it
//! holds, snapshots ([`snapshot`]), the journal of events ([`journal`]), and restoring an app
//! from them ([`restore`]). The file formats are in [`hotswap_abi::persist`].
//!
//! Strategy: a snapshot is the state as the running code exports it, taken at a fresh start,
//! at every swap (the state the old version exported), every `--snapshot-every`, on `hotswap
//! snapshot` and at a graceful stop; it is written off the event thread. With `--durable`, every
//! event is appended to the journal, with what the guest read from its clocks and random source,
//! before its reply is released, one `fdatasync` for all the events handled meanwhile. A restore
//! imports the newest good snapshot into the module that wrote it and replays the journal after
//! it, each event through the code that handled it.

pub mod journal;
pub mod keeper;
pub mod restore;
pub mod snapshot;
pub mod start;

use crate::compile::ModuleHash;
use anyhow::Context as _;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};

/// The largest file the host reads from a state directory: a snapshot of a full 4 GiB linear
/// memory, with room to spare.
pub(crate) const MAX_FILE: u64 = 5 << 30;

/// Reads a file of the state directory: a regular file (anything else is refused without being
/// read, so a FIFO put there cannot block a start) of at most `max_len` bytes.
pub(crate) fn read_file(path: &Path, max_len: u64) -> anyhow::Result<Vec<u8>> {
    use crate::error::SwapError;
    crate::compile::read_module(path, max_len).map_err(|e| match e {
        SwapError::NotAFile { path, kind } => {
            anyhow::anyhow!("{} is {kind}: only a regular file is read", path.display())
        }
        SwapError::TooLarge { path, len, limit } => anyhow::anyhow!(
            "{} is larger ({len} bytes) than the {limit} bytes read at most",
            path.display()
        ),
        other => anyhow::Error::new(other),
    })
}

/// The state directory, locked for this host.
pub struct StateDir {
    root: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Opens (creating it if needed) and locks a state directory: one host per directory.
    pub fn open(root: &Path) -> anyhow::Result<StateDir> {
        for sub in ["", "modules", "snapshots", "journal", "quarantine"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        let lock_path = root.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            // A FIFO or a symlink put there is refused, not waited on or followed.
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            anyhow::bail!(
                "another hotswap is using the state directory {} (it holds {})",
                root.display(),
                lock_path.display()
            );
        }
        Ok(StateDir {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A subdirectory.
    pub(crate) fn sub(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where a module is kept.
    pub fn module_path(&self, hash: &ModuleHash) -> PathBuf {
        self.sub("modules").join(format!("{hash:?}.wasm"))
    }

    /// Keeps a module's bytes (and the name it had, for messages), durably, if they are not
    /// kept yet.
    pub fn keep_module(&self, name: &str, bytes: &[u8]) -> anyhow::Result<ModuleHash> {
        let hash = ModuleHash::of(bytes);
        let path = self.module_path(&hash);
        if !path.exists() {
            write_durably(&path.with_extension("name"), name.as_bytes())?;
            write_durably(&path, bytes)?;
        }
        Ok(hash)
    }

    /// The name a kept module had (its hash when that is not known).
    pub fn module_name(&self, hash: &ModuleHash) -> String {
        let path = self.module_path(hash).with_extension("name");
        read_file(&path, 255)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|name| !name.is_empty() && !name.contains(['/', '\n']))
            .unwrap_or_else(|| format!("{hash}.wasm"))
    }

    /// A kept module's bytes, checked against their hash.
    pub fn module(&self, hash: &ModuleHash) -> anyhow::Result<Vec<u8>> {
        let path = self.module_path(hash);
        let bytes = read_file(&path, MAX_FILE)?;
        if ModuleHash::of(&bytes) != *hash {
            self.quarantine(&path, "its content does not match its name");
            anyhow::bail!(
                "{} is corrupt (its content does not match its hash)",
                path.display()
            );
        }
        Ok(bytes)
    }

    /// Sets a torn or corrupt file aside in `quarantine/` (it is never deleted), and says so.
    pub fn quarantine(&self, path: &Path, why: &str) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let to = unused(&self.sub("quarantine"), &format!("{name}.{stamp}"));
        match std::fs::rename(path, &to) {
            Ok(()) => crate::text::log(format_args!(
                "{} {why}: set aside as {}",
                path.display(),
                to.display()
            )),
            Err(e) => crate::text::log(format_args!(
                "{} {why}, and cannot be set aside: {e}",
                path.display()
            )),
        }
    }
}

/// `dir/name`, or `dir/name.N` with the first N that no file has: what is set aside never
/// replaces what was set aside before.
pub(crate) fn unused(dir: &Path, name: &str) -> PathBuf {
    let mut path = dir.join(name);
    let mut n = 1;
    while path.symlink_metadata().is_ok() {
        path = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    path
}

/// Writes a file so that after a crash it is either whole or absent: a temporary name,
/// `fsync`, rename, `fsync` of the directory.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // A name of its own, created new and never through a symlink: nothing else is written.
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let written = File::options()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))
        .and_then(|mut file| {
            (file.write_all(bytes).and_then(|()| file.sync_all()))
                .with_context(|| format!("cannot write {}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// `fsync`s a directory, so that a rename or a new file in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the directory {}", dir.display()))
}
