//! Proving reloads before they are deployed: `hotswap test` (a swap at every event boundary),
//! `hotswap check --state` / `--against` and `hotswap state --save`, run as the real command.

use crate::cli::{Running, run, stderr};
use crate::operators::client;
use hotswap_tests::*;
use std::path::Path;

/// `hotswap test OLD NEW --events FILE EXTRA… --json`: the exit status and the report.
pub fn swap_test(
    old: &str,
    new: &str,
    events: &[&str],
    extra: &[&str],
) -> (bool, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("events.txt");
    std::fs::write(&script, events.join("\n") + "\n").unwrap();
    let mut args = vec![
        "test",
        old,
        new,
        "--events",
        script.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let output = run(&args, "");
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}): {}", stderr(&output)));
    (output.status.success(), report)
}

/// The findings of a report, as (kind, boundary, event) with the message.
pub fn findings(report: &serde_json::Value) -> Vec<(String, Option<u64>, Option<u64>, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["boundary"].as_u64(),
                f["event"].as_u64(),
                f["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const COUNTER_EVENTS: [&str; 5] = ["inc", "get", "inc", "dec", "get"];

#[test]
fn correct_reloads_pass() {
    let (ok, report) = swap_test(COUNTER_V1, COUNTER_V2, &COUNTER_EVENTS, &[]);
    assert!(ok, "{report:#}");
    assert_eq!(report["boundaries"], 6);
    let kv = ["set a 1", "set b 2", "get a", "del b", "set c 3", "count"];
    let (ok, report) = swap_test(KV_V1, KV_V3, &kv, &[]);
    assert!(ok, "{report:#}");
    let (ok, report) = swap_test(
        COUNTER_V1,
        COUNTER_V1,
        &COUNTER_EVENTS,
        &["--same-behaviour"],
    );
    assert!(ok, "{report:#}");
}

#[test]
fn a_behaviour_change_is_found_only_when_asked_for() {
    // counter v2 adds 1 where v1 added 5: a change of behaviour, fine unless it is a refactor.
    let (ok, report) = swap_test(
        COUNTER_V1,
        COUNTER_V2,
        &COUNTER_EVENTS,
        &["--same-behaviour"],
    );
    assert!(!ok);
    let found = findings(&report);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1, found[0].2),
        ("differs", Some(0), Some(0))
    );
}

