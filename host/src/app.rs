//! Step 4: the running app: its current instance, the events it handles, and swaps.
//!
//! Strategy: a swap has two halves. [`Runtime::prepare`] does everything that can happen while
//! the old version keeps serving (read, compile, check, instantiate, reserve and touch the input
//! buffer); it needs only `&Runtime`, so it runs on any thread. [`App::swap`] runs between two
//! events and does only what must happen while events wait: export the old state, which the old
//! instance streams in pieces straight into the new instance's input buffer (the one copy),
//! import it there, have the new instance prove it can export it again, and commit. A failure
//! at any step leaves the current instance and its state untouched. After the commit, the old
//! instance is dropped on another thread, outside the pause.
//!
//! Time: every call has `--timeout`, and one step never holds events longer than that: a swap's
//! pause shares one `--timeout` among its calls, and an event that fails shares what is left of
//! its own with the recovery after it.
//!
//! A call that traps (or times out, or breaks the ABI) may leave an instance mid-operation, so
//! after one the app moves its state into a fresh instance of the same module, the same way.

use crate::compile::Compiled;
use crate::error::{CallError, SwapError};
use crate::guest::{Guest, StateSink};
use crate::in_place;
use crate::report::{EventError, Phases, Recovery, Stats, SwapPath, SwapRefused, SwapReport};
use crate::runtime::{Prepared, Runtime};
use hotswap_abi::http;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

/// One running app: the current version's instance, and the swaps that replace it.
pub struct App {
    runtime: Arc<Runtime>,
    compiled: Compiled,
    guest: Guest,
    stats: Stats,
    /// The current instance's memory size, kept up to date as it grows.
    memory: Arc<AtomicUsize>,
    /// Whether a swap keeps a copy of the state the old version exported.
    keep_swapped: bool,
    /// That copy, from the last swap.
    swapped_state: Option<Vec<u8>>,
}

impl App {
    /// Starts a prepared module with a fresh state (`hotswap_start`).
    pub fn start(runtime: Arc<Runtime>, prepared: Prepared) -> Result<App, SwapError> {
        App::begin(runtime, prepared, |guest| {
            guest.start().map_err(SwapError::Start)
        })
    }

    /// Starts a prepared module with state it exported before (a snapshot), written by
    /// `version`.
    pub fn resume(
        runtime: Arc<Runtime>,
        prepared: Prepared,
        state: &[u8],
        version: u32,
    ) -> Result<App, SwapError> {
        App::begin(runtime, prepared, |guest| {
            guest
                .import_bytes(state, version)
                .map_err(SwapError::from_import)
        })
    }

    fn begin(
        runtime: Arc<Runtime>,
        prepared: Prepared,
        init: impl FnOnce(&mut Guest) -> Result<(), SwapError>,
    ) -> Result<App, SwapError> {
        let Prepared {
            compiled,
            mut guest,
            ..
        } = prepared;
        init(&mut guest)?;
        let memory = Arc::new(AtomicUsize::new(0));
        guest.watch_memory(memory.clone());
        let stats = Stats::default();
        Ok(App {
            runtime,
            compiled,
            guest,
            stats,
            memory,
            keep_swapped: false,
            swapped_state: None,
        })
    }

    /// From now on, every swap keeps a copy of the state the old version exported (for a
    /// snapshot), to be taken with [`App::take_swapped_state`].
    pub fn keep_swapped_states(&mut self) {
        self.keep_swapped = true;
    }

    /// The state the old version exported at the last swap, if kept and not taken yet.
    pub fn take_swapped_state(&mut self) -> Option<Vec<u8>> {
        self.swapped_state.take()
    }

    /// The running module.
    pub fn module(&self) -> &Compiled {
        &self.compiled
    }

    /// The running code's state version.
    pub fn state_version(&self) -> u32 {
        self.guest.state_version()
    }

