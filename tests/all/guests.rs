//! One test per example guest, named after it: each swaps it the way it is meant to be used
//! and checks that state is kept and behaviour changes.

use hotswap::SwapError;
use hotswap_tests::*;

// The guests that keep their state in place have their tests with the in-place swap's.
pub use crate::in_place::{
    kv_in_place, kv_in_place_next, shapes_in_place, shapes_in_place_collection,
    shapes_in_place_field, shapes_in_place_order, shapes_in_place_variant, todo_in_place,
};

/// counter v1 → v2: the value counted by v1 is kept, and the next `inc` runs v2's code.
#[test]
pub fn counter_v1() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    assert_eq!(send(&mut app, "inc"), "counter v1: value=5");
    assert_eq!(send(&mut app, "inc"), "counter v1: value=10");
    let report = swap(&mut app, COUNTER_V2);
    assert_eq!((report.from_state_version, report.to_state_version), (1, 1));
    assert_eq!(send(&mut app, "get"), "counter v2: value=10");
    assert_eq!(send(&mut app, "inc"), "counter v2: value=11");
}

/// counter v2 → v1: the swap works backwards too.
#[test]
pub fn counter_v2() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V2);
    send(&mut app, "inc");
    send(&mut app, "inc");
    swap(&mut app, COUNTER_V1);
    assert_eq!(send(&mut app, "inc"), "counter v1: value=7");
}

/// The hand-written WAT counter implements the ABI with no SDK, reads and writes the Rust
/// counter's state encoding, and swaps with it both ways.
#[test]
pub fn counter_wat() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_WAT);
    assert_eq!(send(&mut app, "inc"), "counter-wat: value=10");
    swap(&mut app, COUNTER_WAT);
    assert_eq!(send(&mut app, "get"), "counter-wat: value=10");
    swap(&mut app, COUNTER_V1);
    assert_eq!(send(&mut app, "inc"), "counter v1: value=15");
    swap(&mut app, COUNTER_WAT);
    assert_eq!(send(&mut app, "inc"), "counter-wat: value=25");
    swap(&mut app, COUNTER_V2);
    assert_eq!(send(&mut app, "inc"), "counter v2: value=26");
    // An unknown message is a reported failure (status ERROR), not a lost instance.
    swap(&mut app, COUNTER_WAT);
    let err = app.message(b"dec").unwrap_err();
    assert_eq!(err.to_string(), "error: expected inc or get");
    assert!(err.recovery.is_none());
    assert_eq!(send(&mut app, "get"), "counter-wat: value=26");
}

/// kv v1 → v2 → v3: every step keeps every record.
#[test]
pub fn kv_v1() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V1);
    send(&mut app, "set apple red");
    send(&mut app, "set pear green");
    assert_eq!(send(&mut app, "fill 100"), "kv v1: 102");
    swap(&mut app, KV_V2);
    assert_eq!(send(&mut app, "get apple"), "kv v2: red");
    assert_eq!(send(&mut app, "count"), "kv v2: 102");
    let report = swap(&mut app, KV_V3);
    assert_eq!((report.from_state_version, report.to_state_version), (1, 2));
    assert_eq!(send(&mut app, "get pear"), "kv v3: green");
    assert_eq!(send(&mut app, "get 00000000042"), "kv v3: value-0000000042");
    assert_eq!(send(&mut app, "count"), "kv v3: 102");
}

/// kv v2 starts fresh with its own fields.
#[test]
pub fn kv_v2() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V2);
    send(&mut app, "set a 1");
    send(&mut app, "get a");
    assert_eq!(send(&mut app, "reads"), "kv v2: 1");
    swap(&mut app, KV_V2);
    assert_eq!(send(&mut app, "reads"), "kv v2: 1");
}

/// kv v3 cannot be swapped back to v2: its state version is newer than v2 knows.
#[test]
pub fn kv_v3() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V3);
    send(&mut app, "set a 1");
    send(&mut app, "set a 2");
    assert_eq!(send(&mut app, "writes a"), "kv v3: 2");
    let before = state(&mut app);
    // A swap never lowers the state version: the host refuses before the pause.
    let refused = app.swap(prepare(&runtime, KV_V2)).unwrap_err();
    assert!(
        matches!(refused.error, SwapError::Downgrade { running: 2, new: 1 }),
        "{refused}"
    );
    assert_eq!(state(&mut app), before);
    assert_eq!(send(&mut app, "get a"), "kv v3: 2");
}

