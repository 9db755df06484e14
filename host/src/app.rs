//! Step 4: the running app: its current instance, the events it handles, and swaps.
//!
//! Strategy: a swap has two halves. [`Runtime::prepare`] does everything that can happen while
//! the old version keeps serving (read, compile, check, instantiate, reserve and touch the input
//! buffer); it needs only `&Runtime`, so it runs on any thread. [`App::swap`] runs between two
//! events and does only what must happen while events wait: export the old state, which the old
//! instance streams in pieces straight into the new instance's input buffer (the one copy),
//! import it there, and commit. A failure at any step leaves the current
//! instance and its state untouched. After the commit, the old instance is dropped on another
//! thread, outside the pause.
//!
//! A call that traps (or times out, or breaks the ABI) may leave an instance mid-operation, so
//! after one the app moves its state into a fresh instance of the same module, the same way.

use crate::compile::{Compiled, display_name, read_module};
use crate::error::{CallError, SwapError};
use crate::guest::{Guest, StateSink};
use crate::runtime::Runtime;
use hotswap_abi::http;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

/// A new version, compiled, checked and instantiated, ready to take the state.
pub struct Prepared {
    compiled: Compiled,
    guest: Guest,
    prepare_time: Duration,
}

impl Prepared {
    /// The module.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The state version the new code writes.
    pub fn state_version(&self) -> u32 {
        self.guest.state_version()
    }

    /// Whether the new version serves HTTP (exports `hotswap_http`).
    pub fn serves_http(&self) -> bool {
        self.guest.serves_http()
    }

    /// The new instance's linear memory size, in bytes.
    pub fn memory_size(&self) -> usize {
        self.guest.memory_size()
    }

    /// Reserves and touches an input buffer of `len` bytes in the new instance, so that a state
    /// of up to that size is copied in without allocating or faulting in pages during the pause.
    pub fn reserve_state(&mut self, len: usize) -> Result<(), CallError> {
        self.guest.reserve_input(len)?;
        self.guest.touch_input();
        Ok(())
    }

    /// Grows the new instance's heap until its memory is about `memory` bytes, the size of the
    /// instance it replaces (from [`App::memory_watch`]), with the pages faulted in, so that
    /// decoding the state does not grow memory during the pause. Growing only to the old size,
    /// not by it, keeps memory from creeping up over many swaps. A no-op for a guest that does
    /// not export `hotswap_warm`.
    pub fn warm_heap(&mut self, memory: usize) -> Result<(), CallError> {
        let missing = memory.saturating_sub(self.guest.memory_size());
        self.guest.warm(missing)
    }
}

impl Runtime {
    /// Compiles (or takes from the cache), checks and instantiates module bytes. `name` is used
    /// in messages; a name ending in `.wat` allows WebAssembly text.
    pub fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Prepared, SwapError> {
        let started = Instant::now();
        let compiled = self.compile(name, bytes)?;
        let guest = Guest::instantiate(self, &compiled)?;
        self.remember(&compiled);
        Ok(Prepared {
            compiled,
            guest,
            prepare_time: started.elapsed(),
        })
    }

    /// [`Runtime::prepare`] for a module file.
    pub fn prepare_file(&self, path: &Path) -> Result<Prepared, SwapError> {
        self.prepare(&display_name(path), &read_module(path)?)
    }
}

/// Counters an operator can read.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events handled (messages and ticks), failed ones included.
    pub events: u64,
    /// Swaps committed.
    pub swaps: u64,
    /// Swaps refused.
    pub refused: u64,
    /// Times the state was moved into a fresh instance after a trap.
    pub recoveries: u64,
    /// The pause of the last committed swap.
    pub last_pause: Option<Duration>,
    /// Size of the state at the last swap.
    pub last_state_len: Option<usize>,
}

/// How long each phase of a swap's pause took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// The old instance encoding its state.
    pub export: Duration,
    /// Copying the state bytes into the new instance: the host's share. The pieces that the
    /// old instance streams are copied during its export (this counts them, not the export).
    pub copy: Duration,
    /// The new instance decoding (and migrating) the state.
    pub import: Duration,
    /// From the start of the export to the commit: how long events were held.
    pub pause: Duration,
}

/// A committed swap.
#[derive(Clone, Debug)]
pub struct SwapReport {
    /// The old module, `name@hash`.
    pub from: String,
    /// The new module, `name@hash`.
    pub to: String,
    /// The state version the old code wrote.
    pub from_state_version: u32,
    /// The state version the new code writes.
    pub to_state_version: u32,
    /// Bytes of state carried over.
    pub state_len: usize,
    /// Compile time (zero when the module came from the cache).
    pub compile_time: Duration,
    /// Whether the compiled module came from the cache.
    pub cached: bool,
    /// Compile + check + instantiate, before the pause.
    pub prepare_time: Duration,
    /// The pause and its phases.
    pub phases: Phases,
}