    /// The layout description of the running version's state, if it keeps it in place (see the
    /// ABI's "Keeping the state in place").
    pub fn layout(&self) -> Option<&str> {
        self.guest.layout()
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
    /// An export that fails loses the instance, as any event would.
    pub fn export_state(&mut self) -> Result<Vec<u8>, EventError> {
        let (sink, result) = self.guest.export_state(StateSink::in_host());
        match result {
            Ok(()) => Ok(sink.into_bytes()),
            Err(error) => Err(self.failed(error)),
        }
    }

    /// Swaps in a prepared version, carrying the state over. On refusal, the running version and
    /// its state are untouched (a failure in the old instance's export is recovered from as
    /// after any failure, within the same time budget).
    pub fn swap(&mut self, prepared: Prepared) -> Result<SwapReport, Box<SwapRefused>> {
        let Prepared {
            compiled,
            guest,
            in_place: ready,
            prepare_time,
        } = prepared;
        let from_state_version = self.guest.state_version();
        let (running, new) = (from_state_version, guest.state_version());
        if new < running {
            let error = SwapError::Downgrade { running, new };
            return Err(Box::new(self.refused(compiled.to_string(), error)));
        }
        let budget = Instant::now() + self.runtime.limits().call_timeout();
        let path = in_place::path(
            (&self.compiled, &self.guest),
            (&guest, &ready),
            self.keep_swapped,
            self.stats.damaged.is_some(),
        );
        // In place, the prepared instance only described its layout: it goes with the old one.
        let (moved, unused) = match (path, ready) {
            (Ok(()), Ok(ready)) => (self.swap_in_place(ready, &guest, budget), Some(guest)),
            (Err(reason), _) | (_, Err(reason)) => {
                (self.swap_by_value(guest, budget, reason), None)
            }
        };
        match moved {
            Ok((guest, state_len, phases, path)) => {
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
                    path,
                };
                self.commit_dropping(compiled, guest, unused);
                self.stats.swaps += 1;
                self.stats.last_pause = Some(phases.pause);
                if state_len > 0 {
                    self.stats.last_state_len = Some(state_len);
                }
                Ok(report)
            }
            Err(error) => {
                // The old instance failed mid-export: move its state to a fresh instance if the
                // pause's budget allows. Either way, the old version keeps serving.
                let recovery = match &error {
                    SwapError::Export(e) if e.instance_lost() => Some(self.recover(budget, e)),
                    _ => None,
                };
                let mut refused = self.refused(compiled.to_string(), error);
                refused.recovery = recovery;
                if let Some(unused) = unused {
                    dispose(unused);
                }
                Err(Box::new(refused))
            }
        }
    }

    /// The in-place pause: the fresh instance `new` (which described its layout) is not used;
    /// another instance of its module, readied before the pause, takes over the running
    /// memory. On failure the running instance and its memory are as they were, and the swap
    /// is refused.
    fn swap_in_place(
        &mut self,
        ready: in_place::Ready,
        new: &Guest,
        budget: Instant,
    ) -> Result<Moved, SwapError> {
        let started = Instant::now();
        let layout = new.layout().unwrap_or_default();
        let (guest, timing) = in_place::swap(&self.guest, ready, layout, budget)?;
        let phases = Phases {
            pause: started.elapsed(),
            ..Phases::default()
        };
        Ok((guest, 0, phases, SwapPath::InPlace(timing)))
    }

    /// The by-value pause (`transfer`), keeping a copy of the state for a snapshot if asked.
    fn swap_by_value(
        &mut self,
        new: Guest,
        budget: Instant,
        reason: String,
    ) -> Result<Moved, SwapError> {
        // Sized from the last swap, so that keeping the copy does not reallocate in the pause.
        let last_len = self.stats.last_state_len.unwrap_or(0);
        self.swapped_state = self.keep_swapped.then(|| Vec::with_capacity(last_len));
        let (guest, state_len, phases) =
            transfer(&mut self.guest, new, budget, &mut self.swapped_state)?;
        Ok((guest, state_len, phases, SwapPath::ByValue(reason)))
    }

