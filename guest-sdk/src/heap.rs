//! The heap of an app that keeps its state in place (`export_app!(App, in_place)`).
//!
//! Everything the app allocates lives at or above [`IN_PLACE_HEAP_BASE`], and so does the
//! allocator's own state: a [`Header`] at exactly that address holds the `dlmalloc` instance,
//! the address of the runtime (the root of the app's state) and the fingerprint of the layout
//! that built it. Nothing of it is in the module's data or bss, so a new version of the code,
//! instantiated on the same linear memory, finds the allocator and the state where the old one
//! left them (the ABI's "Keeping the state in place").
//!
//! The allocator is `dlmalloc` (the crate Rust's own `wasm32-unknown-unknown` target uses),
//! pinned to one version: two versions may lay out their free lists differently, so the version
//! is part of the layout description (`layout::ALLOCATOR`).
use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::ptr;
use hotswap_abi::IN_PLACE_HEAP_BASE;

const PAGE: usize = 64 << 10;
const BASE: usize = IN_PLACE_HEAP_BASE as usize;
/// The header's first 8 bytes.
const MAGIC: u64 = u64::from_le_bytes(*b"hswpheap");

/// The header's format: raise it with any change to [`Header`] or [`Pages`] (the layout
/// description names it, with the header's size and alignment).
pub(crate) const HEADER_FORMAT: u32 = 1;
/// The header's size and alignment, for the layout description.
pub(crate) const HEADER: (usize, usize) = (size_of::<Header>(), align_of::<Header>());

/// What lies at [`IN_PLACE_HEAP_BASE`].
#[repr(C)]
pub(crate) struct Header {
    magic: u64,
    /// The layout fingerprint of the code that built the state (0 before it is built).
    pub(crate) fingerprint: u64,
    /// The runtime: `*mut Runtime<A>`, null until the first export needs it.
    pub(crate) root: *mut u8,
    dl: dlmalloc::Dlmalloc<Pages>,
}

/// Memory for `dlmalloc`: whole pages from `memory.grow`, never returned.
struct Pages;

// SAFETY: `alloc` returns fresh pages that nothing else uses (memory.grow hands each page out
// once), and nothing is ever unmapped.
unsafe impl dlmalloc::Allocator for Pages {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let pages = size.div_ceil(PAGE);
        match wasm32::memory_grow(0, pages) {
            usize::MAX => (ptr::null_mut(), 0, 0),
            old => ((old * PAGE) as *mut u8, pages * PAGE, 0),
        }
    }
    fn remap(&self, _: *mut u8, _: usize, _: usize, _: bool) -> *mut u8 {
        ptr::null_mut()
    }
    fn free_part(&self, _: *mut u8, _: usize, _: usize) -> bool {
        false
    }
    fn free(&self, _: *mut u8, _: usize) -> bool {
        false
    }
    fn can_release_part(&self, _: u32) -> bool {
        false
    }
    fn allocates_zeros(&self) -> bool {
        true
    }
    fn page_size(&self) -> usize {
        PAGE
    }
}

/// Whether this instance has found (or made) the header. In the module's bss, so each new
/// instance looks again.
static mut OPEN: bool = false;

/// The header, made on first use in a fresh memory, or found in an adopted one.
#[inline]
pub(crate) fn header() -> *mut Header {
    // SAFETY: one thread; `OPEN` is only read and written here and in `open`.
    if unsafe { !OPEN } {
        open();
    }
    BASE as *mut Header
}

#[cold]
fn open() {
    let pages = wasm32::memory_size(0);
    let base_page = BASE / PAGE;
    if pages <= base_page {
        // A fresh memory: grow it to the base, plus the header's page, and build the header.
        let header_pages = size_of::<Header>().div_ceil(PAGE);
        if wasm32::memory_grow(0, base_page - pages + header_pages) == usize::MAX {
            crate::__private::abort("in-place heap: cannot grow memory to the heap's base");
        }
        let header = Header {
            magic: MAGIC,
            fingerprint: 0,
            root: ptr::null_mut(),
            dl: dlmalloc::Dlmalloc::new_with_allocator(Pages),
        };
        // SAFETY: the pages at BASE were just grown for the header; nothing else uses them.
        unsafe { ptr::write(BASE as *mut Header, header) };
        // The rest of the header's pages lie unused: dlmalloc asks for pages of its own.
    } else {
        // SAFETY: the memory reaches past BASE, so the header's bytes are in bounds.
        let magic = unsafe { ptr::read(BASE as *const u64) };
        if magic != MAGIC {
            crate::__private::abort(
                "in-place heap: the memory above the heap's base is not a Hotswap heap (the \
                 module's static data reaches it, or another allocator grew memory first)",
            );
        }
    }
    // SAFETY: one thread.
    unsafe { OPEN = true };
}

/// The global allocator of an in-place app: `dlmalloc`, kept in the [`Header`].
pub struct Heap;

// SAFETY: every method forwards to the one `dlmalloc` instance with the caller's guarantees; a
// wasm32-wasip1 guest has one thread, so no two calls overlap.
unsafe impl GlobalAlloc for Heap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*header()).dl.malloc(layout.size(), layout.align()) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*header()).dl.calloc(layout.size(), layout.align()) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*header()).dl.free(ptr, layout.size(), layout.align()) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            (*header())
                .dl
                .realloc(ptr, layout.size(), layout.align(), new_size)
        }
    }
}
