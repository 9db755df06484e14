//! The actor's side of persistence: what it does with the state directory as events pass
//! (journal each one and hold its reply until it is on disk, take snapshots when due, at swaps
//! and at a stop) and what it answers (`hotswap snapshot`, `hotswap rollback`, the status).

use super::StateDir;
use super::journal::{Entry, JournalWriter, Record, Release};
use super::restore::{LastSwap, inputs_between, roll_back};
use super::snapshot::{self, Job, Snapshot, Written};
use crate::actor::Input;
use crate::app::App;
use crate::compile::ModuleHash;
use crate::control::Response;
use crate::text::{bytes, format_duration};
use serde_json::json;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// When a snapshot is taken besides the fixed times (fresh start, swaps, stop, on request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Every {
    /// After this many events.
    Events(u64),
    /// After this long with events.
    Time(Duration),
}

/// How the app's state is kept.
#[derive(Clone, Debug)]
pub struct PersistOptions {
    /// The state directory.
    pub dir: PathBuf,
    /// Journal every event before its reply is released.
    pub durable: bool,
    /// Take a snapshot this often.
    pub every: Option<Every>,
    /// How many snapshots to keep (the last swap's is kept too, for a rollback).
    pub keep: usize,
}

/// Told where a snapshot went, or why it did not.
pub type Done = Box<dyn FnOnce(Result<PathBuf, String>) + Send>;

/// The state directory, as the actor uses it.
pub struct Keeper {
    dir: Arc<StateDir>,
    journal: Option<JournalWriter>,
    snapshots: mpsc::Sender<Job>,
    written: Arc<Mutex<Written>>,
    every: Option<Every>,
    since: (u64, Instant),
    /// The last journal record applied.
    seq: u64,
    last_swap: Option<LastSwap>,
}

