//! Step 3: one instance of a guest module, in its own `Store`, and the ABI's calls into it.
//!
//! Every call gets a fresh epoch deadline (deadlines stay expired after a trap), every address
//! and length the guest hands back is bounds-checked, and every failure becomes a [`CallError`].

use crate::compile::Compiled;
use crate::error::{CallError, CheckError, SwapError};
use crate::runtime::{GuestAbort, GuestCtx, HostRefusal, MemoryLimitExceeded, Runtime};
use hotswap_abi::{self as abi, OUTPUT_DESCRIPTOR_LEN, STATUS_ERROR, STATUS_OK};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Caller, Extern, Memory, Store, Trap, TypedFunc, WasmParams, WasmResults};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

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
    deadline_ticks: u64,
    call_timeout: Duration,
    max_memory: usize,
}

impl Guest {
    /// Instantiates a checked module in a new `Store`, runs `_initialize`, checks the ABI
    /// version and reads the state version and the output descriptor's address.
    pub(crate) fn instantiate(runtime: &Runtime, compiled: &Compiled) -> Result<Guest, SwapError> {
        let pre = runtime.check(&compiled.module)?;
        let config = &runtime.config;
        let mut wasi = WasiCtxBuilder::new();
        wasi.arg(&compiled.name).envs(&config.env);
        if config.inherit_stdio {
            wasi.inherit_stdout().inherit_stderr();
        }
        for dir in &config.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| {
                    SwapError::Instantiate(format!(
                        "cannot open --dir {}: {e:#}",
                        dir.host.display()
                    ))
                })?;
        }
        let ctx = GuestCtx {
            wasi: wasi.build_p1(),
            max_memory: config.max_memory,
            memory_watch: None,
            state_sink: None,
        };
        let mut store = Store::new(&runtime.engine, ctx);
        store.limiter(|ctx| ctx);
        let deadline_ticks = runtime.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);

        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| SwapError::Instantiate(format!("{e:#}")))?;
        let memory = instance
            .get_memory(&mut store, abi::MEMORY)
            .ok_or(CheckError::NoMemory)?;
        // The checks have proven each export exists with this signature.
        let typed = |store: &mut Store<GuestCtx>, name: &str| instance.get_func(&mut *store, name);
        macro_rules! func {
            ($export:expr) => {
                typed(&mut store, $export.name)
                    .ok_or(CheckError::MissingExport($export.name))?
                    .typed(&store)
                    .map_err(|e| SwapError::Instantiate(format!("{e:#}")))?
            };
        }
        let abi_version: TypedFunc<(), i32> = func!(abi::ABI_VERSION_FN);
        let state_version: TypedFunc<(), i32> = func!(abi::STATE_VERSION_FN);
        let output: TypedFunc<(), i32> = func!(abi::OUTPUT_FN);
        // Checked to have the right signature if present.
        let http = instance
            .get_typed_func::<i32, i32>(&mut store, abi::HTTP_FN.name)
            .ok();
        let warm = instance
            .get_typed_func::<i32, ()>(&mut store, abi::WARM_FN.name)
            .ok();
        let exports = Exports {
            reserve: func!(abi::RESERVE_FN),
            start: func!(abi::START_FN),
            import_state: func!(abi::IMPORT_STATE_FN),
            export_state: func!(abi::EXPORT_STATE_FN),
            message: func!(abi::MESSAGE_FN),
            tick: func!(abi::TICK_FN),
            http,
            warm,
        };
        let initialize = instance
            .get_typed_func::<(), ()>(&mut store, abi::INITIALIZE)
            .ok();

        let memory = LinearMemory::new(memory, &store)?;
        let mut guest = Guest {
            store,
            memory,
            exports,
            descriptor: 0,
            input: (0, 0),
            state_version: 0,
            deadline_ticks,
            call_timeout: config.call_timeout,
            max_memory: config.max_memory,
        };
        if let Some(initialize) = initialize {
            guest
                .call_func(&initialize, ())
                .map_err(SwapError::Initialize)?;
        }
        let found = guest
            .call_func(&abi_version, ())
            .map_err(SwapError::Initialize)?;
        if found != abi::ABI_VERSION as i32 {
            return Err(CheckError::AbiVersion {
                found,
                expected: abi::ABI_VERSION,
            }
            .into());
        }
        guest.state_version = guest
            .call_func(&state_version, ())
            .map_err(SwapError::Initialize)? as u32;
        guest.descriptor = guest
            .call_func(&output, ())
            .map_err(SwapError::Initialize)? as u32 as usize;
        guest.output_bytes().map_err(SwapError::Initialize)?;
        Ok(guest)
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

    /// Grows the guest's heap by about `bytes`, faulted in (`hotswap_warm`, if exported), keeping
    /// within the memory limit. Used before a swap's pause.
    pub fn warm(&mut self, bytes: usize) -> Result<(), CallError> {
        // Leave room for the allocator's own rounding: reaching the limit would trap.
        let room = self
            .max_memory
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
        let limit = self.max_memory;
        let result = result.and_then(|status| sink.append(self.output(status)?, limit));
        (sink, result)
    }

    /// Imports the state that [`Guest::receive_state`] copied in, written by `version`.
    pub fn import_state(&mut self, len: usize, version: u32) -> Result<(), CallError> {
        let status = self.call(|e| &e.import_state, (len as i32, version as i32))?;
        self.output(status).map(drop)
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
            STATUS_ERROR => Err(CallError::Failed(
                String::from_utf8_lossy(bytes).into_owned(),
            )),
            other => Err(CallError::Abi(format!("unknown status code {other}"))),
        }
    }

    /// Calls one of the ABI's exports with a fresh deadline and classifies any failure.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        pick: impl FnOnce(&Exports) -> &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = pick(&self.exports).call(&mut self.store, params);
        result.map_err(|e| self.classify(e))
    }

    /// [`Guest::call`] for a function that is not kept in [`Exports`].
    fn call_func<P: WasmParams, R: WasmResults>(
        &mut self,
        func: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, CallError> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = func.call(&mut self.store, params);
        result.map_err(|e| self.classify(e))
    }

    fn classify(&self, error: wasmtime::Error) -> CallError {
        if let Some(HostRefusal(error)) = error.downcast_ref::<HostRefusal>() {
            return error.clone();
        }
        if let Some(GuestAbort(message)) = error.downcast_ref::<GuestAbort>() {
            return CallError::Panic(message.clone());
        }
        if error.downcast_ref::<MemoryLimitExceeded>().is_some() {
            return CallError::MemoryLimit(self.max_memory);
        }
        if let Some(I32Exit(code)) = error.downcast_ref::<I32Exit>() {
            return CallError::Exit(*code);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return CallError::Timeout(self.call_timeout),
            Some(trap) => {
                let place = error
                    .downcast_ref::<wasmtime::WasmBacktrace>()
                    .and_then(|bt| {
                        bt.frames()
                            .first()
                            .and_then(|f| f.func_name().map(str::to_owned))
                    })
                    .map(|name| format!(" in `{name}`"))
                    .unwrap_or_default();
                return CallError::Trap(format!("{trap}{place}"));
            }
            None => {}
        }
        CallError::Trap(format!("{error:#}"))
    }
}

