//! The command line: one clap struct per subcommand; their doc comments are `--help`.

use crate::compile::{DEFAULT_MAX_MODULE, file_kind};
use crate::control::{self, Request};
use crate::guest::{Config, DirMapping};
use crate::http::HttpOptions;
use crate::persist::keeper::{Every, PersistOptions};
use crate::runtime::Runtime;
use crate::serve::{RunOptions, run};
use crate::state_check;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::io::Read as _;
use std::path::{Path, PathBuf};
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
    /// The log on stderr: `human` lines (`hotswap: ...`) or `json` objects, one per line, for
    /// log shippers. RUST_LOG filters it (default: the host's lines and the guest's output;
    /// `RUST_LOG=warn` keeps warnings and errors only, `RUST_LOG=guest=off` drops the guest's).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "human")]
    pub log_format: crate::text::LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an app: each line on stdin is a message, each reply a line on stdout.
    ///
    /// The host's own log (swaps, refusals, failures) goes to stderr, and so does the guest's
    /// own output (its WASI stdout and stderr), each line prefixed `guest: `: stdout carries
    /// only replies, one line per input. The end of stdin stops the app (unless it serves
    /// HTTP); so do SIGTERM, SIGINT and `hotswap stop`, gracefully (a second signal exits at
    /// once).
    Run(Box<RunArgs>),
    /// Check a module without running it, and whether it takes a saved or running state.
    ///
    /// Compiles the module, checks its exports and imports against the ABI, instantiates it,
    /// and prints its ABI and state versions. With --state FILE or --against, also runs the
    /// import (or migration) a swap would run, on that state, in a throwaway instance, and says
    /// whether the module takes it: exit 0 if it does, 1 if not.
    Check(CheckArgs),
    /// Prove a reload before deploying it: replay an event script with a swap at every event
    /// boundary.
    ///
    /// Runs the script on OLD alone and on NEW alone, then with a swap at every event boundary
    /// (or an even sample): OLD → OLD and NEW → NEW must change no later reply and no exported
    /// byte, OLD → NEW must not trap, fail or be refused, and OLD → NEW → OLD must lose nothing
    /// (when the state versions allow a swap back). Prints each finding with the events that
    /// reproduce it; exits 1 if there is one.
    Test(TestArgs),
    /// Ask a running host to swap in a new version, and wait for the outcome.
    ///
    /// The module's bytes are sent over the control socket, so any file this command can read
    /// works (`<(cat v2.wasm)` too). Prints the swap line and exits 0 when swapped; prints the
    /// reason and exits 1 when refused (the old version keeps running) or rolled back by its
    /// canary. With --trial, --shadow or --canary it waits until the deployment ends.
    Reload(ReloadArgs),
    /// Show a running host's status: module, origin, watched path, state version, uptime,
    /// events, swaps, limits, last pause.
    Status(ControlArgs),
    /// Show the running app's current state, decoded (the SDK's MessagePack as JSON), or save
    /// it to a file that `hotswap check --state` reads.
    State(StateArgs),
    /// Show a running host's limits, or change them (an app stuck at its memory limit grows
    /// again once the limit is raised).
    Limits(LimitsArgs),
    /// Stop a running host gracefully: it finishes the events in flight, answers them, takes a
    /// last snapshot (with --state-dir), removes its control socket and exits 0.
    Stop(ControlArgs),
    /// Take a snapshot of the running app's state now (a host run with --state-dir); prints
    /// where it was written once it is on disk.
    Snapshot(ControlArgs),
    /// Return to the module that ran before the last swap: that swap's snapshot imported into
    /// the old code, and every event since replayed through it (a host run with --durable). No
    /// down-migration needed.
    Rollback(ControlArgs),
    /// Write a new app's crate, ready to build, test and check reloads of.
    ///
    /// NAME/ holds a counter app on the SDK, a test that runs it through `hotswap::testing`,
    /// check-reload.sh (builds the previous and the current version and runs `hotswap test`
    /// over events.txt) and a CI workflow doing both. Never overwrites anything.
    New(crate::scaffold::NewArgs),
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
    /// Deploying it.
    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// What a new version must get through before and after its commit (`hotswap reload`, and
