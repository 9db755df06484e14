//! Test an app from `cargo test` in its own crate: start a built module, send it events, swap in
//! a new version and read the state, with no wasmtime to learn.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use hotswap::testing::TestApp;
//!
//! let mut app = TestApp::start("target/wasm32-wasip1/release/my_app.wasm")?;
//! assert_eq!(app.send("inc")?, "value=1");
//! assert_eq!(app.state()?["value"], 1);
//!
//! // The swap a running host would make; an `Err` carries the refusal's reason.
//! app.swap("v2.wasm")?;
//! assert_eq!(app.send("inc")?, "value=2");
//! # Ok(()) }
//! ```
//!
//! Each call is exactly what `hotswap run` does for that event or swap: the same checks, limits
//! and recovery. A failed event or a refused swap is an `Err` whose message is the host's; the
//! app keeps running as it would in production (the old version, its state untouched), so a test
//! can go on after it. The app's own output (`println!`, `eprintln!`) is discarded unless
//! [`TestApp::start_with`] is given a [`Config`] with `inherit_stdio: true`.
//!
//! Build the module first (`cargo build --target wasm32-wasip1`): a test compiled for the host
//! cannot build its own crate for WebAssembly. `hotswap new` writes a crate whose tests do that.

use crate::{App, Config, Runtime, SwapReport};
use anyhow::Context as _;
use hotswap_abi::http::Bytes;
pub use hotswap_abi::http::{Request as HttpRequest, Response as HttpResponse};
use serde::de::DeserializeOwned;
use std::path::Path;

/// A running app under test: one instance of a module, driven one event at a time.
pub struct TestApp {
    app: App,
}

impl TestApp {
    /// Starts the module at `path` with fresh state (its `start` handler runs), the guest's output
    /// discarded.
    pub fn start(path: impl AsRef<Path>) -> anyhow::Result<TestApp> {
        let config = Config {
            inherit_stdio: false,
            ..Config::default()
        };
        TestApp::start_with(path, config)
    }

    /// Starts the module at `path` with these limits and settings (`inherit_stdio: true` shows
    /// the guest's output on stderr, each line prefixed `guest: `).
    pub fn start_with(path: impl AsRef<Path>, config: Config) -> anyhow::Result<TestApp> {
        let path = path.as_ref();
        let runtime = Runtime::new(config)?;
        let prepared = runtime
            .prepare_file(path)
            .with_context(|| format!("cannot load {}", path.display()))?;
        let app = App::start(runtime, prepared)
            .with_context(|| format!("cannot start {}", path.display()))?;
        Ok(TestApp { app })
    }

    /// Sends a text message and returns the reply as text (an `Err` if the event fails or the
    /// reply is not UTF-8).
    pub fn send(&mut self, message: &str) -> anyhow::Result<String> {
        let reply = self.send_bytes(message.as_bytes())?;
        String::from_utf8(reply)
            .map_err(|e| anyhow::anyhow!("the reply to {message:?} is not UTF-8: {e}"))
    }

    /// Sends a message of any bytes and returns the reply's bytes.
    pub fn send_bytes(&mut self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(self.app.message(message)?)
    }

    /// Delivers a timer tick at `now_ms` (Unix time in milliseconds).
    pub fn tick(&mut self, now_ms: u64) -> anyhow::Result<()> {
        Ok(self.app.tick(now_ms)?)
    }

    /// Sends an HTTP request to the app's `http` handler: `target` is the path with an optional
    /// query (`/todos?done=1`). Any status is an `Ok`; an `Err` is a failed event.
    pub fn http(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> anyhow::Result<HttpResponse> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: Vec::new(),
            body: Bytes(body.to_vec()),
        };
        self.http_request(&request)
    }

    /// Sends a full HTTP request (headers included) to the app's `http` handler.
    pub fn http_request(&mut self, request: &HttpRequest) -> anyhow::Result<HttpResponse> {
        Ok(self.app.http(request)?)
    }

    /// Swaps in the module at `path`, carrying the state over. A refusal is an `Err` (a
    /// [`SwapRefused`](crate::SwapRefused) inside, for `downcast_ref`), after which the old
    /// version keeps running with its state.
    pub fn swap(&mut self, path: impl AsRef<Path>) -> anyhow::Result<SwapReport> {
        let path = path.as_ref();
        let prepared = self
            .app
            .runtime()
            .prepare_file(path)
            .with_context(|| format!("cannot load {}", path.display()))?;
        self.app
            .swap(prepared)
            .map_err(|refused| anyhow::Error::new(*refused))
    }

    /// The state as the running code exports it (what a swap would carry), as JSON: a struct is
    /// an object of its fields. Bytes, non-string map keys and non-finite floats take the form
    /// `hotswap state` shows.
    pub fn state(&mut self) -> anyhow::Result<serde_json::Value> {
        let bytes = self.state_bytes()?;
        let value = hotswap_msgpack::value::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("the exported state is not MessagePack: {e}"))?;
        serde_json::to_value(&value).context("the state cannot be shown as JSON")
    }

    /// The state decoded into a type of the test's choosing (the app's own state type, when its
    /// crate is also an `rlib`), as the next version's code would decode it.
    pub fn state_as<T: DeserializeOwned>(&mut self) -> anyhow::Result<T> {
        let bytes = self.state_bytes()?;
        hotswap_msgpack::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("the state does not decode as the type asked for: {e}"))
    }

    /// The state's bytes, MessagePack with named fields, as the running code exports them.
    pub fn state_bytes(&mut self) -> anyhow::Result<Vec<u8>> {
        Ok(self.app.export_state()?)
    }

    /// The running version's `STATE_VERSION`.
    pub fn state_version(&self) -> u32 {
        self.app.state_version()
    }

    /// The app itself, for what this wrapper does not cover.
    pub fn app(&mut self) -> &mut App {
        &mut self.app
    }
}
