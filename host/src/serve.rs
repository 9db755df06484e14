//! `hotswap run`: wires every source of events to the app's actor ([`crate::actor`]): stdin
//! lines, timer ticks, HTTP requests, new versions from the watcher and the control socket,
//! and signals.
//!
//! Strategy: the calling thread becomes the actor, the only user of the [`App`]. Every source is
//! a thread that sends into one channel. New versions are compiled and instantiated on the
//! thread that found them (at background priority) while the app keeps serving, and sent as
//! prepared versions; the swap then happens between two events. The end of stdin (without
//! HTTP), a first SIGTERM or SIGINT, or `hotswap stop` stops the host gracefully; a second
//! signal exits at once.

use crate::actor::{Actor, Command, Event, Input, Query, Reply, Stopped, log};
use crate::app::App;
use crate::compile::{ModuleHash, display_name, read_module};
use crate::control::{self, Request, Response, SocketFile};
use crate::deploy::Plan;
use crate::error::{CallError, SwapError};
use crate::http::HttpOptions;
use crate::metrics::{Shared, Source};
use crate::persist::StateDir;
use crate::persist::keeper::{Keeper, PersistOptions};
use crate::report::format_duration;
use crate::runtime::{Prepared, Runtime};
use crate::watch::{Change, watch};
use anyhow::Context as _;
use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `hotswap run` does.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The app's module file.
    pub module: PathBuf,
    /// Swap in each new version written to the module file.
    pub watch: bool,
    /// Deliver a tick at this period.
    pub tick: Option<Duration>,
    /// How long the module file must be quiet before it is read.
    pub debounce: Duration,
    /// Where to listen for control requests (default: [`control::default_path`]).
    pub control: Option<PathBuf>,
    /// Serve HTTP on this address (then the end of stdin does not stop the host).
    pub http: Option<SocketAddr>,
    /// Limits on HTTP clients.
    pub http_options: HttpOptions,
    /// How long a graceful stop waits for HTTP requests in flight.
    pub drain_timeout: Duration,
    /// Where and how the app's state is kept, if it is.
    pub persist: Option<PersistOptions>,
    /// How each version found by the watcher is deployed.
    pub deploy: Plan,
    /// Serve Prometheus metrics on this address.
    pub metrics: Option<SocketAddr>,
}

/// The smallest input buffer a new version reserves before its swap: small states and the first
/// messages after the swap then need no allocation call.
const MIN_RESERVE: usize = 4096;

