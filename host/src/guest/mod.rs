//! Step 3: one instance of a guest module, in its own `Store`, and the ABI's calls into it.
//!
//! Every call gets a fresh epoch deadline (deadlines stay expired after a trap), every address
//! and length the guest hands back is bounds-checked, every text it returns is escaped, and
//! every failure becomes a one-line [`CallError`].

mod ctx;
mod limits;
pub(crate) mod mapping;
mod memory;
mod sink;
mod stdio;
pub mod tape;
mod trap;
mod wasi;

pub(crate) use ctx::{GuestCtx, linker};
pub(crate) use limits::EPOCH_TICK;
pub use limits::{Config, DirMapping, Limits};
pub(crate) use sink::StateSink;

use crate::compile::Compiled;
use crate::error::{CallError, CheckError, SwapError};
use crate::text::guest_text;
use hotswap_abi::{self as abi, OUTPUT_DESCRIPTOR_LEN, STATUS_ERROR, STATUS_OK};
use memory::LinearMemory;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use wasmtime::{Engine, InstancePre, Store, TypedFunc, WasmParams, WasmResults};
use wasmtime_wasi::WasiCtxBuilder;

/// The longest layout description kept, in bytes (the SDK's are a few KiB: one line per type,
/// at most 1,024 types).
const MAX_LAYOUT: usize = 1 << 20;

/// Memory left unwarmed below the limit: allocators grow by more than they are asked for.
const WARM_MARGIN: usize = 4 << 20;

/// The ABI's exports, looked up once.
struct Exports {
    reserve: TypedFunc<i32, i32>,
    start: TypedFunc<(), i32>,
    import_state: TypedFunc<(i32, i32), i32>,
    export_state: TypedFunc<(), i32>,
    message: TypedFunc<i32, i32>,
    tick: TypedFunc<i64, i32>,
    /// Only apps that serve HTTP export it.
    http: Option<TypedFunc<i32, i32>>,
    /// Optional.
    warm: Option<TypedFunc<i32, ()>>,
    /// Only apps that keep their state in place export it (with `hotswap_layout`).
    adopt: Option<TypedFunc<(), i32>>,
}

/// What an instance is made with.
pub(crate) struct Setup<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) config: &'a Config,
    pub(crate) limits: &'a Arc<Limits>,
    pub(crate) tape: &'a Arc<tape::Tape>,
}

/// A `Store` and a checked module, made before an in-place swap's pause, to be instantiated on
/// the running memory during it.
pub(crate) struct Adopter {
    store: Store<GuestCtx>,
    pre: InstancePre<GuestCtx>,
    limits: Arc<Limits>,
}

impl Adopter {
    /// Instantiates the module on `mapping` (the running instance's memory), every call ending
    /// by `budget`. It is not asked for its layout (that call would allocate in the adopted
    /// heap): a fresh instance of the same module described it.
    pub(crate) fn instantiate(
        self,
        mapping: Arc<mapping::Mapping>,
        budget: Instant,
    ) -> Result<Guest, SwapError> {
        let adopt = Some(mapping);
        Guest::finish(self.store, &self.pre, &self.limits, adopt, Some(budget)).map(|(g, _)| g)
    }
}

/// A live instance of a guest module.
pub struct Guest {
    store: Store<GuestCtx>,
    memory: LinearMemory,
    exports: Exports,
    /// Address of the output descriptor.
    descriptor: usize,
    /// The input buffer last reserved: address and capacity.
    input: (usize, usize),
    state_version: u32,
    /// The layout description of a state kept in place (`hotswap_layout`), if the app keeps
    /// it there.
    layout: Option<Box<str>>,
    /// The exported linear memory's mapping, shared with the instance that adopts it.
    mapping: Option<Arc<mapping::Mapping>>,
    limits: Arc<Limits>,
    /// When set, every call must end by then, whatever the call limit: the calls of one step
    /// (a swap's pause, an event and its recovery) share one `--timeout`.
    budget: Option<Instant>,
}

impl Guest {
    /// Instantiates a checked module in a new `Store`, runs `_initialize`, checks the ABI
    /// version, reads the state version and the output descriptor's address, and asks an app
    /// that keeps its state in place for its layout description.
    pub(crate) fn instantiate(
        setup: &Setup<'_>,
        pre: &InstancePre<GuestCtx>,
        compiled: &Compiled,
    ) -> Result<Guest, SwapError> {
        let store = Store::new(setup.engine, context(setup, compiled)?);
        let (mut guest, instance) = Guest::finish(store, pre, setup.limits, None, None)?;
        guest.query_layout(&instance)?;
        Ok(guest)
    }

