//! Hostile and broken modules swapped into a running app: a guest that sleeps in WASI past
//! `--timeout`, state versions that go backwards or negative, a version that cannot export what
//! it imported, guest text that tries to forge host log lines, failures in a start section, and
//! mangled function names. Each is refused or contained with a one-line, typed reason, and the
//! running app keeps serving with its state. Modules are inline WAT (see `failures.rs`).

use crate::cli::{PATIENCE, Running, run, stderr};
use crate::failures::{abi_module, prepare_wat, start_wat};
use crate::limits::{ENDLESS_EXPORT, assert_export_used_up_the_timeout, limited};
use hotswap::{App, CallError, CheckError, Prepared, Recovery, Runtime, SwapError};
use hotswap::{SwapRefused, SwapReport};
use hotswap_tests::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on its own thread and returns what it returns, or fails the test if it has not
/// returned within [`PATIENCE`] (the thread is left behind: a guest sleeping an hour).
fn within_patience<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not return within {PATIENCE:?}: --timeout did not bound it")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// [`App::swap`] on a thread of its own, within [`PATIENCE`].
fn swap_within_patience(
    mut app: App,
    prepared: Prepared,
) -> (App, Result<SwapReport, Box<SwapRefused>>) {
    within_patience("the swap", move || {
        let result = app.swap(prepared);
        (app, result)
    })
}

/// Asserts that a refused swap's error matches a pattern and that its text contains `$text`.
macro_rules! assert_refused {
    ($refused:expr, $kind:pat $(if $guard:expr)?, $text:expr) => {{
        let refused = &$refused;
        assert!(matches!(&refused.error, $kind $(if $guard)?), "{refused}");
        assert!(refused.to_string().contains($text), "{refused}");
    }};
}

/// After one refused swap: the app kept its state `before`, serves on (a message counts one
/// up, to `after`), and counted the refusal.
fn assert_kept_after_refusal(app: &mut App, before: &[u8], after: i64) {
    assert_eq!(state(app), before);
    app.message(b"x").unwrap();
    assert_eq!(state(app), after.to_le_bytes());
    assert_eq!((app.stats().swaps, app.stats().refused), (0, 1));
}

/// Bytes as the body of a WAT string, every byte escaped.
fn wat_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// Writes a module's text to `dir/name` (a `.wat` name: the host compiles it as text).
fn write_wat(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, wat).unwrap();
    path
}

