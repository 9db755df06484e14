//! What each instance's `Store` holds, and the host's side of the ABI's imports: the linker with
//! WASI preview 1 and the `hotswap` namespace, the memory limiter, and the errors that host
//! imports trap with.

use super::limits::Limits;
use super::sink::StateSink;
use crate::error::CallError;
use crate::text::guest_text;
use hotswap_abi as abi;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use wasmtime::{Caller, Engine, Extern, Linker, ResourceLimiter};
use wasmtime_wasi::p1::WasiP1Ctx;

/// What each instance's `Store` holds.
pub(crate) struct GuestCtx {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limits: Arc<Limits>,
    /// Where the instance's memory size is published as it grows (see [`crate::App::memory_watch`]).
    pub(crate) memory_watch: Option<Arc<AtomicUsize>>,
    /// Where `hotswap.state_chunk` puts the state, during `hotswap_export_state` only.
    pub(crate) state_sink: Option<StateSink>,
    /// The host epoch at which the current call must end ([`Limits::epoch`]).
    pub(crate) deadline_epoch: u64,
    /// Zero of the guest's monotonic clock.
    pub(crate) clock_base: Instant,
    /// Where the guest's clocks and random bytes come from, recorded or replayed.
    pub(crate) tape: Arc<super::tape::Tape>,
}

/// The most elements a guest's table may have.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A guest tried to grow its memory past the limit: the growth traps with this.
#[derive(Debug)]
pub(crate) struct MemoryLimitExceeded {
    pub(crate) wanted: usize,
    pub(crate) limit: usize,
}

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
        let limit = self.limits.max_memory();
        if desired > limit {
            let wanted = desired;
            return Err(wasmtime::Error::new(MemoryLimitExceeded { wanted, limit }));
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

/// A guest's explanation for the trap it is about to take (`hotswap.abort`), already escaped.
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

/// The linker every instance is made with: WASI preview 1 (with the host's own `poll_oneoff`,
/// which a call's time limit bounds) and the `hotswap` imports.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<GuestCtx>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx: &mut GuestCtx| &mut ctx.wasi)?;
    linker.allow_shadowing(true);
    super::wasi::add_poll_oneoff(&mut linker)?;
    linker.allow_shadowing(false);
    linker.func_wrap(abi::HOST_MODULE, abi::HOST_ABORT, abort)?;
    linker.func_wrap(
        abi::HOST_MODULE,
        abi::HOST_STATE_CHUNK,
        super::sink::state_chunk,
    )?;
    Ok(linker)
}

/// `hotswap.abort(ptr, len)`: traps with the guest's message.
fn abort(mut caller: Caller<'_, GuestCtx>, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let Some(memory) = caller.get_export(abi::MEMORY).and_then(Extern::into_memory) else {
        let note = "(the guest has no memory export to read its message from)";
        return Err(wasmtime::Error::new(GuestAbort(note.into())));
    };
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let message = match memory.data(&caller).get(start..start.saturating_add(len)) {
        Some(bytes) => guest_text(bytes),
        None => format!("(the guest's message at {start}+{len} lies outside its memory)"),
    };
    Err(wasmtime::Error::new(GuestAbort(message)))
}
