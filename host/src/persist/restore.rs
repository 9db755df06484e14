//! Restoring an app from its state directory: the newest good snapshot imported into the module
//! that wrote it, then the journal after it replayed, each event through the code that handled
//! it (following the journaled swaps and rollbacks), with the clock and random reads recorded
//! for it. And the rollback of a swap, which is the same replay through the old code.

use super::StateDir;
use super::journal::{Entry, Record};
use super::snapshot::{self, Snapshot};
use crate::actor::Input;
use crate::app::App;
use crate::compile::ModuleHash;
use crate::guest::tape::Read;
use crate::runtime::Runtime;
use anyhow::Context as _;
use hotswap_abi::persist::{JOURNAL_MAGIC, JOURNAL_VERSION, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The last swap still in the journal, which a rollback undoes (the events since are read
/// back from the journal then, not kept in memory).
#[derive(Clone, Copy, Debug)]
pub struct LastSwap {
    /// The swap's record.
    pub seq: u64,
    /// The module swapped out.
    pub from: ModuleHash,
}

/// An app brought back from its state directory.
pub struct Restored {
    /// The app, in the module the journal ended in.
    pub app: App,
    /// The snapshot it began from.
    pub snapshot_seq: u64,
    /// The last journal record applied.
    pub seq: u64,
    /// Events replayed.
    pub replayed: u64,
    /// Events whose guest read other clock or random values on replay than were recorded.
    pub diverged: u64,
    /// Swaps and rollbacks replayed.
    pub swaps: u64,
    /// How long it took.
    pub took: Duration,
    /// The last swap (for `hotswap rollback`), when the journal has one after its snapshot.
    pub last_swap: Option<LastSwap>,
}

/// Brings the app back from `dir`: `None` if the directory holds no snapshot (a fresh start).
pub fn restore(runtime: &Arc<Runtime>, dir: &StateDir) -> anyhow::Result<Option<Restored>> {
    let started = Instant::now();
    refuse_newer_formats(dir)?;
    let entries = super::journal::read_all(dir)?;
    let Some(base) = snapshot::newest_good(dir)? else {
        if entries.is_empty() {
            return Ok(None);
        }
        anyhow::bail!(
            "{} has a journal but no good snapshot to replay it from (set aside in quarantine/): \
             start with an empty --state-dir, or put a good snapshot back",
            dir.root().display()
        );
    };
    let mut replay = Replay {
        app: resume(runtime, dir, &base)?,
        seq: base.seq,
        replayed: 0,
        diverged: 0,
        swaps: 0,
        last_swap: None,
    };
    for entry in entries.iter().filter(|e| e.seq > base.seq) {
        replay.apply(runtime, dir, entry, &entries)?;
    }
    let Replay {
        app,
        seq,
        replayed,
        diverged,
        swaps,
        last_swap,
    } = replay;
    let took = started.elapsed();
    Ok(Some(Restored {
        app,
        snapshot_seq: base.seq,
        seq,
        replayed,
        diverged,
        swaps,
        took,
        last_swap,
    }))
}

/// Refuses a directory that a newer host wrote to (a snapshot or journal format newer than
/// this host reads), before anything in it is touched: such files are not damaged, and setting
/// them aside would lose their state.
fn refuse_newer_formats(dir: &StateDir) -> anyhow::Result<()> {
    let snapshots = snapshot::list(dir)
        .into_iter()
        .map(|(_, path)| (path, SNAPSHOT_MAGIC, SNAPSHOT_VERSION));
    let segments = super::journal::segments(dir)
        .into_iter()
        .map(|(_, path)| (path, JOURNAL_MAGIC, JOURNAL_VERSION));
    for (path, magic, ours) in snapshots.chain(segments) {
        let mut header = [0; 12];
        // Only regular files: opening a FIFO would block.
        let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        let read = match regular {
            true => std::fs::File::open(&path).and_then(|mut f| f.read_exact(&mut header)),
            false => Err(std::io::ErrorKind::InvalidInput.into()),
        };
        let version = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        if read.is_ok() && header[..8] == magic && version > ours {
            anyhow::bail!(
                "{} is in format version {version}, written by a newer hotswap (this one reads \
                 {ours}): run that version or a newer one on {}; nothing in it was changed",
                path.display(),
                dir.root().display()
            );
        }
    }
    Ok(())
}

/// An app being brought forward through the journal.
struct Replay {
    app: App,
    seq: u64,
    replayed: u64,
    diverged: u64,
    swaps: u64,
    last_swap: Option<LastSwap>,
}

impl Replay {
    /// Applies `entry`, one of `all` (the whole journal: a rollback replays from its swap on).
    fn apply(
        &mut self,
        runtime: &Arc<Runtime>,
        dir: &StateDir,
        entry: &Entry,
        all: &[Entry],
    ) -> anyhow::Result<()> {
        if entry.seq != self.seq + 1 {
            anyhow::bail!(
                "the journal skips from record {} to {}",
                self.seq,
                entry.seq
            );
        }
        self.seq = entry.seq;
        match &entry.record {
            Record::Input { input, reads } => {
                if !deliver(&mut self.app, input, reads.clone()) {
                    self.diverged += 1;
                }
                self.replayed += 1;
            }
            Record::Swap { from, to } => {
                let (from, to) = (hash(from)?, hash(to)?);
                let prepared = runtime.prepare(&dir.module_name(&to), &dir.module(&to)?)?;
                self.app.swap(prepared).map_err(|e| {
                    anyhow::anyhow!("replaying the swap at record {}: {e}", entry.seq)
                })?;
                self.swaps += 1;
                self.last_swap = Some(LastSwap {
                    seq: entry.seq,
                    from,
                });
            }
            Record::Rollback { swap } => {
                // The swap may lie before the snapshot this restore began from: find it in the
                // journal (its segments are kept as long as its snapshot is).
                let from = all
                    .iter()
                    .find(|e| e.seq == *swap)
                    .and_then(|e| match &e.record {
                        Record::Swap { from, .. } => Some(from),
                        _ => None,
                    });
                let from = from.with_context(|| {
                    format!(
                        "the journal rolls back the swap at record {swap}, which it does not hold"
                    )
                })?;
                let last = LastSwap {
                    seq: *swap,
                    from: hash(from)?,
                };
                self.app = roll_back(runtime, dir, &last, inputs_between(all, *swap, entry.seq))?;
                self.last_swap = None;
                self.swaps += 1;
            }
        }
        Ok(())
    }
}

/// The app a rollback of `swap` gives: the swap's snapshot (the state the old version
/// exported) imported into the old module, and every event since replayed through it.
pub fn roll_back<'a>(
    runtime: &Arc<Runtime>,
    dir: &StateDir,
    swap: &LastSwap,
    since: impl Iterator<Item = (&'a Input, &'a [Read])>,
) -> anyhow::Result<App> {
    let path = snapshot::path(dir, swap.seq - 1);
    let base = snapshot::read(&path).map_err(|why| {
        anyhow::anyhow!(
            "the snapshot of the swap at record {} ({}) {why}",
            swap.seq,
            path.display()
        )
    })?;
    if base.module != swap.from {
        anyhow::bail!(
            "{} is not the state of the module the swap at record {} replaced",
            path.display(),
            swap.seq
        );
    }
    let mut app = resume(runtime, dir, &base)?;
    for (input, reads) in since {
        deliver(&mut app, input, reads.to_vec());
    }
    Ok(app)
}

/// The events journaled after record `after` and before record `before`.
pub fn inputs_between(
    all: &[Entry],
    after: u64,
    before: u64,
) -> impl Iterator<Item = (&Input, &[Read])> {
    all.iter()
        .filter(move |e| e.seq > after && e.seq < before)
        .filter_map(|e| match &e.record {
            Record::Input { input, reads } => Some((input, reads.as_slice())),
            _ => None,
        })
}

/// The snapshot's state imported into the module that wrote it.
fn resume(runtime: &Arc<Runtime>, dir: &StateDir, snapshot: &Snapshot) -> anyhow::Result<App> {
    let bytes = dir.module(&snapshot.module)?;
    let name = dir.module_name(&snapshot.module);
    let prepared = runtime.prepare(&name, &bytes)?;
    App::resume(
        runtime.clone(),
        prepared,
        &snapshot.state,
        snapshot.state_version,
    )
    .with_context(|| format!("cannot import snapshot {} into {}", snapshot.seq, name))
}

/// Replays one event, its reply discarded; whether the guest read what was recorded.
fn deliver(app: &mut App, input: &Input, reads: Vec<Read>) -> bool {
    app.runtime().tape().replay(reads);
    let _ = match input {
        Input::Message(bytes) => app.message_with(bytes, |_| ()),
        Input::Tick { now_ms } => app.tick(*now_ms),
        Input::Http(request) => app.http(request).map(drop),
    };
    app.runtime().tape().finish_replay()
}

fn hash(hex: &str) -> anyhow::Result<ModuleHash> {
    ModuleHash::from_hex(hex)
        .with_context(|| format!("the journal names a module {hex:?} that is no hash"))
}
