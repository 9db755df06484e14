//! Shared pieces of Hotswap's tests and benchmarks: the paths of the example guests (built from
//! source by `build.rs`) and small helpers around the host library.

use hotswap::{App, Config, Prepared, Runtime};
use std::path::Path;
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// A runtime with the default limits, and the guests' output kept off the test's stdout.
pub fn runtime() -> Arc<Runtime> {
    runtime_with(Config {
        inherit_stdio: false,
        ..Config::default()
    })
}

/// A runtime with these limits.
pub fn runtime_with(config: Config) -> Arc<Runtime> {
    Runtime::new(config).expect("create a runtime")
}

/// Compiles, checks and instantiates a guest file, panicking with the reason if it fails.
pub fn prepare(runtime: &Runtime, path: &str) -> Prepared {
    runtime
        .prepare_file(Path::new(path))
        .unwrap_or_else(|e| panic!("prepare {path}: {e}"))
}

/// Starts a guest file with fresh state.
pub fn start(runtime: &Arc<Runtime>, path: &str) -> App {
    App::start(runtime.clone(), prepare(runtime, path))
        .unwrap_or_else(|e| panic!("start {path}: {e}"))
}

/// Sends a text message and returns the reply as text, panicking if the event fails.
pub fn send(app: &mut App, message: &str) -> String {
    let reply = app
        .message(message.as_bytes())
        .unwrap_or_else(|e| panic!("message {message:?}: {e}"));
    String::from_utf8(reply).expect("the example guests reply in UTF-8")
}

/// Swaps a guest file in, panicking with the refusal if it is refused.
pub fn swap(app: &mut App, path: &str) -> hotswap::SwapReport {
    let prepared = prepare(app.runtime(), path);
    app.swap(prepared)
        .unwrap_or_else(|e| panic!("swap to {path}: {e}"))
}

/// The state as the running code exports it.
pub fn state(app: &mut App) -> Vec<u8> {
    app.export_state().expect("export the state")
}