/// Where an exported state goes: straight into the input buffer of the instance that will
/// import it while it fits there (the one copy of a swap), and into host memory after that, or
/// all of it when there is no such instance (`hotswap state`).
pub(crate) struct StateSink {
    /// The importing instance, and how much of its input buffer the state fills so far.
    target: Option<(Box<Guest>, usize)>,
    /// What did not fit in the target's input buffer, or the whole state without a target.
    spill: Vec<u8>,
    /// Time spent copying pieces in: the host's share of the export.
    copying: Duration,
}

impl StateSink {
    /// A sink that fills `guest`'s input buffer (reserved and touched before the pause).
    pub(crate) fn into_guest(guest: Guest) -> StateSink {
        StateSink {
            target: Some((Box::new(guest), 0)),
            spill: Vec::new(),
            copying: Duration::ZERO,
        }
    }

    /// A sink that keeps the state in host memory.
    pub(crate) fn in_host() -> StateSink {
        StateSink {
            target: None,
            spill: Vec::new(),
            copying: Duration::ZERO,
        }
    }

    /// Appends one piece of the state, which may not take the state past `limit` bytes.
    fn append(&mut self, piece: &[u8], limit: usize) -> Result<(), CallError> {
        let started = Instant::now();
        let result = self.copy_in(piece, limit);
        self.copying += started.elapsed();
        result
    }

    fn copy_in(&mut self, piece: &[u8], limit: usize) -> Result<(), CallError> {
        let written = self.target.as_ref().map_or(0, |(_, written)| *written);
        if written + self.spill.len() + piece.len() > limit {
            return Err(CallError::MemoryLimit(limit));
        }
        if let Some((guest, written)) = &mut self.target
            && self.spill.is_empty()
            && *written + piece.len() <= guest.input.1
        {
            guest.input_mut(*written + piece.len())?[*written..].copy_from_slice(piece);
            *written += piece.len();
            return Ok(());
        }
        self.spill
            .try_reserve(piece.len())
            .map_err(|_| CallError::MemoryLimit(limit))?;
        self.spill.extend_from_slice(piece);
        Ok(())
    }

