//! Hotswap's benchmarks: swap pause against state size, with its phases, and per-event dispatch
//! against a bare wasmtime typed call. A bench binary (not criterion): a swap of 100 MB of state
//! takes long enough that a handful of runs per size, reported as medians, is what fits.
//!
//! `cargo bench -p hotswap-tests --bench swap` runs everything; `-- --quick` stops at 1 MB and
//! runs fewer repetitions (a smoke run). Results and the machine go in BENCHMARKS.md.

use hotswap::report::format_duration;
use hotswap::{App, Config, Phases, Runtime};
use hotswap_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The columns of the pause tables: the first two phases happen before the pause.
const PAUSE_HEADER: &str = "| swap | state | runs | instantiate | reserve + warm | export | copy | import | verify | **pause** |\n|---|---|---|---|---|---|---|---|---|---|";

/// The two kinds of swap measured, from kv v1.
const SWAPS: [(&str, &str); 2] = [
    ("kv v1 → v2 (same layout)", KV_V2),
    ("kv v1 → v3 (migrate)", KV_V3),
];

/// About how many bytes of MessagePack one generated kv record takes (11-digit key, 16-byte
/// value); the table prints the exact state size.
const RECORD_BYTES: usize = 29;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = bench_runtime();

    compile_times();
    println!();
    written_to_serving(&runtime, quick);
    println!();
    dispatch(&runtime, quick);
    println!();
    println!("## Swap pause by state size (medians; pause = export + copy + import + verify)");
    println!();
    println!("{PAUSE_HEADER}");
    let sizes: &[(&str, usize, usize)] = if quick {
        &[("1 KB", 1 << 10, 5), ("1 MB", 1 << 20, 3)]
    } else {
        &[
            ("1 KB", 1 << 10, 31),
            ("1 MB", 1 << 20, 15),
            ("10 MB", 10 << 20, 7),
            ("100 MB", 100 << 20, 5),
        ]
    };
    for &(label, bytes, runs) in sizes {
        let records = bytes.div_ceil(RECORD_BYTES);
        for (kind, to) in SWAPS {
            swap_pause(&runtime, kind, label, records, runs, to, Running::Started);
        }
    }
    println!();
    println!(
        "## Swap pause by record count, as in the Erlang anchor (medians; \"later swap\": the running instance was itself swapped in)"
    );
    println!();
    println!("{PAUSE_HEADER}");
    let counts: &[(&str, usize, usize)] = if quick {
        &[("1,000 records", 1_000, 5), ("10,000 records", 10_000, 3)]
    } else {
        &[
            ("1,000 records", 1_000, 15),
            ("10,000 records", 10_000, 15),
            ("100,000 records", 100_000, 7),
            ("1,000,000 records", 1_000_000, 5),
        ]
    };
    for &(label, records, runs) in counts {
        for running in [Running::Started, Running::SwappedIn] {
            for (kind, to) in SWAPS {
                swap_pause(&runtime, kind, label, records, runs, to, running);
            }
        }
    }
}

/// Which instance a measured swap replaces.
#[derive(Clone, Copy, PartialEq)]
enum Running {
    /// The app's first instance, filled by messages: its export is the first it ever makes, so
    /// its output buffer grows into fresh pages inside the pause.
    Started,
    /// An instance that was itself swapped in (warmed, then given the filled state), as every
    /// swap but the first of a long-running app replaces: its export has run before.
    SwappedIn,
}