/// The ticker moves one step per tick, and its world survives a swap.
#[test]
pub fn ticker() {
    let runtime = runtime();
    let mut app = start(&runtime, TICKER);
    for now in 0..25 {
        app.tick(now).expect("tick");
    }
    assert_eq!(
        send(&mut app, "where"),
        "ticker: the ball is at (15, 5) after 25 steps"
    );
    swap(&mut app, TICKER);
    app.tick(25).expect("tick");
    assert_eq!(
        send(&mut app, "where"),
        "ticker: the ball is at (14, 6) after 26 steps"
    );
}

/// A trap in the old version's export refuses the swap; the old version serves on.
#[test]
pub fn trap_in_export() {
    let runtime = runtime();
    let mut app = start(&runtime, TRAP_IN_EXPORT);
    send(&mut app, "inc");
    let before = state(&mut app);
    send(&mut app, "arm");
    let refused = app.swap(prepare(&runtime, COUNTER_V2)).unwrap_err();
    let SwapError::Export(error) = &refused.error else {
        panic!("expected an export failure, got {refused}")
    };
    assert!(
        error.to_string().contains("export failed on purpose"),
        "{error}"
    );
    assert!(
        refused.running.starts_with("trap_in_export.wasm@"),
        "{refused}"
    );
    assert_eq!(state(&mut app), before);
    assert_eq!(send(&mut app, "inc"), "trap-in-export: value=2");
}

/// A trap in the new version's import refuses the swap; the old version serves on.
#[test]
pub fn trap_in_import() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    send(&mut app, "inc");
    let before = state(&mut app);
    let refused = app.swap(prepare(&runtime, TRAP_IN_IMPORT)).unwrap_err();
    let SwapError::Import(error) = &refused.error else {
        panic!("expected an import failure, got {refused}")
    };
    assert!(
        error
            .to_string()
            .contains("migration from state version 1 crashed on purpose"),
        "{error}"
    );
    assert_eq!(state(&mut app), before);
    assert_eq!(send(&mut app, "inc"), "counter v1: value=10");
}

/// A migration that refuses leaves the old version serving, and says why.
#[test]
pub fn refuse_migration() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    send(&mut app, "inc");
    let before = state(&mut app);
    let refused = app.swap(prepare(&runtime, REFUSE_MIGRATION)).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("the new version refused the state: no migration from state version 1 to 2"),
        "{refused}"
    );
    assert_eq!(state(&mut app), before);
    assert_eq!(send(&mut app, "get"), "counter v1: value=5");
    assert_eq!(app.stats().refused, 1);
}

/// A panic in a handler reaches the host with its message; the state moves to a fresh
/// instance and the app serves on.
#[test]
pub fn panic_in_handler() {
    let runtime = runtime();
    let mut app = start(&runtime, PANIC_IN_HANDLER);
    send(&mut app, "inc");
    send(&mut app, "inc");
    let error = app.message(b"panic").unwrap_err();
    assert!(
        error.to_string().contains("guest panicked: panicked at")
            && error.to_string().contains("on purpose at value 2"),
        "{error}"
    );
    assert!(
        matches!(error.recovery, Some(hotswap::Recovery::Moved)),
        "{error}"
    );
    assert_eq!(send(&mut app, "inc"), "panic-in-handler: value=3");
    assert_eq!(app.stats().recoveries, 1);
    // Panicking many times does not wear the app out (each panic costs a fresh instance, not
    // stack space in the same one).
    for _ in 0..50 {
        app.message(b"panic").unwrap_err();
    }
    assert_eq!(send(&mut app, "inc"), "panic-in-handler: value=4");
}

/// A module speaking another ABI version is refused before the running app is touched.
#[test]
pub fn wrong_abi_wat() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    send(&mut app, "inc");
    let error = runtime
        .prepare_file(WRONG_ABI_WAT.as_ref())
        .err()
        .expect("refused");
    assert_eq!(
        error.to_string(),
        "the module speaks Hotswap ABI version 99; this host speaks version 1"
    );
    assert_eq!(send(&mut app, "get"), "counter v1: value=5");
}

/// The guest sees exactly the environment and directories the host gives it.
#[test]
pub fn wasi_probe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("motd.txt"), "hello from the host").unwrap();
    let runtime = runtime_with(hotswap::Config {
        env: vec![("GREETING".into(), "hi".into())],
        dirs: vec![hotswap::DirMapping {
            host: dir.path().to_owned(),
            guest: "/data".into(),
        }],
        inherit_stdio: false,
        ..hotswap::Config::default()
    });
    let mut app = start(&runtime, WASI_PROBE);
    assert_eq!(send(&mut app, "env GREETING"), "probe #1: hi");
    assert_eq!(
        send(&mut app, "read /data/motd.txt"),
        "probe #2: hello from the host"
    );
    assert_eq!(
        send(&mut app, "write /data/out.txt written by the guest"),
        "probe #3: ok"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "written by the guest"
    );
    // Nothing outside the mapped directory.
    let outside = send(&mut app, "read /etc/passwd");
    assert!(outside.starts_with("probe #4: error"), "{outside}");
    // A new version gets the same environment and directories.
    swap(&mut app, WASI_PROBE);
    assert_eq!(
        send(&mut app, "read /data/out.txt"),
        "probe #5: written by the guest"
    );
    let unset = send(&mut app, "env HOME");
    assert!(unset.starts_with("probe #6: error"), "{unset}");
}

