//! Bad modules and misbehaving guests: each gets a clear, typed error, and whatever was running
//! keeps running with its state byte-identical. Malformed modules are inline WAT.

use hotswap::{App, CallError, CheckError, SwapError};
use hotswap_tests::*;

/// A complete, valid ABI module (state: one i64 global, encoded as 8 bytes) in which the named
/// functions are replaced by the given text. Each test breaks one thing.
pub fn abi_module(replace: &[(&str, &str)]) -> String {
    let mut funcs = vec![
        ("memory", r#"(memory (export "memory") 1)"#.to_owned()),
        ("value", "(global $value (mut i64) (i64.const 0))".to_owned()),
        ("out", "(func $out (param i32 i32 i32) (result i32) (i32.store (i32.const 16) (local.get 0)) (i32.store (i32.const 20) (local.get 1)) (local.get 2))".to_owned()),
        ("hotswap_abi_version", r#"(func (export "hotswap_abi_version") (result i32) (i32.const 1))"#.to_owned()),
        ("hotswap_state_version", r#"(func (export "hotswap_state_version") (result i32) (i32.const 1))"#.to_owned()),
        ("hotswap_output", r#"(func (export "hotswap_output") (result i32) (i32.const 16))"#.to_owned()),
        ("hotswap_reserve", r#"(func (export "hotswap_reserve") (param i32) (result i32) (i32.const 1024))"#.to_owned()),
        ("hotswap_start", r#"(func (export "hotswap_start") (result i32) (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#.to_owned()),
        ("hotswap_import_state", r#"(func (export "hotswap_import_state") (param i32 i32) (result i32) (global.set $value (i64.load (i32.const 1024))) (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#.to_owned()),
        ("hotswap_export_state", r#"(func (export "hotswap_export_state") (result i32) (i64.store (i32.const 512) (global.get $value)) (call $out (i32.const 512) (i32.const 8) (i32.const 0)))"#.to_owned()),
        ("hotswap_message", r#"(func (export "hotswap_message") (param i32) (result i32) (global.set $value (i64.add (global.get $value) (i64.const 1))) (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#.to_owned()),
        ("hotswap_tick", r#"(func (export "hotswap_tick") (param i64) (result i32) (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#.to_owned()),
    ];
    for (name, text) in replace {
        match funcs.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = (*text).to_owned(),
            // Imports must come before every definition.
            None if *name == "import" => funcs.insert(0, (name, (*text).to_owned())),
            None => funcs.push((name, (*text).to_owned())),
        }
    }
    let body: Vec<String> = funcs.into_iter().map(|(_, text)| text).collect();
    format!("(module\n  {}\n)", body.join("\n  "))
}

pub fn prepare_wat(runtime: &hotswap::Runtime, wat: &str) -> Result<hotswap::Prepared, SwapError> {
    runtime.prepare("inline.wat", wat.as_bytes())
}

pub fn start_wat(runtime: &std::sync::Arc<hotswap::Runtime>, wat: &str) -> App {
    App::start(runtime.clone(), prepare_wat(runtime, wat).expect("prepare")).expect("start")
}

#[test]
fn the_base_module_is_valid() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    app.message(b"x").unwrap();
    app.message(b"x").unwrap();
    assert_eq!(state(&mut app), 2i64.to_le_bytes());
    app.swap(prepare_wat(&runtime, &abi_module(&[])).unwrap())
        .unwrap();
    assert_eq!(state(&mut app), 2i64.to_le_bytes());
}

#[test]
fn not_wasm_empty_and_truncated_files_are_refused() {
    let runtime = runtime();
    assert!(matches!(
        runtime.prepare("a.wasm", b"hello world"),
        Err(SwapError::NotWasm)
    ));
    assert!(matches!(
        runtime.prepare("a.wasm", b""),
        Err(SwapError::Empty)
    ));
    let bytes = std::fs::read(COUNTER_V1).unwrap();
    let error = runtime
        .prepare("a.wasm", &bytes[..bytes.len() / 2])
        .err()
        .unwrap();
    assert!(matches!(error, SwapError::Invalid(_)), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("invalid WebAssembly module: "),
        "{error}"
    );
    let error = runtime
        .prepare("a.wat", b"(module (func $oops")
        .err()
        .unwrap();
    assert!(matches!(error, SwapError::Invalid(_)), "{error}");
}

#[test]
fn missing_export_is_named() {
    let runtime = runtime();
    let error = prepare_wat(&runtime, &abi_module(&[("hotswap_tick", "")]))
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            SwapError::Check(CheckError::MissingExport("hotswap_tick"))
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "the module does not export `hotswap_tick`, which Hotswap ABI version 1 requires (the SDK's `export_app!` generates it)"
    );
    let error = prepare_wat(&runtime, &abi_module(&[("memory", "(memory 1)")]))
        .err()
        .unwrap();
    assert!(
        matches!(error, SwapError::Check(CheckError::NoMemory)),
        "{error}"
    );
}

#[test]
fn wrong_signature_is_described() {
    let runtime = runtime();
    let wat = abi_module(&[(
        "hotswap_message",
        r#"(func (export "hotswap_message") (param i64) (result i32) (i32.const 0))"#,
    )]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert_eq!(
        error.to_string(),
        "`hotswap_message` is a function (i64) -> (i32), but the ABI requires a function (i32) -> (i32)"
    );
    let wat = abi_module(&[(
        "hotswap_tick",
        r#"(global (export "hotswap_tick") i32 (i32.const 0))"#,
    )]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert!(
        error.to_string().starts_with("`hotswap_tick` is a global"),
        "{error}"
    );
    // Optional exports are checked too when present.
    let wat = abi_module(&[(
        "hotswap_warm",
        r#"(func (export "hotswap_warm") (param i32) (result i32) (i32.const 0))"#,
    )]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert_eq!(
        error.to_string(),
        "`hotswap_warm` is a function (i32) -> (i32), but the ABI requires a function (i32) -> ()"
    );
}

#[test]
fn imports_beyond_wasi_and_hotswap_are_refused() {
    let runtime = runtime();
    let wat = abi_module(&[("import", r#"(import "env" "now" (func))"#)]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert!(
        matches!(error, SwapError::Check(CheckError::ForeignImport { .. })),
        "{error}"
    );
    assert!(error.to_string().contains("imports `env::now`"), "{error}");
    let wat = abi_module(&[(
        "import",
        r#"(import "wasi_snapshot_preview1" "no_such_call" (func))"#,
    )]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert!(
        matches!(error, SwapError::Check(CheckError::Imports(_))),
        "{error}"
    );
    let wat = abi_module(&[("import", r#"(import "hotswap" "abort" (func (param i64)))"#)]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert!(
        matches!(error, SwapError::Check(CheckError::Imports(_))),
        "{error}"
    );
}

#[test]
fn a_trap_at_start_is_reported() {
    let runtime = runtime();
    let wat = abi_module(&[(
        "hotswap_start",
        r#"(func (export "hotswap_start") (result i32) unreachable)"#,
    )]);
    let error = App::start(runtime.clone(), prepare_wat(&runtime, &wat).unwrap())
        .err()
        .unwrap();
    assert!(
        matches!(error, SwapError::Start(CallError::Trap(_))),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("the app failed to start: guest trapped: wasm trap: wasm `unreachable`"),
        "{error}"
    );
    let wat = abi_module(&[("init", r#"(func (export "_initialize") unreachable)"#)]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert!(
        matches!(
            error,
            SwapError::Initialize {
                step: "`_initialize`",
                error: CallError::Trap(_)
            }
        ),
        "{error}"
    );
}

#[test]
fn a_trap_with_a_message_carries_it() {
    let runtime = runtime();
    let wat = abi_module(&[
        (
            "import",
            r#"(import "hotswap" "abort" (func $abort (param i32 i32)))"#,
        ),
        ("data", r#"(data (i32.const 256) "out of cheese")"#),
        (
            "hotswap_message",
            r#"(func (export "hotswap_message") (param i32) (result i32) (call $abort (i32.const 256) (i32.const 13)) (i32.const 0))"#,
        ),
    ]);
    let mut app = start_wat(&runtime, &wat);
    let error = app.message(b"x").unwrap_err();
    assert_eq!(error.error, CallError::Panic("out of cheese".into()));
    // The message's range is checked too.
    let wat = abi_module(&[
        (
            "import",
            r#"(import "hotswap" "abort" (func $abort (param i32 i32)))"#,
        ),
        (
            "hotswap_message",
            r#"(func (export "hotswap_message") (param i32) (result i32) (call $abort (i32.const 65530) (i32.const 100)) (i32.const 0))"#,
        ),
    ]);
    let mut app = start_wat(&runtime, &wat);
    let CallError::Panic(message) = app.message(b"x").unwrap_err().error else {
        panic!()
    };
    assert!(message.contains("lies outside its memory"), "{message}");
}

#[test]
fn guest_pointers_are_bounds_checked() {
    let runtime = runtime();
    // An output that runs past the end of memory.
    let wat = abi_module(&[(
        "hotswap_message",
        r#"(func (export "hotswap_message") (param i32) (result i32) (call $out (i32.const 65000) (i32.const 1000) (i32.const 0)))"#,
    )]);
    let mut app = start_wat(&runtime, &wat);
    let error = app.message(b"x").unwrap_err();
    assert!(
        matches!(&error.error, CallError::Abi(m) if m.contains("the output (65000+1000) lies outside")),
        "{error}"
    );
    // A length that wraps around the address space.
    let wat = abi_module(&[(
        "hotswap_message",
        r#"(func (export "hotswap_message") (param i32) (result i32) (call $out (i32.const 16) (i32.const -1) (i32.const 0)))"#,
    )]);
    let error = start_wat(&runtime, &wat).message(b"x").unwrap_err();
    assert!(matches!(error.error, CallError::Abi(_)), "{error}");
    // An output descriptor outside memory.
    let wat = abi_module(&[(
        "hotswap_output",
        r#"(func (export "hotswap_output") (result i32) (i32.const 65532))"#,
    )]);
    let error = prepare_wat(&runtime, &wat).err().unwrap();
    assert!(
        error
            .to_string()
            .contains("the output descriptor (65532+8) lies outside"),
        "{error}"
    );
    // An input buffer outside memory.
    let wat = abi_module(&[(
        "hotswap_reserve",
        r#"(func (export "hotswap_reserve") (param i32) (result i32) (i32.const 65500))"#,
    )]);
    let error = start_wat(&runtime, &wat).message(&[7; 100]).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the input buffer from hotswap_reserve (65500+100) lies outside"),
        "{error}"
    );
    // An unknown status code.
    let wat = abi_module(&[(
        "hotswap_message",
        r#"(func (export "hotswap_message") (param i32) (result i32) (i32.const 7))"#,
    )]);
    let error = start_wat(&runtime, &wat).message(b"x").unwrap_err();
    assert_eq!(error.error, CallError::Abi("unknown status code 7".into()));
}

#[test]
fn a_guest_that_cannot_allocate_its_input_fails_the_event_only() {
    let runtime = runtime();
    let wat = abi_module(&[(
        "hotswap_reserve",
        r#"(func (export "hotswap_reserve") (param i32) (result i32) (i32.const 0))"#,
    )]);
    let mut app = start_wat(&runtime, &wat);
    let error = app.message(b"x").unwrap_err();
    assert!(
        error.to_string().contains("could not allocate 1 bytes"),
        "{error}"
    );
    assert!(
        error.recovery.is_none(),
        "a reported failure does not lose the instance"
    );
}

/// Every way a swap can fail leaves the running version serving with byte-identical state.
#[test]
fn every_refused_swap_keeps_the_old_state() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V1);
    send(&mut app, "set a 1");
    send(&mut app, "fill 1000");
    let before = state(&mut app);
    let truncated = std::fs::read(COUNTER_V1).unwrap()[..1000].to_vec();
    let candidates: Vec<(&str, Vec<u8>)> = vec![
        ("garbage.wasm", b"\0asm garbage".to_vec()),
        ("truncated.wasm", truncated),
        ("wrong-abi.wasm", std::fs::read(WRONG_ABI_WAT).unwrap()),
        ("missing.wat", abi_module(&[("hotswap_export_state", "")]).into_bytes()),
        ("trap-in-import.wasm", std::fs::read(TRAP_IN_IMPORT).unwrap()),
        ("refuse-migration.wasm", std::fs::read(REFUSE_MIGRATION).unwrap()),
        ("import-traps.wat", abi_module(&[("hotswap_import_state", r#"(func (export "hotswap_import_state") (param i32 i32) (result i32) unreachable)"#)]).into_bytes()),
    ];
    for (name, bytes) in candidates {
        match runtime.prepare(name, &bytes) {
            Err(error) => {
                let refused = app.refused(name.to_owned(), error);
                assert!(
                    refused.to_string().contains("still running kv_v1.wasm@"),
                    "{refused}"
                );
            }
            Ok(prepared) => {
                let refused = app.swap(prepared).expect_err(name);
                assert!(
                    refused.to_string().contains("still running kv_v1.wasm@"),
                    "{refused}"
                );
            }
        }
        assert_eq!(
            state(&mut app),
            before,
            "state changed after refusing {name}"
        );
    }
    assert_eq!(send(&mut app, "get a"), "kv v1: 1");
    assert_eq!(app.stats().refused, 7);
    assert_eq!(app.stats().swaps, 0);
}

/// A new version that traps while warming (before the pause) reports it as a lost instance, so
/// the host refuses the swap rather than import into it; the running app is untouched.
#[test]
fn a_trap_while_warming_is_reported_as_a_lost_instance() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    app.message(b"x").unwrap();
    let trapping = abi_module(&[(
        "hotswap_warm",
        r#"(func $hotswap_warm (export "hotswap_warm") (param i32) unreachable)"#,
    )]);
    let mut prepared = prepare_wat(&runtime, &trapping).unwrap();
    let error = prepared
        .warm_heap(app.memory_size() + (1 << 20))
        .unwrap_err();
    assert!(matches!(error, CallError::Trap(_)), "{error}");
    assert!(error.instance_lost());
    assert!(error.to_string().contains("hotswap_warm"), "{error}");
    assert_eq!(state(&mut app), 1i64.to_le_bytes());
}

/// `abi_module` with its state set to eight distinct bytes at start, exported in three pieces:
/// two through `hotswap.state_chunk` and the last as the output.
fn streaming_module() -> String {
    abi_module(&[
        (
            "import",
            r#"(import "hotswap" "state_chunk" (func $chunk (param i32 i32)))"#,
        ),
        (
            "hotswap_start",
            r#"(func (export "hotswap_start") (result i32) (global.set $value (i64.const 0x0102030405060708)) (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#,
        ),
        (
            "hotswap_export_state",
            r#"(func (export "hotswap_export_state") (result i32) (i64.store (i32.const 512) (global.get $value)) (call $chunk (i32.const 512) (i32.const 3)) (call $chunk (i32.const 515) (i32.const 2)) (call $out (i32.const 517) (i32.const 3) (i32.const 0)))"#,
        ),
    ])
}

#[test]
fn a_state_streamed_in_pieces_arrives_whole() {
    let runtime = runtime();
    let expected = 0x0102030405060709i64.to_le_bytes();
    // Into host memory (`hotswap state`).
    let mut app = start_wat(&runtime, &streaming_module());
    app.message(b"x").unwrap();
    assert_eq!(state(&mut app), expected);
    // Into the new instance: without a reserved buffer (the host keeps the pieces and copies
    // them in after), into one that holds the state, and into one that holds only the first
    // piece (the rest goes through host memory).
    for reserve in [None, Some(8), Some(4)] {
        let mut app = start_wat(&runtime, &streaming_module());
        app.message(b"x").unwrap();
        let mut prepared = prepare_wat(&runtime, &abi_module(&[])).unwrap();
        if let Some(len) = reserve {
            prepared.reserve_state(len).unwrap();
        }
        let report = app.swap(prepared).unwrap();
        assert_eq!(report.state_len, 8, "{reserve:?}");
        assert_eq!(state(&mut app), expected, "{reserve:?}");
    }
}

#[test]
fn state_chunks_are_checked() {
    let runtime = runtime();
    let chunk_import = (
        "import",
        r#"(import "hotswap" "state_chunk" (func $chunk (param i32 i32)))"#,
    );
    // A piece outside memory: the swap is refused and the old version keeps serving.
    let wat = abi_module(&[
        chunk_import,
        (
            "hotswap_export_state",
            r#"(func (export "hotswap_export_state") (result i32) (call $chunk (i32.const 65530) (i32.const 100)) (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#,
        ),
    ]);
    let mut app = start_wat(&runtime, &wat);
    let refused = app
        .swap(prepare_wat(&runtime, &abi_module(&[])).unwrap())
        .unwrap_err();
    assert!(
        matches!(&refused.error, SwapError::Export(CallError::Abi(m)) if m.contains("a state chunk (65530+100) lies outside")),
        "{refused}"
    );
    app.message(b"x").unwrap();
    // Called outside an export.
    let wat = abi_module(&[
        chunk_import,
        (
            "hotswap_message",
            r#"(func (export "hotswap_message") (param i32) (result i32) (call $chunk (i32.const 0) (i32.const 8)) (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#,
        ),
    ]);
    let error = start_wat(&runtime, &wat).message(b"x").unwrap_err();
    assert!(
        matches!(&error.error, CallError::Abi(m) if m.contains("outside `hotswap_export_state`")),
        "{error}"
    );
    // The same page handed over again and again: the state may not outgrow the memory limit,
    // which would make the host hold it all.
    let limited = runtime_with(hotswap::Config {
        inherit_stdio: false,
        max_memory: 4 << 20,
        ..hotswap::Config::default()
    });
    let wat = abi_module(&[
        chunk_import,
        (
            "hotswap_export_state",
            r#"(func (export "hotswap_export_state") (result i32) (loop $again (call $chunk (i32.const 0) (i32.const 65536)) (br $again)) (i32.const 0))"#,
        ),
    ]);
    let mut app = start_wat(&limited, &wat);
    let refused = app
        .swap(prepare_wat(&limited, &abi_module(&[])).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            refused.error,
            SwapError::Export(CallError::MemoryLimit { .. })
        ),
        "{refused}"
    );
    assert!(matches!(
        app.export_state().map_err(|e| e.error),
        Err(CallError::MemoryLimit { .. })
    ));
}

#[test]
fn outputs_in_memory_grown_during_the_call_are_read_and_still_checked() {
    let runtime = runtime();
    // Each message grows memory by a page and replies from the page it just got.
    let wat = abi_module(&[(
        "hotswap_message",
        r#"(func (export "hotswap_message") (param i32) (result i32) (local $at i32) (local.set $at (i32.mul (memory.grow (i32.const 1)) (i32.const 65536))) (i32.store8 (local.get $at) (i32.const 42)) (call $out (local.get $at) (i32.const 1) (i32.const 0)))"#,
    )]);
    let mut app = start_wat(&runtime, &wat);
    for pages in 2..5 {
        assert_eq!(app.message(b"x").unwrap(), [42]);
        assert_eq!(app.memory_size(), pages * 65536);
    }
    // One byte past the end of the grown memory is still refused.
    let wat = abi_module(&[(
        "hotswap_message",
        r#"(func (export "hotswap_message") (param i32) (result i32) (drop (memory.grow (i32.const 1))) (call $out (i32.const 131071) (i32.const 2) (i32.const 0)))"#,
    )]);
    let error = start_wat(&runtime, &wat).message(b"x").unwrap_err();
    assert!(
        matches!(&error.error, CallError::Abi(m) if m.contains("the output (131071+2) lies outside the guest's 131072-byte memory")),
        "{error}"
    );
}
