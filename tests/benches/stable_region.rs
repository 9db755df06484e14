//! What one access costs when app state lives in a host-owned region that the guest reaches
//! only through host calls ("design 2", like ic-stable-structures' `Memory` trait: size/grow/
//! read/write over host imports), against the same access to the guest's own linear memory.
//!
//! `cargo bench -p hotswap-tests --bench stable_region` (add `-- --quick` for a smoke run). A
//! wasm loop looks up `u64`s at pseudo-random aligned offsets (an LCG computed in wasm) in a
//! 64 MiB region, or in its first 32 KiB (cache-resident, so the call's fixed cost shows), and
//! sums them: either through the import `region.read(ptr, offset, len)`, which the host serves
//! as such a `Memory` would (`Caller`, `get_export("memory")`, bounds checks, a copy out of a
//! host `Vec<u8>`), or by loading straight from an identical 64 MiB region inside linear memory.
//! The 64-byte rows read a B-tree node's key block per access. The engine is configured as the
//! host's (epoch interruption, memories that do not move), though wasmtime maps the memory here,
//! not the host's `guest::mapping`; both variants must return the same sum.

use std::time::Instant;
use wasmtime::error::Context;
use wasmtime::{Caller, Config, Engine, Extern, Instance, Linker, Module, Store, bail};

/// The region's size: 64 MiB, as bytes and as a power of two.
const REGION_LOG2: u32 = 26;
const REGION: usize = 1 << REGION_LOG2;
/// Where the linear-memory copy of the region starts (page 0 is the host call's scratch buffer).
const LINEAR_BASE: usize = 1 << 16;
/// The spans looked up (log2 of bytes): the first 32 KiB (in L1, so the fixed cost of the call
/// shows) and the whole region (cache and TLB misses, which the call keeps from overlapping).
const SPANS: [u32; 2] = [15, REGION_LOG2];
/// Bytes per access: one `u64`, or a B-tree node's 64-byte key block (summed as 8 `u64`s).
const SIZES: [u32; 2] = [8, 64];

fn main() -> wasmtime::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (lookups, batches) = if quick { (200_000, 3) } else { (2_000_000, 11) };

    let mut config = Config::new();
    config.epoch_interruption(true);
    config.memory_may_move(false);
    let engine = Engine::new(&config)?;
    let module = Module::new(&engine, wat())?;

    // The same bytes twice: in the host's region, and in the guest's linear memory.
    let region: Vec<u8> = (0..(REGION / 8) as u64)
        .flat_map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes())
        .collect();
    let mut linker = Linker::new(&engine);
    linker.func_wrap("region", "read", read)?;
    let mut store = Store::new(&engine, region);
    let instance: Instance = linker.instantiate(&mut store, &module)?;
    let memory = instance
        .get_memory(&mut store, "memory")
        .context("no memory")?;
    let (linear, region) = memory.data_and_store_mut(&mut store);
    linear[LINEAR_BASE..LINEAR_BASE + REGION].copy_from_slice(region);

    // Each row: (span, bytes, [host call, linear memory]).
    let mut rows = Vec::new();
    for span in SPANS {
        for bytes in SIZES {
            let mut func = |kind| {
                let name = format!("{kind}_{span}_{bytes}");
                instance.get_typed_func::<(i32, i64), i64>(&mut store, &name)
            };
            rows.push((span, bytes, [func("host")?, func("linear")?]));
        }
    }
    let mut ns = vec![[Vec::new(), Vec::new()]; rows.len()];
    // One warm-up batch, then the timed ones; all variants run in each batch, in turn.
    for batch in 0..=batches {
        for ((_, _, funcs), ns) in rows.iter().zip(&mut ns) {
            let mut sums = [0; 2];
            for i in 0..2 {
                store.set_epoch_deadline(1_000_000);
                let start = Instant::now();
                sums[i] = funcs[i].call(&mut store, (lookups, batch))?;
                let elapsed = start.elapsed();
                if batch > 0 {
                    ns[i].push(elapsed.as_nanos() as f64 / f64::from(lookups));
                }
            }
            if sums[0] != sums[1] {
                bail!("host-call and linear sums differ: {sums:?}");
            }
        }
    }

    println!("## Stable region through host calls vs linear memory (ns per access, medians)");
    println!();
    println!(
        "A wasm loop reads at random aligned offsets of a span of a 64 MiB region, through \
         `region.read` (a host copy) or straight from linear memory; {batches} batches of \
         {lookups} accesses."
    );
    println!();
    println!("CPU: {}", cpu_model());
    println!();
    println!("| span | bytes per access | host call | linear memory | host call / linear |");
    println!("|---|---|---|---|---|");
    for ((span, bytes, _), ns) in rows.iter().zip(ns) {
        let [host, linear] = ns.map(median);
        let span = match span {
            0..20 => format!("{} KiB", 1 << (span - 10)),
            _ => format!("{} MiB", 1 << (span - 20)),
        };
        println!(
            "| {span} | {bytes} | {host:.1} | {linear:.1} | {:.1}× |",
            host / linear
        );
    }
    Ok(())
}