/// Runs the app until stdin ends (without HTTP) or the host is stopped.
pub fn run(runtime: Arc<Runtime>, options: &RunOptions) -> anyhow::Result<()> {
    // Cranelift compiles on rayon's global pool: its threads work in the background too. (If
    // the pool already exists, it keeps its threads as they are.)
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| background_priority())
        .build_global();
    let started = Instant::now();
    let (app, keeper) = start_app(&runtime, options)?;
    log(format_args!(
        "running {} (state v{}), ready in {}",
        app.module(),
        app.state_version(),
        format_duration(started.elapsed())
    ));
    let serves_http = options.http.is_some();
    if serves_http && !app.serves_http() {
        let name = display_name(&options.module);
        anyhow::bail!(
            "{name} does not serve HTTP (it does not export `hotswap_http`): drop --http"
        );
    }
    let (listener, socket) = bind_control(options)?;
    let hints = Hints {
        state_len: Arc::new(AtomicUsize::new(0)),
        layout: Arc::new(Mutex::new(app.layout().map(Arc::from))),
        durable: options.persist.as_ref().is_some_and(|p| p.durable),
        memory: app.memory_watch(),
        dir: keeper.as_ref().map(|k| k.dir().clone()),
    };
    let (tx, rx) = mpsc::channel();
    spawn_signals(tx.clone(), socket.clone())?;
    let metrics = options.metrics.map(|_| Arc::new(Shared::default()));
    let http = match options.http {
        Some(addr) => Some(start_http(addr, options, tx.clone(), metrics.clone())?),
        None => None,
    };
    if let (Some(addr), Some(shared)) = (options.metrics, &metrics) {
        let _ = shared.actor.set(tx.clone());
        start_metrics(addr, shared, http.as_ref(), keeper.as_ref())?;
    }
    spawn("hotswap-stdin", read_stdin(tx.clone(), metrics.clone()))?;
    let tick_queued = Arc::new(AtomicBool::new(false));
    if let Some(period) = options.tick {
        spawn(
            "hotswap-tick",
            tick(period, tx.clone(), tick_queued.clone()),
        )?;
    }
    let handler = control_handler(runtime.clone(), hints.clone(), serves_http, tx.clone());
    let answering = start_control(listener, runtime.config().max_module, handler)?;
    let _watcher = match options.watch {
        true => Some(start_watch(
            &runtime,
            &app,
            options,
            &hints,
            serves_http,
            tx.clone(),
        )?),
        false => None,
    };
    let events = tx.clone();
    drop(tx);
    let actor = Actor {
        app,
        origin: options.module.clone(),
        watching: options.watch.then(|| options.module.clone()),
        started,
        state_len: hints.state_len,
        layout: hints.layout,
        tick_queued,
        http_connections: http.as_ref().map(|h| h.connections()),
        shut_http: http.map(|h| Box::new(h.shutdown_handle()) as Box<dyn FnOnce()>),
        drain_timeout: options.drain_timeout,
        keeper,
        events,
        deployments: Default::default(),
        metrics,
        tally: Default::default(),
    };
    let (stopped, app) = actor.run(rx)?;
    log_stop(stopped, &app);
    socket.remove();
    // The control clients still waiting (`hotswap stop`'s answer is sent only now) get their
    // answers before the process exits.
    answering.wait(ANSWER_TIME);
    Ok(())
}

/// Binds the control socket (`--control`, or the default path) and says where it is.
fn bind_control(options: &RunOptions) -> anyhow::Result<(UnixListener, Arc<SocketFile>)> {
    let path = (options.control.clone()).unwrap_or_else(control::default_path);
    let (listener, socket) = control::bind(&path)?;
    log(format_args!(
        "control socket: {} (hotswap reload|status|state|snapshot|rollback|limits|stop --control PATH)",
        path.display()
    ));
    Ok((listener, Arc::new(socket)))
}

/// Serves the control socket on a thread of its own; what it answers is counted, so that a
/// stopping host can wait for those answers.
fn start_control(
    listener: UnixListener,
    max_module: u64,
    handler: control::Handler,
) -> anyhow::Result<control::Answering> {
    let answering = control::Answering::default();
    let counted = answering.clone();
    spawn("hotswap-control", move || {
        control::serve(listener, max_module, handler, counted)
    })?;
    Ok(answering)
}

/// How long a stopped host waits for the control requests in hand to be answered.
const ANSWER_TIME: Duration = Duration::from_secs(2);

fn log_stop(stopped: Stopped, app: &App) {
    let stats = app.stats();
    let why = match stopped {
        Stopped::Eof => "stdin closed".to_owned(),
        Stopped::Stop(why) => why,
        Stopped::Disconnected => "every source of events closed".to_owned(),
    };
    log(format_args!(
        "{why}; stopped after {} events, {} swaps, {} refused",
        stats.events, stats.swaps, stats.refused
    ));
}

/// Starts the app: fresh, or restored from its state directory.
fn start_app(
    runtime: &Arc<Runtime>,
    options: &RunOptions,
) -> anyhow::Result<(App, Option<Keeper>)> {
    let path = &options.module;
    if let Some(persist) = &options.persist {
        let (app, keeper) = crate::persist::start::start(runtime, path, persist)?;
        return Ok((app, Some(keeper)));
    }
    let prepared = runtime
        .prepare_file(path)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let name = display_name(path);
    let app =
        App::start(runtime.clone(), prepared).with_context(|| format!("cannot start {name}"))?;
    Ok((app, None))
}