/// The next line a running host prints on stdout; kills the host if none comes (a host stuck
/// in a guest's hour-long sleep would otherwise outlive the test).
fn reply_or_kill(hotswap: &mut Running) -> String {
    match hotswap.stdout.recv_timeout(PATIENCE) {
        Ok(line) => line,
        Err(_) => {
            let _ = hotswap.child.kill();
            let _ = hotswap.child.wait();
            panic!("hotswap printed no reply within {PATIENCE:?}: --timeout did not bound the call")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. `--timeout` bounds a guest blocked in WASI (`poll_oneoff`, where a guest sleeps).

const TEN_MS_NS: u64 = 10_000_000;
const USERDATA: u64 = 0x1122_3344_5566_7788;

/// `poll_oneoff` and `clock_time_get`.
const WASI_CLOCK_IMPORTS: (&str, &str) = (
    "import",
    r#"(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $now (param i32 i64 i32) (result i32)))"#,
);

/// `$sleep(clock, timeout_ns, flags)`: one clock subscription (48 bytes at 2048, built by
/// hand: userdata, tag 0 = clock, clock id at 16, timeout at 24, precision at 32, flags at 40),
/// polled with the event at 2112, the event count at 2108 and the errno stored at 2104.
const SLEEP_FN: (&str, &str) = (
    "sleep",
    r#"(func $sleep (param $clock i32) (param $ns i64) (param $flags i32)
    (memory.fill (i32.const 2048) (i32.const 0) (i32.const 96))
    (i64.store (i32.const 2048) (i64.const 0x1122334455667788))
    (i32.store (i32.const 2064) (local.get $clock))
    (i64.store (i32.const 2072) (local.get $ns))
    (i32.store16 (i32.const 2088) (local.get $flags))
    (i32.store (i32.const 2104)
      (call $poll (i32.const 2048) (i32.const 2112) (i32.const 1) (i32.const 2108))))"#,
);

/// Each message sleeps by its first byte: `h` an hour, `s` 10 ms (relative, monotonic clock),
/// `a` 10 ms and `H` an hour (absolute, monotonic clock), `r` 10 ms (absolute, realtime clock);
/// anything else does not sleep. The reply is 112 bytes from 2104: errno, event count, the
/// event (at 8), and the clock read before (at 96) and after (at 104) the sleep.
const SLEEPING_MESSAGE: (&str, &str) = (
    "hotswap_message",
    r#"(func (export "hotswap_message") (param $len i32) (result i32)
    (local $kind i32) (local $clock i32)
    (local.set $kind (i32.load8_u (i32.const 1024)))
    (local.set $clock (i32.eq (local.get $kind) (i32.const 0x72)))
    (local.set $clock (i32.xor (local.get $clock) (i32.const 1)))
    (drop (call $now (local.get $clock) (i64.const 1) (i32.const 2200)))
    (if (i32.eq (local.get $kind) (i32.const 0x68))
      (then (call $sleep (i32.const 1) (i64.const 3600000000000) (i32.const 0))))
    (if (i32.eq (local.get $kind) (i32.const 0x73))
      (then (call $sleep (i32.const 1) (i64.const 10000000) (i32.const 0))))
    (if (i32.eq (local.get $kind) (i32.const 0x61))
      (then (call $sleep (i32.const 1) (i64.add (i64.load (i32.const 2200)) (i64.const 10000000)) (i32.const 1))))
    (if (i32.eq (local.get $kind) (i32.const 0x48))
      (then (call $sleep (i32.const 1) (i64.add (i64.load (i32.const 2200)) (i64.const 3600000000000)) (i32.const 1))))
    (if (i32.eq (local.get $kind) (i32.const 0x72))
      (then (call $sleep (i32.const 0) (i64.add (i64.load (i32.const 2200)) (i64.const 10000000)) (i32.const 1))))
    (drop (call $now (local.get $clock) (i64.const 1) (i32.const 2208)))
    (global.set $value (i64.add (global.get $value) (i64.const 1)))
    (call $out (i32.const 2104) (i32.const 112) (i32.const 0)))"#,
);

fn sleeper(extra: &[(&str, &str)]) -> String {
    let mut parts = vec![WASI_CLOCK_IMPORTS, SLEEP_FN, SLEEPING_MESSAGE];
    parts.extend_from_slice(extra);
    abi_module(&parts)
}

/// What a sleeping message replied.
#[derive(Debug)]
struct Woke {
    errno: u32,
    nevents: u32,
    userdata: u64,
    event_error: u16,
    event_type: u8,
    slept_ns: u64,
}

fn woke(reply: &[u8]) -> Woke {
    assert_eq!(reply.len(), 112, "{reply:?}");
    let u32_at = |at: usize| u32::from_le_bytes(reply[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(reply[at..at + 8].try_into().unwrap());
    Woke {
        errno: u32_at(0),
        nevents: u32_at(4),
        userdata: u64_at(8),
        event_error: u16::from_le_bytes([reply[16], reply[17]]),
        event_type: reply[18],
        slept_ns: u64_at(104).saturating_sub(u64_at(96)),
    }
}

/// A message that does not sleep is answered, and the state counts `messages`.
fn assert_sleeper_serves_on(app: &mut App, messages: i64) {
    assert_eq!(woke(&app.message(b"x").unwrap()).errno, 0);
    assert_eq!(state(app), messages.to_le_bytes());
}

#[test]
fn a_guest_sleeping_an_hour_in_its_import_is_refused_within_the_timeout() {
    let runtime = limited();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    app.message(b"x").unwrap();
    app.message(b"x").unwrap();
    let before = state(&mut app);
    let sleeps_in_import = sleeper(&[(
        "hotswap_import_state",
        r#"(func (export "hotswap_import_state") (param i32 i32) (result i32)
            (call $sleep (i32.const 1) (i64.const 3600000000000) (i32.const 0))
            (global.set $value (i64.load (i32.const 1024)))
            (call $out (i32.const 0) (i32.const 0) (i32.const 0)))"#,
    )]);
    let prepared = prepare_wat(&runtime, &sleeps_in_import).unwrap();
    let (mut app, result) = swap_within_patience(app, prepared);
    let refused = result.expect_err("a guest sleeping an hour must not be swapped in");
    assert_refused!(
        refused,
        SwapError::Import(CallError::Timeout(_)),
        "ran longer than the 200 ms call limit"
    );
    assert_kept_after_refusal(&mut app, &before, 3);
}

#[test]
fn a_guest_sleeping_an_hour_in_an_event_times_out_and_the_app_serves_on() {
    let runtime = limited();
    let app = start_wat(&runtime, &sleeper(&[]));
    // Relative and absolute: both are cut at the deadline.
    let (mut app, errors) = within_patience("the event", move || {
        let mut app = app;
        let errors = [
            app.message(b"h").unwrap_err(),
            app.message(b"H").unwrap_err(),
        ];
        (app, errors)
    });
    for error in errors {
        assert_eq!(error.error, CallError::Timeout(Duration::from_millis(200)));
        // The sleep used up the event's time, as a loop would have: no recovery runs after it.
        assert!(
            matches!(error.recovery, Some(Recovery::NoTimeLeft)),
            "{error}"
        );
    }
    // The app serves on; the interrupted events did not count.
    assert_sleeper_serves_on(&mut app, 1);
}

/// An export that sleeps an hour on the running side: the swap is refused after one
/// `--timeout`, which the sleep used up, so the export is not run again to recover.
#[test]
fn a_running_version_sleeping_an_hour_in_its_export_is_refused_within_the_timeout() {
    let runtime = limited();
    let sleeps_in_export = sleeper(&[(
        "hotswap_export_state",
        r#"(func (export "hotswap_export_state") (result i32)
            (if (i64.eq (global.get $value) (i64.const 2))
              (then (call $sleep (i32.const 1) (i64.const 3600000000000) (i32.const 0))))
            (i64.store (i32.const 512) (global.get $value))
            (call $out (i32.const 512) (i32.const 8) (i32.const 0)))"#,
    )]);
    let mut app = start_wat(&runtime, &sleeps_in_export);
    app.message(b"x").unwrap();
    app.message(b"x").unwrap();
    let prepared = prepare_wat(&runtime, &abi_module(&[])).unwrap();
    let (mut app, result) = swap_within_patience(app, prepared);
    let refused = result.expect_err("the export never finished");
    assert_export_used_up_the_timeout(&refused);
    // The app serves on (a third message: the export no longer sleeps).
    assert_sleeper_serves_on(&mut app, 3);
}

/// A sleep under the limit returns normally, with its clock event reported: relative, absolute
/// on the monotonic clock (which counts as the guest's `clock_time_get` does), and absolute on
/// the realtime clock.
#[test]
fn a_guest_sleeping_under_the_timeout_wakes_with_its_clock_event() {
    let runtime = limited();
    let mut app = start_wat(&runtime, &sleeper(&[]));
    for kind in [b"s", b"a", b"r"] {
        let woke = woke(&app.message(kind).unwrap());
        let kind = char::from(kind[0]);
        assert_eq!(woke.errno, 0, "{kind}: {woke:?}");
        assert_eq!(woke.nevents, 1, "{kind}: {woke:?}");
        assert_eq!(woke.userdata, USERDATA, "{kind}: {woke:?}");
        assert_eq!(
            (woke.event_error, woke.event_type),
            (0, 0),
            "{kind}: {woke:?}"
        );
        assert!(woke.slept_ns >= TEN_MS_NS, "{kind}: {woke:?}");
    }
    assert_eq!(state(&mut app), 3i64.to_le_bytes());
}

/// The same, as an operator sees it: `--timeout` answers a sleeping event with an error line,
/// and the next message is answered.
#[test]
fn cli_timeout_bounds_a_guest_sleeping_in_wasi() {
    let dir = tempfile::tempdir().unwrap();
    let module = abi_module(&[
        WASI_CLOCK_IMPORTS,
        SLEEP_FN,
        ("ok", r#"(data (i32.const 300) "ok")"#),
        (
            "hotswap_message",
            r#"(func (export "hotswap_message") (param i32) (result i32)
            (if (i32.eq (i32.load8_u (i32.const 1024)) (i32.const 0x68))
              (then (call $sleep (i32.const 1) (i64.const 3600000000000) (i32.const 0))))
            (call $out (i32.const 300) (i32.const 2) (i32.const 0)))"#,
        ),
    ]);
    let path = write_wat(dir.path(), "sleeper.wat", &module);
    let mut hotswap = Running::start(&["run", path.to_str().unwrap(), "--timeout", "200"]);
    hotswap.send("h");
    let line = reply_or_kill(&mut hotswap);
    assert!(
        line.starts_with("error: guest ran longer than the 200 ms call limit"),
        "{line}"
    );
    hotswap.send("x");
    assert_eq!(reply_or_kill(&mut hotswap), "ok");
    hotswap.finish();
}

// ---------------------------------------------------------------------------------------------
// 11. State versions never go back, and are never negative.

/// `abi_module` at state version 2 whose messages reply with how many times its state was
/// exported (4 bytes).
fn counts_exports_at_v2() -> String {
    abi_module(&[
        (
            "hotswap_state_version",
            r#"(func (export "hotswap_state_version") (result i32) (i32.const 2))"#,
        ),
        ("exports", "(global $exports (mut i32) (i32.const 0))"),
        (
            "hotswap_export_state",
            r#"(func (export "hotswap_export_state") (result i32)
            (global.set $exports (i32.add (global.get $exports) (i32.const 1)))
            (i64.store (i32.const 512) (global.get $value))
            (call $out (i32.const 512) (i32.const 8) (i32.const 0)))"#,
        ),
        (
            "hotswap_message",
            r#"(func (export "hotswap_message") (param i32) (result i32)
            (global.set $value (i64.add (global.get $value) (i64.const 1)))
            (i32.store (i32.const 600) (global.get $exports))
            (call $out (i32.const 600) (i32.const 4) (i32.const 0)))"#,
        ),
    ])
}

