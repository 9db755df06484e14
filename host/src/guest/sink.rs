//! Where an exported state goes, piece by piece (`hotswap.state_chunk`, then the export's output).

use super::Guest;
use super::ctx::{GuestCtx, HostRefusal};
use super::memory::guest_range;
use crate::error::CallError;
use hotswap_abi as abi;
use std::time::{Duration, Instant};
use wasmtime::{Caller, Extern};

/// Where an exported state goes: straight into the input buffer of the instance that will
/// import it while it fits there (the one copy of a swap), and into host memory after that, or
/// all of it when there is no such instance (`hotswap state`); or nowhere, counted only (the
/// proof that a new version can export).
pub(crate) struct StateSink {
    /// The importing instance, and how much of its input buffer the state fills so far.
    target: Option<(Box<Guest>, usize)>,
    /// What did not fit in the target's input buffer, or the whole state without a target.
    spill: Vec<u8>,
    /// Count the bytes, keep none.
    discard: bool,
    /// Bytes taken so far.
    len: usize,
    /// Time spent copying pieces in: the host's share of the export.
    copying: Duration,
    /// A copy of the whole state too, when asked for (a snapshot of the state a swap carried).
    kept: Option<Vec<u8>>,
}

impl StateSink {
    fn new(target: Option<Guest>, discard: bool) -> StateSink {
        StateSink {
            target: target.map(|guest| (Box::new(guest), 0)),
            spill: Vec::new(),
            discard,
            len: 0,
            copying: Duration::ZERO,
            kept: None,
        }
    }

    /// Keeps a copy of the whole state as well, in `buffer` (see [`StateSink::take_kept`]).
    pub(crate) fn keeping(mut self, mut buffer: Vec<u8>) -> StateSink {
        buffer.clear();
        self.kept = Some(buffer);
        self
    }

    /// The copy kept by [`StateSink::keeping`].
    pub(crate) fn take_kept(&mut self) -> Option<Vec<u8>> {
        self.kept.take()
    }

    /// A sink that fills `guest`'s input buffer (reserved and touched before the pause).
    pub(crate) fn into_guest(guest: Guest) -> StateSink {
        StateSink::new(Some(guest), false)
    }

    /// A sink that keeps the state in host memory.
    pub(crate) fn in_host() -> StateSink {
        StateSink::new(None, false)
    }

    /// A sink that keeps nothing: it only checks and counts.
    pub(crate) fn discard() -> StateSink {
        StateSink::new(None, true)
    }

    /// Appends one piece of the state, which may not take the state past `limit` bytes.
    pub(crate) fn append(&mut self, piece: &[u8], limit: usize) -> Result<(), CallError> {
        if self.len + piece.len() > limit {
            return Err(CallError::MemoryLimit {
                wanted: Some(self.len + piece.len()),
                limit,
            });
        }
        self.len += piece.len();
        if self.discard {
            return Ok(());
        }
        let started = Instant::now();
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(piece);
        }
        let result = self.copy_in(piece, limit);
        self.copying += started.elapsed();
        result
    }

    fn copy_in(&mut self, piece: &[u8], limit: usize) -> Result<(), CallError> {
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
            .map_err(|_| CallError::MemoryLimit {
                wanted: Some(self.len),
                limit,
            })?;
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
    let limit = ctx.limits.max_memory();
    let sink = ctx.state_sink.as_mut().ok_or_else(|| {
        refuse(CallError::Abi(
            "`hotswap.state_chunk` was called outside `hotswap_export_state`".into(),
        ))
    })?;
    let (at, len) = (ptr as u32 as usize, len as u32 as usize);
    let piece = guest_range(data, at, len, "a state chunk").map_err(refuse)?;
    sink.append(piece, limit).map_err(refuse)
}
