//! The machinery shared by every version of an app: the wasmtime engine, the linker with WASI
//! preview 1 and the `hotswap` namespace, the epoch ticker that enforces call time limits, and a
//! cache of compiled modules by content hash.

use crate::compile::{Compiled, ModuleHash};
use crate::error::CallError;
use crate::guest::StateSink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::{Caller, Engine, Linker, Module, ResourceLimiter};
use wasmtime_wasi::p1::WasiP1Ctx;

/// How often the epoch advances: the granularity of call time limits.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How many compiled modules the cache keeps (the most recently used).
const CACHE_CAPACITY: usize = 16;

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
    /// The longest one call into a guest may run before it is interrupted.
    pub call_timeout: Duration,
    /// The most linear memory one instance may have, in bytes.
    pub max_memory: usize,
    /// Directories the guest may open.
    pub dirs: Vec<DirMapping>,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// Whether the guest's WASI stdout and stderr go to the host's.
    pub inherit_stdio: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            call_timeout: Duration::from_secs(10),
            max_memory: 2 << 30,
            dirs: Vec::new(),
            env: Vec::new(),
            inherit_stdio: true,
        }
    }
}

/// What each instance's `Store` holds.
pub(crate) struct GuestCtx {
    pub(crate) wasi: WasiP1Ctx,
    /// The most linear memory the instance may have, in bytes.
    pub(crate) max_memory: usize,
    /// Where the instance's memory size is published as it grows (see [`crate::App::memory_watch`]).
    pub(crate) memory_watch: Option<Arc<AtomicUsize>>,
    /// Where `hotswap.state_chunk` puts the state, during `hotswap_export_state` only.
    pub(crate) state_sink: Option<StateSink>,
}

/// The most elements a guest's table may have.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A guest tried to grow its memory past [`Config::max_memory`]: the growth traps with this.
#[derive(Debug)]
pub(crate) struct MemoryLimitExceeded;

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("memory limit exceeded")
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl ResourceLimiter for GuestCtx {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(wasmtime::Error::new(MemoryLimitExceeded));
        }
        if let Some(watch) = &self.memory_watch {
            watch.store(desired, Ordering::Relaxed);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A guest's explanation for the trap it is about to take (`hotswap.abort`).
#[derive(Debug)]
pub(crate) struct GuestAbort(pub(crate) String);

impl std::fmt::Display for GuestAbort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuestAbort {}

/// A host import refused a guest's call: the call traps with this, and fails with the error.
#[derive(Debug)]
pub(crate) struct HostRefusal(pub(crate) CallError);

impl std::fmt::Display for HostRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for HostRefusal {}

/// The engine, linker, limits and module cache shared by every instance of every version.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<GuestCtx>,
    pub(crate) config: Config,
    cache: Mutex<Vec<(ModuleHash, Module)>>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Creates the engine (with epoch interruption) and the linker.
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let mut engine_config = wasmtime::Config::new();
        engine_config.epoch_interruption(true);
        // Linear memories stay where they were first mapped (each reserves its whole 32-bit
        // range up front, so none needs to move to grow): `Guest` relies on it to reach guest
        // memory without a lookup per access.
        engine_config.memory_may_move(false);
        // For profiling guests: `HOTSWAP_PERFMAP=1 perf record ...` names compiled guest
        // functions in perf's reports (BENCHMARKS.md was profiled this way).
        if std::env::var_os("HOTSWAP_PERFMAP").is_some() {
            engine_config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&engine_config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx: &mut GuestCtx| &mut ctx.wasi)?;
        linker.func_wrap(
            hotswap_abi::HOST_MODULE,
            hotswap_abi::HOST_ABORT,
            |mut caller: Caller<'_, GuestCtx>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                let message = read_guest_string(&mut caller, ptr, len);
                Err(wasmtime::Error::new(GuestAbort(message)))
            },
        )?;
        linker.func_wrap(
            hotswap_abi::HOST_MODULE,
            hotswap_abi::HOST_STATE_CHUNK,
            crate::guest::state_chunk,
        )?;

        Ok(Arc::new(Runtime {
            _ticker: EpochTicker::start(engine.clone())?,
            engine,
            linker,
            config,
            cache: Mutex::new(Vec::new()),
        }))
    }

    /// The limits and capabilities every instance gets.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The epoch deadline, in ticks, that gives a call `call_timeout` to run.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.config.call_timeout.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
    }

    /// A compiled module from the cache, if these bytes were compiled before.
    pub(crate) fn cached(&self, hash: &ModuleHash) -> Option<Module> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let at = cache.iter().position(|(h, _)| h == hash)?;
        let entry = cache.remove(at);
        let module = entry.1.clone();
        cache.insert(0, entry);
        Some(module)
    }

    /// Remembers a compiled module, evicting the least recently used beyond the capacity.
    pub(crate) fn remember(&self, compiled: &Compiled) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(h, _)| *h != compiled.hash);
        cache.insert(0, (compiled.hash, compiled.module.clone()));
        cache.truncate(CACHE_CAPACITY);
    }
}

/// Reads a guest-supplied UTF-8 string, bounds-checked; a bad range yields a note instead.
fn read_guest_string(caller: &mut Caller<'_, GuestCtx>, ptr: i32, len: i32) -> String {
    let Some(memory) = caller
        .get_export(hotswap_abi::MEMORY)
        .and_then(|e| e.into_memory())
    else {
        return "(the guest has no memory export to read its message from)".into();
    };
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    match memory.data(&caller).get(start..start.saturating_add(len)) {
        Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        None => format!("(the guest's message at {start}+{len} lies outside its memory)"),
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hotswap-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