#[test]
fn a_long_script_is_sampled_and_a_journal_is_a_script() {
    let events: Vec<String> = (0..500).map(|i| format!("set k{i} {i}")).collect();
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    let (ok, report) = swap_test(KV_V1, KV_V3, &events, &["--boundaries", "7"]);
    assert!(ok, "{report:#}");
    assert_eq!(report["boundaries"], 7);

    // The journal a durable run records is an event script.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let output = run(
        &[
            "run",
            LOSSY_COUNTER,
            "--state-dir",
            state.to_str().unwrap(),
            "--durable",
        ],
        "inc\ninc\nget\n",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let segment = std::fs::read_dir(state.join("journal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let output = run(
        &[
            "test",
            COUNTER_V1,
            LOSSY_COUNTER,
            "--events",
            segment.to_str().unwrap(),
        ],
        "",
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(said.contains("3 events"), "{said}");
}

/// A state file written by `hotswap state --save` from a running host, in `dir`.
fn saved_state(module: &str, events: &[&str], dir: &Path) -> String {
    let socket = dir.join("control.sock");
    let socket = socket.to_str().unwrap();
    let mut host = Running::start(&["run", module, "--control", socket]);
    host.log_until("control socket");
    for event in events {
        host.ask(event);
    }
    let file = dir.join("state.snap");
    let output = client(
        &[
            "state",
            "--save",
            file.to_str().unwrap(),
            "--control",
            socket,
        ],
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    host.finish();
    file.to_str().unwrap().to_owned()
}

#[test]
fn check_state_runs_the_import_a_swap_would() {
    let dir = tempfile::tempdir().unwrap();
    let file = saved_state(KV_V1, &["set a 1", "set b x"], dir.path());
    let output = run(&["check", KV_V3, "--state", &file], "");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(said.contains("accepts the state: state v1 → v2"), "{said}");
    // The migration that assumes numbers traps on `x`: refused, with the reason.
    let output = run(&["check", TRAPPING_MIGRATION, "--state", &file], "");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refuses the state"),
        "{}",
        stderr(&output)
    );
    // An older state version is refused as a swap would refuse it.
    let other = tempfile::tempdir().unwrap();
    let newer = saved_state(KV_V3, &["set a 1"], other.path());
    let output = run(&["check", KV_V1, "--state", &newer], "");
    assert!(
        stderr(&output).contains("lower than"),
        "{}",
        stderr(&output)
    );
    // Not a state file: one line that says what is wanted.
    let output = run(&["check", KV_V3, "--state", KV_V1], "");
    assert!(
        stderr(&output).contains("is not a state file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_against_a_running_host_changes_nothing_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let socket = socket.to_str().unwrap();
    let mut host = Running::start(&["run", KV_V1, "--control", socket]);
    host.log_until("control socket");
    host.ask("set a 1");
    let state = || client(&["state", "--control", socket, "--json"], b"").stdout;
    let check = |module: &str| client(&["check", module, "--against", "--control", socket], b"");
    let before = state();
    let output = check(KV_V3);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = check(TRAPPING_MIGRATION);
    assert!(
        output.status.success(),
        "a numeric state migrates: {}",
        stderr(&output)
    );
    assert_eq!(state(), before, "the checks changed the running state");
    host.ask("set b x");
    let output = check(TRAPPING_MIGRATION);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("refuses the state"),
        "{}",
        stderr(&output)
    );
    assert_eq!(host.ask("get a"), "kv v1: 1");
    host.finish();
}

#[test]
fn event_scripts_that_are_not_files_are_refused_and_an_empty_one_is_no_events() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(made.as_ptr(), 0o600) }, 0);
    for script in [fifo.as_path(), dir.path()] {
        let output = run(
            &[
                "test",
                COUNTER_V1,
                COUNTER_V2,
                "--events",
                script.to_str().unwrap(),
            ],
            "",
        );
        assert!(!output.status.success());
        let log = stderr(&output);
        assert!(log.contains("only a regular file is read"), "{log}");
        assert_eq!(log.lines().count(), 1, "{log}");
    }
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let output = run(
        &[
            "test",
            COUNTER_V1,
            COUNTER_V2,
            "--events",
            empty.to_str().unwrap(),
        ],
        "",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: 0 events"));
}

#[test]
fn a_version_that_cannot_export_what_it_ends_with_is_a_finding() {
    // trap-in-export fails every export after `arm`: its next swap would be refused.
    let (ok, report) = swap_test(COUNTER_V1, TRAP_IN_EXPORT, &["inc", "arm", "inc"], &[]);
    assert!(!ok, "{report:#}");
    let found = findings(&report);
    assert!(
        found
            .iter()
            .any(|f| f.3.contains("cannot export its state")),
        "{report:#}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.0 == "refused" && f.3.contains("→ NEW")),
        "{report:#}"
    );
}

#[test]
fn state_save_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    let output = run(
        &[
            "state",
            "--save",
            file.to_str().unwrap(),
            "--control",
            "/nonexistent.sock",
        ],
        "",
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("exists: give a new file name"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn new_refuses_a_url_a_shell_would_act_on_and_a_keyword_name() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().to_str().unwrap();
    let output = run(
        &[
            "new",
            "g1",
            "--git",
            "https://ex.com/a b.git; echo pwned",
            "--dir",
            at,
        ],
        "",
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not a repository URL"),
        "{}",
        stderr(&output)
    );
    let output = run(&["new", "fn", "--dir", at], "");
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot name a crate"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}
