//! What every instance is given: capabilities (directories, environment, where its output goes)
//! fixed at start, and limits (call time, memory) that an operator can change on a running host.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How often the epoch advances: the granularity of call time limits.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A host directory made visible to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirMapping {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
}

/// Limits and capabilities given to every instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// The longest one call into a guest may run before it is interrupted (its initial value:
    /// see [`Limits`]).
    pub call_timeout: Duration,
    /// The most linear memory one instance may have, in bytes (its initial value).
    pub max_memory: usize,
    /// Directories the guest may open.
    pub dirs: Vec<DirMapping>,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// Whether the guest's WASI stdout and stderr reach the host's stderr (each line prefixed
    /// `guest: ` and escaped); otherwise they are discarded.
    pub inherit_stdio: bool,
    /// The largest module file read, in bytes.
    pub max_module: u64,
    /// Where compiled modules are kept between runs (`--compile-cache`). None (the library's
    /// default; the CLI's is `~/.cache/hotswap`): each runtime compiles every module it has not
    /// compiled itself.
    pub compile_cache: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            call_timeout: Duration::from_secs(10),
            max_memory: 2 << 30,
            dirs: Vec::new(),
            env: Vec::new(),
            inherit_stdio: true,
            max_module: crate::compile::DEFAULT_MAX_MODULE,
            compile_cache: None,
        }
    }
}

/// The limits every instance is held to, shared by all of them and changeable while they run
/// (`hotswap limits`): a raised memory limit lets an app stuck at its limit grow again.
#[derive(Debug)]
pub struct Limits {
    call_timeout_us: AtomicU64,
    /// `call_timeout` in epoch ticks, kept beside it so that a call does not divide.
    call_ticks: AtomicU64,
    max_memory: AtomicUsize,
    /// The epoch as this host counts it (the ticker advances it with the engine's): lets a host
    /// import that blocks (a guest's sleep) see how much of its call's time is left.
    epoch: AtomicU64,
}

impl Limits {
    pub(crate) fn new(config: &Config) -> Limits {
        let limits = Limits {
            call_timeout_us: AtomicU64::new(0),
            call_ticks: AtomicU64::new(0),
            max_memory: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        };
        limits.set(Some(config.call_timeout), Some(config.max_memory));
        limits
    }

    /// The longest one call may run.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_micros(self.call_timeout_us.load(Ordering::Relaxed))
    }

    /// The most linear memory one instance may have, in bytes.
    pub fn max_memory(&self) -> usize {
        self.max_memory.load(Ordering::Relaxed)
    }

    /// Changes either limit; later calls and memory growth see the new value.
    pub fn set(&self, call_timeout: Option<Duration>, max_memory: Option<usize>) {
        if let Some(timeout) = call_timeout {
            let us = u64::try_from(timeout.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            self.call_timeout_us.store(us, Ordering::Relaxed);
            let ticks = Limits::ticks_for(Duration::from_micros(us));
            self.call_ticks.store(ticks, Ordering::Relaxed);
        }
        if let Some(bytes) = max_memory {
            self.max_memory.store(bytes, Ordering::Relaxed);
        }
    }

    /// The epoch deadline, in ticks, that gives a call the whole call timeout.
    #[inline]
    pub(crate) fn call_ticks(&self) -> u64 {
        self.call_ticks.load(Ordering::Relaxed)
    }

    /// The epoch deadline, in ticks, that gives a call at least `timeout` to run (the next
    /// tick may come at once, so one more than the ticks in `timeout`, rounded up).
    pub(crate) fn ticks_for(timeout: Duration) -> u64 {
        timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
    }

    /// The host's epoch count.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Advances the host's epoch count (the ticker, with the engine's).
    pub(crate) fn tick(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
}
