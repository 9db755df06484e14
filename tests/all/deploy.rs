//! Deploying without fear (`hotswap reload --trial/--shadow/--canary`): the real `hotswap` as a
//! child process, messages on its stdin, a planted version that panics on a command it does not
//! know (`guests/planted/panicking-command`), where counter v1 answers an error line.

use crate::cli::{PATIENCE, Running, stderr};
use crate::operators::{client, control_json};
use crate::persist::{keeping, state_json, stop};
use hotswap_tests::*;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::Instant;
use tempfile::TempDir;

/// `hotswap reload MODULE --control SOCKET FLAGS…` on its own thread (a deployment's reload
/// waits for its outcome).
fn reloading(socket: &str, module: &str, flags: &[&str]) -> JoinHandle<Output> {
    let mut args = vec!["reload".to_owned(), module.to_owned(), "--control".into()];
    args.push(socket.into());
    args.extend(flags.iter().map(|f| f.to_string()));
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        client(&args, b"")
    })
}

/// The deployment's stage in `hotswap status --json`, once it is `stage`.
fn wait_for_stage(socket: &str, stage: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = control_json("status", socket);
        let current = &status["status"]["deployment"]["current"];
        if current["stage"] == stage {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the deployment never reached its {stage}: {status:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What a finished reload printed, stdout and stderr.
fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    )
}

/// The host's `deployment` counters from `hotswap status --json`.
fn deployments(socket: &str) -> serde_json::Value {
    control_json("status", socket)["status"]["deployment"].clone()
}

#[test]
fn a_trial_refuses_a_version_that_traps_on_a_journaled_event_and_names_it() {
    let dir = TempDir::new().unwrap();
    let mut started = keeping(COUNTER_V1, &dir, &["--durable"]);
    let host = &mut started.host;
    for (event, reply) in [
        ("inc", "counter v1: value=5"),
        ("oops", "error: expected inc or get"),
        ("inc", "counter v1: value=10"),
    ] {
        assert_eq!(host.ask(event), reply);
    }
    let socket = started.socket.clone();
    let output = reloading(&socket, PANICKING_COMMAND, &["--trial", "10"])
        .join()
        .unwrap();
    assert!(!output.status.success(), "{}", said(&output));
    let text = said(&output);
    assert!(
        text.contains("the trial failed: event 2 of 3 replayed (message \"oops\") failed")
            && text.contains("unknown command"),
        "{text}"
    );
    // The running version was never touched: the next event is its, on its state.
    assert_eq!(started.host.ask("inc"), "counter v1: value=15");
    assert_eq!(deployments(&socket)["refused"], 1);

    // A version that gets through the same events passes its trial and commits.
    let output = reloading(&socket, COUNTER_V2, &["--trial", "10"])
        .join()
        .unwrap();
    let text = said(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("trial passed: 4 journaled events replayed"),
        "{text}"
    );
    assert_eq!(started.host.ask("inc"), "counter v2: value=16");
    stop(started.host, &socket);
}

#[test]
fn a_shadow_run_refuses_a_version_that_traps_on_a_live_event_while_clients_see_only_the_old() {
    let dir = TempDir::new().unwrap();
    let (mut host, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    let reload = reloading(&socket, PANICKING_COMMAND, &["--shadow", "1h"]);
    wait_for_stage(&socket, "shadow run");
    for (event, reply) in [
        ("inc", "counter v1: value=10"),
        ("get", "counter v1: value=10"),
        ("oops", "error: expected inc or get"),
        ("inc", "counter v1: value=15"),
    ] {
        assert_eq!(host.ask(event), reply, "clients see only the old version");
    }
    let output = reload.join().unwrap();
    let text = said(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("the shadow run failed: live event 3 (message \"oops\") failed"),
        "{text}"
    );
    assert_eq!(
        control_json("state", &socket)["state"]["value"]["value"],
        15
    );

    // A clean shadow run commits when its time is up; the state is the old version's, moved.
    let reload = reloading(&socket, COUNTER_V2, &["--shadow", "300ms"]);
    wait_for_stage(&socket, "shadow run");
    assert_eq!(host.ask("inc"), "counter v1: value=20");
    let output = reload.join().unwrap();
    let text = said(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("shadow run passed: 1 live event"), "{text}");
    assert_eq!(host.ask("inc"), "counter v2: value=21");
    host.finish();
}

#[test]
fn expect_same_refuses_a_changed_reply_and_keep_shadow_state_commits_without_a_pause() {
    let dir = TempDir::new().unwrap();
    let (mut host, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    let reload = reloading(&socket, CHANGED_REPLY, &["--shadow", "1h", "--expect-same"]);
    wait_for_stage(&socket, "shadow run");
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    assert_eq!(host.ask("dec"), "error: expected inc or get");
    let text = said(&reload.join().unwrap());
    assert!(
        text.contains("live event 2 (message \"dec\") answered differently: the running version \"error: expected inc or get\\n\", the new version \"error: unknown command\\n\""),
        "{text}"
    );

    // Every reply matched: the new version keeps the state it built itself.
    let flags = ["--shadow", "300ms", "--expect-same", "--keep-shadow-state"];
    let reload = reloading(&socket, CHANGED_REPLY, &[&flags[..], &["--json"]].concat());
    wait_for_stage(&socket, "shadow run");
    assert_eq!(host.ask("inc"), "counter v1: value=10");
    let output = reload.join().unwrap();
    assert!(output.status.success(), "{}", said(&output));
    let answer = crate::cli::json(&output);
    assert_eq!(answer["swap"]["kept_shadow_state"], true, "{answer:#}");
    assert_eq!(answer["swap"]["state_bytes"], 0, "no export: {answer:#}");
    assert_eq!(host.ask("get"), "counter v1: value=10");
    host.finish();
}

#[test]
fn a_canary_rolls_back_a_version_that_fails_after_its_commit_to_the_old_code_on_every_event() {
    let dir = TempDir::new().unwrap();
    let mut started = keeping(COUNTER_V1, &dir, &["--durable"]);
    let socket = started.socket.clone();
    assert_eq!(started.host.ask("inc"), "counter v1: value=5");
    let flags = ["--canary", "1h", "--max-errors", "1"];
    let reload = reloading(&socket, PANICKING_COMMAND, &flags);
    wait_for_stage(&socket, "canary");
    let host = &mut started.host;
    assert_eq!(host.ask("inc"), "counter v2: value=6");
    assert!(
        host.ask("oops").starts_with("error: "),
        "one failure, tolerated"
    );
    assert_eq!(host.ask("inc"), "counter v2: value=7");
    assert!(
        host.ask("what").starts_with("error: "),
        "the second trips it"
    );
    let output = reload.join().unwrap();
    let text = said(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("failed 2 times") && text.contains("rolled back to counter_v1"),
        "{text}"
    );
    // The old code on every event: three incs of 5 (the new version's +1s are gone).
    assert_eq!(started.host.ask("get"), "counter v1: value=15");
    assert_eq!(state_json(&socket)["value"], 15);
    assert_eq!(deployments(&socket)["rolled_back"], 1);

    // A canary that stays quiet passes, and the reload says so when its window ends.
    let reload = reloading(&socket, COUNTER_V2, &["--canary", "300ms"]);
    let text = said(&reload.join().unwrap());
    assert!(
        text.contains("canary passed: 0 events, 0 failures"),
        "{text}"
    );
    assert_eq!(started.host.ask("inc"), "counter v2: value=16");
    stop(started.host, &socket);
}

#[test]
fn a_plan_the_host_cannot_carry_out_is_refused_in_one_line() {
    let dir = TempDir::new().unwrap();
    let (host, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    for (flags, expected) in [
        (
            &["--trial", "5"][..],
            "--trial replays the journal: run the host with --state-dir DIR --durable",
        ),
        (
            &["--canary", "1m"][..],
            "--canary rolls back through the journal",
        ),
        (&["--shadow", "5"][..], "a unit"),
        (&["--shadow", "0s"][..], "a duration longer than 0"),
        (&["--trial", "0"][..], "0 is not in 1..=100000"),
        (
            &["--keep-shadow-state", "--shadow", "1s"][..],
            "--expect-same",
        ),
        (&["--max-errors", "3"][..], "--canary"),
    ] {
        let mut args = vec!["reload", COUNTER_V2, "--control", &socket];
        args.extend_from_slice(flags);
        let output = client(&args, b"");
        let text = said(&output);
        assert!(!output.status.success(), "{flags:?}: {text}");
        assert!(text.contains(expected), "{flags:?}: {text}");
    }
    let status = control_json("status", &socket);
    assert_eq!(status["status"]["name"], "counter_v1.wasm", "{status:#}");
    host.kill();
}

#[test]
fn a_watcher_that_finds_the_module_already_running_deploys_nothing() {
    let dir = TempDir::new().unwrap();
    let app = crate::cli::app_copy(&dir, COUNTER_V1);
    let socket = crate::cli::control_socket(&dir);
    // The watcher's plan would hold any version it deploys for an hour.
    let mut host = Running::watching(&app, &["--control", &socket, "--shadow", "1h"]);
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    let output = client(&["reload", COUNTER_V2, "--control", &socket], b"");
    assert!(output.status.success(), "{}", said(&output));
    // The same version reaches the watched file (a rollout updating a ConfigMap, say).
    crate::cli::rename_over(&app, COUNTER_V2);
    host.log_until("already running; nothing to do");
    assert_eq!(deployments(&socket)["current"], serde_json::Value::Null);
    assert_eq!(host.ask("inc"), "counter v2: value=6");
    host.finish();
}