/// Serves the metrics on `addr`, with what the HTTP server and the journal keep.
fn start_metrics(
    addr: SocketAddr,
    shared: &Arc<Shared>,
    http: Option<&crate::http::HttpServer>,
    keeper: Option<&Keeper>,
) -> anyhow::Result<()> {
    if let Some(http) = http {
        let _ = shared.connections.set(http.connections());
    }
    if let Some(journal) = keeper.and_then(|k| k.journal_counters()) {
        let _ = shared.journal.set(journal);
    }
    let bound = crate::metrics::start(addr, shared.clone())?;
    log(format_args!("serving metrics on http://{bound}/metrics"));
    Ok(())
}

/// Counts an input sent to the actor from `source`'s thread, when the metrics count them.
fn sent(metrics: &Option<Arc<Shared>>, source: Source) {
    if let Some(metrics) = metrics {
        metrics.sent(source);
    }
}

fn start_http(
    addr: SocketAddr,
    options: &RunOptions,
    tx: mpsc::Sender<Event>,
    metrics: Option<Arc<Shared>>,
) -> anyhow::Result<crate::http::HttpServer> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    let bound = listener.local_addr()?;
    let submit_tx = tx.clone();
    let submit: crate::http::Submit = Arc::new(move |job: crate::http::Job| {
        sent(&metrics, Source::Http);
        let event = Event::Input(
            Input::Http(job.request),
            crate::actor::Answer::Http(job.reply),
        );
        submit_tx.send(event).is_ok()
    });
    let on_drained = move || {
        let _ = tx.send(Event::Command(Command::Drained));
    };
    let o = &options.http_options;
    let server = crate::http::spawn(listener, o.clone(), submit, on_drained)?;
    log(format_args!(
        "serving HTTP on http://{bound} (bodies up to {} bytes, at most {} connections)",
        o.max_body, o.max_connections
    ));
    Ok(server)
}

fn start_watch(
    runtime: &Arc<Runtime>,
    app: &App,
    options: &RunOptions,
    hints: &Hints,
    serves_http: bool,
    tx: mpsc::Sender<Event>,
) -> anyhow::Result<crate::watch::ModuleWatcher> {
    let path = &options.module;
    let (runtime, hints, source) = (runtime.clone(), hints.clone(), path.clone());
    let plan = options.deploy.clone();
    let max_module = runtime.config().max_module;
    let on_change = move |change| match change {
        Change::Content(bytes) => {
            let command = prepare(&runtime, &source, &bytes, &hints, serves_http, None);
            let command = with_plan(command, &plan);
            let _ = tx.send(Event::Command(command));
        }
        Change::Error(message) => log(format_args!("{message}")),
    };
    let watcher = watch(
        path,
        app.module().hash,
        options.debounce,
        max_module,
        on_change,
    )?;
    log(format_args!("watching {} for new versions", path.display()));
    Ok(watcher)
}

/// SIGTERM and SIGINT: the first stops the host gracefully, a second exits at once.
fn spawn_signals(tx: mpsc::Sender<Event>, socket: Arc<SocketFile>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).context("cannot handle signals")?;
    spawn("hotswap-signals", move || {
        let mut stopping = false;
        for signal in signals.forever() {
            let name = if signal == SIGTERM {
                "SIGTERM"
            } else {
                "SIGINT"
            };
            if stopping {
                log(format_args!("second {name}: exiting at once"));
                socket.remove();
                std::process::exit(128 + signal);
            }
            stopping = true;
            let why = format!("{name} received");
            let _ = tx.send(Event::Command(Command::Stop { why, reply: None }));
        }
    })
}

