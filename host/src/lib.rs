//! Hotswap: run a WebAssembly app and replace its code while it runs, keeping its state.
//!
//! The pipeline, one module per step:
//!
//! 1. [`compile`]: read a module, hash it, compile it (or reuse it from the cache);
//! 2. [`check`]: check its exports and imports against the ABI ([`hotswap_abi`]);
//! 3. [`guest`]: instantiate it in its own `Store` and make the ABI's calls, bounds-checked,
//!    time-limited and memory-limited;
//! 4. [`app`]: the running app: events, and swaps that export the old state, copy it into the
//!    new instance, import it, and commit;
//!
//! and around it [`watch`] (new versions from a file), [`control`] (the control socket),
//! [`http`] (HTTP in front of the app), [`serve`] (the `run` command's event loop) and [`cli`].
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

pub mod app;
pub mod check;
pub mod cli;
pub mod compile;
pub mod control;
pub mod error;
pub mod guest;
pub mod http;
mod runtime;
pub mod serve;
pub mod watch;

pub use app::{App, EventError, Phases, Prepared, Stats, SwapRefused, SwapReport};
pub use compile::{Compiled, ModuleHash};
pub use error::{CallError, CheckError, SwapError};
pub use runtime::{Config, DirMapping, Runtime};
