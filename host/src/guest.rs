//! Step 3: one instance of a guest module, in its own `Store`, and the ABI's calls into it.
//!
//! Every call gets a fresh epoch deadline (deadlines stay expired after a trap), every address
//! and length the guest hands back is bounds-checked, and every failure becomes a [`CallError`].

use crate::compile::Compiled;
use crate::error::{CallError, CheckError, SwapError};
use crate::runtime::{GuestAbort, GuestCtx, MemoryLimitExceeded, Runtime};
use hotswap_abi::{self as abi, OUTPUT_DESCRIPTOR_LEN, STATUS_ERROR, STATUS_OK};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::{Memory, Store, Trap, TypedFunc, WasmParams, WasmResults};
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
    memory: Memory,
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
        output_bytes(guest.memory.data(&guest.store), guest.descriptor)
            .map_err(SwapError::Initialize)?;
        Ok(guest)
    }

    /// The state version this code writes.
    pub fn state_version(&self) -> u32 {
        self.state_version
    }

    /// The instance's current linear memory size in bytes.
    pub fn memory_size(&self) -> usize {
        self.memory.data_size(&self.store)
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

    /// Exports the state; the bytes live in guest memory until the next call.
    pub fn export_state(&mut self) -> Result<&[u8], CallError> {
        let status = self.call(|e| &e.export_state, ())?;
        self.output(status)
    }

    /// Copies state bytes into the input buffer: the one copy of a swap.
    pub fn receive_state(&mut self, state: &[u8]) -> Result<(), CallError> {
        self.write_input(state).map(drop)
    }

    /// Imports the state that [`Guest::receive_state`] copied in, written by `version`.
    pub fn import_state(&mut self, len: usize, version: u32) -> Result<(), CallError> {
        let status = self.call(|e| &e.import_state, (len as i32, version as i32))?;
        self.output(status).map(drop)
    }

    /// Makes sure the input buffer holds at least `len` bytes, so that a later input of that
    /// size needs no allocation (used to prepare a new instance before a swap's pause).
    pub fn reserve_input(&mut self, len: usize) -> Result<(), CallError> {
        if len <= self.input.1 {
            return Ok(());
        }
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
        guest_range(
            self.memory.data(&self.store),
            ptr,
            len,
            "the input buffer from hotswap_reserve",
        )?;
        self.input = (ptr, len);
        Ok(())
    }

    /// Writes zeros over the whole input buffer, so its pages are faulted in now rather than
    /// during the copy.
    pub(crate) fn touch_input(&mut self) {
        let (ptr, capacity) = self.input;
        self.memory.data_mut(&mut self.store)[ptr..ptr + capacity].fill(0);
    }

    /// Writes an input into the input buffer, reserving a larger one first if needed.
    fn write_input(&mut self, input: &[u8]) -> Result<i32, CallError> {
        self.reserve_input(input.len())?;
        let ptr = self.input.0;
        // `reserve_input` checked ptr..ptr+capacity, and memory never shrinks.
        self.memory.data_mut(&mut self.store)[ptr..ptr + input.len()].copy_from_slice(input);
        Ok(input.len() as i32)
    }

    /// Reads the output descriptor and returns the output for a status.
    fn output(&self, status: i32) -> Result<&[u8], CallError> {
        let bytes = output_bytes(self.memory.data(&self.store), self.descriptor)?;
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

/// The output that the descriptor at `descriptor` describes, bounds-checked.
fn output_bytes(memory: &[u8], descriptor: usize) -> Result<&[u8], CallError> {
    let d = guest_range(
        memory,
        descriptor,
        OUTPUT_DESCRIPTOR_LEN,
        "the output descriptor",
    )?;
    let ptr = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) as usize;
    let len = u32::from_le_bytes([d[4], d[5], d[6], d[7]]) as usize;
    guest_range(memory, ptr, len, "the output")
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
        .ok_or_else(|| {
            CallError::Abi(format!(
                "{what} ({ptr}+{len}) lies outside the guest's {}-byte memory",
                memory.len()
            ))
        })
}
