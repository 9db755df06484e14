//! The command line: one clap struct per subcommand; their doc comments are `--help`.

use crate::control::{self, Request};
use crate::runtime::{Config, DirMapping, Runtime};
use crate::serve::{RunOptions, run};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Run a WebAssembly app and replace its code while it runs, keeping its in-memory state.
///
/// An app is a wasm module built with the hotswap-guest SDK (or any module that implements the
/// Hotswap ABI). On a swap, the running version exports its state, the new version imports it
/// (migrating it if its shape changed), and only then does the new code take over. If anything
/// fails, the old version keeps running with its state intact.
#[derive(Debug, Parser)]
#[command(name = "hotswap", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an app: each line on stdin is a message, each reply a line on stdout.
    ///
    /// The host's own log (swaps, refusals, failures) goes to stderr; the guest's WASI stdout and
    /// stderr pass through. End of stdin stops the app.
    Run(RunArgs),
    /// Check a module without running it: compile it, check its exports and imports against the
    /// ABI, instantiate it, and print its ABI and state versions.
    Check(CheckArgs),
    /// Ask a running host to swap in a new version, and wait for the outcome.
    ///
    /// Prints the swap line and exits 0 when swapped; prints the reason and exits 1 when
    /// refused (the old version keeps running).
    Reload(ReloadArgs),
    /// Show a running host's status: module, state version, uptime, events, swaps, last pause.
    Status(ControlArgs),
    /// Show the running app's current state, decoded (the SDK's MessagePack as JSON).
    State(ControlArgs),
}

/// How to reach a running host.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The host's control socket (default: the only host running under this user).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Print the host's whole answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `hotswap reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The new version's module file.
    pub module: PathBuf,
    /// How to reach the host.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `hotswap run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app's module: a .wasm file (or .wat text).
    pub module: PathBuf,
    /// Watch the module file and swap in every new version written to it (in place, by rename,
    /// or by a cargo rebuild).
    #[arg(long)]
    pub watch: bool,
    /// How long the watched file must be quiet before a new version is read.
    #[arg(long, value_name = "MS", default_value_t = 100, requires = "watch")]
    pub debounce: u64,
    /// Deliver a tick event to the app every MS milliseconds.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub tick: Option<u64>,
    /// Serve HTTP/1.1 on this address (for example 127.0.0.1:8080; port 0 picks a free port):
    /// each request is an event for the app. The end of stdin then does not stop the host.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// The largest HTTP request body accepted, in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, requires = "http")]
    pub max_body: usize,
    /// Listen for `hotswap reload|status|state` on this Unix socket (created owner-only;
    /// default: a per-process socket under $XDG_RUNTIME_DIR/hotswap or /tmp/hotswap-$UID).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Let the guest open a host directory, seen by the guest at GUEST (default: the same
    /// path). Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    pub dirs: Vec<DirMapping>,
    /// Set an environment variable for the guest. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Limits on the guest.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `hotswap check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The module to check: a .wasm file (or .wat text).
    pub module: PathBuf,
    /// Limits on the guest.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Limits on every call into the guest.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Interrupt a call into the guest (an event, a state export or import) that runs longer
    /// than MS milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// The most linear memory one instance may use, in MiB (wasm32 allows at most 4096).
    #[arg(long, value_name = "MIB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_memory: u64,
}

impl LimitArgs {
    fn config(&self) -> Config {
        Config {
            call_timeout: Duration::from_millis(self.timeout),
            max_memory: (self.max_memory as usize) << 20,
            ..Config::default()
        }
    }
}

/// The whole `hotswap` command: parse the command line, run it, print any error's whole chain
/// on stderr, and map the outcome to the exit status (0 success, 1 failure, 2 bad usage).
pub fn main() -> std::process::ExitCode {
    match execute(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hotswap: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let config = Config {
                dirs: args.dirs,
                env: args.env,
                ..args.limits.config()
            };
            let options = RunOptions {
                module: args.module,
                watch: args.watch,
                tick: args.tick.map(Duration::from_millis),
                debounce: Duration::from_millis(args.debounce),
                control: args.control,
                http: args.http,
                max_body: args.max_body,
            };
            run(Runtime::new(config)?, &options)
        }
        Command::Check(args) => {
            let runtime = Runtime::new(args.limits.config())?;
            let started = Instant::now();
            let prepared = runtime
                .prepare_file(&args.module)
                .with_context(|| format!("{} fails the check", args.module.display()))?;
            println!(
                "{}: ok: Hotswap ABI v{}, state v{}, compiled, checked and instantiated in {}",
                prepared.compiled(),
                hotswap_abi::ABI_VERSION,
                prepared.state_version(),
                crate::app::format_duration(started.elapsed())
            );
            Ok(())
        }
        Command::Reload(args) => {
            let module = std::path::absolute(&args.module)
                .with_context(|| format!("cannot resolve {}", args.module.display()))?;
            ask(&args.control, &Request::Reload { module })
        }
        Command::Status(args) => ask(&args, &Request::Status),
        Command::State(args) => ask(&args, &Request::State),
    }
}

/// Sends a request to a running host and prints its answer; a failed request is an error.
fn ask(args: &ControlArgs, request: &Request) -> anyhow::Result<()> {
    // A client only waits for the host's answer: it should not take a core from the host.
    crate::serve::background_priority();
    let path = match &args.control {
        Some(path) => path.clone(),
        None => control::discover()?,
    };
    let response = control::send(&path, request)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else if response.ok {
        println!("{}", response.message);
    }
    if !response.ok {
        anyhow::bail!("{}", response.message);
    }
    Ok(())
}

fn parse_dir(arg: &str) -> Result<DirMapping, String> {
    let (host, guest) = arg.split_once("::").unwrap_or((arg, arg));
    if host.is_empty() || guest.is_empty() {
        return Err("expected HOST or HOST::GUEST, both non-empty".into());
    }
    Ok(DirMapping {
        host: PathBuf::from(host),
        guest: guest.to_owned(),
    })
}

fn parse_env(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE with a non-empty KEY".into()),
    }
}