/// `hotswap run --watch` for every version it finds). Without these, a swap commits as soon
/// as the new version has taken the state.
#[derive(Clone, Debug, Args)]
pub struct DeployArgs {
    /// Before the commit, the new version imports a copy of the state in a throwaway instance
    /// and replays the last N journaled events; a trap, an error status or an HTTP 5xx
    /// refuses the swap, naming the event. Needs a host run with --state-dir DIR --durable.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=crate::deploy::MAX_TRIAL))]
    pub trial: Option<u64>,
    /// Before the commit, the new version also handles a copy of every live event for this
    /// long (500ms, 30s, 5m, 1h), in a throwaway instance with a copy of the state, while the
    /// running version keeps answering every client; a failure refuses the swap.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shadow: Option<Duration>,
    /// In the shadow run, every reply must also be the running version's (for a refactor).
    #[arg(long, requires = "shadow")]
    pub expect_same: bool,
    /// After a shadow run whose every reply matched, commit the new version with the state it
    /// built itself: no export, no import, so no pause at any state size. Only on a host
    /// without --state-dir (the journal could not rebuild that state).
    #[arg(long, requires = "expect_same")]
    pub keep_shadow_state: bool,
    /// After the commit, watch the new version for this long: more than --max-errors failures
    /// (traps, error statuses, HTTP 5xx) roll the swap back by themselves (the journal's
    /// rollback). Needs --state-dir DIR --durable. The reload waits for the window to end.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub canary: Option<Duration>,
    /// The failures the canary tolerates; one more rolls the swap back.
    #[arg(long, value_name = "K", default_value_t = 0, requires = "canary")]
    pub max_errors: u64,
}

impl DeployArgs {
    /// The plan these flags ask for.
    pub fn plan(&self) -> crate::deploy::Plan {
        let ms = |d: Duration| d.as_millis().min(u64::MAX as u128) as u64;
        crate::deploy::Plan {
            trial: self.trial,
            shadow_ms: self.shadow.map(ms),
            expect_same: self.expect_same,
            keep_shadow_state: self.keep_shadow_state,
            canary_ms: self.canary.map(ms),
            max_errors: self.max_errors,
        }
    }
}

/// `hotswap limits`.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// The new call time limit, in milliseconds.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// The new memory limit for one instance, in MiB (at most 4096).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_memory: Option<u64>,
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
    /// by a cargo rebuild, or through symlinks such as a Kubernetes ConfigMap's).
    #[arg(long)]
    pub watch: bool,
    /// How long the watched file must be quiet before a new version is read.
    #[arg(long, value_name = "MS", default_value_t = 100, requires = "watch")]
    pub debounce: u64,
    /// Deliver a tick event to the app every MS milliseconds.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub tick: Option<u64>,
    /// Listen for `hotswap reload|status|state|snapshot|rollback|limits|stop` on this Unix socket (created
    /// owner-only; default: a per-process socket under $XDG_RUNTIME_DIR/hotswap or
    /// /tmp/hotswap-$UID). An existing file that is not a socket is never replaced.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Let the guest open a host directory, seen by the guest at GUEST (default: the same
    /// path). Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    pub dirs: Vec<DirMapping>,
    /// Set an environment variable for the guest. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// How long a graceful stop waits for HTTP requests in flight, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub drain_timeout: u64,
    /// Keeping the state.
    #[command(flatten)]
    pub persist: PersistArgs,
    /// HTTP.
    #[command(flatten)]
    pub http: HttpArgs,
    /// Limits on the guest.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Deploying each version --watch finds.
    #[command(flatten)]
    pub deploy: DeployArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (events by kind and outcome, event
    /// latency, queue depth, swaps, pauses by phase, state size, memory, HTTP connections,
    /// journal fsyncs). 127.0.0.1:9464, say; port 0 picks a free one (logged).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
}

/// Keeping the app's state across restarts, crashes and host upgrades.
#[derive(Debug, Args)]
pub struct PersistArgs {
    /// Keep the app's state in DIR: snapshots (at start, at every swap, every
    /// --snapshot-every, on `hotswap snapshot` and at a graceful stop) and, with --durable, a
    /// journal of every event. A start on a DIR that holds a snapshot restores the app from it.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Journal every event before its reply is released (an HTTP response or a stdout line
    /// goes out only once its event is on disk), so a crash loses nothing acknowledged; needed
    /// by `hotswap rollback`.
    #[arg(long, requires = "state_dir")]
    pub durable: bool,
    /// Also take a snapshot after every N events (a number) or every period with events (a
    /// number and a unit: 500ms, 30s, 5m).
    #[arg(long, value_name = "N|PERIOD", requires = "state_dir", value_parser = parse_every)]
    pub snapshot_every: Option<Every>,
    /// How many snapshots to keep (the last swap's is kept besides, for a rollback).
    #[arg(long, value_name = "K", default_value_t = 3, requires = "state_dir", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub keep_snapshots: u64,
}