/// `region.read(ptr, offset, len)`: copies `len` bytes of the host region at `offset` into guest
/// memory at `ptr`, as a `Memory::read` over host calls does.
fn read(mut caller: Caller<'_, Vec<u8>>, ptr: i32, offset: i64, len: i32) -> wasmtime::Result<()> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        bail!("guest exports no memory");
    };
    let (guest, region) = memory.data_and_store_mut(&mut caller);
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let offset = usize::try_from(offset)?;
    let src = offset
        .checked_add(len)
        .and_then(|end| region.get(offset..end))
        .context("read past the region's end")?;
    let dst = ptr
        .checked_add(len)
        .and_then(|end| guest.get_mut(ptr..end))
        .context("read into memory out of bounds")?;
    dst.copy_from_slice(src);
    Ok(())
}

/// The guest: `{host,linear}_{span}_{bytes}`, each `(lookups, seed) -> sum`.
fn wat() -> String {
    let mut funcs = String::new();
    for (span, bytes) in SPANS.into_iter().flat_map(|s| SIZES.map(|b| (s, b))) {
        let log2 = bytes.trailing_zeros();
        // A `bytes`-aligned offset into the span, from the LCG's high bits.
        let offset = format!(
            "(i64.shl (i64.shr_u (local.get $x) (i64.const {})) (i64.const {log2}))",
            64 - (span - log2)
        );
        let host = format!(
            "(call $read (i32.const 0) {offset} (i32.const {bytes})) (local.set $p (i32.const 0))"
        );
        let linear =
            format!("(local.set $p (i32.add (i32.const {LINEAR_BASE}) (i32.wrap_i64 {offset})))");
        // The sum of the `bytes / 8` words at `$p`.
        let words = (1..bytes / 8).fold("(i64.load (local.get $p))".to_string(), |sum, k| {
            format!("(i64.add {sum} (i64.load offset={} (local.get $p)))", k * 8)
        });
        for (kind, fetch) in [("host", host), ("linear", linear)] {
            funcs += &format!(
                r#"
  (func (export "{kind}_{span}_{bytes}") (param $n i32) (param $x i64) (result i64)
    (local $sum i64) (local $p i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $x (i64.add (i64.mul (local.get $x) (i64.const 6364136223846793005))
                               (i64.const 1442695040888963407)))
        {fetch}
        (local.set $sum (i64.add (local.get $sum) {words}))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $sum))"#
            );
        }
    }
    let pages = (LINEAR_BASE + REGION).div_ceil(1 << 16);
    format!(
        r#"(module
  (import "region" "read" (func $read (param i32 i64 i32)))
  (memory (export "memory") {pages}){funcs})"#
    )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
