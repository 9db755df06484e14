//! A guest's linear memory, reached without wasmtime's lookup on the per-event path.

use super::ctx::GuestCtx;
use crate::error::{CallError, SwapError};
use std::ptr::NonNull;
use wasmtime::{Memory, Store};

/// A guest's linear memory, reached without wasmtime's lookup on the per-event path.
///
/// `Memory::data` finds a memory's bounds through a chain of dependent loads (store, instance,
/// vmctx, memory definition), and an event needs two accesses (write the input, read the
/// output); BENCHMARKS.md has what that costs per event. The engine is built with
/// `memory_may_move(false)`, so the base address is fixed for the instance's life, and linear
/// memory never shrinks, so any length seen once stays a valid bound. This keeps both and looks
/// the length up again only when an access falls beyond it.
pub(crate) struct LinearMemory {
    pub(crate) memory: Memory,
    base: NonNull<u8>,
    /// A length the memory has at least.
    known_len: usize,
}

// SAFETY: `base` points into memory owned by the `Store` beside it in `Guest`, and is only
// dereferenced through a borrow of that `Guest`, on whichever thread holds it.
unsafe impl Send for LinearMemory {}

impl LinearMemory {
    pub(crate) fn new(memory: Memory, store: &Store<GuestCtx>) -> Result<LinearMemory, SwapError> {
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
    pub(crate) fn span(
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
pub(crate) fn guest_range<'m>(
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
