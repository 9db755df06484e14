//! `hotswap run`: one app and its events: stdin lines, timer ticks, and new versions from the
//! watcher, handled one at a time.
//!
//! Strategy: the calling thread owns the [`App`] and is its only user (an actor). Every source of
//! events is a thread that sends into one channel: the stdin reader, the ticker and the watcher.
//! The watcher compiles and instantiates a new version on its own thread while the app keeps
//! serving, and sends the prepared version as an event; the swap then happens between two events,
//! and events that arrive meanwhile wait in the channel. End of stdin ends the run.

use crate::app::{App, Prepared, ms};
use crate::compile::{ModuleHash, display_name};
use crate::error::SwapError;
use crate::runtime::Runtime;
use crate::watch::{Change, watch};
use anyhow::Context as _;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `hotswap run` does.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The app's module file.
    pub module: PathBuf,
    /// Swap in each new version written to the module file.
    pub watch: bool,
    /// Deliver a tick at this period.
    pub tick: Option<Duration>,
    /// How long the module file must be quiet before it is read.
    pub debounce: Duration,
}

/// The smallest input buffer a new version reserves before its swap: small states and the first
/// messages after the swap then need no allocation call.
const MIN_RESERVE: usize = 4096;

enum Event {
    Line(Vec<u8>),
    Tick,
    Swap(Box<Prepared>),
    Refused { attempted: String, error: SwapError },
    Eof,
}

/// Runs the app until stdin ends.
pub fn run(runtime: Arc<Runtime>, options: &RunOptions) -> anyhow::Result<()> {
    let path = &options.module;
    let name = display_name(path);
    let started = Instant::now();
    let prepared = runtime
        .prepare_file(path)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let mut app =
        App::start(runtime.clone(), prepared).with_context(|| format!("cannot start {name}"))?;
    log(format_args!(
        "running {} (state v{}), ready in {}",
        app.module(),
        app.state_version(),
        ms(started.elapsed())
    ));

    let (tx, rx) = mpsc::channel();
    spawn("hotswap-stdin", read_stdin(tx.clone()))?;
    // At most one tick waits in the queue: a slow app misses ticks rather than piling them up.
    let tick_queued = Arc::new(AtomicBool::new(false));
    if let Some(period) = options.tick {
        let (tx, queued) = (tx.clone(), tick_queued.clone());
        spawn("hotswap-tick", move || {
            loop {
                if !queued.swap(true, Ordering::AcqRel) && tx.send(Event::Tick).is_err() {
                    return;
                }
                std::thread::sleep(period);
            }
        })?;
    }
    // The size of the last state carried over: new versions reserve that much before the pause.
    let state_hint = Arc::new(AtomicUsize::new(0));
    let _watcher = if options.watch {
        let on_change = prepare_changes(
            runtime.clone(),
            name.clone(),
            state_hint.clone(),
            tx.clone(),
        );
        let watcher = watch(path, app.module().hash, options.debounce, on_change)?;
        log(format_args!("watching {} for new versions", path.display()));
        Some(watcher)
    } else {
        None
    };
    drop(tx);

    let stdout = std::io::stdout();
    for event in rx {
        match event {
            Event::Line(line) => {
                let reply = match app.message(&line) {
                    Ok(reply) => reply,
                    Err(e) => {
                        log(format_args!("message failed: {e}"));
                        format!("error: {e}").into_bytes()
                    }
                };
                let mut out = stdout.lock();
                out.write_all(&reply)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush())?;
            }
            Event::Tick => {
                tick_queued.store(false, Ordering::Release);
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if let Err(e) = app.tick(now_ms) {
                    log(format_args!("tick failed: {e}"));
                }
            }
            Event::Swap(prepared) => match app.swap(*prepared) {
                Ok(report) => {
                    state_hint.store(report.state_len, Ordering::Relaxed);
                    log(format_args!("{report}"));
                }
                Err(refused) => log(format_args!("{refused}")),
            },
            Event::Refused { attempted, error } => {
                log(format_args!("{}", app.refused(attempted, error)))
            }
            Event::Eof => break,
        }
    }
    let stats = app.stats();
    log(format_args!(
        "stdin closed; stopping after {} events, {} swaps, {} refused",
        stats.events, stats.swaps, stats.refused
    ));
    Ok(())
}

/// The host's own log line, on stderr.
fn log(message: std::fmt::Arguments<'_>) {
    eprintln!("hotswap: {message}");
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("cannot start thread {name}"))?;
    Ok(())
}

/// Sends each stdin line (without its line ending) as a message, then `Eof`.
fn read_stdin(tx: mpsc::Sender<Event>) -> impl FnOnce() + Send + 'static {
    move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if tx.send(Event::Line(line.clone())).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log(format_args!("cannot read stdin: {e}"));
                    break;
                }
            }
        }
        let _ = tx.send(Event::Eof);
    }
}

/// The watcher's callback: prepare each new content off the app's thread and send it on.
fn prepare_changes(
    runtime: Arc<Runtime>,
    name: String,
    state_hint: Arc<AtomicUsize>,
    tx: mpsc::Sender<Event>,
) -> impl FnMut(Change) + Send + 'static {
    move |change| {
        let bytes = match change {
            Change::Content(bytes) => bytes,
            Change::Error(message) => return log(format_args!("{message}")),
        };
        let attempted = format!("{name}@{}", ModuleHash::of(&bytes));
        log(format_args!(
            "{attempted}: new version written; compiling and checking"
        ));
        let event = match runtime.prepare(&name, &bytes) {
            Ok(mut prepared) => {
                // Best effort: if the guest cannot reserve now, the swap reserves during the pause.
                let _ = prepared.reserve_state(state_hint.load(Ordering::Relaxed).max(MIN_RESERVE));
                let c = prepared.compiled();
                let how = if c.cached {
                    "cached".to_owned()
                } else {
                    format!("compiled in {}", ms(c.compile_time))
                };
                log(format_args!(
                    "{attempted}: {how}, checked; swapping at the next event boundary"
                ));
                Event::Swap(Box::new(prepared))
            }
            Err(error) => Event::Refused { attempted, error },
        };
        let _ = tx.send(event);
    }
}