impl PersistArgs {
    fn options(&self) -> Option<PersistOptions> {
        Some(PersistOptions {
            dir: self.state_dir.clone()?,
            durable: self.durable,
            every: self.snapshot_every,
            keep: self.keep_snapshots as usize,
        })
    }
}

fn parse_every(arg: &str) -> Result<Every, String> {
    let every = match arg.parse::<u64>() {
        Ok(n) => Every::Events(n),
        Err(_) if arg.starts_with(|c: char| c.is_ascii_digit()) => {
            Every::Time(parse_duration(arg)?)
        }
        Err(_) => {
            return Err("expected a number of events, or a period such as 500ms, 30s or 5m".into());
        }
    };
    match every {
        Every::Events(0) => Err("at least 1 event".into()),
        every => Ok(every),
    }
}

/// A duration with its unit: 500ms, 30s, 5m, 1h; longer than 0.
fn parse_duration(arg: &str) -> Result<Duration, String> {
    let digits = arg.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 30s, 5m or 1h".to_owned())?;
    let d = match &arg[digits.len()..] {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "" => return Err(format!("{n} what? add a unit: {n}ms, {n}s, {n}m or {n}h")),
        unit => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    match d.is_zero() {
        true => Err("a duration longer than 0".into()),
        false => Ok(d),
    }
}

/// Serving HTTP, and the limits on its clients.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Serve HTTP/1.1 on this address (for example 127.0.0.1:8080; port 0 picks a free port):
    /// each request is an event for the app. The end of stdin then does not stop the host.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// The largest HTTP request body accepted, in bytes (413 beyond, at once when the
    /// Content-Length says so).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20, requires = "http")]
    pub max_body: usize,
    /// The most HTTP connections open at once; more wait until one closes (default: half the
    /// file descriptors the process may open, at most 10000).
    #[arg(long, value_name = "N", requires = "http", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,
    /// Close a connection that takes longer than this from a request's first byte to the end
    /// of its header, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000, requires = "http", value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Answer 408 when a request's body takes longer than this to arrive, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000, requires = "http", value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
    /// Close a kept-alive connection idle for longer than this between requests, in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000, requires = "http", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
}

impl HttpArgs {
    fn options(&self) -> HttpOptions {
        let max = self.max_connections.map(|n| n as usize);
        HttpOptions {
            max_body: self.max_body,
            max_connections: max.unwrap_or_else(HttpOptions::default_max_connections),
            header_timeout: Duration::from_millis(self.header_timeout),
            body_timeout: Duration::from_millis(self.body_timeout),
            idle_timeout: Duration::from_millis(self.idle_timeout),
        }
    }
}

/// `hotswap check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The module to check: a .wasm file (or .wat text).
    pub module: PathBuf,
    /// Also check that the module takes this state: a snapshot from a --state-dir
    /// (`snapshots/*.snap`), or a file written by `hotswap state --save`.
    #[arg(long, value_name = "FILE", conflicts_with = "against")]
    pub state: Option<PathBuf>,
    /// Also check that the module takes the state of the running host (found as `hotswap
    /// status` finds it, or at --control PATH); the host keeps serving and is not changed.
    #[arg(long)]
    pub against: bool,
    /// The running host's control socket, for --against.
    #[arg(long, value_name = "PATH", requires = "against")]
    pub control: Option<PathBuf>,
    /// Limits on the guest.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `hotswap test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The version running now.
    pub old: PathBuf,
    /// The version to deploy.
    pub new: PathBuf,
    /// The event script: one message per line (what `hotswap run` reads on stdin), or a journal
    /// segment recorded with `hotswap run --state-dir DIR --durable` (DIR/journal/*.log).
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,
    /// NEW is a refactor: its replies must also be OLD's.
    #[arg(long)]
    pub same_behaviour: bool,
    /// Try a swap at no more than N event boundaries, evenly spread (each costs a few runs of
    /// the script).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub boundaries: u64,
    /// Stop with an error once the test has run this many seconds (a version that loops
    /// makes every call wait for --timeout).
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_time: u64,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Limits on the guest.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `hotswap state`.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Write the state, as the app exported it, to FILE (the snapshot format, which `hotswap
    /// check --state FILE` reads) instead of showing it.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// How to reach the host.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Limits on every call into the guest.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Interrupt a call into the guest (an event, a state export or import, a sleep in WASI)
    /// that runs longer than MS milliseconds; a swap's whole pause gets this long too.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// The most linear memory one instance may use, in MiB (wasm32 allows at most 4096).
    /// `hotswap limits --max-memory` changes it on a running host.
    #[arg(long, value_name = "MIB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_memory: u64,
    /// The largest module file read, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_MODULE >> 20, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_module_size: u64,
    /// Keep compiled modules in DIR (by content hash and engine settings), so that a restart,
    /// or a swap back to a version compiled before, does not compile again. Default:
    /// $XDG_CACHE_HOME/hotswap, else ~/.cache/hotswap. Only files owned by this user and
    /// writable by nobody else are read.
    #[arg(long, value_name = "DIR")]
    pub compile_cache: Option<PathBuf>,
    /// Compile every module, reading and writing no compile cache.
    #[arg(long, conflicts_with = "compile_cache")]
    pub no_compile_cache: bool,
}