    /// What [`Adopter::instantiate`] needs, made before a swap's pause: a `Store` with its
    /// context.
    pub(crate) fn adopter(
        setup: &Setup<'_>,
        pre: &InstancePre<GuestCtx>,
        compiled: &Compiled,
    ) -> Result<Adopter, SwapError> {
        Ok(Adopter {
            store: Store::new(setup.engine, context(setup, compiled)?),
            pre: pre.clone(),
            limits: setup.limits.clone(),
        })
    }

    /// Instantiates in `store`, on a fresh memory or on `adopt`, and runs `initialize`; every
    /// call (the start function's too) ends by `budget` when there is one.
    fn finish(
        mut store: Store<GuestCtx>,
        pre: &InstancePre<GuestCtx>,
        limits: &Arc<Limits>,
        adopt: Option<Arc<mapping::Mapping>>,
        budget: Option<Instant>,
    ) -> Result<(Guest, wasmtime::Instance), SwapError> {
        store.limiter(|ctx| ctx);
        let ticks = match budget {
            None => limits.call_ticks(),
            Some(until) => Limits::ticks_for(until.saturating_duration_since(Instant::now())),
        };
        store.set_epoch_deadline(ticks);
        store.data_mut().deadline_epoch = limits.epoch() + ticks;
        let adopting = adopt.map(mapping::adopting);
        let instantiated = pre.instantiate(&mut store);
        let mapping = mapping::take_created();
        drop(adopting);
        let instance = instantiated.map_err(|e| {
            let error = trap::classify(e, limits);
            let step = match error {
                CallError::MemoryLimit { .. } => "instantiation",
                _ => "its start function",
            };
            SwapError::Initialize { step, error }
        })?;
        let memory = instance
            .get_memory(&mut store, abi::MEMORY)
            .ok_or(CheckError::NoMemory)?;
        // The mapping of the exported memory (a module with several has none here: it cannot
        // take part in an in-place swap).
        let mapping = mapping.filter(|m| m.base() == memory.data_ptr(&store));
        let exports = exports(&instance, &mut store)?;
        let memory = LinearMemory::new(memory, &store)?;
        let mut guest = Guest {
            store,
            memory,
            exports,
            descriptor: 0,
            input: (0, 0),
            state_version: 0,
            layout: None,
            mapping,
            limits: limits.clone(),
            budget,
        };
        guest.initialize(&instance)?;
        Ok((guest, instance))
    }

    /// `_initialize`, then the ABI's queries, each checked.
    fn initialize(&mut self, instance: &wasmtime::Instance) -> Result<(), SwapError> {
        let store = &mut self.store;
        let query = |store: &mut Store<GuestCtx>, export: abi::Export| {
            instance
                .get_typed_func::<(), i32>(store, export.name)
                .map_err(|_| CheckError::MissingExport(export.name))
        };
        let initialize = instance
            .get_typed_func::<(), ()>(&mut *store, abi::INITIALIZE)
            .ok();
        let abi_version = query(store, abi::ABI_VERSION_FN)?;
        let state_version = query(store, abi::STATE_VERSION_FN)?;
        let output = query(store, abi::OUTPUT_FN)?;
        let step = |step: &'static str| move |error| SwapError::Initialize { step, error };
        if let Some(initialize) = initialize {
            self.call_func(&initialize, ())
                .map_err(step("`_initialize`"))?;
        }
        let found = self
            .call_func(&abi_version, ())
            .map_err(step("`hotswap_abi_version`"))?;
        if found != abi::ABI_VERSION as i32 {
            let expected = abi::ABI_VERSION;
            return Err(CheckError::AbiVersion { found, expected }.into());
        }
        let version = self
            .call_func(&state_version, ())
            .map_err(step("`hotswap_state_version`"))?;
        self.state_version =
            u32::try_from(version).map_err(|_| CheckError::StateVersion(version))?;
        let descriptor = self
            .call_func(&output, ())
            .map_err(step("`hotswap_output`"))?;
        self.descriptor = descriptor as u32 as usize;
        self.output_bytes().map_err(step("`hotswap_output`"))?;
        Ok(())
    }