impl Keeper {
    /// Starts the writers. `seq` is the last record the app's state includes.
    pub fn start(
        dir: Arc<StateDir>,
        options: &PersistOptions,
        seq: u64,
        last_swap: Option<LastSwap>,
    ) -> anyhow::Result<Keeper> {
        let written = Arc::new(Mutex::new(Written::default()));
        let snapshots = snapshot::spawn_writer(dir.clone(), options.keep, written.clone())?;
        let journal = match options.durable {
            true => Some(JournalWriter::start(dir.clone(), seq + 1)?),
            false => None,
        };
        let since = (0, Instant::now());
        Ok(Keeper {
            dir,
            journal,
            snapshots,
            written,
            every: options.every,
            since,
            seq,
            last_swap,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Arc<StateDir> {
        &self.dir
    }

    /// Whether events are journaled.
    pub fn durable(&self) -> bool {
        self.journal.is_some()
    }

    /// Before an event: record what the guest reads, if events are journaled.
    pub fn begin_input(&self, app: &App) {
        if self.journal.is_some() {
            app.runtime().tape().record();
        }
    }

    /// After an event: journal it and release its reply once it is on disk (at once without a
    /// journal); take a snapshot if one is due.
    pub fn end_input(&mut self, app: &mut App, input: Input, release: Release) {
        self.seq += 1;
        match &self.journal {
            Some(journal) => {
                let reads = app.runtime().tape().take();
                let entry = Entry {
                    seq: self.seq,
                    record: Record::Input { input, reads },
                };
                journal.append(&entry, release);
            }
            None => release_now(release),
        }
        self.since.0 += 1;
        let due = match self.every {
            Some(Every::Events(n)) => self.since.0 >= n,
            Some(Every::Time(period)) => self.since.1.elapsed() >= period,
            None => false,
        };
        if due {
            let _ = self.snapshot(app, None);
        }
    }

    /// After a committed swap from module `from`: journal it (releasing `release` once on disk),
    /// and snapshot the state the old version exported (with a journal: a rollback starts
    /// there) or the new version's (without one: a restore lands in the new version).
    pub fn swapped(&mut self, app: &mut App, from: (ModuleHash, u32), release: Release) {
        let to = app.module().hash;
        let kept = app.take_swapped_state();
        let Some(journal) = &self.journal else {
            self.seq += 1;
            release_now(release);
            let _ = self.snapshot(app, None);
            return;
        };
        let (module, state_version) = from;
        let rollback_base = kept.is_some();
        if let Some(state) = kept {
            let snapshot = Snapshot {
                seq: self.seq,
                state_version,
                module,
                state,
            };
            let pinned = Some(self.seq);
            let _ = self.snapshots.send(Job {
                snapshot,
                pinned,
                done: None,
            });
        }
        self.seq += 1;
        let record = Record::Swap {
            from: format!("{module:?}"),
            to: format!("{to:?}"),
        };
        journal.append(
            &Entry {
                seq: self.seq,
                record,
            },
            release,
        );
        self.last_swap = rollback_base.then_some(LastSwap {
            seq: self.seq,
            from: module,
        });
        if !rollback_base {
            // The old version's state was not kept (it should have been): the swap is
            // journaled all the same, so the records stay contiguous, and the new version's
            // state is snapshotted after it. This swap cannot be rolled back.
            crate::text::log(format_args!(
                "the state the old version exported was not kept: this swap cannot be rolled back"
            ));
            let _ = self.snapshot(app, None);
        }
    }

    /// Takes a snapshot of the state now (the export holds events; the write does not).
    pub fn snapshot(&mut self, app: &mut App, done: Option<Done>) -> Result<(), String> {
        self.since = (0, Instant::now());
        let state = match app.export_state() {
            Ok(state) => state,
            Err(e) => {
                let why = format!("cannot export the state for a snapshot: {e}");
                crate::text::log(format_args!("{why}"));
                if let Some(done) = done {
                    done(Err(why.clone()));
                }
                return Err(why);
            }
        };
        let snapshot = Snapshot {
            seq: self.seq,
            state_version: app.state_version(),
            module: app.module().hash,
            state,
        };
        let pinned = self.last_swap.as_ref().map(|s| s.seq - 1);
        let done = done.map(|done| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                done(
                    rx.recv()
                        .unwrap_or_else(|_| Err("the snapshot writer stopped".into())),
                )
            });
            tx
        });
        self.snapshots
            .send(Job {
                snapshot,
                pinned,
                done,
            })
            .map_err(|_| "the snapshot writer stopped".to_owned())
    }

    /// At a graceful stop: a last snapshot, written before this returns, and every journaled
    /// reply released.
    pub fn stop(&mut self, app: &mut App) {
        if let Some(journal) = &self.journal {
            journal.sync();
        }
        let (tx, rx) = mpsc::channel();
        let done: Done = Box::new(move |result| {
            let _ = tx.send(result);
        });
        if self.snapshot(app, Some(done)).is_ok() {
            let result = rx
                .recv()
                .unwrap_or_else(|_| Err("the snapshot writer stopped".into()));
            match result {
                Ok(path) => crate::text::log(format_args!(
                    "snapshot at record {}: {}",
                    self.seq,
                    path.display()
                )),
                Err(e) => crate::text::log(format_args!("the last snapshot failed: {e}")),
            }
        }
    }
}

