//! The runtime behind [`export_app!`](crate::export_app). Not public API.
#[cfg(target_arch = "wasm32")]
pub use crate::heap::Heap;
use crate::layout::Describer;
use crate::{App, InPlace, MigrateError};
use hotswap_abi::IN_PLACE_HEAP_BASE;
use hotswap_abi::{STATUS_ERROR, STATUS_OK};
use std::cell::UnsafeCell;
use std::cmp::Ordering;

/// Everything the exports share: the app and the ABI's buffers.
struct Runtime<A> {
    app: Option<A>,
    /// The input buffer: host-written up to its capacity (see the ABI's buffer rules).
    input: Vec<u8>,
    /// The last call's output.
    output: Vec<u8>,
    /// The output descriptor: `[ptr, len]` of the last output.
    descriptor: [u32; 2],
    /// The export's buffer, allocated when the app starts or imports, never during an export:
    /// an app at its memory limit can still hand its state over.
    export: Vec<u8>,
}

// SAFETY: the runtime holds the app (`InPlace`), three byte buffers and the descriptor, all
// described below with their offsets. The descriptor is scratch: every call that has output
// rewrites it before the host reads it, so an address in it (a refusal's message in static
// data) never outlives the call.
unsafe impl<A: InPlace> InPlace for Runtime<A> {
    fn describe(d: &mut Describer<'_>) {
        use core::mem::offset_of;
        d.begin("struct", "Runtime", size_of::<Self>(), align_of::<Self>());
        let n = d.reference::<Option<A>>();
        d.part(format_args!("app: #{n} at {}", offset_of!(Self, app)));
        let n = d.reference::<Vec<u8>>();
        d.part(format_args!("input: #{n} at {}", offset_of!(Self, input)));
        d.part(format_args!("output: #{n} at {}", offset_of!(Self, output)));
        d.part(format_args!("export: #{n} at {}", offset_of!(Self, export)));
        let n = d.reference::<[u32; 2]>();
        d.part(format_args!(
            "descriptor: #{n} at {}",
            offset_of!(Self, descriptor)
        ));
    }
}

/// How many bytes of encoded state the export hands the host at a time
/// (`hotswap.state_chunk`): small enough to stay in the L1 cache, large enough that the calls
/// out cost nothing next to the encoding (BENCHMARKS.md compares piece sizes).
const STATE_CHUNK: usize = 16 << 10;

/// The static slot that [`export_app!`](crate::export_app) declares. With `IN_PLACE`, the
/// runtime lives in the heap instead (its address in the heap's header), where the next version
/// of the code finds it.
pub struct Slot<A: App, const IN_PLACE: bool = false>(UnsafeCell<Runtime<A>>);

// SAFETY: a wasm32-wasip1 guest has one thread, and the host makes one call at a time and
// never re-enters the guest, so the slot is never accessed concurrently.
unsafe impl<A: App, const IN_PLACE: bool> Sync for Slot<A, IN_PLACE> {}

impl<A> Runtime<A> {
    const fn new() -> Self {
        Runtime {
            app: None,
            input: Vec::new(),
            output: Vec::new(),
            descriptor: [0, 0],
            export: Vec::new(),
        }
    }
}