    /// Commits `other`'s instance in place of the running one, with the state it holds: a swap
    /// with no export and no import. For a shadow run's app, which imported a copy of this
    /// app's state and has handled every event since, as this one has.
    pub fn adopt(&mut self, other: App) -> SwapReport {
        let started = Instant::now();
        let from = self.compiled.to_string();
        let from_state_version = self.guest.state_version();
        let App {
            compiled, guest, ..
        } = other;
        let to = compiled.to_string();
        let (compile_time, cached) = (compiled.compile_time, compiled.cached);
        self.commit(compiled, guest);
        let pause = started.elapsed();
        self.stats.swaps += 1;
        self.stats.last_pause = Some(pause);
        SwapReport {
            from,
            to,
            from_state_version,
            to_state_version: self.guest.state_version(),
            state_len: 0,
            compile_time,
            cached,
            prepare_time: std::time::Duration::ZERO,
            phases: Phases {
                pause,
                ..Phases::default()
            },
            path: SwapPath::ShadowState,
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

    /// A failed event; a lost instance is recovered within what is left of the event's time.
    fn failed(&mut self, error: CallError) -> EventError {
        let budget = Instant::now() + self.guest.time_left();
        let recovery = error.instance_lost().then(|| self.recover(budget, &error));
        EventError { error, recovery }
    }

    /// Moves the state of a possibly damaged instance into a fresh instance of the same module,
    /// if there is time left before `budget`.
    fn recover(&mut self, budget: Instant, cause: &CallError) -> Recovery {
        let recovery = if budget <= Instant::now() {
            Recovery::NoTimeLeft
        } else {
            let moved = self.runtime.instantiate(&self.compiled).and_then(|fresh| {
                let (fresh, ..) = transfer(&mut self.guest, fresh, budget, &mut None)?;
                self.commit(self.compiled.clone(), fresh);
                Ok(())
            });
            match moved {
                Ok(()) => Recovery::Moved,
                Err(e) => Recovery::Failed(e),
            }
        };
        match &recovery {
            Recovery::Moved => self.stats.recoveries += 1,
            _ => self.stats.damaged = Some(cause.to_string()),
        }
        recovery
    }

    fn commit(&mut self, compiled: Compiled, guest: Guest) {
        self.commit_dropping(compiled, guest, None);
    }

    /// [`App::commit`], dropping `unused` with the old instance.
    fn commit_dropping(&mut self, compiled: Compiled, mut guest: Guest, unused: Option<Guest>) {
        guest.watch_memory(self.memory.clone());
        self.compiled = compiled;
        self.stats.damaged = None;
        dispose((std::mem::replace(&mut self.guest, guest), unused));
    }
}

/// The pause of a swap: `old` exports its state straight into `new`'s input buffer, `new`
/// imports it and proves it can export it again; every call ends by `budget`. On failure, `new`
/// is dropped. When `keep` holds a buffer, it receives a copy of the state as `old` exported it.
fn transfer(
    old: &mut Guest,
    mut new: Guest,
    budget: Instant,
    keep: &mut Option<Vec<u8>>,
) -> Result<(Guest, usize, Phases), SwapError> {
    old.set_budget(Some(budget));
    new.set_budget(Some(budget));
    let started = Instant::now();
    let sink = StateSink::into_guest(new);
    let sink = match keep.take() {
        Some(buffer) => sink.keeping(buffer),
        None => sink,
    };
    let (mut sink, exported) = old.export_state(sink);
    *keep = sink.take_kept();
    old.set_budget(None);
    let exported_at = Instant::now();
    if let Err(error) = exported {
        dispose(sink.into_target());
        return Err(SwapError::Export(error));
    }
    let streaming_copy = sink.copying();
    let (mut new, delivered) = sink.deliver();
    let mut times = [Instant::now(); 2];
    let result = delivered
        .map_err(SwapError::Transfer)
        .and_then(|state_len| {
            times[0] = Instant::now();
            new.import_state(state_len, old.state_version())
                .map_err(SwapError::from_import)?;
            times[1] = Instant::now();
            new.export_state(StateSink::discard())
                .1
                .map_err(SwapError::Verify)?;
            Ok(state_len)
        });
    new.set_budget(None);
    let state_len = match result {
        Ok(len) => len,
        Err(error) => {
            dispose(new);
            return Err(error);
        }
    };
    let [copied, imported] = times;
    let verified = Instant::now();
    let phases = Phases {
        export: (exported_at - started).saturating_sub(streaming_copy),
        copy: streaming_copy + (copied - exported_at),
        import: imported - copied,
        verify: verified - imported,
        pause: verified - started,
    };
    Ok((new, state_len, phases))
}

/// What a swap's pause hands the commit: the new instance, the state's size (0 in place), the
/// phases' times and how the state crossed.
type Moved = (Guest, usize, Phases, SwapPath);

/// Drops instances (their whole `Store`s) on another thread: freeing a large memory takes time.
fn dispose<T: Send + 'static>(guests: T) {
    // If the thread cannot start, the closure (and the instances) is dropped right here.
    let _ = std::thread::Builder::new()
        .name("hotswap-drop".into())
        .spawn(move || drop(guests));
}