#[test]
fn a_lower_state_version_is_refused_before_the_pause() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &counts_exports_at_v2());
    app.message(b"x").unwrap();
    let v1 = prepare_wat(&runtime, &abi_module(&[])).unwrap();
    assert_eq!(v1.state_version(), 1);
    let refused = app.swap(v1).unwrap_err();
    assert_refused!(
        refused,
        SwapError::Downgrade { running: 2, new: 1 },
        "state version 1 is lower than the running version's 2"
    );
    // Refused before the pause: the running version never exported its state.
    assert_eq!(app.message(b"x").unwrap(), 0u32.to_le_bytes());
    assert_eq!(state(&mut app), 2i64.to_le_bytes());
    assert_eq!(app.state_version(), 2);
    assert_eq!((app.stats().swaps, app.stats().refused), (0, 1));
}

#[test]
fn a_negative_state_version_is_refused_at_prepare() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    app.message(b"x").unwrap();
    let negative = abi_module(&[(
        "hotswap_state_version",
        r#"(func (export "hotswap_state_version") (result i32) (i32.const -5))"#,
    )]);
    let error = prepare_wat(&runtime, &negative).err().unwrap();
    assert!(
        matches!(error, SwapError::Check(CheckError::StateVersion(-5))),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "the module's state version is -5, outside the ABI's range 0..=2147483647"
    );
    let refused = app.refused("negative.wat".into(), error);
    assert!(refused.to_string().contains("still running inline.wat@"));
    assert_eq!(state(&mut app), 1i64.to_le_bytes());
    assert_eq!(app.state_version(), 1);
}

