//! What a guest reads from outside while it handles an event, other than its input: WASI's
//! clocks and random source. While the app runs durably, every value read is recorded with the
//! event; when the event is replayed (a restore, a rollback), the same values are fed back in
//! the same order, so the event leaves the same state. Every instance of a runtime shares one
//! tape, so a swap or a recovery mid-stream changes nothing.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One value a guest read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Read {
    /// The wall clock, in nanoseconds since the Unix epoch.
    Wall(u64),
    /// The monotonic clock, in nanoseconds since the instance was made.
    Mono(u64),
    /// Random bytes.
    Random(hotswap_abi::http::Bytes),
}

#[derive(Default)]
enum Mode {
    /// Read the real sources, keep nothing.
    #[default]
    Live,
    /// Read the real sources and keep what was read.
    Record(Vec<Read>),
    /// Give back these values; `diverged` once the guest asked for something else.
    Replay {
        reads: VecDeque<Read>,
        diverged: bool,
    },
}

/// The tape every instance of a runtime reads its clocks and random bytes through. Only the
/// thread that started recording or replaying uses it: guest code run meanwhile on another
/// thread (a new version being instantiated and warmed in the background) reads the real
/// sources, so it can neither slip values into an event's record nor take them from a replay.
#[derive(Default)]
pub struct Tape(Mutex<(Mode, Option<ThreadId>)>);

/// The tape's mode, as seen from the thread that locked it.
struct Guard<'a>(std::sync::MutexGuard<'a, (Mode, Option<ThreadId>)>);

impl std::ops::Deref for Guard<'_> {
    type Target = Mode;
    fn deref(&self) -> &Mode {
        &self.0.0
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Mode {
        &mut self.0.0
    }
}

impl Tape {
    fn mode(&self) -> Guard<'_> {
        Guard(self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Switches to `mode`, owned by the calling thread.
    fn set(&self, mode: Mode) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            (mode, Some(std::thread::current().id()));
    }

    /// From now on, keep what is read.
    pub fn record(&self) {
        self.set(Mode::Record(Vec::new()));
    }

    /// What was read since [`Tape::record`]; the tape goes back to live.
    pub fn take(&self) -> Vec<Read> {
        match std::mem::take(&mut *self.mode()) {
            Mode::Record(reads) => reads,
            _ => Vec::new(),
        }
    }

    /// From now on, give back `reads`, in order.
    pub fn replay(&self, reads: Vec<Read>) {
        self.set(Mode::Replay {
            reads: reads.into(),
            diverged: false,
        });
    }

    /// Ends a replay; whether the guest read exactly what was recorded.
    pub fn finish_replay(&self) -> bool {
        match std::mem::take(&mut *self.mode()) {
            Mode::Replay { reads, diverged } => reads.is_empty() && !diverged,
            _ => true,
        }
    }

    /// Whether events are being replayed (then a guest's sleep returns at once).
    pub(crate) fn replaying(&self) -> bool {
        let guard = self.mode();
        guard.0.1 == Some(std::thread::current().id()) && matches!(*guard, Mode::Replay { .. })
    }

    /// A value from the tape when replaying (if it is the kind asked for), else `live()`,
    /// recorded when recording.
    fn read(&self, pick: impl Fn(&Read) -> bool, live: impl FnOnce() -> Read) -> Read {
        let mut mode = self.mode();
        if mode.0.1 != Some(std::thread::current().id()) {
            return live();
        }
        match &mut *mode {
            Mode::Live => live(),
            Mode::Record(reads) => {
                let read = live();
                reads.push(read.clone());
                read
            }
            Mode::Replay { reads, diverged } => match reads.front() {
                Some(read) if pick(read) => reads.pop_front().expect("just seen"),
                _ => {
                    *diverged = true;
                    live()
                }
            },
        }
    }
}

/// The wall clock, through the tape.
pub(crate) struct WallClock(pub(crate) Arc<Tape>);

impl wasmtime_wasi::HostWallClock for WallClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(1)
    }

    fn now(&self) -> std::time::Duration {
        let live = || {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Read::Wall(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX))
        };
        match self.0.read(|r| matches!(r, Read::Wall(_)), live) {
            Read::Wall(ns) => std::time::Duration::from_nanos(ns),
            _ => unreachable!("picked a wall-clock read"),
        }
    }
}

/// A guest's monotonic clock (nanoseconds since its instance was made), through the tape.
pub(crate) struct MonotonicClock(pub(crate) Arc<Tape>, pub(crate) Instant);

impl wasmtime_wasi::HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        let live = || Read::Mono(u64::try_from(self.1.elapsed().as_nanos()).unwrap_or(u64::MAX));
        match self.0.read(|r| matches!(r, Read::Mono(_)), live) {
            Read::Mono(ns) => ns,
            _ => unreachable!("picked a monotonic read"),
        }
    }
}

/// The random source (WASI's `random_get`), through the tape.
pub(crate) struct Random(
    pub(crate) Arc<Tape>,
    pub(crate) Box<dyn wasmtime_wasi::Rng + Send>,
);

impl rand_core::TryRng for Random {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let live = || {
            let mut bytes = vec![0; dst.len()];
            self.1.fill_bytes(&mut bytes);
            Read::Random(hotswap_abi::http::Bytes(bytes))
        };
        let len = dst.len();
        match self
            .0
            .read(|r| matches!(r, Read::Random(b) if b.0.len() == len), live)
        {
            Read::Random(bytes) => dst.copy_from_slice(&bytes.0),
            _ => unreachable!("picked random bytes of this length"),
        }
        Ok(())
    }
}
