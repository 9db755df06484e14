//! The machinery shared by every version of an app: the wasmtime engine, the linker, the limits,
//! the epoch ticker that enforces call time limits, and a cache of compiled modules by content
//! hash (in memory, and on disk with `--compile-cache`); and [`Runtime::prepare`], which turns
//! module bytes into a [`Prepared`] version.

use crate::check::check;
use crate::compile::{Compiled, ModuleHash, compile, display_name, read_module};
use crate::compile_cache::CompileCache;
use crate::error::{CallError, SwapError};
use crate::guest::mapping::Memories;
use crate::guest::tape::Tape;
use crate::guest::{Config, EPOCH_TICK, Guest, GuestCtx, Limits, Setup, linker};
use crate::in_place::{self, Ready, Statics};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wasmtime::{Engine, InstancePre, Linker, Module};

/// How many compiled modules the cache keeps (the most recently used).
const CACHE_CAPACITY: usize = 16;

/// A compiled module in the in-memory cache: its hash, its code and its statics.
type Cached = (ModuleHash, Module, Result<Statics, String>);

/// The engine, linker, limits and module cache shared by every instance of every version.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestCtx>,
    config: Config,
    limits: Arc<Limits>,
    tape: Arc<Tape>,
    /// Recently compiled modules, with what their static data claims (read once per module).
    cache: Mutex<Vec<Cached>>,
    /// Compiled modules on disk (`Config::compile_cache`), if usable.
    disk: Option<CompileCache>,
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
        // The host maps every linear memory itself, so that an in-place swap can hand one to
        // the next version (`guest::mapping`). Copy-on-write initialization needs wasmtime's
        // own mappings: data segments are copied instead (BENCHMARKS.md, "In place").
        engine_config.with_host_memory(Arc::new(Memories));
        engine_config.memory_init_cow(false);
        // For profiling guests: `HOTSWAP_PERFMAP=1 perf record ...` names compiled guest
        // functions in perf's reports.
        if std::env::var_os("HOTSWAP_PERFMAP").is_some() {
            engine_config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&engine_config)?;
        let limits = Arc::new(Limits::new(&config));
        let disk = config.compile_cache.as_ref().and_then(|dir| {
            CompileCache::open(dir, &engine)
                .map_err(|e| crate::text::log(format_args!("compile cache not used: {e}")))
                .ok()
        });
        Ok(Arc::new(Runtime {
            _ticker: EpochTicker::start(engine.clone(), limits.clone())?,
            linker: linker(&engine)?,
            engine,
            config,
            limits,
            tape: Arc::default(),
            cache: Mutex::new(Vec::new()),
            disk,
        }))
    }

    /// The capabilities every instance gets, and the limits it started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The limits in force (changeable while the app runs).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The tape every instance reads its clocks and random bytes through (recorded for a
    /// durable app, replayed on restore).
    pub fn tape(&self) -> &Tape {
        &self.tape
    }

    /// Compiles module bytes (binary, or WAT text when `name` ends in `.wat`), or takes them
    /// from the cache of recently compiled modules.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled, SwapError> {
        let hash = ModuleHash::of(bytes);
        let name = name.to_owned();
        let on_disk = || {
            let module = (self.disk.as_ref()?).load(&self.engine, &hash)?;
            Some((module, Statics::of(bytes)))
        };
        if let Some((module, statics)) = self.cached(&hash).or_else(on_disk) {
            let compile_time = Duration::ZERO;
            return Ok(Compiled {
                name,
                hash,
                module,
                compile_time,
                cached: true,
                statics,
            });
        }
        let started = Instant::now();
        let module = compile(&self.engine, &name, bytes)?;
        let compile_time = started.elapsed();
        let statics = Statics::of(bytes);
        if let Some(disk) = &self.disk
            && let Err(e) = disk.store(&hash, &module)
        {
            crate::text::log(format_args!("compile cache: {e}"));
        }
        Ok(Compiled {
            name,
            hash,
            module,
            compile_time,
            cached: false,
            statics,
        })
    }

    /// Compiles (or takes from the cache), checks and instantiates module bytes. `name` is used
    /// in messages; a name ending in `.wat` allows WebAssembly text.
    pub fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Prepared, SwapError> {
        let started = Instant::now();
        let compiled = self.compile(name, bytes)?;
        let pre = check(&self.linker, &compiled.module)?;
        let guest = Guest::instantiate(&self.setup(), &pre, &compiled)?;
        self.remember(&compiled);
        let in_place = self.ready_in_place(&compiled, &guest, &pre);
        let prepare_time = started.elapsed();
        Ok(Prepared {
            compiled,
            guest,
            in_place,
            prepare_time,
        })
    }

    /// A fresh instance of a module compiled before, ready to take a state (a trial's or a
    /// shadow run's throwaway instance: never readied to take a memory in place).
    pub fn prepare_compiled(&self, compiled: &Compiled) -> Result<Prepared, SwapError> {
        let started = Instant::now();
        let guest = self.instantiate(compiled)?;
        let in_place = Err("a trial's or shadow run's instance takes its state by value".into());
        Ok(Prepared {
            compiled: compiled.clone(),
            guest,
            in_place,
            prepare_time: started.elapsed(),
        })
    }

    /// [`Runtime::prepare`] for a module file.
    pub fn prepare_file(&self, path: &Path) -> Result<Prepared, SwapError> {
        let bytes = read_module(path, self.config.max_module)?;
        self.prepare(&display_name(path), &bytes)
    }

    /// Checks a compiled module and makes a new instance of it.
    pub(crate) fn instantiate(&self, compiled: &Compiled) -> Result<Guest, SwapError> {
        let pre = check(&self.linker, &compiled.module)?;
        Guest::instantiate(&self.setup(), &pre, compiled)
    }

    /// For a module whose instance `guest` keeps its state in place: what its in-place swap
    /// needs, made now rather than during the pause; or why it cannot have one.
    fn ready_in_place(
        &self,
        compiled: &Compiled,
        guest: &Guest,
        pre: &InstancePre<GuestCtx>,
    ) -> Result<Ready, String> {
        if guest.layout().is_none() {
            return Err("the new version does not keep its state in place".into());
        }
        let window = in_place::window(compiled).map_err(|e| format!("the new version: {e}"))?;
        let adopter = Guest::adopter(&self.setup(), pre, compiled).map_err(|e| e.to_string())?;
        Ok(Ready::new(adopter, window))
    }

    fn setup(&self) -> Setup<'_> {
        Setup {
            engine: &self.engine,
            config: &self.config,
            limits: &self.limits,
            tape: &self.tape,
        }
    }

    /// A compiled module from the cache, if these bytes were compiled before.
    fn cached(&self, hash: &ModuleHash) -> Option<(Module, Result<Statics, String>)> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let at = cache.iter().position(|(h, ..)| h == hash)?;
        let entry = cache.remove(at);
        let found = (entry.1.clone(), entry.2.clone());
        cache.insert(0, entry);
        Some(found)
    }

    /// Remembers a compiled module, evicting the least recently used beyond the capacity.
    fn remember(&self, compiled: &Compiled) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(h, ..)| *h != compiled.hash);
        let entry = (
            compiled.hash,
            compiled.module.clone(),
            compiled.statics.clone(),
        );
        cache.insert(0, entry);
        cache.truncate(CACHE_CAPACITY);
    }
}

/// A new version, compiled, checked and instantiated, ready to take the state.
pub struct Prepared {
    pub(crate) compiled: Compiled,
    pub(crate) guest: Guest,
    /// What an in-place swap to it needs, or why it cannot have one.
    pub(crate) in_place: Result<Ready, String>,
    pub(crate) prepare_time: Duration,
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

    /// The layout description of its state, if it keeps its state in place (see the ABI's
    /// "Keeping the state in place").
    pub fn layout(&self) -> Option<&str> {
        self.guest.layout()
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
    /// instance it replaces (from [`crate::App::memory_watch`]), with the pages faulted in, so
    /// that decoding the state does not grow memory during the pause. Growing only to the old
    /// size, not by it, keeps memory from creeping up over many swaps. A no-op for a guest that
    /// does not export `hotswap_warm`.
    pub fn warm_heap(&mut self, memory: usize) -> Result<(), CallError> {
        let missing = memory.saturating_sub(self.guest.memory_size());
        self.guest.warm(missing)
    }
}

/// A thread that advances the engine's epoch (and the host's count of it) every
/// [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, limits: Arc<Limits>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hotswap-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    limits.tick();
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
