//! Snapshots: an app's state at one point of its journal, with the module that exported it
//! (the format is in [`hotswap_abi::persist`]), written off the event thread, checked on read.

use super::{StateDir, sync_dir};
use crate::compile::ModuleHash;
use anyhow::Context as _;
use hotswap_abi::persist::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Bytes before the state: magic, format version, state version, sequence number, module hash,
/// state length.
const HEADER: usize = 8 + 4 + 4 + 8 + 32 + 8;

/// An app's state after journal record `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The last journal record the state includes (0: none).
    pub seq: u64,
    /// The state version of the module that exported it.
    pub state_version: u32,
    /// That module.
    pub module: ModuleHash,
    /// The state, as the module exported it.
    pub state: Vec<u8>,
}

impl Snapshot {
    fn header(&self) -> [u8; HEADER] {
        let mut header = [0; HEADER];
        header[..8].copy_from_slice(&SNAPSHOT_MAGIC);
        header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&self.state_version.to_le_bytes());
        header[16..24].copy_from_slice(&self.seq.to_le_bytes());
        header[24..56].copy_from_slice(&self.module.0);
        header[56..64].copy_from_slice(&(self.state.len() as u64).to_le_bytes());
        header
    }

    /// Reads a snapshot file's bytes, checking every field and the checksum.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
        if bytes.len() < HEADER + 4 || bytes[..8] != SNAPSHOT_MAGIC {
            return Err("it is not a snapshot (too short, or no snapshot magic)".into());
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let long = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if word(8) != SNAPSHOT_VERSION {
            return Err(format!(
                "its format version is {}, and this host reads {SNAPSHOT_VERSION}",
                word(8)
            ));
        }
        let len = long(56);
        if len != (bytes.len() - HEADER - 4) as u64 {
            return Err(format!(
                "it says it holds {len} bytes of state but holds {} (torn)",
                bytes.len() - HEADER - 4
            ));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err("its checksum does not match (corrupt)".into());
        }
        let module = ModuleHash(bytes[24..56].try_into().expect("32 bytes"));
        let state = body[HEADER..].to_vec();
        Ok(Snapshot {
            seq: long(16),
            state_version: word(12),
            module,
            state,
        })
    }
}

impl Snapshot {
    /// The whole file's bytes (a small state's; large ones are streamed by [`write()`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.header().to_vec();
        bytes.extend_from_slice(&self.state);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }
}

/// A snapshot file's path.
pub fn path(dir: &StateDir, seq: u64) -> PathBuf {
    dir.sub("snapshots").join(format!("{seq:020}.snap"))
}

/// The snapshots in the directory, oldest first.
pub fn list(dir: &StateDir) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.sub("snapshots"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let seq = name.strip_suffix(".snap")?.parse().ok()?;
            Some((seq, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Reads and checks one snapshot file.
pub fn read(path: &Path) -> Result<Snapshot, String> {
    let bytes = super::read_file(path, super::MAX_FILE).map_err(|e| format!("{e}"))?;
    Snapshot::decode(&bytes)
}

/// The newest snapshot that reads back whole; each one that does not is set aside. `None` when
/// there is no snapshot at all; an error when there are some but none is good (a fresh start
/// then would silently lose the state they held).
pub fn newest_good(dir: &StateDir) -> anyhow::Result<Option<Snapshot>> {
    let all = list(dir);
    for (_, path) in all.iter().rev() {
        match read(path) {
            Ok(snapshot) => return Ok(Some(snapshot)),
            Err(why) => dir.quarantine(path, &format!("is not a good snapshot: {why}")),
        }
    }
    if all.is_empty() {
        return Ok(None);
    }
    anyhow::bail!(
        "none of the {} snapshots in {} is good (each is set aside in quarantine/): put one \
         back to restore from it, or move the directory away to start fresh",
        all.len(),
        dir.root().display()
    )
}

/// Writes a snapshot durably (temporary file, `fsync`, rename, directory `fsync`), streaming
/// the state rather than copying it; returns the file.
pub fn write(dir: &StateDir, snapshot: &Snapshot) -> anyhow::Result<PathBuf> {
    let path = path(dir, snapshot.seq);
    let tmp = dir
        .sub("snapshots")
        .join(format!(".tmp-{:020}", snapshot.seq));
    let header = snapshot.header();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    crc.update(&snapshot.state);
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    (file.write_all(&header))
        .and_then(|()| file.write_all(&snapshot.state))
        .and_then(|()| file.write_all(&crc.finalize().to_le_bytes()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    sync_dir(&dir.sub("snapshots"))?;
    Ok(path)
}

/// What the snapshot writer has done, for `hotswap status`.
#[derive(Clone, Debug, Default)]
pub struct Written {
    /// The newest snapshot written: its sequence number, size and when.
    pub newest: Option<(u64, usize, Instant)>,
    /// How long writing it took.
    pub write_time: Duration,
    /// The last failure, if the last write failed.
    pub error: Option<String>,
}

/// A snapshot to write, and who waits for it.
pub struct Job {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// A snapshot that must be kept however many newer ones there are (the last swap's, for a
    /// rollback).
    pub pinned: Option<u64>,
    /// Told the file, or why it could not be written.
    pub done: Option<mpsc::Sender<Result<PathBuf, String>>>,
}

/// Writes snapshots on a thread of its own, keeps the newest `keep` (and the pinned one), and
/// drops the journal segments no kept snapshot needs.
pub fn spawn_writer(
    dir: Arc<StateDir>,
    keep: usize,
    written: Arc<Mutex<Written>>,
) -> anyhow::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("hotswap-snapshot".into())
        .spawn(move || {
            for job in rx {
                let started = Instant::now();
                let result = write(&dir, &job.snapshot).map_err(|e| format!("{e:#}"));
                let mut w = written.lock().unwrap_or_else(|e| e.into_inner());
                match &result {
                    Ok(_) => {
                        w.newest =
                            Some((job.snapshot.seq, job.snapshot.state.len(), Instant::now()));
                        w.write_time = started.elapsed();
                        w.error = None;
                        drop(w);
                        prune(&dir, keep, job.pinned);
                    }
                    Err(e) => {
                        crate::text::log(format_args!("cannot write a snapshot: {e}"));
                        w.error = Some(e.clone());
                    }
                }
                if let Some(done) = job.done {
                    let _ = done.send(result);
                }
            }
        })?;
    Ok(tx)
}

/// Deletes all but the newest `keep` snapshots (and the pinned one), once the newest reads back
/// good (so the only good one is never deleted), then the journal segments before the oldest
/// snapshot kept.
fn prune(dir: &StateDir, keep: usize, pinned: Option<u64>) {
    let all = list(dir);
    let Some((_, newest)) = all.last() else {
        return;
    };
    if read(newest).is_err() {
        return;
    }
    let cut = all.len().saturating_sub(keep.max(1));
    for (seq, path) in &all[..cut] {
        if Some(*seq) != pinned {
            let _ = std::fs::remove_file(path);
        }
    }
    let oldest = list(dir).first().map_or(0, |(seq, _)| *seq);
    super::journal::prune(dir, oldest);
}