// ---------------------------------------------------------------------------------------------
// 12. A new version must be able to export what it imported; an endless export holds events
// for one `--timeout`.

#[test]
fn a_version_that_imports_but_cannot_export_is_refused() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    app.message(b"x").unwrap();
    let before = state(&mut app);
    let cannot_export = abi_module(&[(
        "hotswap_export_state",
        r#"(func (export "hotswap_export_state") (result i32) unreachable)"#,
    )]);
    let refused = app
        .swap(prepare_wat(&runtime, &cannot_export).unwrap())
        .unwrap_err();
    assert_refused!(
        refused,
        SwapError::Verify(CallError::Trap(_)),
        "the new version imported the state but cannot export it: guest trapped"
    );
    // The old instance was not at fault: nothing to recover.
    assert!(refused.recovery.is_none(), "{refused}");
    assert_kept_after_refusal(&mut app, &before, 2);
}

/// An export that loops forever on the running side: the swap is refused after one
/// `--timeout`, the export is not run again to recover (events would wait twice), and the cause
/// is printed once, in the `reload` output and in the host's log.
#[test]
fn cli_an_endless_export_is_refused_once_with_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let running = write_wat(dir.path(), "endless.wat", &abi_module(&[ENDLESS_EXPORT]));
    let next = write_wat(dir.path(), "next.wat", &abi_module(&[]));
    let running = running.to_str().unwrap();
    let (mut hotswap, socket) = Running::controlled(running, &dir, &["--timeout", "200"]);
    hotswap.send("x");
    assert_eq!(reply_or_kill(&mut hotswap), "");

    let output = run(
        &["reload", "--control", &socket, next.to_str().unwrap()],
        "",
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let answer = stderr(&output);
    assert!(answer.contains("refused"), "{answer}");
    assert_eq!(answer.matches("call limit").count(), 1, "{answer}");
    assert_eq!(answer.trim_end().lines().count(), 1, "{answer}");
    let line = hotswap.log_until("refused");
    assert!(line.contains("failed to export its state"), "{line}");
    assert_eq!(line.matches("call limit").count(), 1, "{line}");
    assert!(line.contains("used up the --timeout"), "{line}");
    hotswap.send("x");
    assert_eq!(reply_or_kill(&mut hotswap), "");
    hotswap.finish();
}