impl fmt::Display for SwapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let compile = if self.cached {
            "cached".to_owned()
        } else {
            format!("compile {}", format_duration(self.compile_time))
        };
        let p = &self.phases;
        write!(
            f,
            "swapped {} → {}: state v{} → v{}, {}, {compile}, pause {} (export {} + copy {} + import {})",
            self.from,
            self.to,
            self.from_state_version,
            self.to_state_version,
            bytes(self.state_len),
            format_duration(p.pause),
            format_duration(p.export),
            format_duration(p.copy),
            format_duration(p.import)
        )
    }
}

/// A refused swap: the old version is still running, with its state untouched.
#[derive(Debug)]
pub struct SwapRefused {
    /// What was attempted (`name@hash`, or the name when it never compiled).
    pub attempted: String,
    /// Why it was refused.
    pub error: SwapError,
    /// The version still running, `name@hash`.
    pub running: String,
    /// Its state version.
    pub state_version: u32,
    /// If the running instance was lost (it trapped while exporting): whether its state was
    /// moved into a fresh instance of the same version.
    pub recovery: Option<Result<(), SwapError>>,
}

impl fmt::Display for SwapRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "swap to {} refused: {}; still running {} (state v{})",
            self.attempted, self.error, self.running, self.state_version
        )?;
        recovery_note(&self.recovery, f)
    }
}

/// How a lost instance's recovery went, for messages.
fn recovery_note(
    recovery: &Option<Result<(), SwapError>>,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    match recovery {
        None => Ok(()),
        Some(Ok(())) => write!(f, " (the state was moved into a fresh instance)"),
        Some(Err(e)) => write!(
            f,
            " (the state could not be moved into a fresh instance: {e}; the instance keeps serving)"
        ),
    }
}

impl std::error::Error for SwapRefused {}

/// A failed event.
#[derive(Debug)]
pub struct EventError {
    /// What the call returned.
    pub error: CallError,
    /// If the instance was lost: whether its state was moved into a fresh instance.
    pub recovery: Option<Result<(), SwapError>>,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        recovery_note(&self.recovery, f)
    }
}

impl std::error::Error for EventError {}

/// One running app: the current version's instance, and the swaps that replace it.
pub struct App {
    runtime: Arc<Runtime>,
    compiled: Compiled,
    guest: Guest,
    stats: Stats,
    /// The current instance's memory size, kept up to date as it grows.
    memory: Arc<AtomicUsize>,
}

impl App {
    /// Starts a prepared module with a fresh state (`hotswap_start`).
    pub fn start(runtime: Arc<Runtime>, prepared: Prepared) -> Result<App, SwapError> {
        let Prepared {
            compiled,
            mut guest,
            ..
        } = prepared;
        guest.start().map_err(SwapError::Start)?;
        let memory = Arc::new(AtomicUsize::new(0));
        guest.watch_memory(memory.clone());
        Ok(App {
            runtime,
            compiled,
            guest,
            stats: Stats::default(),
            memory,
        })
    }

    /// The running module.
    pub fn module(&self) -> &Compiled {
        &self.compiled
    }

    /// The running code's state version.
    pub fn state_version(&self) -> u32 {
        self.guest.state_version()
    }

    /// The running instance's linear memory size, in bytes.
    pub fn memory_size(&self) -> usize {
        self.guest.memory_size()
    }