    /// The state, for a sink without a target.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        debug_assert!(self.target.is_none());
        self.spill
    }

    /// How long copying the pieces in took.
    pub(crate) fn copying(&self) -> Duration {
        self.copying
    }

    /// The target instance, when the export failed.
    pub(crate) fn into_target(self) -> Guest {
        *self.target.expect("a sink made by `into_guest`").0
    }

    /// The target instance with the whole state in its input buffer, and the state's length.
    /// A state that outgrew the reserved buffer is moved into a larger one.
    pub(crate) fn deliver(self) -> (Guest, Result<usize, CallError>) {
        let (mut guest, written) = self.target.expect("a sink made by `into_guest`");
        if self.spill.is_empty() {
            return (*guest, Ok(written));
        }
        // Reserving replaces the buffer, so the part already in it is kept aside first.
        let moved = guest.input_mut(written).map(|head| head.to_vec());
        let len = written + self.spill.len();
        let result = moved.and_then(|head| {
            guest.reserve_input(len)?;
            let input = guest.input_mut(len)?;
            input[..written].copy_from_slice(&head);
            input[written..].copy_from_slice(&self.spill);
            Ok(len)
        });
        (*guest, result)
    }
}

/// `hotswap.state_chunk(ptr, len)`: appends a piece of the state being exported to the
/// exporting instance's sink, bounds-checked.
pub(crate) fn state_chunk(
    mut caller: Caller<'_, GuestCtx>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<()> {
    let refuse = |error| wasmtime::Error::new(HostRefusal(error));
    let memory = caller
        .get_export(abi::MEMORY)
        .and_then(Extern::into_memory)
        .ok_or_else(|| refuse(CallError::Abi("no memory export".into())))?;
    let (data, ctx) = memory.data_and_store_mut(&mut caller);
    let limit = ctx.max_memory;
    let sink = ctx.state_sink.as_mut().ok_or_else(|| {
        refuse(CallError::Abi(
            "`hotswap.state_chunk` was called outside `hotswap_export_state`".into(),
        ))
    })?;
    let piece = guest_range(
        data,
        ptr as u32 as usize,
        len as u32 as usize,
        "a state chunk",
    )
    .map_err(refuse)?;
    sink.append(piece, limit).map_err(refuse)
}

/// A guest's linear memory, reached without wasmtime's lookup on the per-event path.
///
/// `Memory::data` finds a memory's bounds through a chain of dependent loads (store, instance,
/// vmctx, memory definition), about 10 ns each time, and an event needs two (write the input,
/// read the output): that was half of the host's share of a dispatch (BENCHMARKS.md). The engine
/// is built with `memory_may_move(false)`, so the base address is fixed for the instance's life,
/// and linear memory never shrinks, so any length seen once stays a valid bound. This keeps both
/// and looks the length up again only when an access falls beyond it.
struct LinearMemory {
    memory: Memory,
    base: NonNull<u8>,
    /// A length the memory has at least.
    known_len: usize,
}

// SAFETY: `base` points into memory owned by the `Store` beside it in `Guest`, and is only
// dereferenced through a borrow of that `Guest`, on whichever thread holds it.
unsafe impl Send for LinearMemory {}

impl LinearMemory {
    fn new(memory: Memory, store: &Store<GuestCtx>) -> Result<LinearMemory, SwapError> {
        let base = NonNull::new(memory.data_ptr(store))
            .ok_or_else(|| SwapError::Instantiate("the module's memory has no address".into()))?;
        Ok(LinearMemory {
            memory,
            base,
            known_len: memory.data_size(store),
        })
    }

    /// The address of `at`, if `at..at + len` lies in the memory; an ABI error naming `what`
    /// otherwise.
    #[inline]
    fn span(
        &mut self,
        store: &Store<GuestCtx>,
        at: usize,
        len: usize,
        what: &str,
    ) -> Result<NonNull<u8>, CallError> {
        let end = at.checked_add(len);
        if end.is_none_or(|end| end > self.known_len) {
            // The memory may have grown since.
            self.known_len = self.memory.data_size(store);
            debug_assert_eq!(self.memory.data_ptr(store), self.base.as_ptr());
            if end.is_none_or(|end| end > self.known_len) {
                return Err(outside(what, at, len, self.known_len));
            }
        }
        // SAFETY: `at <= known_len`, which is within the memory's mapping.
        Ok(unsafe { self.base.add(at) })
    }
}

/// `memory[ptr..ptr + len]`, or an ABI error if a guest-supplied range lies outside memory.
fn guest_range<'m>(
    memory: &'m [u8],
    ptr: usize,
    len: usize,
    what: &str,
) -> Result<&'m [u8], CallError> {
    ptr.checked_add(len)
        .and_then(|end| memory.get(ptr..end))
        .ok_or_else(|| outside(what, ptr, len, memory.len()))
}

/// The ABI error for a guest-supplied range that lies outside the guest's memory.
#[cold]
fn outside(what: &str, at: usize, len: usize, memory_len: usize) -> CallError {
    CallError::Abi(format!(
        "{what} ({at}+{len}) lies outside the guest's {memory_len}-byte memory"
    ))
}
