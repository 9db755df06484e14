//! Linear memories the host maps itself (wasmtime's `MemoryCreator`), so that a new instance
//! can be given the memory of the instance it replaces: the in-place swap.
//!
//! Each memory reserves its whole range plus the guard up front (as wasmtime's own do with
//! `memory_may_move(false)`), readable and writable up to its size, so its base never moves. A
//! [`Mapping`] is shared (`Arc`) by the instances that use it: during an in-place swap's pause,
//! the old instance (idle) and the new one (being set up); the mapping is unmapped when the
//! last of them is dropped. Only one instance ever runs on it at a time, on the app's thread:
//! the old one is not called again unless the swap fails, and then the new one is dropped and
//! the memory's size is put back first ([`Mapping::shrink_to`]).
//!
//! Which memory an instantiation gets is passed through a thread-local, because wasmtime calls
//! the creator synchronously on the instantiating thread: [`adopting`] sets the mapping to give
//! the next memory (until its guard is dropped), and [`take_created`] returns the mapping the
//! last instantiation got.
use std::cell::RefCell;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// One reservation: `[base, base + reserved + guard)`, of which `[base, base + size)` is
/// readable and writable.
pub(crate) struct Mapping {
    base: NonNull<u8>,
    reserved: usize,
    guard: usize,
    size: AtomicUsize,
}