impl LimitArgs {
    fn config(&self) -> Config {
        Config {
            call_timeout: Duration::from_millis(self.timeout),
            max_memory: (self.max_memory as usize) << 20,
            max_module: self.max_module_size << 20,
            compile_cache: self.compile_cache_dir(),
            ..Config::default()
        }
    }

    /// `--compile-cache`, or the default one, or none (`--no-compile-cache`, or no home).
    fn compile_cache_dir(&self) -> Option<PathBuf> {
        if self.no_compile_cache {
            return None;
        }
        let home = || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
        let default = || {
            (std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from))
                .filter(|dir| dir.is_absolute())
                .or_else(home)
                .map(|dir| dir.join("hotswap"))
        };
        self.compile_cache.clone().or_else(default)
    }
}

/// The whole `hotswap` command: parse the command line, run it, print any error's whole chain
/// on stderr, and map the outcome to the exit status (0 success, 1 failure, 2 bad usage).
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    crate::text::init_log(cli.log_format);
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "hotswap", "error: {e:#}");
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
                http: args.http.http,
                http_options: args.http.options(),
                drain_timeout: Duration::from_millis(args.drain_timeout),
                persist: args.persist.options(),
                deploy: args.deploy.plan(),
                metrics: args.metrics,
            };
            let persist = options.persist.as_ref();
            let durable = persist.is_some_and(|p| p.durable);
            if !options.deploy.is_plain() && !options.watch {
                anyhow::bail!(
                    "--trial, --shadow and --canary on `hotswap run` deploy the versions --watch finds: add --watch, or pass them to `hotswap reload`"
                );
            }
            options
                .deploy
                .check(durable, persist.is_some())
                .map_err(anyhow::Error::msg)?;
            run(Runtime::new(config)?, &options)
        }
        Command::Check(args) => check(&args),
        Command::Reload(args) => {
            let module = std::path::absolute(&args.module)
                .with_context(|| format!("cannot resolve {}", args.module.display()))?;
            let bytes = read_for_reload(&module)?;
            let len = Some(bytes.len() as u64);
            let plan = args.deploy.plan();
            if !plan.is_plain() {
                eprintln!(
                    "hotswap: deploying {} with {}; waiting for the outcome",
                    args.module.display(),
                    plan.describe()
                );
            }
            let request = Request::Reload { module, len, plan };
            ask(&args.control, &request, Some(&bytes))
        }
        Command::Status(args) => ask(&args, &Request::Status, None),
        Command::State(args) => match &args.save {
            None => ask(&args.control, &Request::State, None),
            Some(path) => save_state(&args.control, path),
        },
        Command::Test(args) => swap_test(&args),
        Command::Limits(args) => {
            let request = Request::Limits {
                timeout_ms: args.timeout,
                max_memory_mib: args.max_memory,
            };
            ask(&args.control, &request, None)
        }
        Command::Stop(args) => ask(&args, &Request::Stop, None),
        Command::Snapshot(args) => ask(&args, &Request::Snapshot, None),
        Command::Rollback(args) => ask(&args, &Request::Rollback, None),
        Command::New(args) => crate::scaffold::run(&args),
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let config = Config {
        inherit_stdio: false,
        ..args.limits.config()
    };
    let runtime = Runtime::new(config)?;
    let saved = match (&args.state, args.against) {
        (Some(path), _) => Some(state_check::read_saved(path)?),
        (None, true) => Some(state_check::from_answer(export(&args.control)?.state.as_ref())?.0),
        (None, false) => None,
    };
    let started = Instant::now();
    let prepared = runtime
        .prepare_file(&args.module)
        .with_context(|| format!("{} fails the check", args.module.display()))?;
    let compiled = match prepared.compiled().cached {
        true => "loaded from the compile cache",
        false => "compiled",
    };
    let state = match prepared.layout() {
        Some(_) => "kept in place across swaps to the same layout",
        None => "carried by value at a swap",
    };
    print_line(&format!(
        "{}: ok: Hotswap ABI v{}, state v{} ({state}), {compiled}, checked and instantiated in {}",
        prepared.compiled(),
        hotswap_abi::ABI_VERSION,
        prepared.state_version(),
        crate::report::format_duration(started.elapsed())
    ))?;
    let Some(saved) = saved else { return Ok(()) };
    let name = prepared.compiled().to_string();
    match state_check::accepts(&runtime, prepared, &saved) {
        Ok(verdict) => print_line(&verdict),
        Err(refused) => anyhow::bail!("{name} refuses the state: {refused}"),
    }
}