/// From writing the module file to the new code serving, through the watcher: for a module
/// never seen (compiled) and for one seen before (from the cache), at two debounce intervals.
fn written_to_serving(runtime: &Arc<Runtime>, quick: bool) {
    let runs = if quick { 3 } else { 7 };
    println!(
        "## Module file written → new code serving (counter, via the watcher; median of {runs})"
    );
    println!();
    println!("| debounce | new module (compiled) | module seen before (cached) |");
    println!("|---|---|---|");
    let v1 = std::fs::read(COUNTER_V1).unwrap();
    let v2 = std::fs::read(COUNTER_V2).unwrap();
    for debounce_ms in [100u64, 10] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.wasm");
        std::fs::write(&path, &v1).unwrap();
        let mut app =
            App::start(runtime.clone(), runtime.prepare("app.wasm", &v1).unwrap()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let preparer = runtime.clone();
        let _watcher = hotswap::watch::watch(
            &path,
            hotswap::ModuleHash::of(&v1),
            Duration::from_millis(debounce_ms),
            1 << 30,
            move |change| {
                if let hotswap::watch::Change::Content(bytes) = change {
                    tx.send(preparer.prepare("app.wasm", &bytes)).unwrap();
                }
            },
        )
        .unwrap();
        let mut write_and_swap = |bytes: &[u8]| {
            let started = Instant::now();
            std::fs::write(&path, bytes).unwrap();
            let prepared = rx.recv().unwrap().unwrap();
            app.swap(prepared).unwrap();
            started.elapsed()
        };
        let (mut fresh, mut cached) = (Vec::new(), Vec::new());
        for run in 0..runs {
            // A distinct custom section makes every "new" module a real compile.
            // (Tags differ between the debounce settings too: one runtime, one cache.)
            let tag = debounce_ms as u32 * 1000 + run as u32;
            fresh.push(write_and_swap(&with_custom_section(&v2, tag)));
            cached.push(write_and_swap(&v1));
        }
        println!(
            "| {debounce_ms} ms | {} | {} |",
            format_duration(median(fresh)),
            format_duration(median(cached))
        );
    }
}

/// `wasm` with a custom section carrying `tag` appended: the same code, another hash.
fn with_custom_section(wasm: &[u8], tag: u32) -> Vec<u8> {
    let name = b"hotswap-bench";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&tag.to_le_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // its size, < 128: one LEB128 byte
    out.extend_from_slice(&section);
    out
}

/// Compile time of each example module, uncached (a fresh runtime for each).
fn compile_times() {
    println!("## Compile (cranelift, uncached)");
    println!();
    println!("| module | size | compile |");
    println!("|---|---|---|");
    for (name, path) in [
        ("counter_v1", COUNTER_V1),
        ("kv_v3", KV_V3),
        ("counter.wat", COUNTER_WAT),
    ] {
        let bytes = std::fs::read(path).unwrap();
        let times: Vec<Duration> = (0..5)
            .map(|_| {
                let runtime = Runtime::new(Config::default()).unwrap();
                runtime.compile(name, &bytes).unwrap().compile_time
            })
            .collect();
        println!(
            "| {name} | {} KiB | {} |",
            bytes.len() / 1024,
            format_duration(median(times))
        );
    }
}

/// One swap kind at one size: a fresh app filled with `records` records for every run.
fn swap_pause(
    runtime: &Arc<Runtime>,
    kind: &str,
    label: &str,
    records: usize,
    runs: usize,
    to: &str,
    running: Running,
) {
    let mut phases: Vec<Phases> = Vec::new();
    let (mut instantiate, mut warm) = (Vec::new(), Vec::new());
    let mut state_len = 0;
    for _ in 0..runs {
        // The previous run's instances are being dropped on the host's dropping thread; a
        // large memory takes a while to unmap, and unmapping stalls this run's page faults.
        std::thread::sleep(Duration::from_millis(10 + records as u64 / 10_000));
        let mut app = start(runtime, KV_V1);
        assert_eq!(
            send(&mut app, &format!("fill {records}")),
            format!("kv v1: {records}")
        );
        if running == Running::SwappedIn {
            let again = prepare_file(runtime, KV_V1);
            app.swap(ready(again, records, &app))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // Before the pause: instantiate (the module is compiled once and then cached, as in a
        // swap back), then ready it as `hotswap run` does.
        let started = Instant::now();
        let prepared = prepare_file(runtime, to);
        instantiate.push(started.elapsed());
        let started = Instant::now();
        let prepared = ready(prepared, records, &app);
        warm.push(started.elapsed());
        let report = app.swap(prepared).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            send(&mut app, "count"),
            format!("kv {}: {records}", if to == KV_V2 { "v2" } else { "v3" })
        );
        state_len = report.state_len;
        phases.push(report.phases);
    }
    let pick = |f: fn(&Phases) -> Duration| format_duration(median(phases.iter().map(f).collect()));
    let kind = match running {
        Running::Started => kind.to_owned(),
        Running::SwappedIn => format!("{kind}, later swap"),
    };
    println!(
        "| {kind} | {label} ({state_len} B, {records} records) | {runs} | {} | {} | {} | {} | {} | {} | **{}** |",
        format_duration(median(instantiate)),
        format_duration(median(warm)),
        pick(|p| p.export),
        pick(|p| p.copy),
        pick(|p| p.import),
        pick(|p| p.verify),
        pick(|p| p.pause),
    );
}