// SAFETY: the mapping is plain memory; its size is atomic, and the bytes are only touched by the
// one instance that runs on it at a time (see the module docs) or by the host between calls.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(size: usize, reserved: usize, guard: usize) -> Result<Mapping, String> {
        let total = reserved
            .checked_add(guard)
            .ok_or("memory reservation overflows")?;
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "cannot reserve {total} bytes for a linear memory: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mapping = Mapping {
            base: NonNull::new(base.cast()).ok_or("mmap returned null")?,
            reserved,
            guard,
            size: AtomicUsize::new(0),
        };
        mapping.grow_to(size).map_err(|e| e.to_string())?;
        Ok(mapping)
    }

    /// The memory's size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    fn grow_to(&self, new_size: usize) -> std::io::Result<()> {
        let old = self.size();
        if new_size > self.reserved {
            return Err(std::io::Error::other("beyond the memory's reservation"));
        }
        if new_size > old {
            let start = page_down(old);
            // SAFETY: `[start, new_size)` lies within the reservation.
            let done = unsafe {
                libc::mprotect(
                    self.base.as_ptr().add(start).cast(),
                    page_up(new_size) - start,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if done != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        self.size.store(new_size.max(old), Ordering::Relaxed);
        Ok(())
    }

    /// Puts the size back to `size` (after a failed in-place swap: the new instance may have
    /// grown the memory): the pages beyond are zeroed and made inaccessible again, as if never
    /// grown. The instance that runs on next had that size: its cached length is valid again
    /// (`memory::LinearMemory` relies on no instance having seen a larger one, and none that
    /// did outlives this: the failed instance is dropped first).
    ///
    /// If the pages cannot be made inaccessible, the size stays where it is, so that what is
    /// accessible and what the size says agree: the memory is then simply larger (and zeroed
    /// beyond `size`) for the instance that runs on.
    pub(crate) fn shrink_to(&self, size: usize) {
        let old = self.size();
        if size >= old {
            return;
        }
        let start = page_up(size);
        let end = page_up(old);
        if end > start {
            let at = self.base.as_ptr().wrapping_add(start);
            // SAFETY: `[start, end)` lies within the accessible memory; no instance runs now.
            // MADV_DONTNEED on a private anonymous mapping makes those pages read as zeros.
            if unsafe { libc::madvise(at.cast(), end - start, libc::MADV_DONTNEED) } != 0 {
                // SAFETY: as above; the pages are still accessible.
                unsafe { std::ptr::write_bytes(at, 0, end - start) };
            }
            // SAFETY: as above.
            if unsafe { libc::mprotect(at.cast(), end - start, libc::PROT_NONE) } != 0 {
                return;
            }
        }
        self.size.store(size, Ordering::Relaxed);
    }

    /// Where the memory starts in the host's address space.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Zeroes `range` (within the memory), between calls: whole pages by dropping them (a page
    /// never touched costs nothing, and one not written again is not faulted back in), the
    /// edges by writing. False if `range` is not within the memory.
    ///
    /// # Safety
    ///
    /// As [`Mapping::bytes_mut`].
    pub(crate) unsafe fn zero(&self, range: Range<usize>) -> bool {
        // SAFETY: the caller's.
        let Some(bytes) = (unsafe { self.bytes_mut(range.clone()) }) else {
            return false;
        };
        let (first, last) = (page_up(range.start), page_down(range.end));
        if first >= last {
            bytes.fill(0);
            return true;
        }
        bytes[..first - range.start].fill(0);
        bytes[last - range.start..].fill(0);
        // SAFETY: `[first, last)` lies within the accessible memory; MADV_DONTNEED on a private
        // anonymous mapping makes those pages read as zeros from now on.
        let dropped = unsafe {
            libc::madvise(
                self.base.as_ptr().add(first).cast(),
                last - first,
                libc::MADV_DONTNEED,
            )
        };
        if dropped != 0 {
            bytes[first - range.start..last - range.start].fill(0);
        }
        true
    }

    /// The bytes at `range`, if it lies within the memory.
    ///
    /// # Safety
    ///
    /// No instance may run on the memory, and no other reference into it may be used, while
    /// the slice lives (the in-place swap holds it between calls, on the app's thread).
    #[allow(clippy::mut_from_ref)] // the memory is not Rust-owned data: see the safety section
    pub(crate) unsafe fn bytes_mut(&self, range: Range<usize>) -> Option<&mut [u8]> {
        if range.start > range.end || range.end > self.size() {
            return None;
        }
        // SAFETY: within the accessible size; the caller guarantees nothing else uses it.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(range.start), range.len())
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the whole reservation, mapped in `new`; no instance uses it any more.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.reserved + self.guard) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn page_down(n: usize) -> usize {
    n & !(page_size() - 1)
}

fn page_up(n: usize) -> usize {
    n.div_ceil(page_size()) * page_size()
}

/// What wasmtime holds for an instance's memory: a share of a [`Mapping`].
struct Memory(Arc<Mapping>);

// SAFETY: the base never moves (the whole reservation is mapped up front); `byte_size` is the
// accessible size, and the guard after the reservation stays unmapped.
unsafe impl LinearMemory for Memory {
    fn byte_size(&self) -> usize {
        self.0.size()
    }
    fn byte_capacity(&self) -> usize {
        self.0.reserved
    }
    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        self.0.grow_to(new_size).map_err(wasmtime::Error::new)
    }
    fn as_ptr(&self) -> *mut u8 {
        self.0.base.as_ptr()
    }
}

thread_local! {
    /// The mapping the next memory created on this thread adopts.
    static ADOPT: RefCell<Option<Arc<Mapping>>> = const { RefCell::new(None) };
    /// The mapping the last memory created on this thread got.
    static CREATED: RefCell<Option<Arc<Mapping>>> = const { RefCell::new(None) };
}

/// Makes the next memory created on this thread be `mapping`, until the guard returned is
/// dropped (even by a panic), so that an adoption never outlives the instantiation it was for.
pub(crate) fn adopting(mapping: Arc<Mapping>) -> Adopting {
    ADOPT.with(|a| *a.borrow_mut() = Some(mapping));
    Adopting
}

/// Clears any adoption not taken, when dropped.
pub(crate) struct Adopting;

impl Drop for Adopting {
    fn drop(&mut self) {
        ADOPT.with(|a| a.borrow_mut().take());
    }
}

/// The mapping of the last memory created on this thread.
pub(crate) fn take_created() -> Option<Arc<Mapping>> {
    CREATED.with(|c| c.borrow_mut().take())
}

/// The engine's memory creator.
pub(crate) struct Memories;

// SAFETY: every memory is a reservation of `reserved_size_in_bytes` (or, without one, of the
// maximum) plus `guard_size_in_bytes` left inaccessible, so the bounds checks wasmtime's code
// leaves out stay sound. A fresh one is zero-filled. An adopted one is the same kind of
// reservation, made for the same engine, but not zero-filled and shared with the idle instance
// it came from: that departs from the letter of `MemoryCreator`'s contract ("zero filled",
// owned by one instance) on purpose, and is sound because only one of the two instances ever
// runs, on the app's thread, and the contents are plain bytes wasmtime does not interpret
// (no copy-on-write image: `memory_init_cow(false)`). Unlike wasmtime's own memories, these
// have no guard region before the base (defence in depth only).
unsafe impl MemoryCreator for Memories {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let reserved = reserved_size_in_bytes
            .or(maximum)
            .ok_or("a memory with neither a reservation nor a maximum")?;
        let mapping = match ADOPT.with(|a| a.borrow_mut().take()) {
            Some(adopted)
                if adopted.reserved == reserved
                    && adopted.guard == guard_size_in_bytes
                    && adopted.size() >= minimum
                    && maximum.is_none_or(|max| adopted.size() <= max) =>
            {
                adopted
            }
            Some(_) => return Err("the adopted memory does not fit this module's memory".into()),
            None => Arc::new(Mapping::new(minimum, reserved, guard_size_in_bytes)?),
        };
        CREATED.with(|c| *c.borrow_mut() = Some(mapping.clone()));
        Ok(Box::new(Memory(mapping)))
    }
}
