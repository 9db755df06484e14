//! `hotswap::testing`: the API an app author's own `cargo test` drives an app with.

use hotswap::testing::TestApp;
use hotswap::{SwapError, SwapRefused};
use hotswap_tests::{COUNTER_V1, COUNTER_V2, TODO_V1, TODO_V2};
use serde::Deserialize;

#[test]
fn messages_swaps_and_state_as_json() -> anyhow::Result<()> {
    let mut app = TestApp::start(COUNTER_V1)?;
    assert_eq!(app.send("inc")?, "counter v1: value=5");
    assert_eq!(app.state()?, serde_json::json!({ "value": 5 }));

    let report = app.swap(COUNTER_V2)?;
    assert_eq!(report.to_state_version, 1);
    assert_eq!(app.send("inc")?, "counter v2: value=6");
    assert_eq!(app.state()?["value"], 6);

    #[derive(Deserialize)]
    struct Counter {
        value: i64,
    }
    assert_eq!(app.state_as::<Counter>()?.value, 6);
    Ok(())
}

#[test]
fn a_refused_swap_is_an_error_and_the_old_version_keeps_its_state() -> anyhow::Result<()> {
    let mut app = TestApp::start(TODO_V1)?;
    let added = app.http("POST", "/todos", b"milk")?;
    assert_eq!(added.status, 201);
    app.swap(TODO_V2)?;
    assert_eq!(app.state_version(), 2);

    let refused = app.swap(TODO_V1).expect_err("v1 goes back a state version");
    let reason = refused
        .downcast_ref::<SwapRefused>()
        .expect("the refusal is a SwapRefused");
    assert!(matches!(
        reason.error,
        SwapError::Downgrade { running: 2, new: 1 }
    ));
    assert!(refused.to_string().contains("refused"), "{refused}");

    let list = app.http("GET", "/todos?all=1", b"")?;
    assert_eq!(
        (list.status, list.body.0.as_slice()),
        (200, &b"[ ] milk\n"[..])
    );
    Ok(())
}

#[test]
fn a_missing_module_names_its_path() {
    let error = TestApp::start("no/such/app.wasm")
        .err()
        .expect("no such file");
    assert!(
        format!("{error:#}").contains("no/such/app.wasm"),
        "{error:#}"
    );
}

#[test]
fn a_module_missing_from_a_wasm_target_dir_hints_at_the_crate_type() {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("target/wasm32-wasip1/release/my_app.wasm");
    let error = TestApp::start(&built).err().expect("nothing was built");
    let message = format!("{error:#}");
    assert!(message.contains("crate-type = [\"cdylib\"]"), "{message}");

    let elsewhere = dir.path().join("my_app.wasm");
    let error = TestApp::start(&elsewhere).err().expect("no such file");
    assert!(!format!("{error:#}").contains("crate-type"), "{error:#}");
}