    /// Asks an app that keeps its state in place (it exports `hotswap_layout` and
    /// `hotswap_adopt`) for its layout description.
    fn query_layout(&mut self, instance: &wasmtime::Instance) -> Result<(), SwapError> {
        let layout = instance.get_typed_func::<(), i32>(&mut self.store, abi::LAYOUT_FN.name);
        let (Ok(layout), Some(_)) = (layout, &self.exports.adopt) else {
            return Ok(());
        };
        let step = |error| SwapError::Initialize {
            step: "`hotswap_layout`",
            error,
        };
        let status = self.call_func(&layout, ()).map_err(step)?;
        // A description the guest could not write (an error status) or that is not text makes
        // the app one that does not keep its state in place; a broken call is an error.
        let text = match self.output(status) {
            Ok(text) => text,
            Err(CallError::Failed(_)) => return Ok(()),
            Err(broken) => return Err(step(broken)),
        };
        // A description too long to be one (a hostile guest's) is not kept either.
        if text.len() <= MAX_LAYOUT
            && let Ok(text) = std::str::from_utf8(text)
        {
            self.layout = Some(text.into());
        }
        Ok(())
    }

    /// The layout description of the state, if the app keeps it in place.
    pub(crate) fn layout(&self) -> Option<&str> {
        self.layout.as_deref()
    }

    /// The mapping of the instance's exported linear memory.
    pub(crate) fn mapping(&self) -> Option<&Arc<mapping::Mapping>> {
        self.mapping.as_ref()
    }

    /// Takes over the state kept in place in the adopted memory (`hotswap_adopt`); `layout`
    /// is the one this code described before (on a fresh instance).
    pub(crate) fn adopt(&mut self, layout: &str) -> Result<(), CallError> {
        let Some(adopt) = self.exports.adopt.clone() else {
            return Err(CallError::Failed(
                "the module does not export `hotswap_adopt`".into(),
            ));
        };
        let status = self.call_func(&adopt, ())?;
        self.output(status)?;
        self.layout = Some(layout.into());
        Ok(())
    }

    /// The memory limit in force, in bytes.
    pub(crate) fn memory_limit(&self) -> usize {
        self.limits.max_memory()
    }

    /// The state version this code writes.
    pub fn state_version(&self) -> u32 {
        self.state_version
    }

    /// The instance's current linear memory size in bytes.
    pub fn memory_size(&self) -> usize {
        self.memory.memory.data_size(&self.store)
    }

    /// Publishes the memory size to `watch` from now on, as the memory grows.
    pub(crate) fn watch_memory(&mut self, watch: Arc<AtomicUsize>) {
        watch.store(self.memory_size(), Ordering::Relaxed);
        self.store.data_mut().memory_watch = Some(watch);
    }

    /// How much time the last call had left when it ended (none after a timeout).
    pub(crate) fn time_left(&self) -> std::time::Duration {
        let ctx = self.store.data();
        let ticks = ctx.deadline_epoch.saturating_sub(ctx.limits.epoch());
        EPOCH_TICK * u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// Makes every later call end by `until` (the step's shared budget), or lifts that.
    pub(crate) fn set_budget(&mut self, until: Option<Instant>) {
        self.budget = until;
    }

    /// Grows the guest's heap by about `bytes`, faulted in (`hotswap_warm`, if exported), keeping
    /// within the memory limit. Used before a swap's pause.
    pub fn warm(&mut self, bytes: usize) -> Result<(), CallError> {
        // Leave room for the allocator's own rounding: reaching the limit would trap.
        let room = (self.limits.max_memory())
            .saturating_sub(self.memory_size())
            .saturating_sub(WARM_MARGIN);
        let bytes = bytes.min(room).min(i32::MAX as usize);
        if bytes == 0 || self.exports.warm.is_none() {
            return Ok(());
        }
        self.call(|e| e.warm.as_ref().expect("checked above"), bytes as i32)
    }

    /// Fresh start: `hotswap_start`.
    pub fn start(&mut self) -> Result<(), CallError> {
        let status = self.call(|e| &e.start, ())?;
        self.output(status).map(drop)
    }

    /// Delivers a message; returns the reply, which lives in guest memory until the next call.
    pub fn message(&mut self, input: &[u8]) -> Result<&[u8], CallError> {
        let len = self.write_input(input)?;
        let status = self.call(|e| &e.message, len)?;
        self.output(status)
    }

    /// Whether the module exports `hotswap_http`.
    pub fn serves_http(&self) -> bool {
        self.exports.http.is_some()
    }

    /// Delivers an encoded HTTP request; returns the encoded response.
    pub fn http(&mut self, request: &[u8]) -> Result<&[u8], CallError> {
        if self.exports.http.is_none() {
            return Err(CallError::Failed("this version does not serve HTTP".into()));
        }
        let len = self.write_input(request)?;
        let status = self.call(|e| e.http.as_ref().expect("checked above"), len)?;
        self.output(status)
    }

    /// Delivers a timer tick.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), CallError> {
        let status = self.call(|e| &e.tick, now_ms as i64)?;
        self.output(status).map(drop)
    }

