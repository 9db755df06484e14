//! Hotswap: run a WebAssembly app and replace its code while it runs, keeping its state.
//!
//! The pipeline, one module per step:
//!
//! 1. [`compile`]: read a module file (regular files only, size-capped), hash it, compile it;
//! 2. [`check`]: check its exports and imports against the ABI ([`hotswap_abi`]);
//! 3. [`guest`]: instantiate it in its own `Store` and make the ABI's calls, bounds-checked,
//!    time-limited and memory-limited;
//! 4. [`app`]: the running app: events, and swaps that export the old state, copy it into the
//!    new instance, import it, prove the new instance can export it, and commit; or, when both
//!    versions keep their state in place with the same layout, [`in_place`]: the new instance
//!    takes over the old one's memory;
//!
//! with [`runtime`] holding what every version shares (engine, linker, limits, module cache),
//! [`report`] what the app reports and [`text`] how guest text is made safe to print. Around
//! them: [`actor`] (the one thread that owns the app and handles its events), [`serve`] (the
//! `run` command, wiring every source of events to the actor), [`watch`] (new versions from a
//! file), [`control`] (the control socket), [`http`] (HTTP in front of the app), [`state_view`]
//! (the state as an operator reads it), [`deploy`] (a new version's trial, shadow run and
//! canary), [`metrics`] (Prometheus) and [`cli`]. [`testing`] drives an app from an app
//! author's own `cargo test`, and [`scaffold`] writes a new app's crate (`hotswap new`).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use hotswap::{App, Config, Runtime};
//! let runtime = Runtime::new(Config::default())?;
//! let v1 = runtime.prepare_file("counter_v1.wasm".as_ref())?;
//! let mut app = App::start(runtime.clone(), v1)?;
//! app.message(b"inc")?;
//! let v2 = runtime.prepare_file("counter_v2.wasm".as_ref())?;
//! println!("{}", app.swap(v2)?);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod actor;
pub mod app;
pub mod check;
pub mod cli;
pub mod compile;
mod compile_cache;
pub mod control;
pub mod deploy;
pub mod error;
pub mod guest;
pub mod http;
pub mod in_place;
pub mod metrics;
pub mod persist;
pub mod report;
pub mod runtime;
pub mod scaffold;
pub mod serve;
pub mod state_check;
pub mod state_view;
pub mod swap_test;
pub mod testing;
pub mod text;
pub mod watch;

pub use app::App;
pub use compile::{Compiled, ModuleHash};
pub use error::{CallError, CheckError, SwapError};
pub use guest::{Config, DirMapping, Limits};
pub use report::{EventError, Phases, Recovery, Stats, SwapPath, SwapRefused, SwapReport};
pub use runtime::{Prepared, Runtime};