impl Keeper {
    /// `hotswap rollback`: back to the module that ran before the last swap, with that swap's
    /// snapshot imported into it and every event since replayed through it (their replies
    /// discarded). Journaled, and `reply` answered once on disk; a snapshot follows.
    pub fn rollback(
        &mut self,
        app: &mut App,
        reply: Option<mpsc::Sender<Response>>,
    ) -> Result<(), String> {
        let Some(journal) = &self.journal else {
            return Err("a rollback replays the journal since the last swap, and this host keeps none: run it with --state-dir and --durable".into());
        };
        let Some(swap) = self.last_swap else {
            return Err("the journal holds no swap to roll back (since the last start, restore or rollback)".into());
        };
        let started = Instant::now();
        // Everything journaled so far is on disk once this returns, and nothing more is
        // appended until the rollback is: the journal can be read back whole.
        journal.sync();
        let entries = super::journal::read_all(&self.dir).map_err(|e| format!("{e:#}"))?;
        let replayed = inputs_between(&entries, swap.seq, self.seq + 1).count() as u64;
        let since = inputs_between(&entries, swap.seq, self.seq + 1);
        let mut rolled =
            roll_back(app.runtime(), &self.dir, &swap, since).map_err(|e| format!("{e:#}"))?;
        rolled.keep_swapped_states();
        let from = app.module().to_string();
        let old = std::mem::replace(app, rolled);
        let _ = std::thread::Builder::new()
            .name("hotswap-drop".into())
            .spawn(move || drop(old));
        self.seq += 1;
        let message = format!(
            "rolled back {from} → {}: the state from the swap at record {}, {} replayed, in {}",
            app.module(),
            swap.seq,
            crate::text::counted(replayed, "event"),
            format_duration(started.elapsed())
        );
        crate::text::log(format_args!("{message}"));
        let response = Response {
            ok: true,
            message,
            ..Response::default()
        };
        let release = reply.map_or(Release::Nothing, |reply| Release::Control(reply, response));
        journal.append(
            &Entry {
                seq: self.seq,
                record: Record::Rollback { swap: swap.seq },
            },
            release,
        );
        self.last_swap = None;
        let _ = self.snapshot(app, None);
        Ok(())
    }

    /// The journal writer's counters, when it keeps a journal (for the metrics).
    pub fn journal_counters(
        &self,
    ) -> Option<std::sync::Arc<std::sync::Mutex<super::journal::Synced>>> {
        self.journal.as_ref().map(|j| j.synced.clone())
    }

    /// A line and a JSON object about the state directory, for `hotswap status`.
    pub fn status(&self) -> (String, serde_json::Value) {
        let written = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let synced = self
            .journal
            .as_ref()
            .map(|j| j.synced.lock().unwrap_or_else(|e| e.into_inner()).clone());
        let snapshots = snapshot::list(&self.dir).len();
        let newest = written.newest.map(|(seq, len, at)| {
            json!({
                "seq": seq, "bytes": len, "age_s": at.elapsed().as_secs_f64(),
                "write_us": written.write_time.as_secs_f64() * 1e6,
            })
        });
        let mut line = format!(
            "state dir {}: {}",
            self.dir.root().display(),
            crate::text::counted(snapshots as u64, "snapshot")
        );
        if let Some((seq, len, at)) = written.newest {
            line += &format!(
                ", newest at record {seq} ({}, {:.0} s ago)",
                bytes(len),
                at.elapsed().as_secs_f64()
            );
        }
        if let Some(s) = &synced {
            line += &format!(
                ", journal at record {}, fsync {} (max {})",
                self.seq,
                format_duration(s.last_fsync),
                format_duration(s.max_fsync)
            );
        }
        let json = json!({
            "dir": self.dir.root(),
            "durable": self.durable(),
            "seq": self.seq,
            "snapshots": snapshots,
            "newest_snapshot": newest,
            "snapshot_error": written.error,
            "journal_records_since_snapshot": written.newest.map(|(seq, ..)| self.seq.saturating_sub(seq)),
            "fsyncs": synced.as_ref().map(|s| s.fsyncs),
            "fsync_last_us": synced.as_ref().map(|s| s.last_fsync.as_secs_f64() * 1e6),
            "fsync_max_us": synced.as_ref().map(|s| s.max_fsync.as_secs_f64() * 1e6),
            "journal_error": synced.and_then(|s| s.error),
            "rollback_to": self.last_swap.as_ref().map(|s| format!("{:?}", s.from)),
        });
        (line, json)
    }
}

fn release_now(release: Release) {
    let mut stdout = std::io::stdout().lock();
    let _ = release.release(&mut stdout);
    let _ = std::io::Write::flush(&mut stdout);
}