    /// Exports the state into `sink`: the pieces the guest hands over during the call
    /// (`hotswap.state_chunk`), then its output. The sink comes back whatever happened.
    pub(crate) fn export_state(&mut self, sink: StateSink) -> (StateSink, Result<(), CallError>) {
        self.store.data_mut().state_sink = Some(sink);
        let result = self.call(|e| &e.export_state, ());
        let mut sink = (self.store.data_mut().state_sink.take()).expect("put there above");
        let limit = self.limits.max_memory();
        let result = result.and_then(|status| sink.append(self.output(status)?, limit));
        (sink, result)
    }

    /// Imports the state that the swap delivered into the input buffer, written by
    /// `version`.
    pub fn import_state(&mut self, len: usize, version: u32) -> Result<(), CallError> {
        let status = self.call(|e| &e.import_state, (len as i32, version as i32))?;
        self.output(status).map(drop)
    }

    /// Imports state bytes held by the host (a snapshot), written by `version`.
    pub(crate) fn import_bytes(&mut self, state: &[u8], version: u32) -> Result<(), CallError> {
        self.write_input(state)?;
        self.import_state(state.len(), version)
    }

    /// Makes sure the input buffer holds at least `len` bytes, so that a later input of that
    /// size needs no allocation (used to prepare a new instance before a swap's pause).
    #[inline]
    pub fn reserve_input(&mut self, len: usize) -> Result<(), CallError> {
        if len <= self.input.1 {
            return Ok(());
        }
        self.grow_input(len)
    }

    /// [`Guest::reserve_input`] when the buffer is too small: a call into the guest.
    #[cold]
    fn grow_input(&mut self, len: usize) -> Result<(), CallError> {
        let len32 = u32::try_from(len).map_err(|_| {
            CallError::Abi(format!(
                "an input of {len} bytes does not fit in 32-bit memory"
            ))
        })?;
        let ptr = self.call(|e| &e.reserve, len32 as i32)? as u32 as usize;
        if ptr == 0 {
            return Err(CallError::Failed(format!(
                "the guest could not allocate {len} bytes for its input"
            )));
        }
        self.bytes_mut(ptr, len, "the input buffer from hotswap_reserve")?;
        self.input = (ptr, len);
        Ok(())
    }

    /// Writes zeros over the whole input buffer, so its pages are faulted in now rather than
    /// during the copy.
    pub(crate) fn touch_input(&mut self) {
        if let Ok(input) = self.input_mut(self.input.1) {
            input.fill(0);
        }
    }

    /// The first `len` bytes of the input buffer, which must hold them.
    #[inline]
    fn input_mut(&mut self, len: usize) -> Result<&mut [u8], CallError> {
        debug_assert!(len <= self.input.1);
        self.bytes_mut(self.input.0, len, "the input buffer")
    }

    /// Writes an input into the input buffer, reserving a larger one first if needed.
    #[inline]
    fn write_input(&mut self, input: &[u8]) -> Result<i32, CallError> {
        self.reserve_input(input.len())?;
        self.input_mut(input.len())?.copy_from_slice(input);
        Ok(input.len() as i32)
    }

    /// Guest memory `at..at + len`, or an ABI error naming `what` if that lies outside it.
    #[inline]
    fn bytes(&mut self, at: usize, len: usize, what: &str) -> Result<&[u8], CallError> {
        let start = self.memory.span(&self.store, at, len, what)?;
        // SAFETY: `span` proved `at..at + len` lies in the memory, and the slice borrows
        // `self`, so no call into the guest (the only other writer) can happen while it lives.
        Ok(unsafe { std::slice::from_raw_parts(start.as_ptr(), len) })
    }