// ---------------------------------------------------------------------------------------------
// 13. Guest text (refusals, panics, stdout and stderr) is escaped onto one line and capped.

/// A newline, colour codes, a carriage return and a forged host log line.
const HOSTILE: &str = "no\n\x1b[31mred\x1b[0m\rhotswap: swapped fake.wasm@00000000 → fake.wasm@11111111: state v1 → v1, 8 B, pause 1 µs\nend";

/// Which characters must never reach a log line from a guest.
fn has_raw_controls(text: &str) -> bool {
    text.contains(['\n', '\r', '\x1b'])
}

/// `abi_module` whose import refuses the state with `text` (status 1).
fn refuses_with(text: &[u8]) -> String {
    // Above the input buffer (at 1024), which the host may reserve and zero before the pause.
    let data = format!(r#"(data (i32.const 8192) "{}")"#, wat_string(text));
    let import = format!(
        r#"(func (export "hotswap_import_state") (param i32 i32) (result i32) (call $out (i32.const 8192) (i32.const {}) (i32.const 1)))"#,
        text.len()
    );
    abi_module(&[("data", &data), ("hotswap_import_state", &import)])
}

#[test]
fn a_refusal_message_is_escaped_onto_one_line() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    app.message(b"x").unwrap();
    let refused = app
        .swap(prepare_wat(&runtime, &refuses_with(HOSTILE.as_bytes())).unwrap())
        .unwrap_err();
    let SwapError::Refused(message) = &refused.error else {
        panic!("expected a refusal, got {refused}")
    };
    assert_eq!(
        message,
        "no\\n\\u{1b}[31mred\\u{1b}[0m\\rhotswap: swapped fake.wasm@00000000 → fake.wasm@11111111: state v1 → v1, 8 B, pause 1 µs\\nend"
    );
    assert!(!has_raw_controls(&refused.to_string()), "{refused}");
    assert_eq!(state(&mut app), 1i64.to_le_bytes());
}

