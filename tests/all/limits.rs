//! Guests that loop forever or allocate without end: the host interrupts them, reports it, and
//! keeps serving. (The limits are configuration, not timing assertions.)

use crate::failures::{abi_module, prepare_wat, start_wat};
use hotswap::{CallError, Config, Recovery, SwapError, SwapRefused};
use hotswap_tests::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A runtime whose calls may run 200 ms, with 32 MiB of memory.
pub fn limited() -> std::sync::Arc<hotswap::Runtime> {
    runtime_with(Config {
        call_timeout: Duration::from_millis(200),
        max_memory: 32 << 20,
        inherit_stdio: false,
        ..Config::default()
    })
}

const SPIN_ON_7: &str = r#"(func (export "hotswap_message") (param $len i32) (result i32)
    (if (i32.eq (i32.load8_u (i32.const 1024)) (i32.const 7)) (then (loop $forever (br $forever))))
    (global.set $value (i64.add (global.get $value) (i64.const 1)))
    (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#;

/// `abi_module`'s state export, replaced by one that never returns.
pub const ENDLESS_EXPORT: (&str, &str) = (
    "hotswap_export_state",
    r#"(func (export "hotswap_export_state") (result i32) (loop $forever (br $forever)) (i32.const 0))"#,
);

/// A swap refused because the running version's export used up the `--timeout`: the export
/// is not run again to move the state (events would wait twice as long), and the refusal names
/// the call limit once.
pub fn assert_export_used_up_the_timeout(refused: &SwapRefused) {
    assert!(
        matches!(refused.error, SwapError::Export(CallError::Timeout(_))),
        "{refused}"
    );
    assert!(
        matches!(refused.recovery, Some(Recovery::NoTimeLeft)),
        "{refused}"
    );
    assert_eq!(
        refused.to_string().matches("call limit").count(),
        1,
        "{refused}"
    );
}

#[test]
fn an_endless_event_is_interrupted_and_the_app_serves_on() {
    let runtime = limited();
    let mut app = start_wat(&runtime, &abi_module(&[("hotswap_message", SPIN_ON_7)]));
    app.message(&[1]).unwrap();
    let error = app.message(&[7]).unwrap_err();
    assert_eq!(error.error, CallError::Timeout(Duration::from_millis(200)));
    assert!(
        error
            .to_string()
            .starts_with("guest ran longer than the 200 ms call limit"),
        "{error}"
    );
    // The event used up its --timeout: no time is left to move the state into a fresh instance
    // (that would hold events longer), so the instance serves on, noted as damaged.
    assert!(
        matches!(error.recovery, Some(Recovery::NoTimeLeft)),
        "{error}"
    );
    assert!(app.stats().damaged.is_some());
    // The deadline is renewed for every call: the next event runs normally.
    app.message(&[1]).unwrap();
    assert_eq!(state(&mut app), 2i64.to_le_bytes());
}

#[test]
fn an_endless_export_refuses_the_swap_and_the_old_version_serves_on() {
    let runtime = limited();
    let wat = abi_module(&[("hotswap_message", SPIN_ON_7), ENDLESS_EXPORT]);
    let mut app = start_wat(&runtime, &wat);
    app.message(&[1]).unwrap();
    let refused = app
        .swap(prepare_wat(&runtime, &abi_module(&[])).unwrap())
        .unwrap_err();
    // The export used up the pause's --timeout, and the host says so.
    assert_export_used_up_the_timeout(&refused);
    let message = refused.to_string();
    assert!(message.contains("used up the --timeout"), "{message}");
    app.message(&[1]).unwrap();
    assert_eq!(app.stats().swaps, 0);
}

#[test]
fn an_endless_import_refuses_the_swap() {
    let runtime = limited();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    app.message(&[1]).unwrap();
    let wat = abi_module(&[(
        "hotswap_import_state",
        r#"(func (export "hotswap_import_state") (param i32 i32) (result i32) (loop $forever (br $forever)) (i32.const 0))"#,
    )]);
    let refused = app.swap(prepare_wat(&runtime, &wat).unwrap()).unwrap_err();
    assert!(
        matches!(refused.error, SwapError::Import(CallError::Timeout(_))),
        "{refused}"
    );
    assert_eq!(state(&mut app), 1i64.to_le_bytes());
}

#[test]
fn growing_memory_without_end_hits_the_limit() {
    let runtime = limited();
    let wat = abi_module(&[(
        "hotswap_message",
        r#"(func (export "hotswap_message") (param i32) (result i32)
            (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
            (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#,
    )]);
    let mut app = start_wat(&runtime, &wat);
    let error = app.message(b"x").unwrap_err();
    assert!(
        matches!(error.error, CallError::MemoryLimit { wanted: Some(w), limit: 0x200_0000 } if w > 32 << 20),
        "{error}"
    );
    assert!(
        error.error.to_string().starts_with(
            "guest tried to grow its memory to 32.1 MiB, past the 32.0 MiB memory limit (--max-memory; raise it on a running host with `hotswap limits --max-memory MIB`)"
        ),
        "{error}"
    );
    // The state moved to a fresh instance, with fresh memory.
    assert!(matches!(error.recovery, Some(Recovery::Moved)), "{error}");
    assert_eq!(state(&mut app), 0i64.to_le_bytes());
}

#[test]
fn a_rust_guest_allocating_without_end_hits_the_limit() {
    let runtime = runtime_with(Config {
        max_memory: 32 << 20,
        inherit_stdio: false,
        ..Config::default()
    });
    let mut app = start(&runtime, KV_V1);
    send(&mut app, "set a 1");
    let error = app.message(b"fill 100000000").unwrap_err();
    assert!(
        matches!(
            error.error,
            CallError::MemoryLimit {
                limit: 0x200_0000,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.recovery.is_some(),
        "a trapped instance is treated as lost"
    );
}

#[test]
fn a_module_whose_memory_exceeds_the_limit_is_refused() {
    let runtime = limited();
    let wat = abi_module(&[("memory", r#"(memory (export "memory") 1024)"#)]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert!(
        matches!(
            error,
            SwapError::Initialize {
                step: "instantiation",
                error: CallError::MemoryLimit { .. }
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("grow its memory to 64.0 MiB, past the 32.0 MiB"),
        "{error}"
    );
}

/// Before a swap's pause the new instance is warmed up to the running one's memory size, which
/// the app publishes as its memory grows; never past the memory limit, and a swap after warming
/// carries the state as usual.
#[test]
fn warming_reaches_the_running_instances_size_but_never_the_limit() {
    let runtime = limited();
    let mut app = start(&runtime, KV_V1);
    assert_eq!(send(&mut app, "fill 50000"), "kv v1: 50000");
    let running = app.memory_size();
    let watch = app.memory_watch();
    assert_eq!(watch.load(Ordering::Relaxed), running);
    assert!(
        running > 4 << 20,
        "the fill should have grown memory: {running}"
    );

    let mut prepared = prepare(&runtime, KV_V2);
    assert!(prepared.memory_size() < running);
    prepared.warm_heap(running).unwrap();
    let warmed = prepared.memory_size();
    assert!(
        (running..running + (2 << 20)).contains(&warmed),
        "warmed to {warmed}, running {running}"
    );
    // Already that size: nothing more to do.
    prepared.warm_heap(running).unwrap();
    assert_eq!(prepared.memory_size(), warmed);
    app.swap(prepared).unwrap();
    assert_eq!(send(&mut app, "count"), "kv v2: 50000");
    // The watch follows the app into its new instance.
    assert_eq!(watch.load(Ordering::Relaxed), app.memory_size());

    let mut prepared = prepare(&runtime, KV_V1);
    prepared.warm_heap(1 << 30).unwrap();
    assert!(
        prepared.memory_size() < 32 << 20,
        "{}",
        prepared.memory_size()
    );
    app.swap(prepared).unwrap();
    assert_eq!(send(&mut app, "count"), "kv v1: 50000");
}