/// The running host's state, exported (`hotswap check --against`, `hotswap state --save`).
fn export(control: &Option<PathBuf>) -> anyhow::Result<control::Response> {
    crate::serve::background_priority();
    let path = match control {
        Some(path) => path.clone(),
        None => control::discover()?,
    };
    let response = control::send(&path, &Request::Export, None)?;
    if !response.ok {
        anyhow::bail!("{}", response.message);
    }
    Ok(response)
}

fn save_state(args: &ControlArgs, path: &Path) -> anyhow::Result<()> {
    state_check::refuse_existing(path)?;
    let response = export(&args.control)?;
    let (saved, module) = state_check::from_answer(response.state.as_ref())?;
    let len = saved.state.len();
    state_check::save(path, saved.state, saved.state_version, module)
        .with_context(|| format!("cannot save the state to {}", path.display()))?;
    print_line(&format!(
        "saved the state (state v{}, {}) to {}",
        saved.state_version,
        crate::text::bytes(len),
        path.display()
    ))
}

fn swap_test(args: &TestArgs) -> anyhow::Result<()> {
    use crate::swap_test::{Options, Version, read_events, run};
    let config = Config {
        inherit_stdio: false,
        ..args.limits.config()
    };
    let runtime = Runtime::new(config)?;
    let old = Version::read(&runtime, "OLD", &args.old)?;
    let new = Version::read(&runtime, "NEW", &args.new)?;
    let events = read_events(&args.events)?;
    let options = Options {
        same_behaviour: args.same_behaviour,
        max_boundaries: args.boundaries as usize,
        max_time: Duration::from_secs(args.max_time),
    };
    let started = Instant::now();
    let report = run(&runtime, &old, &new, &events, &options)?;
    if args.json {
        print_line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        print_line(&format!(
            "{report}, in {}",
            crate::report::format_duration(started.elapsed())
        ))?;
    }
    match report.findings.len() {
        0 => Ok(()),
        n => anyhow::bail!(
            "the reload {} → {} has {n} finding(s)",
            old.label,
            new.label
        ),
    }
}

/// Prints a line on stdout. A reader that has gone (`hotswap state | head`) wanted no more:
/// that is not an error (`println!` would panic).
fn print_line(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// The most a reload reads from a pipe or file before the host applies its own cap.
const MAX_SENT_MODULE: u64 = 4 << 30;

/// Reads the module a reload sends: a regular file, or a pipe (`<(cat v2.wasm)`); a device or
/// directory is refused without being read.
fn read_for_reload(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let kind = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .file_type();
    use std::os::unix::fs::FileTypeExt as _;
    if !(kind.is_file() || kind.is_fifo()) {
        anyhow::bail!(
            "{} is {}: a module must be a regular file or a pipe",
            path.display(),
            file_kind(&kind)
        );
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_SENT_MODULE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_SENT_MODULE {
        anyhow::bail!(
            "{} is over {} bytes: not a module",
            path.display(),
            MAX_SENT_MODULE
        );
    }
    Ok(bytes)
}

/// Sends a request to a running host and prints its answer; a failed request is an error.
fn ask(args: &ControlArgs, request: &Request, bytes: Option<&[u8]>) -> anyhow::Result<()> {
    // A client only waits for the host's answer: it should not take a core from the host.
    crate::serve::background_priority();
    let path = match &args.control {
        Some(path) => path.clone(),
        None => control::discover()?,
    };
    let response = control::send(&path, request, bytes)?;
    if args.json {
        print_line(&serde_json::to_string_pretty(&response)?)?;
    } else if response.ok {
        print_line(&response.message)?;
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