/// Sends an HTTP request straight to the app (no socket: see `http.rs` for the server).
fn http(app: &mut hotswap::App, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let request = hotswap_guest::http::Request {
        method: method.into(),
        path: path.into(),
        body: hotswap_guest::http::Bytes(body.as_bytes().to_vec()),
        ..Default::default()
    };
    let response = app
        .http(&request)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let version = response
        .headers
        .iter()
        .find(|(name, _)| name == "x-app-version")
        .map(|(_, value)| String::from_utf8_lossy(&value.0).into_owned())
        .unwrap_or_default();
    (
        response.status,
        String::from_utf8_lossy(&response.body.0).into_owned(),
        version,
    )
}

/// todo v1 → v2: the titles become records through `migrate`.
#[test]
pub fn todo_v1() {
    let runtime = runtime();
    let mut app = start(&runtime, TODO_V1);
    assert_eq!(http(&mut app, "POST", "/todos", "milk").0, 201);
    assert_eq!(
        http(&mut app, "GET", "/todos", ""),
        (200, "- milk\n".into(), "todo-v1".into())
    );
    let report = swap(&mut app, TODO_V2);
    assert_eq!((report.from_state_version, report.to_state_version), (1, 2));
    assert_eq!(
        http(&mut app, "GET", "/todos", ""),
        (200, "[ ] milk\n".into(), "todo-v2".into())
    );
}

/// todo v2 → v3 → v2: same state, so they swap both ways.
#[test]
pub fn todo_v2() {
    let runtime = runtime();
    let mut app = start(&runtime, TODO_V2);
    http(&mut app, "POST", "/todos", "milk");
    http(&mut app, "POST", "/todos", "eggs");
    assert_eq!(http(&mut app, "POST", "/todos/2/done", "").0, 200);
    swap(&mut app, TODO_V3);
    assert_eq!(
        http(&mut app, "GET", "/todos", "").1,
        "[ ] milk\n[x] eggs\n1 left to do\n"
    );
    swap(&mut app, TODO_V2);
    assert_eq!(
        http(&mut app, "GET", "/todos", ""),
        (200, "[ ] milk\n[x] eggs\n".into(), "todo-v2".into())
    );
}

/// todo v3 cannot go back to v1's shape: its state version is newer.
#[test]
pub fn todo_v3() {
    let runtime = runtime();
    let mut app = start(&runtime, TODO_V3);
    assert_eq!(
        http(&mut app, "POST", "/hit", ""),
        (200, "todo-v3 hits=1".into(), "todo-v3".into())
    );
    let refused = app.swap(prepare(&runtime, TODO_V1)).unwrap_err();
    assert!(
        matches!(refused.error, SwapError::Downgrade { .. }),
        "{refused}"
    );
    assert_eq!(http(&mut app, "POST", "/hit", "").1, "todo-v3 hits=2");
}

/// A state type flattened into the top level (`#[serde(flatten)]`) is judged by the keys it
/// writes like any other: written over a running counter, it is refused, not given an empty
/// state in place of the counter's.
#[test]
pub fn flatten_state() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    send(&mut app, "inc");
    send(&mut app, "inc");
    send(&mut app, "inc");
    let before = state(&mut app);
    let refused = app.swap(prepare(&runtime, FLATTEN_STATE)).unwrap_err();
    assert!(
        refused.to_string().contains(
            "the state has none of this app's fields (it has value; this app's state has notes)"
        ),
        "{refused}"
    );
    assert_eq!(state(&mut app), before);
    assert_eq!(send(&mut app, "get"), "counter v1: value=15");
    // Its own state passes the guard.
    let mut notes = start(&runtime, FLATTEN_STATE);
    send(&mut notes, "add milk");
    swap(&mut notes, FLATTEN_STATE);
    assert_eq!(send(&mut notes, "list"), "flatten-state: milk");
}