    /// The running instance's memory size in bytes, readable from any thread and kept current
    /// across swaps at no cost per event (the memory limiter updates it as memory grows). A
    /// preparing thread passes it to [`Prepared::warm_heap`].
    pub fn memory_watch(&self) -> Arc<AtomicUsize> {
        self.memory.clone()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The runtime the app runs in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Delivers a message and returns a copy of the reply.
    pub fn message(&mut self, input: &[u8]) -> Result<Vec<u8>, EventError> {
        self.message_with(input, <[u8]>::to_vec)
    }

    /// Delivers a message and hands the reply, still in guest memory, to `read`: no copy.
    pub fn message_with<R>(
        &mut self,
        input: &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, EventError> {
        self.stats.events += 1;
        match self.guest.message(input) {
            Ok(reply) => Ok(read(reply)),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Delivers a timer tick.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), EventError> {
        self.stats.events += 1;
        self.guest.tick(now_ms).map_err(|error| self.failed(error))
    }

    /// Whether the running version serves HTTP.
    pub fn serves_http(&self) -> bool {
        self.guest.serves_http()
    }

    /// Delivers an HTTP request and returns the app's response.
    pub fn http(&mut self, request: &http::Request) -> Result<http::Response, EventError> {
        self.stats.events += 1;
        let encoded = hotswap_msgpack::to_vec(request).map_err(|e| EventError {
            error: CallError::Failed(format!("cannot encode the request: {e}")),
            recovery: None,
        })?;
        let decoded = match self.guest.http(&encoded) {
            // The response comes from the guest: a malformed one breaks the ABI.
            Ok(bytes) => hotswap_msgpack::from_slice(bytes)
                .map_err(|e| CallError::Abi(format!("the HTTP response does not decode: {e}"))),
            Err(error) => Err(error),
        };
        decoded.map_err(|error| self.failed(error))
    }

    /// A copy of the current state as the running code exports it (what a swap would carry).
    /// An export that traps loses the instance, as any event would: the state moves into a
    /// fresh one.
    pub fn export_state(&mut self) -> Result<Vec<u8>, EventError> {
        let (sink, result) = self.guest.export_state(StateSink::in_host());
        match result {
            Ok(()) => Ok(sink.into_bytes()),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Swaps in a prepared version, carrying the state over. On refusal, the running version and
    /// its state are untouched (a trap in the old instance's export is recovered from as after
    /// any trap).
    pub fn swap(&mut self, prepared: Prepared) -> Result<SwapReport, Box<SwapRefused>> {
        let Prepared {
            compiled,
            guest,
            prepare_time,
        } = prepared;
        let from_state_version = self.guest.state_version();
        match transfer(&mut self.guest, guest) {
            Ok((guest, state_len, phases)) => {
                let report = SwapReport {
                    from: self.compiled.to_string(),
                    to: compiled.to_string(),
                    from_state_version,
                    to_state_version: guest.state_version(),
                    state_len,
                    compile_time: compiled.compile_time,
                    cached: compiled.cached,
                    prepare_time,
                    phases,
                };
                self.commit(compiled, guest);
                self.stats.swaps += 1;
                self.stats.last_pause = Some(phases.pause);
                self.stats.last_state_len = Some(state_len);
                Ok(report)
            }
            Err(error) => {
                let recovery = match &error {
                    // The old instance trapped mid-export: move its state to a fresh instance
                    // if it can still export it. Either way, the old version keeps serving.
                    SwapError::Export(e) if e.instance_lost() => Some(self.recover()),
                    _ => None,
                };
                let mut refused = self.refused(compiled.to_string(), error);
                refused.recovery = recovery;
                Err(Box::new(refused))
            }
        }
    }

    /// The refusal of a swap to `attempted`, counted.
    pub fn refused(&mut self, attempted: String, error: SwapError) -> SwapRefused {
        self.stats.refused += 1;
        SwapRefused {
            attempted,
            error,
            running: self.compiled.to_string(),
            state_version: self.state_version(),
            recovery: None,
        }
    }

    fn failed(&mut self, error: CallError) -> EventError {
        let recovery = error.instance_lost().then(|| self.recover());
        EventError { error, recovery }
    }

    /// Moves the state of a possibly damaged instance into a fresh instance of the same module.
    fn recover(&mut self) -> Result<(), SwapError> {
        let fresh = Guest::instantiate(&self.runtime, &self.compiled)?;
        let (fresh, ..) = transfer(&mut self.guest, fresh)?;
        self.commit(self.compiled.clone(), fresh);
        self.stats.recoveries += 1;
        Ok(())
    }

    fn commit(&mut self, compiled: Compiled, mut guest: Guest) {
        guest.watch_memory(self.memory.clone());
        self.compiled = compiled;
        dispose(std::mem::replace(&mut self.guest, guest));
    }
}

/// The pause of a swap: `old` exports its state straight into `new`'s input buffer, and `new`
/// imports it. On failure, `new` is dropped.
fn transfer(old: &mut Guest, new: Guest) -> Result<(Guest, usize, Phases), SwapError> {
    let version = old.state_version();
    let started = Instant::now();
    let (sink, exported) = old.export_state(StateSink::into_guest(new));
    let exported_at = Instant::now();
    if let Err(error) = exported {
        dispose(sink.into_target());
        return Err(SwapError::Export(error));
    }
    let streaming_copy = sink.copying();
    let (mut new, delivered) = sink.deliver();
    let result = delivered
        .map_err(SwapError::Transfer)
        .and_then(|state_len| {
            let copied = Instant::now();
            new.import_state(state_len, version)
                .map_err(SwapError::from_import)?;
            Ok((state_len, copied))
        });
    let (state_len, copied) = match result {
        Ok(done) => done,
        Err(error) => {
            dispose(new);
            return Err(error);
        }
    };
    let imported = Instant::now();
    let phases = Phases {
        export: (exported_at - started).saturating_sub(streaming_copy),
        copy: streaming_copy + (copied - exported_at),
        import: imported - copied,
        pause: imported - started,
    };
    Ok((new, state_len, phases))
}

/// Drops an instance (its whole `Store`) on another thread: freeing a large memory takes time.
fn dispose(guest: Guest) {
    // If the thread cannot start, the closure (and the instance) is dropped right here.
    let _ = std::thread::Builder::new()
        .name("hotswap-drop".into())
        .spawn(move || drop(guest));
}

/// A duration for people: µs below a millisecond, ms with two decimals above.
pub fn format_duration(d: Duration) -> String {
    match d.as_secs_f64() * 1e3 {
        ms if ms < 1.0 => format!("{:.0} µs", ms * 1e3),
        ms => format!("{ms:.2} ms"),
    }
}

/// A byte count in B, KiB or MiB.
pub(crate) fn bytes(n: usize) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
    }
}