    /// [`Guest::bytes`], writable.
    #[inline]
    fn bytes_mut(&mut self, at: usize, len: usize, what: &str) -> Result<&mut [u8], CallError> {
        let start = self.memory.span(&self.store, at, len, what)?;
        // SAFETY: as in `bytes`; the slice borrows `self` mutably, so it is the only reference
        // into the memory while it lives.
        Ok(unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), len) })
    }

    /// The output that the output descriptor describes, bounds-checked.
    #[inline]
    fn output_bytes(&mut self) -> Result<&[u8], CallError> {
        let d = self.bytes(
            self.descriptor,
            OUTPUT_DESCRIPTOR_LEN,
            "the output descriptor",
        )?;
        let ptr = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize;
        let len = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
        self.bytes(ptr, len, "the output")
    }

    /// Reads the output descriptor and returns the output for a status.
    #[inline]
    fn output(&mut self, status: i32) -> Result<&[u8], CallError> {
        let bytes = self.output_bytes()?;
        match status {
            STATUS_OK => Ok(bytes),
            STATUS_ERROR => Err(CallError::Failed(guest_text(bytes))),
            other => Err(CallError::Abi(format!("unknown status code {other}"))),
        }
    }

    /// Calls one of the ABI's exports with a fresh deadline and classifies any failure.
    #[inline]
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        pick: impl FnOnce(&Exports) -> &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        self.arm_deadline();
        let result = pick(&self.exports).call(&mut self.store, params);
        result.map_err(|e| trap::classify(e, &self.limits))
    }

    /// [`Guest::call`] for a function that is not kept in [`Exports`].
    fn call_func<P: WasmParams, R: WasmResults>(
        &mut self,
        func: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        self.arm_deadline();
        let result = func.call(&mut self.store, params);
        result.map_err(|e| trap::classify(e, &self.limits))
    }

    /// Sets the next call's deadline: the call limit, or what is left of the step's budget.
    #[inline]
    fn arm_deadline(&mut self) {
        let ticks = match self.budget {
            None => self.limits.call_ticks(),
            Some(until) => Limits::ticks_for(until.saturating_duration_since(Instant::now())),
        };
        self.store.set_epoch_deadline(ticks);
        let ctx = self.store.data_mut();
        ctx.deadline_epoch = ctx.limits.epoch() + ticks;
    }
}

/// A new instance's context: WASI (its directories, environment, clocks and output) and the
/// limits.
fn context(setup: &Setup<'_>, compiled: &Compiled) -> Result<GuestCtx, SwapError> {
    let config = setup.config;
    let mut wasi = WasiCtxBuilder::new();
    let clock_base = Instant::now();
    let tape = setup.tape.clone();
    wasi.arg(&compiled.name)
        .envs(&config.env)
        .wall_clock(tape::WallClock(tape.clone()))
        .monotonic_clock(tape::MonotonicClock(tape.clone(), clock_base))
        .secure_random(tape::Random(tape.clone(), wasmtime_wasi::thread_rng()));
    if config.inherit_stdio {
        let output = stdio::GuestOutput::default();
        wasi.stdout(output.clone()).stderr(output);
    }
    for dir in &config.dirs {
        wasi.preopened_dir(&dir.host, &dir.guest, wasmtime_wasi::FsPerms::ReadWrite)
            .map_err(|e| {
                SwapError::Instantiate(format!("cannot open --dir {}: {e:#}", dir.host.display()))
            })?;
    }
    Ok(GuestCtx {
        wasi: wasi.build_p1(),
        limits: setup.limits.clone(),
        memory_watch: None,
        state_sink: None,
        deadline_epoch: 0,
        clock_base,
        tape,
    })
}

/// Looks up the ABI's exports, which the checks have proven exist with these signatures.
fn exports(
    instance: &wasmtime::Instance,
    store: &mut Store<GuestCtx>,
) -> Result<Exports, SwapError> {
    macro_rules! func {
        ($export:expr) => {
            instance
                .get_typed_func(&mut *store, $export.name)
                .map_err(|_| CheckError::MissingExport($export.name))?
        };
    }
    Ok(Exports {
        reserve: func!(abi::RESERVE_FN),
        start: func!(abi::START_FN),
        import_state: func!(abi::IMPORT_STATE_FN),
        export_state: func!(abi::EXPORT_STATE_FN),
        message: func!(abi::MESSAGE_FN),
        tick: func!(abi::TICK_FN),
        // Checked to have the right signature if present.
        http: instance.get_typed_func(&mut *store, abi::HTTP_FN.name).ok(),
        warm: instance.get_typed_func(&mut *store, abi::WARM_FN.name).ok(),
        adopt: instance
            .get_typed_func(&mut *store, abi::ADOPT_FN.name)
            .ok(),
    })
}