/// Every MessagePack value shows in `hotswap state`'s readable form, and nesting deeper than
/// the decoder reads is refused when the state is written, with a message that says so.
#[test]
pub fn state_shapes() {
    let runtime = runtime();
    let mut app = start(&runtime, STATE_SHAPES);
    assert_eq!(send(&mut app, "fill"), "state-shapes: 2 ids, chain 0 deep");
    let (_, shown) = hotswap::state_view::show(&state(&mut app), 1);
    let value = &shown["value"];
    assert_eq!(
        value["by_id"],
        serde_json::json!({"$map": [[1, "one"], [7, "seven"]]})
    );
    assert_eq!(value["blob"], serde_json::json!({"$bin": "0001feff"}));
    assert_eq!(value["big"]["$u128"], (u128::MAX - 1).to_string());
    assert_eq!(value["not_a_number"], serde_json::json!({"$float": "NaN"}));
    assert_eq!(value["infinite"], serde_json::json!({"$float": "-inf"}));

    // 200 levels of chain (plus the state's own map) swap as usual.
    assert_eq!(
        send(&mut app, "nest 200"),
        "state-shapes: 2 ids, chain 200 deep"
    );
    swap(&mut app, STATE_SHAPES);
    assert_eq!(send(&mut app, "get"), "state-shapes: 2 ids, chain 200 deep");
    // Deeper than the decoder reads: the export refuses it, and the app serves on.
    for depth in ["300", "50000"] {
        send(&mut app, &format!("nest {depth}"));
        let refused = app.swap(prepare(&runtime, STATE_SHAPES)).unwrap_err();
        let message = refused.to_string();
        assert!(
            message.contains("the value nests deeper than 256 levels"),
            "{message}"
        );
        assert!(
            refused.recovery.is_none(),
            "a refusal, not a trap: {message}"
        );
        let error = app.export_state().unwrap_err();
        assert!(
            error.to_string().contains("nests deeper than 256"),
            "{error}"
        );
    }
    assert_eq!(
        send(&mut app, "nest 3"),
        "state-shapes: 2 ids, chain 3 deep"
    );
    swap(&mut app, STATE_SHAPES);
}

/// A field kept out of the state (`#[serde(skip)]`): `hotswap test` finds that a swap of the
/// new version to itself changes a later reply.
#[test]
pub fn lossy_counter() {
    let events = ["inc", "inc", "get"];
    let (ok, report) = crate::reloads::swap_test(COUNTER_V1, LOSSY_COUNTER, &events, &[]);
    assert!(!ok);
    let found = crate::reloads::findings(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1),
        ("not-transparent", Some(1))
    );
    assert!(
        found[0].3.contains("NEW (lossy_counter.wasm) → NEW"),
        "{}",
        found[0].3
    );
}

/// A migration that traps on one event's state: refused from that boundary on, named.
#[test]
pub fn trapping_migration() {
    let events = ["set a 1", "set b 2", "set c x", "set d 4"];
    let (ok, report) = crate::reloads::swap_test(KV_V1, TRAPPING_MIGRATION, &events, &[]);
    assert!(!ok);
    let found = crate::reloads::findings(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!((found[0].0.as_str(), found[0].1), ("refused", Some(3)));
    let reproduction = report["findings"][0]["reproduction"].as_array().unwrap();
    assert_eq!(
        reproduction.len(),
        4,
        "the three events, then the swap: {reproduction:?}"
    );
    assert_eq!(reproduction[3], "-- swap --");
}

/// A refactor that changed one reply: found with `--same-behaviour`, at that event.
#[test]
pub fn changed_reply() {
    let events = ["inc", "get", "dec", "get"];
    let (ok, _) = crate::reloads::swap_test(COUNTER_V1, CHANGED_REPLY, &events, &[]);
    assert!(ok, "not a refactor: a changed reply is allowed");
    let (ok, report) =
        crate::reloads::swap_test(COUNTER_V1, CHANGED_REPLY, &events, &["--same-behaviour"]);
    assert!(!ok);
    let found = crate::reloads::findings(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!((found[0].0.as_str(), found[0].2), ("differs", Some(2)));
}

/// A version that takes counter v1's state and works, until a command it does not know
/// panics: a plain swap cannot tell (see `deploy.rs` for the trial, shadow run and canary
/// that do).
#[test]
pub fn panicking_command() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    send(&mut app, "inc");
    swap(&mut app, PANICKING_COMMAND);
    assert_eq!(send(&mut app, "inc"), "counter v2: value=6");
    let error = app.message(b"oops").unwrap_err();
    assert!(
        error.to_string().contains("unknown command \"oops\""),
        "{error}"
    );
    assert_eq!(send(&mut app, "get"), "counter v2: value=6");
}
