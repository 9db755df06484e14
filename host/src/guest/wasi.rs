//! The parts of WASI preview 1 the host supplies itself, so that a call's time limit bounds
//! them: `poll_oneoff` (where a guest sleeps: `std::thread::sleep` compiles to it) and the
//! monotonic clock it measures against.
//!
//! Wasmtime's epoch interruption stops wasm code at its deadline, but not a host function that
//! blocks: WASI's own `poll_oneoff` would sleep for as long as the guest asks, holding every
//! event. This one sleeps at most until the call's deadline and then interrupts the call, as the
//! epoch would. File descriptors are always ready (the guest's files are regular files and its
//! stdin is empty), so a poll that waits on one returns at once. While events are replayed
//! ([`super::tape`]), a sleep returns at once too.

use super::ctx::GuestCtx;
use super::limits::EPOCH_TICK;
use hotswap_abi as abi;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Extern, Linker, Trap};

/// Registers the host's `poll_oneoff` in place of WASI's.
pub(crate) fn add_poll_oneoff(linker: &mut Linker<GuestCtx>) -> wasmtime::Result<()> {
    linker.func_wrap(abi::WASI_MODULE, "poll_oneoff", poll_oneoff)?;
    Ok(())
}

/// Sizes of WASI's `subscription` and `event` records.
const SUBSCRIPTION_LEN: usize = 48;
const EVENT_LEN: usize = 32;
/// WASI's error numbers used here.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
/// `eventtype`: clock, fd_read, fd_write.
const EVENT_CLOCK: u8 = 0;
const EVENT_FD_WRITE: u8 = 2;
/// `subclockflags::subscription_clock_abstime`.
const ABSTIME: u16 = 1;

/// One event to report: userdata and type.
struct Ready(u64, u8);

/// What the subscriptions ask for: events ready now, and clocks with their wake-up times.
#[derive(Default)]
struct Wanted {
    ready: Vec<Ready>,
    clocks: Vec<(u64, Instant)>,
}

fn poll_oneoff(
    mut caller: Caller<'_, GuestCtx>,
    subs: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.get_export(abi::MEMORY).and_then(Extern::into_memory) else {
        return Ok(ERRNO_FAULT);
    };
    let count = count as u32 as usize;
    if count == 0 {
        return Ok(ERRNO_INVAL);
    }
    let (data, ctx) = memory.data_and_store_mut(&mut caller);
    let Some(bytes) = span(data, subs, count * SUBSCRIPTION_LEN) else {
        return Ok(ERRNO_FAULT);
    };
    let Some(mut wanted) = read_subscriptions(bytes, ctx.clock_base) else {
        return Ok(ERRNO_INVAL);
    };
    if ctx.tape.replaying() {
        // A replayed event does not wait: every clock it asked for has fired.
        let fired = wanted
            .clocks
            .drain(..)
            .map(|(data, _)| Ready(data, EVENT_CLOCK));
        wanted.ready.extend(fired.collect::<Vec<_>>());
    } else if wanted.ready.is_empty() {
        let left = EPOCH_TICK * ctx.deadline_epoch.saturating_sub(ctx.limits.epoch()) as u32;
        let first = wanted.clocks.iter().map(|(_, at)| *at).min();
        let now = Instant::now();
        let wake = first.unwrap_or(now).saturating_duration_since(now);
        if wake > left {
            // The guest asked to sleep past its call's deadline: sleep to the deadline, then
            // interrupt the call as the epoch would have.
            std::thread::sleep(left);
            // The call's time is used up, as when the epoch interrupts it (the epoch's count
            // may lag the wall clock by a tick): nothing is left for a recovery after it.
            ctx.deadline_epoch = ctx.limits.epoch();
            return Err(Trap::Interrupt.into());
        }
        std::thread::sleep(wake);
    }
    let now = Instant::now();
    let due = wanted.clocks.iter().filter(|(_, at)| *at <= now);
    let due: Vec<Ready> = due.map(|(data, _)| Ready(*data, EVENT_CLOCK)).collect();
    wanted.ready.extend(due);
    Ok(write_events(data, events, nevents, &wanted.ready))
}

/// Reads the subscriptions; `None` if one is not a valid request.
fn read_subscriptions(bytes: &[u8], clock_base: Instant) -> Option<Wanted> {
    let mut wanted = Wanted::default();
    let now = Instant::now();
    for sub in bytes.chunks_exact(SUBSCRIPTION_LEN) {
        let userdata = u64::from_le_bytes(sub[0..8].try_into().ok()?);
        match sub[8] {
            EVENT_CLOCK => {
                let id = u32::from_le_bytes(sub[16..20].try_into().ok()?);
                let timeout = u64::from_le_bytes(sub[24..32].try_into().ok()?);
                let flags = u16::from_le_bytes(sub[40..42].try_into().ok()?);
                let wake = wake_time(id, timeout, flags & ABSTIME != 0, now, clock_base)?;
                wanted.clocks.push((userdata, wake));
            }
            kind @ 1..=EVENT_FD_WRITE => wanted.ready.push(Ready(userdata, kind)),
            _ => return None,
        }
    }
    Some(wanted)
}

/// When a clock subscription fires: `None` for a clock this host does not offer.
fn wake_time(
    id: u32,
    timeout: u64,
    absolute: bool,
    now: Instant,
    base: Instant,
) -> Option<Instant> {
    let relative = Duration::from_nanos(timeout);
    let at = match (id, absolute) {
        (_, false) if id <= 1 => now.checked_add(relative),
        // Realtime, absolute: how far that is from the wall clock now.
        (0, true) => {
            let target = UNIX_EPOCH.checked_add(relative)?;
            let ahead = target.duration_since(SystemTime::now()).unwrap_or_default();
            now.checked_add(ahead)
        }
        // Monotonic, absolute: the guest's monotonic clock counts from `base`.
        (1, true) => base.checked_add(relative),
        _ => return None,
    };
    // A wake-up too far to represent is as good as never: the deadline comes first.
    Some(at.unwrap_or(now + Duration::from_secs(u32::MAX as u64)))
}

/// Writes the events and their count; an errno.
fn write_events(data: &mut [u8], events: i32, nevents: i32, ready: &[Ready]) -> i32 {
    let Some(out) = span_mut(data, events, ready.len() * EVENT_LEN) else {
        return ERRNO_FAULT;
    };
    for (slot, Ready(userdata, kind)) in out.chunks_exact_mut(EVENT_LEN).zip(ready) {
        slot.fill(0);
        slot[0..8].copy_from_slice(&userdata.to_le_bytes());
        slot[10] = *kind;
    }
    let Some(count) = span_mut(data, nevents, 4) else {
        return ERRNO_FAULT;
    };
    count.copy_from_slice(&(ready.len() as u32).to_le_bytes());
    ERRNO_SUCCESS
}

fn span(data: &[u8], at: i32, len: usize) -> Option<&[u8]> {
    let at = at as u32 as usize;
    data.get(at..at.checked_add(len)?)
}

fn span_mut(data: &mut [u8], at: i32, len: usize) -> Option<&mut [u8]> {
    let at = at as u32 as usize;
    data.get_mut(at..at.checked_add(len)?)
}