/// What `hotswap run` does with a prepared version before the pause: reserve room for the
/// state (sized from the last swap; here the record count times the record size, plus 1%) and
/// warm the heap up to the running instance's memory.
fn ready(mut prepared: hotswap::Prepared, records: usize, running: &App) -> hotswap::Prepared {
    let state = records * RECORD_BYTES;
    prepared.reserve_state(state + state / 100 + 64).unwrap();
    prepared.warm_heap(running.memory_size()).unwrap();
    prepared
}

fn prepare_file(runtime: &Runtime, path: &str) -> hotswap::Prepared {
    runtime
        .prepare_file(path.as_ref())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Per-event dispatch: `App::message` against bare wasmtime calls of the same export.
fn dispatch(runtime: &Arc<Runtime>, quick: bool) {
    let batch = if quick { 20_000 } else { 200_000 };
    let batches = if quick { 5 } else { 15 };
    println!("## Per-event dispatch (median of {batches} batches of {batch} calls, ns per call)");
    println!();
    println!(
        "| guest, message | bare `TypedFunc::call` | bare + epoch deadline | `App::message` (copies the reply) | `App::message_with` (borrows it) | borrowed / bare+epoch |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, path, input) in [
        ("counter.wat, `get`", COUNTER_WAT, "get"),
        ("counter_v1 (Rust SDK), `get`", COUNTER_V1, "get"),
    ] {
        let bare = bare_call(path, input, false, batch, batches);
        let bare_epoch = bare_call(path, input, true, batch, batches);
        let mut app: App = start(runtime, path);
        let host = per_call(batch, batches, || {
            std::hint::black_box(app.message(input.as_bytes()).unwrap());
        });
        let borrowed = per_call(batch, batches, || {
            std::hint::black_box(
                app.message_with(input.as_bytes(), |reply| reply.len())
                    .unwrap(),
            );
        });
        println!(
            "| {name} | {bare:.1} | {bare_epoch:.1} | {host:.1} | {borrowed:.1} | {:.2}× |",
            borrowed / bare_epoch
        );
    }
}

/// Calls `hotswap_message` directly with wasmtime: the input written once, nothing checked.
fn bare_call(path: &str, input: &str, epoch: bool, batch: usize, batches: usize) -> f64 {
    use wasmtime::{Config, Engine, Linker, Module, Store};
    let mut config = Config::new();
    config.epoch_interruption(epoch);
    // As Hotswap's engine: the guest's own code compiles the same.
    config.memory_may_move(false);
    let engine = Engine::new(&config).unwrap();
    let module = Module::from_file(&engine, path).unwrap();
    let mut linker: Linker<()> = Linker::new(&engine);
    // The Rust guests import WASI and `hotswap.abort`; a dispatch never calls them.
    linker.define_unknown_imports_as_traps(&module).unwrap();
    let mut store = Store::new(&engine, ());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        init.call(&mut store, ()).unwrap();
    }
    let start = instance
        .get_typed_func::<(), i32>(&mut store, "hotswap_start")
        .unwrap();
    assert_eq!(start.call(&mut store, ()).unwrap(), 0);
    let reserve = instance
        .get_typed_func::<i32, i32>(&mut store, "hotswap_reserve")
        .unwrap();
    let ptr = reserve.call(&mut store, input.len() as i32).unwrap() as usize;
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    memory.data_mut(&mut store)[ptr..ptr + input.len()].copy_from_slice(input.as_bytes());
    let message = instance
        .get_typed_func::<i32, i32>(&mut store, "hotswap_message")
        .unwrap();
    let len = input.len() as i32;
    per_call(batch, batches, || {
        if epoch {
            store.set_epoch_deadline(1_000_000);
        }
        std::hint::black_box(message.call(&mut store, len).unwrap());
    })
}

/// Median over batches of the mean time per call, in ns.
fn per_call(batch: usize, batches: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..batch / 10 {
        f();
    }
    let mut means: Vec<f64> = (0..batches)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..batch {
                f();
            }
            started.elapsed().as_nanos() as f64 / batch as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    means[means.len() / 2]
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}