#[test]
fn an_empty_refusal_reads_empty_and_a_long_one_is_cut() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &abi_module(&[]));
    let refused = app
        .swap(prepare_wat(&runtime, &refuses_with(b"")).unwrap())
        .unwrap_err();
    assert_refused!(
        refused,
        SwapError::Refused(m) if m == "(empty)",
        "the new version refused the state: (empty); still running"
    );
    // 60 000 bytes of refusal, from a module that fills them itself.
    let long = abi_module(&[(
        "hotswap_import_state",
        r#"(func (export "hotswap_import_state") (param i32 i32) (result i32)
            (memory.fill (i32.const 2048) (i32.const 0x78) (i32.const 60000))
            (call $out (i32.const 2048) (i32.const 60000) (i32.const 1)))"#,
    )]);
    let refused = app.swap(prepare_wat(&runtime, &long).unwrap()).unwrap_err();
    let SwapError::Refused(message) = &refused.error else {
        panic!("expected a refusal, got {refused}")
    };
    assert!(message.chars().count() < 1100, "{} chars", message.len());
    assert_eq!(
        message,
        &format!("{}… (59000 more bytes)", "x".repeat(1000))
    );
    assert_eq!(state(&mut app), 0i64.to_le_bytes());
    assert_eq!(app.stats().refused, 2);
}

/// `abi_module` whose messages act on their first byte: `p` panics (`hotswap.abort`) with
/// `HOSTILE`, `w` writes it to WASI stdout and then to stderr; every message replies `ok`.
fn hostile_talker() -> String {
    let data = format!(
        r#"(data (i32.const 2048) "{}") (data (i32.const 300) "ok")"#,
        wat_string(HOSTILE.as_bytes())
    );
    let message = format!(
        r#"(func (export "hotswap_message") (param i32) (result i32)
            (local $kind i32)
            (local.set $kind (i32.load8_u (i32.const 1024)))
            (if (i32.eq (local.get $kind) (i32.const 0x70))
              (then (call $abort (i32.const 2048) (i32.const {len}))))
            (if (i32.eq (local.get $kind) (i32.const 0x77))
              (then
                (i32.store (i32.const 3000) (i32.const 2048))
                (i32.store (i32.const 3004) (i32.const {len}))
                (drop (call $fd_write (i32.const 1) (i32.const 3000) (i32.const 1) (i32.const 3008)))
                (drop (call $fd_write (i32.const 2) (i32.const 3000) (i32.const 1) (i32.const 3008)))))
            (call $out (i32.const 300) (i32.const 2) (i32.const 0)))"#,
        len = HOSTILE.len()
    );
    abi_module(&[
        (
            "import",
            r#"(import "hotswap" "abort" (func $abort (param i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#,
        ),
        ("data", &data),
        ("hotswap_message", &message),
    ])
}

#[test]
fn a_panic_message_is_escaped_onto_one_line() {
    let runtime = runtime();
    let mut app = start_wat(&runtime, &hostile_talker());
    let error = app.message(b"p").unwrap_err();
    let CallError::Panic(message) = &error.error else {
        panic!("expected a panic, got {error}")
    };
    assert!(
        message.starts_with("no\\n\\u{1b}[31mred\\u{1b}[0m\\rhotswap: swapped fake.wasm@"),
        "{message}"
    );
    assert!(!has_raw_controls(&error.to_string()), "{error}");
    assert_eq!(app.message(b"x").unwrap(), b"ok");
}