/// The control socket's requests, turned into commands for the actor.
fn control_handler(
    runtime: Arc<Runtime>,
    hints: Hints,
    http: bool,
    tx: mpsc::Sender<Event>,
) -> control::Handler {
    Arc::new(move |request, bytes| {
        let (reply, answer) = mpsc::channel();
        let command = match request {
            Request::Reload { module, plan, .. } => {
                background_priority();
                log(format_args!(
                    "control: reload {}",
                    crate::text::escape(&module.display().to_string(), 300)
                ));
                let bytes =
                    bytes.map_or_else(|| read_module(&module, runtime.config().max_module), Ok);
                match bytes {
                    Ok(bytes) => with_plan(
                        prepare(&runtime, &module, &bytes, &hints, http, Some(reply)),
                        &plan,
                    ),
                    Err(error) => Command::Refused {
                        attempted: display_name(&module),
                        error,
                        reply: Some(reply),
                    },
                }
            }
            Request::Status => Command::Query {
                query: Query::Status,
                reply,
            },
            Request::State => Command::Query {
                query: Query::State,
                reply,
            },
            Request::Export => Command::Query {
                query: Query::Export,
                reply,
            },
            Request::Limits {
                timeout_ms,
                max_memory_mib,
            } => match limits_query(timeout_ms, max_memory_mib) {
                Ok(query) => Command::Query { query, reply },
                Err(message) => return Response::failed(message),
            },
            Request::Snapshot => Command::Snapshot { reply },
            Request::Rollback => Command::Rollback { reply: Some(reply) },
            Request::Stop => Command::Stop {
                why: "hotswap stop".into(),
                reply: Some(reply),
            },
        };
        match tx.send(Event::Command(command)) {
            Ok(()) => answer
                .recv()
                .unwrap_or_else(|_| Response::failed("the host is stopping")),
            Err(_) => Response::failed("the host is stopping"),
        }
    })
}

/// A `limits` request, checked as the command line checks the same flags.
fn limits_query(timeout_ms: Option<u64>, max_memory_mib: Option<u64>) -> Result<Query, String> {
    if timeout_ms == Some(0) {
        return Err("--timeout must be at least 1 ms".into());
    }
    if max_memory_mib.is_some_and(|m| !(1..=4096).contains(&m)) {
        return Err("--max-memory must be 1 to 4096 MiB (wasm32 allows at most 4096)".into());
    }
    Ok(Query::Limits {
        timeout: timeout_ms.map(Duration::from_millis),
        max_memory: max_memory_mib.map(|m| (m as usize) << 20),
    })
}

/// Moves the calling thread to the background: on Linux, the `SCHED_IDLE` policy, which runs it
/// only on a core that nothing else wants. Preparing a version (compiling, instantiating,
/// warming) must not take a core from the threads that serve events: on a busy machine, a woken
/// serving thread would otherwise wait for the preparing thread's time slice to end, and a
/// request across a swap would take milliseconds longer (BENCHMARKS.md). The price: on a machine
/// kept fully busy, a swap waits for idle time. Dropping old instances stays at normal priority,
/// so their memory never piles up.
pub(crate) fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: a system call on the calling thread (pid 0) with a valid `sched_param`. Failure
    // leaves the priority as it was, which is harmless.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("cannot start thread {name}"))?;
    Ok(())
}

/// Sends each stdin line (without its line ending) as a message, then the end of stdin.
fn read_stdin(
    tx: mpsc::Sender<Event>,
    metrics: Option<Arc<Shared>>,
) -> impl FnOnce() + Send + 'static {
    move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let input = Input::Message(std::mem::take(&mut line));
                    sent(&metrics, Source::Stdin);
                    if tx
                        .send(Event::Input(input, crate::actor::Answer::Stdout))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    log(format_args!("cannot read stdin: {e}"));
                    break;
                }
            }
        }
        let _ = tx.send(Event::Command(Command::Eof));
    }
}

/// Sends a tick every `period`; at most one waits in the queue, so a slow app misses ticks
/// rather than piling them up.
fn tick(
    period: Duration,
    tx: mpsc::Sender<Event>,
    queued: Arc<AtomicBool>,
) -> impl FnOnce() + Send + 'static {
    move || loop {
        if !queued.swap(true, Ordering::AcqRel) {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let event = Event::Input(Input::Tick { now_ms }, crate::actor::Answer::Nobody);
            if tx.send(event).is_err() {
                return;
            }
        }
        std::thread::sleep(period);
    }
}