impl<A: App, const IN_PLACE: bool> Slot<A, IN_PLACE> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        // Checks `App::STATE_VERSION` against the ABI's range when the module is built.
        let _ = Self::STATE_VERSION;
        Self(UnsafeCell::new(Runtime::new()))
    }

    #[allow(clippy::mut_from_ref)]
    #[inline]
    fn runtime(&self) -> &mut Runtime<A> {
        if IN_PLACE {
            return in_place_runtime();
        }
        // SAFETY: see the `Sync` impl: each export takes this reference once, and no two
        // exports run at the same time.
        unsafe { &mut *self.0.get() }
    }

    /// `A::STATE_VERSION`, checked at compile time against the ABI's range.
    const STATE_VERSION: i32 = {
        assert!(
            A::STATE_VERSION <= hotswap_abi::MAX_STATE_VERSION,
            "`App::STATE_VERSION` must be at most 2147483647: the ABI passes it as an i32"
        );
        A::STATE_VERSION as i32
    };

    pub fn state_version(&self) -> i32 {
        Self::STATE_VERSION
    }

    pub fn output(&self) -> i32 {
        self.runtime().descriptor.as_ptr() as usize as i32
    }

    pub fn reserve(&self, len: i32) -> i32 {
        let input = &mut self.runtime().input;
        let len = len as u32 as usize;
        if input.capacity() < len {
            *input = Vec::new();
            if input.try_reserve_exact(len).is_err() {
                return 0;
            }
        }
        input.as_ptr() as usize as i32
    }

    pub fn start(&self) -> i32 {
        install_panic_hook();
        let rt = self.runtime();
        let mut app = A::default();
        app.start();
        rt.app = Some(app);
        rt.ready_export();
        rt.succeed(Vec::new())
    }

    pub fn import_state(&self, len: i32, version: i32) -> i32 {
        install_panic_hook();
        let rt = self.runtime();
        let version = version as u32;
        let state = host_written(&rt.input, len);
        let imported = match version.cmp(&A::STATE_VERSION) {
            Ordering::Equal => crate::decode::<A>(state)
                .and_then(|app| crate::fields::check_shared(state, &app).map(|()| app)),
            Ordering::Less => A::migrate(version, state),
            Ordering::Greater => Err(MigrateError::new(format!(
                "the state was written by state version {version}, newer than this code's \
                 state version {}: this code cannot read it",
                A::STATE_VERSION
            ))),
        };
        match imported {
            Ok(app) => {
                rt.app = Some(app);
                rt.ready_export();
                rt.succeed(Vec::new())
            }
            Err(e) => rt.fail(e.message()),
        }
    }

    pub fn export_state(&self) -> i32 {
        let rt = self.runtime();
        let Runtime {
            app: Some(app),
            export,
            ..
        } = rt
        else {
            return rt.fail("the app has not started");
        };
        // The state goes to the host a chunk at a time, into a buffer reserved beforehand that
        // never grows (`write_chunked` hands long strings over without copying them), so an
        // export needs no memory, however large the state. The last piece is the output.
        export.clear();
        #[cfg(target_arch = "wasm32")]
        let encoded = hotswap_msgpack::write_chunked(export, STATE_CHUNK, &mut state_chunk, app);
        // Off wasm there is no host to take the pieces.
        #[cfg(not(target_arch = "wasm32"))]
        let encoded = hotswap_msgpack::write(export, app);
        match encoded {
            Ok(()) => {
                rt.descriptor = [rt.export.as_ptr() as usize as u32, rt.export.len() as u32];
                STATUS_OK
            }
            Err(e) => rt.fail(&format!("cannot encode the state: {e}")),
        }
    }

    pub fn message(&self, len: i32) -> i32 {
        let rt = self.runtime();
        let Some(app) = &mut rt.app else {
            return rt.fail("the app has not started");
        };
        let reply = app.message(host_written(&rt.input, len));
        rt.succeed(reply)
    }

    pub fn http(&self, len: i32) -> i32 {
        let rt = self.runtime();
        let Some(app) = &mut rt.app else {
            return rt.fail("the app has not started");
        };
        let request = match hotswap_msgpack::from_slice(host_written(&rt.input, len)) {
            Ok(request) => request,
            Err(e) => return rt.fail(&format!("cannot decode the HTTP request: {e}")),
        };
        let response = app.http(&request);
        let mut out = std::mem::take(&mut rt.output);
        out.clear();
        match hotswap_msgpack::write(&mut out, &response) {
            Ok(()) => rt.succeed(out),
            Err(e) => rt.fail(&format!("cannot encode the HTTP response: {e}")),
        }
    }

    pub fn tick(&self, now_ms: i64) -> i32 {
        let rt = self.runtime();
        let Some(app) = &mut rt.app else {
            return rt.fail("the app has not started");
        };
        app.tick(now_ms as u64);
        rt.succeed(Vec::new())
    }
}

impl<A: App + crate::InPlace> Slot<A, true> {
    /// `hotswap_start` of an in-place app: stamps the heap with this code's layout first.
    pub fn start_in_place(&self) -> i32 {
        self.stamp();
        self.start()
    }

    /// `hotswap_import_state` of an in-place app (the by-value path): stamps the heap first.
    pub fn import_in_place(&self, len: i32, version: i32) -> i32 {
        self.stamp();
        self.import_state(len, version)
    }

    /// Records in the heap's header the fingerprint of the layout of the code building the
    /// state, which `hotswap_adopt` checks.
    fn stamp(&self) {
        let fingerprint = crate::layout::fingerprint::<Runtime<A>>(IN_PLACE_HEAP_BASE);
        // SAFETY: one thread; the header is the heap's.
        unsafe { (*crate::heap::header()).fingerprint = fingerprint };
    }

    /// `hotswap_layout`: the layout description of the runtime and the app's state.
    pub fn layout(&self) -> i32 {
        let rt = self.runtime();
        let mut text = String::new();
        match Describer::run::<Runtime<A>>(&mut text, IN_PLACE_HEAP_BASE) {
            Ok(()) => rt.succeed(text.into_bytes()),
            Err(_) => rt.fail("cannot describe the state's layout: more than 1024 types"),
        }
    }