/// Lines that a guest's text must never produce: a forged host line, a raw control character.
fn assert_not_forged(lines: &[String]) {
    for line in lines {
        assert!(!line.starts_with("hotswap: swapped fake"), "{lines:#?}");
        assert!(!has_raw_controls(line), "{line:?} in {lines:#?}");
    }
}

/// As an operator sees it: a refusal's message arrives escaped on one line in `reload`'s answer
/// and in the host's log.
#[test]
fn cli_a_refusal_never_forges_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let running = write_wat(dir.path(), "running.wat", &abi_module(&[]));
    let refuser = write_wat(dir.path(), "fake.wat", &refuses_with(HOSTILE.as_bytes()));
    let (mut hotswap, socket) = Running::controlled(running.to_str().unwrap(), &dir, &[]);

    let output = run(
        &["reload", "--control", &socket, refuser.to_str().unwrap()],
        "",
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let answer = stderr(&output);
    let mut lines: Vec<String> = answer.lines().map(str::to_owned).collect();
    lines.extend(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned),
    );
    assert_not_forged(&lines);
    assert!(
        answer.contains(
            "refused the state: no\\n\\u{1b}[31mred\\u{1b}[0m\\rhotswap: swapped fake.wasm@"
        ),
        "{answer}"
    );
    assert!(
        answer.contains("\\nend; still running running.wat@"),
        "{answer}"
    );
    let line = hotswap.log_until("refused");
    assert!(
        line.contains("\\nend; still running running.wat@"),
        "{line}"
    );
    drop(hotswap.stdin.take());
    assert!(hotswap.child.wait().unwrap().success());
    let mut log: Vec<String> = hotswap.stderr.iter().collect();
    log.push(line);
    assert_not_forged(&log);
}

/// As an operator sees it: a panic's message in the error line on stdout and in the log, and
/// the guest's own stdout and stderr on the host's stderr, each line `guest: `-prefixed, arrive
/// escaped; stdout holds exactly one line per message.
#[test]
fn cli_guest_panics_and_output_never_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let talker = write_wat(dir.path(), "talker.wat", &hostile_talker());
    let output = run(&["run", talker.to_str().unwrap()], "p\nw\nx\n");
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(stdout.len(), 3, "one line per message: {stdout:#?}");
    assert!(
        stdout[0].starts_with(
            "error: guest panicked: no\\n\\u{1b}[31mred\\u{1b}[0m\\rhotswap: swapped fake.wasm@"
        ),
        "{stdout:#?}"
    );
    assert_eq!(stdout[1..], ["ok", "ok"], "{stdout:#?}");
    let log: Vec<String> = stderr(&output).lines().map(str::to_owned).collect();
    assert!(
        log.iter()
            .any(|l| l.starts_with("hotswap: message failed: guest panicked: no\\n")),
        "{log:#?}"
    );
    // The text's middle line, from stdout and from stderr (which share one stream).
    let forged = "guest: \\u{1b}[31mred\\u{1b}[0m\\rhotswap: swapped fake.wasm@";
    let count = log.iter().filter(|l| l.starts_with(forged)).count();
    assert_eq!(count, 2, "{log:#?}");
    assert_not_forged(&stdout);
    assert_not_forged(&log);
}

// ---------------------------------------------------------------------------------------------
// 14. Failures while instantiating: one line, naming the step, worded as other failures are.

/// `abi_module` with a start section that runs `body`.
fn with_start(body: &str) -> String {
    let boom = format!("(func $boom {body})");
    abi_module(&[
        (
            "import",
            r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        ),
        ("boom", &boom),
        ("start", "(start $boom)"),
    ])
}