/// What a preparing thread knows about the running version, to ready a new one before the pause.
#[derive(Clone)]
struct Hints {
    /// The size of the last state carried over by value (0 before the first).
    state_len: Arc<AtomicUsize>,
    /// The running version's layout description, if it keeps its state in place.
    layout: Arc<Mutex<Option<Arc<str>>>>,
    /// Whether the app is durable (its swaps always go by value).
    durable: bool,
    /// The running instance's memory size ([`crate::App::memory_watch`]).
    memory: Arc<AtomicUsize>,
    /// Where every module that may be swapped in is kept first, when the state is kept.
    dir: Option<Arc<StateDir>>,
}

impl Hints {
    /// Reserves room for the state and warms the new instance's heap to the running one's size.
    /// Best effort: a guest that cannot allocate now reserves during the pause instead. But a
    /// trap, timeout or broken contract here may have left the new instance half-way through
    /// an operation: that is an error, and the swap is refused.
    fn apply(&self, prepared: &mut Prepared) -> Result<(), SwapError> {
        let lost = |step| {
            move |error: CallError| match error.instance_lost() {
                true => Err(SwapError::Initialize { step, error }),
                false => Ok(()),
            }
        };
        let running = self
            .layout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !self.durable && running.is_some() && prepared.layout() == running.as_deref() {
            // The swap will keep the state in place (unless something else sends it by value:
            // then it reserves during the pause).
            return Ok(());
        }
        let memory = self.memory.load(Ordering::Relaxed);
        // Before the first swap the state's size is not known: guess half the running heap
        // (the memory beyond the module's initial memory: a state's encoding is usually
        // smaller than its heap), and warm that much more heap, so that decoding still lands
        // on pages faulted in. Later swaps reserve the last state's size inside the running
        // size, so memory does not creep up from swap to swap.
        let initial = (prepared.compiled().statics.as_ref()).map_or(0, |s| s.initial_end as usize);
        let (reserve, extra) = match self.state_len.load(Ordering::Relaxed) {
            0 => {
                let guess = memory.saturating_sub(initial) / 2;
                (guess, guess)
            }
            known => (known, 0),
        };
        prepared
            .reserve_state(reserve.max(MIN_RESERVE))
            .or_else(lost("`hotswap_reserve`"))?;
        prepared
            .warm_heap(memory + extra)
            .or_else(lost("`hotswap_warm`"))
    }
}

/// A prepared version's command, deployed by `plan`.
fn with_plan(command: Command, plan: &Plan) -> Command {
    match command {
        Command::Swap {
            prepared,
            origin,
            reply,
            ..
        } => Command::Swap {
            prepared,
            origin,
            reply,
            plan: plan.clone(),
        },
        other => other,
    }
}

/// Prepares a new version off the app's thread: the command that carries it, or its refusal.
fn prepare(
    runtime: &Runtime,
    source: &Path,
    bytes: &[u8],
    hints: &Hints,
    http: bool,
    reply: Reply,
) -> Command {
    background_priority();
    let name = display_name(source);
    let attempted = format!("{name}@{}", ModuleHash::of(bytes));
    log(format_args!(
        "{attempted}: new version; compiling and checking"
    ));
    let prepared = runtime.prepare(&name, bytes).and_then(|mut prepared| {
        if http && !prepared.serves_http() {
            return Err(SwapError::NoHttp);
        }
        hints.apply(&mut prepared)?;
        if let Some(dir) = &hints.dir {
            dir.keep_module(&name, bytes)
                .map_err(|e| SwapError::Keep(format!("{e:#}")))?;
        }
        Ok(prepared)
    });
    match prepared {
        Ok(prepared) => {
            let c = prepared.compiled();
            let how = match c.cached {
                true => "cached".to_owned(),
                false => format!("compiled in {}", format_duration(c.compile_time)),
            };
            log(format_args!(
                "{attempted}: {how}, checked; swapping at the next event boundary"
            ));
            Command::Swap {
                prepared: Box::new(prepared),
                origin: source.to_owned(),
                reply,
                plan: Plan::default(),
            }
        }
        Err(error) => Command::Refused {
            attempted,
            error,
            reply,
        },
    }
}