    /// `hotswap_adopt`: take over the state that an earlier version of the code left in this
    /// memory. Allocates nothing and frees nothing: a refusal writes only the output
    /// descriptor (scratch, which the old code rewrites at its next call), pointing at a
    /// message in this module's static data.
    pub fn adopt(&self) -> i32 {
        install_panic_hook();
        // SAFETY: `header` found the heap's header (or trapped); one thread.
        let header = unsafe { &*crate::heap::header() };
        let refuse = |message: &'static str| {
            let rt = self.runtime();
            rt.descriptor = [message.as_ptr() as usize as u32, message.len() as u32];
            STATUS_ERROR
        };
        if header.root.is_null() {
            return refuse("there is no state in this memory to adopt");
        }
        let fingerprint = crate::layout::fingerprint::<Runtime<A>>(IN_PLACE_HEAP_BASE);
        if fingerprint == 0 || header.fingerprint != fingerprint {
            return refuse(
                "the state in this memory was laid out by code with a different layout \
                 description: it cannot be adopted",
            );
        }
        let rt = self.runtime();
        if rt.app.is_none() {
            return refuse("the app in this memory has not started");
        }
        rt.descriptor = [rt.output.as_ptr() as usize as u32, 0];
        STATUS_OK
    }
}

/// Allocates, touches and frees `bytes` of heap, so that the allocations that follow (the
/// import's decoding, during a swap's pause) land on pages already faulted in:
/// `hotswap_warm`, which the host calls before the pause with the old instance's memory
/// size minus this one's.
pub fn warm_heap(bytes: usize) {
    let mut block: Vec<u8> = Vec::new();
    if block.try_reserve_exact(bytes).is_ok() {
        let start = block.as_mut_ptr();
        for offset in (0..bytes).step_by(4096) {
            // SAFETY: `offset < bytes <= capacity`; writing into reserved capacity is allowed.
            unsafe { start.add(offset).write_volatile(0) };
        }
    }
}

/// The runtime of an in-place app: in the heap, its address in the heap's header.
#[allow(clippy::mut_from_ref)]
#[inline]
fn in_place_runtime<A>() -> &'static mut Runtime<A> {
    #[cfg(target_arch = "wasm32")]
    {
        // SAFETY: one thread; `header` returns the heap's header, whose `root` is null or the
        // `Runtime<A>` boxed below: the host adopts a memory only for code whose layout
        // description (which starts with `Runtime<A>`) equals the one that built it.
        unsafe {
            let header = crate::heap::header();
            if (*header).root.is_null() {
                (*header).root = Box::into_raw(Box::new(Runtime::<A>::new())).cast();
            }
            &mut *(*header).root.cast::<Runtime<A>>()
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    abort("an in-place app runs only on wasm32")
}

/// The first `len` bytes of the input buffer, which the host wrote before this call.
fn host_written(input: &Vec<u8>, len: i32) -> &[u8] {
    let len = (len as u32 as usize).min(input.capacity());
    // SAFETY: the bytes lie within the buffer's allocation (`len <= capacity`), and the host
    // initialised them before the call, as the ABI requires.
    unsafe { std::slice::from_raw_parts(input.as_ptr(), len) }
}

impl<A> Runtime<A> {
    /// Reserves the export's buffer, if it is not there yet.
    fn ready_export(&mut self) {
        let wanted = STATE_CHUNK + hotswap_msgpack::CHUNK_SLACK;
        if self.export.capacity() < wanted {
            self.export = Vec::new();
            let _ = self.export.try_reserve_exact(wanted);
        }
    }

    fn succeed(&mut self, output: Vec<u8>) -> i32 {
        self.output = output;
        self.descriptor = [
            self.output.as_ptr() as usize as u32,
            self.output.len() as u32,
        ];
        STATUS_OK
    }

    fn fail(&mut self, message: &str) -> i32 {
        self.succeed(message.as_bytes().to_vec());
        STATUS_ERROR
    }
}

/// Routes panics to the host: the message becomes the trap's message.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string().replace('\n', " ");
        abort(&message)
    }));
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn abort(message: &str) -> ! {
    #[link(wasm_import_module = "hotswap")]
    unsafe extern "C" {
        #[link_name = "abort"]
        fn hotswap_abort(ptr: *const u8, len: usize) -> !;
    }
    // SAFETY: the host reads `len` bytes at `ptr`, which `message` owns, and never returns.
    unsafe { hotswap_abort(message.as_ptr(), message.len()) }
}

/// Hands the host one piece of the state being exported (`hotswap.state_chunk`).
#[cfg(target_arch = "wasm32")]
fn state_chunk(piece: &[u8]) {
    #[link(wasm_import_module = "hotswap")]
    unsafe extern "C" {
        #[link_name = "state_chunk"]
        fn hotswap_state_chunk(ptr: *const u8, len: usize);
    }
    // SAFETY: the host copies `len` bytes at `ptr`, which `piece` owns, before returning.
    unsafe { hotswap_state_chunk(piece.as_ptr(), piece.len()) }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn abort(message: &str) -> ! {
    eprintln!("{message}");
    std::process::abort()
}