const START_TRAPS: &str = "unreachable";
const START_LOOPS: &str = "(loop $forever (br $forever))";
const START_EXITS: &str = "(call $exit (i32.const 7))";

/// Prepares [`with_start`]`(body)`, which must fail in its start function: the guest's error,
/// and the one line the failure reads as.
fn start_failure(runtime: &Runtime, body: &str) -> (CallError, String) {
    let error = prepare_wat(runtime, &with_start(body)).err().unwrap();
    let line = error.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(!line.contains("backtrace"), "{line}");
    let SwapError::Initialize {
        step: "its start function",
        error,
    } = error
    else {
        panic!("{line}")
    };
    (error, line)
}

#[test]
fn a_failing_start_section_is_one_line_naming_the_step() {
    let runtime = limited();
    let (error, line) = start_failure(&runtime, START_TRAPS);
    assert!(matches!(error, CallError::Trap(_)), "{line}");
    assert!(
        line.starts_with(
            "the module failed in its start function: guest trapped: wasm trap: wasm `unreachable` instruction executed"
        ),
        "{line}"
    );

    let (error, line) = start_failure(&runtime, START_LOOPS);
    assert!(matches!(error, CallError::Timeout(_)), "{line}");
    assert_eq!(
        line,
        "the module failed in its start function: guest ran longer than the 200 ms call limit (--timeout) and was interrupted"
    );

    let (error, line) = start_failure(&runtime, START_EXITS);
    assert!(matches!(error, CallError::Exit(7)), "{line}");
    assert_eq!(
        line,
        "the module failed in its start function: guest exited with status 7 (WASI `proc_exit`)"
    );
}

/// As an operator sees it: `hotswap run` of each prints one error line and exits 1; so does a
/// module whose memory is over `--max-memory`, with both sizes.
#[test]
fn cli_a_failing_start_section_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            with_start(START_TRAPS),
            "the module failed in its start function: guest trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        (
            with_start(START_LOOPS),
            "the module failed in its start function: guest ran longer than the 200 ms call limit (--timeout) and was interrupted",
        ),
        (
            with_start(START_EXITS),
            "the module failed in its start function: guest exited with status 7 (WASI `proc_exit`)",
        ),
        (
            abi_module(&[("memory", r#"(memory (export "memory") 1024)"#)]),
            "the module failed in instantiation: guest tried to grow its memory to 64.0 MiB, past the 32.0 MiB memory limit",
        ),
    ];
    let mut wrong = Vec::new();
    for (n, (wat, expected)) in cases.iter().enumerate() {
        let path = write_wat(dir.path(), &format!("start{n}.wat"), wat);
        let args = [
            "run",
            path.to_str().unwrap(),
            "--timeout",
            "200",
            "--max-memory",
            "32",
        ];
        let output = run(&args, "");
        let text = stderr(&output);
        let one_error_line = output.status.code() == Some(1)
            && text.lines().count() == 1
            && text.starts_with("hotswap: error: ")
            && !text.contains("backtrace");
        if !(one_error_line && text.contains(expected)) {
            wrong.push(format!("expected one line with {expected:?}, got:\n{text}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 17. A trap names its function, demangled.

#[test]
fn a_trap_names_its_function_demangled() {
    let runtime = runtime();
    let wat = abi_module(&[
        (
            "panic",
            "(func $_ZN4core9panicking5panic17h0123456789abcdefE unreachable)",
        ),
        (
            "hotswap_message",
            r#"(func (export "hotswap_message") (param i32) (result i32) (call $_ZN4core9panicking5panic17h0123456789abcdefE) (i32.const 0))"#,
        ),
    ]);
    let mut app = start_wat(&runtime, &wat);
    let error = app.message(b"x").unwrap_err();
    assert_eq!(
        error.error,
        CallError::Trap(
            "wasm trap: wasm `unreachable` instruction executed in `core::panicking::panic`".into()
        )
    );
}
