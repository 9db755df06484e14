//! `hotswap run`: one app and its events: stdin lines, timer ticks, new versions from the
//! watcher, and requests on the control socket, handled one at a time.
//!
//! Strategy: the calling thread owns the [`App`] and is its only user (an actor). Every source of
//! events is a thread that sends into one channel: the stdin reader, the ticker, the watcher and
//! one thread per control connection. New versions are compiled and instantiated on the thread
//! that found them while the app keeps serving, and sent as prepared versions; the swap then
//! happens between two events, and events that arrive meanwhile wait in the channel. End of
//! stdin ends the run.

use crate::app::{App, Prepared, SwapReport, format_duration};
use crate::compile::{ModuleHash, display_name, read_module};
use crate::control::{self, Request, Response, SocketFile};
use crate::error::{CallError, SwapError};
use crate::runtime::Runtime;
use crate::watch::{Change, watch};
use anyhow::Context as _;
use serde_json::json;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
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
    /// The largest HTTP request body accepted (413 beyond).
    pub max_body: usize,
}

/// The smallest input buffer a new version reserves before its swap: small states and the first
/// messages after the swap then need no allocation call.
const MIN_RESERVE: usize = 4096;

/// Where the answer to an event goes, for events a control client waits on.
type Reply = Option<mpsc::Sender<Response>>;

enum Event {
    Line(Vec<u8>),
    Tick,
    /// A prepared version from `source`.
    Swap {
        prepared: Box<Prepared>,
        source: PathBuf,
        reply: Reply,
    },
    /// A version that could not be prepared.
    Refused {
        attempted: String,
        error: SwapError,
        reply: Reply,
    },
    /// An HTTP request.
    Http(crate::http::Job),
    /// `status` or `state` from the control socket.
    Query {
        request: Request,
        reply: mpsc::Sender<Response>,
    },
    Eof,
}

/// What the actor knows besides the app.
struct Host {
    app: App,
    /// The file the running version came from.
    module_path: PathBuf,
    started: Instant,
    /// The size of the last state carried over: new versions reserve that much before the pause.
    state_len: Arc<AtomicUsize>,
}

/// Runs the app until stdin ends.
pub fn run(runtime: Arc<Runtime>, options: &RunOptions) -> anyhow::Result<()> {
    // Cranelift compiles on rayon's global pool: its threads work in the background too. (If
    // the pool already exists, it keeps its threads as they are.)
    let _ = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| background_priority())
        .build_global();
    let path = &options.module;
    let name = display_name(path);
    let started = Instant::now();
    let prepared = runtime
        .prepare_file(path)
        .with_context(|| format!("cannot load {}", path.display()))?;
    let app =
        App::start(runtime.clone(), prepared).with_context(|| format!("cannot start {name}"))?;
    log(format_args!(
        "running {} (state v{}), ready in {}",
        app.module(),
        app.state_version(),
        format_duration(started.elapsed())
    ));

    let control_path = options
        .control
        .clone()
        .unwrap_or_else(control::default_path);
    let listener = control::bind(&control_path)?;
    let _socket_file = SocketFile(control_path.clone());
    log(format_args!(
        "control socket: {} (hotswap reload|status|state --control PATH)",
        control_path.display()
    ));

    let serves_http = options.http.is_some();
    if serves_http && !app.serves_http() {
        anyhow::bail!(
            "{name} does not serve HTTP (it does not export `hotswap_http`): drop --http"
        );
    }
    let hints = Hints {
        state_len: Arc::new(AtomicUsize::new(0)),
        memory: app.memory_watch(),
    };
    let (tx, rx) = mpsc::channel();
    if let Some(addr) = options.http {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        let bound = listener.local_addr()?;
        let tx = tx.clone();
        let submit: crate::http::Submit = Arc::new(move |job| tx.send(Event::Http(job)).is_ok());
        crate::http::spawn(listener, options.max_body, submit)?;
        log(format_args!(
            "serving HTTP on http://{bound} (request bodies up to {} bytes)",
            options.max_body
        ));
    }
    spawn("hotswap-stdin", read_stdin(tx.clone()))?;
    // At most one tick waits in the queue: a slow app misses ticks rather than piling them up.
    let tick_queued = Arc::new(AtomicBool::new(false));
    if let Some(period) = options.tick {
        let (tx, queued) = (tx.clone(), tick_queued.clone());
        spawn("hotswap-tick", move || {
            loop {
                if !queued.swap(true, Ordering::AcqRel) && tx.send(Event::Tick).is_err() {
                    return;
                }
                std::thread::sleep(period);
            }
        })?;
    }
    {
        let (runtime, hints, tx) = (runtime.clone(), hints.clone(), tx.clone());
        spawn("hotswap-control", move || {
            serve_control(listener, runtime, hints, serves_http, tx)
        })?;
    }
    let _watcher = if options.watch {
        let (runtime, hints, tx, source) =
            (runtime.clone(), hints.clone(), tx.clone(), path.clone());
        let on_change = move |change| match change {
            Change::Content(bytes) => {
                let event = prepare(&runtime, &source, &bytes, &hints, serves_http, None);
                let _ = tx.send(event);
            }
            Change::Error(message) => log(format_args!("{message}")),
        };
        let watcher = watch(path, app.module().hash, options.debounce, on_change)?;
        log(format_args!("watching {} for new versions", path.display()));
        Some(watcher)
    } else {
        None
    };
    drop(tx);

    let mut host = Host {
        app,
        module_path: path.clone(),
        started,
        state_len: hints.state_len,
    };
    let stdout = std::io::stdout();
    for event in rx {
        match event {
            Event::Line(line) => {
                let mut out = stdout.lock();
                let written = host.app.message_with(&line, |reply| {
                    out.write_all(reply).and_then(|()| out.write_all(b"\n"))
                });
                match written {
                    Ok(result) => result?,
                    Err(e) => {
                        log(format_args!("message failed: {e}"));
                        writeln!(out, "error: {e}")?;
                    }
                }
                out.flush()?;
            }
            Event::Tick => {
                tick_queued.store(false, Ordering::Release);
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if let Err(e) = host.app.tick(now_ms) {
                    log(format_args!("tick failed: {e}"));
                }
            }
            Event::Swap {
                prepared,
                source,
                reply,
            } => {
                let response = host.swap(*prepared, source);
                answer(reply, response);
            }
            Event::Refused {
                attempted,
                error,
                reply,
            } => {
                let refused = host.app.refused(attempted, error);
                log(format_args!("{refused}"));
                answer(reply, Response::failed(refused.to_string()));
            }
            Event::Http(job) => {
                let response = host.app.http(&job.request).unwrap_or_else(|e| {
                    log(format_args!(
                        "HTTP {} {} failed: {e}",
                        job.request.method, job.request.path
                    ));
                    hotswap_abi::http::Response {
                        status: 500,
                        // The reason is in the host's log, not for the client.
                        body: hotswap_abi::http::Bytes(b"internal error\n".to_vec()),
                        ..Default::default()
                    }
                });
                let _ = job.reply.send(response);
            }
            Event::Query { request, reply } => {
                let _ = reply.send(host.query(&request));
            }
            Event::Eof if serves_http => log(format_args!("stdin closed; still serving HTTP")),
            Event::Eof => break,
        }
    }
    let stats = host.app.stats();
    log(format_args!(
        "stdin closed; stopping after {} events, {} swaps, {} refused",
        stats.events, stats.swaps, stats.refused
    ));
    Ok(())
}

impl Host {
    fn swap(&mut self, prepared: Prepared, source: PathBuf) -> Response {
        match self.app.swap(prepared) {
            Ok(report) => {
                self.state_len.store(report.state_len, Ordering::Relaxed);
                self.module_path = source;
                log(format_args!("{report}"));
                Response {
                    ok: true,
                    message: report.to_string(),
                    swap: Some(report_json(&report)),
                    ..Response::default()
                }
            }
            Err(refused) => {
                log(format_args!("{refused}"));
                Response::failed(refused.to_string())
            }
        }
    }

    fn query(&mut self, request: &Request) -> Response {
        let module = self.app.module();
        match request {
            Request::Status => {
                let stats = self.app.stats();
                let status = json!({
                    "module": self.module_path,
                    "name": module.name,
                    "hash": format!("{:?}", module.hash),
                    "state_version": self.app.state_version(),
                    "state_bytes_at_last_swap": stats.last_state_len,
                    "memory_bytes": self.app.memory_size(),
                    "uptime_s": self.started.elapsed().as_secs_f64(),
                    "events": stats.events,
                    "swaps": stats.swaps,
                    "refused": stats.refused,
                    "recoveries": stats.recoveries,
                    "last_pause_us": stats.last_pause.map(|d| d.as_secs_f64() * 1e6),
                });
                let message = format!(
                    "running {module} from {} (state v{}), up {:.0} s, {} events, {} swaps, {} refused, last pause {}",
                    self.module_path.display(),
                    self.app.state_version(),
                    self.started.elapsed().as_secs_f64(),
                    stats.events,
                    stats.swaps,
                    stats.refused,
                    stats
                        .last_pause
                        .map_or_else(|| "none".to_owned(), format_duration),
                );
                Response {
                    ok: true,
                    message,
                    status: Some(status),
                    ..Response::default()
                }
            }
            Request::State => match self.app.export_state() {
                Ok(bytes) => {
                    // The SDK's encoding is MessagePack; anything else is shown as its size only.
                    let decoded: Option<serde_json::Value> =
                        hotswap_msgpack::from_slice(&bytes).ok();
                    let message = match &decoded {
                        Some(value) => serde_json::to_string_pretty(value).unwrap_or_default(),
                        None => format!("({} bytes that are not MessagePack)", bytes.len()),
                    };
                    let state = json!({
                        "state_version": self.app.state_version(),
                        "bytes": bytes.len(),
                        "value": decoded,
                    });
                    Response {
                        ok: true,
                        message,
                        state: Some(state),
                        ..Response::default()
                    }
                }
                Err(e) => Response::failed(format!("cannot export the state: {e}")),
            },
            Request::Reload { .. } => Response::failed("a reload is not a query"),
        }
    }
}

fn answer(reply: Reply, response: Response) {
    if let Some(reply) = reply {
        let _ = reply.send(response);
    }
}

fn report_json(report: &SwapReport) -> serde_json::Value {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    json!({
        "from": report.from,
        "to": report.to,
        "from_state_version": report.from_state_version,
        "to_state_version": report.to_state_version,
        "state_bytes": report.state_len,
        "cached": report.cached,
        "compile_us": us(report.compile_time),
        "prepare_us": us(report.prepare_time),
        "pause_us": us(report.phases.pause),
        "export_us": us(report.phases.export),
        "copy_us": us(report.phases.copy),
        "import_us": us(report.phases.import),
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

/// The host's own log line, on stderr.
fn log(message: std::fmt::Arguments<'_>) {
    eprintln!("hotswap: {message}");
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("cannot start thread {name}"))?;
    Ok(())
}

/// Sends each stdin line (without its line ending) as a message, then `Eof`.
fn read_stdin(tx: mpsc::Sender<Event>) -> impl FnOnce() + Send + 'static {
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
                    if tx.send(Event::Line(std::mem::take(&mut line))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log(format_args!("cannot read stdin: {e}"));
                    break;
                }
            }
        }
        let _ = tx.send(Event::Eof);
    }
}

/// What a preparing thread knows about the running version, to ready a new one before the pause.
#[derive(Clone)]
struct Hints {
    /// The size of the last state carried over.
    state_len: Arc<AtomicUsize>,
    /// The running instance's memory size ([`crate::App::memory_watch`]).
    memory: Arc<AtomicUsize>,
}

impl Hints {
    /// Reserves room for the state and warms the new instance's heap to the running one's size.
    /// Best effort: a guest that cannot allocate now reserves during the pause instead. But a
    /// trap, timeout or broken contract here may have left the new instance half-way through
    /// an operation: that is an error, and the swap is refused.
    fn apply(&self, prepared: &mut Prepared) -> Result<(), CallError> {
        let ready = prepared
            .reserve_state(self.state_len.load(Ordering::Relaxed).max(MIN_RESERVE))
            .and_then(|()| prepared.warm_heap(self.memory.load(Ordering::Relaxed)));
        match ready {
            Err(error) if error.instance_lost() => Err(error),
            _ => Ok(()),
        }
    }
}

/// Prepares a new version off the app's thread: the event that carries it, or its refusal.
fn prepare(
    runtime: &Runtime,
    source: &Path,
    bytes: &[u8],
    hints: &Hints,
    http: bool,
    reply: Reply,
) -> Event {
    background_priority();
    let name = display_name(source);
    let attempted = format!("{name}@{}", ModuleHash::of(bytes));
    log(format_args!(
        "{attempted}: new version; compiling and checking"
    ));
    match runtime.prepare(&name, bytes) {
        Ok(prepared) if http && !prepared.serves_http() => Event::Refused {
            attempted,
            error: SwapError::NoHttp,
            reply,
        },
        Ok(mut prepared) => {
            if let Err(error) = hints.apply(&mut prepared) {
                return Event::Refused {
                    attempted,
                    error: SwapError::Initialize(error),
                    reply,
                };
            }
            let c = prepared.compiled();
            let how = if c.cached {
                "cached".to_owned()
            } else {
                format!("compiled in {}", format_duration(c.compile_time))
            };
            log(format_args!(
                "{attempted}: {how}, checked; swapping at the next event boundary"
            ));
            Event::Swap {
                prepared: Box::new(prepared),
                source: source.to_owned(),
                reply,
            }
        }
        Err(error) => Event::Refused {
            attempted,
            error,
            reply,
        },
    }
}

/// Accepts control connections; each is handled on its own thread, so a reload that compiles
/// does not hold up a status request.
fn serve_control(
    listener: UnixListener,
    runtime: Arc<Runtime>,
    hints: Hints,
    http: bool,
    tx: mpsc::Sender<Event>,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (runtime, hints, tx) = (runtime.clone(), hints.clone(), tx.clone());
        let _ = std::thread::Builder::new()
            .name("hotswap-control-conn".into())
            .spawn(move || handle_control(&stream, &runtime, &hints, http, &tx));
    }
}

fn handle_control(
    stream: &UnixStream,
    runtime: &Runtime,
    hints: &Hints,
    http: bool,
    tx: &mpsc::Sender<Event>,
) {
    let (reply, answer) = mpsc::channel();
    let event = match control::read_request(stream) {
        Err(message) => {
            let _ = control::write_response(stream, &Response::failed(message));
            return;
        }
        Ok(Request::Reload { module }) => {
            log(format_args!("control: reload {}", module.display()));
            match read_module(&module) {
                Ok(bytes) => prepare(runtime, &module, &bytes, hints, http, Some(reply)),
                Err(error) => Event::Refused {
                    attempted: display_name(&module),
                    error,
                    reply: Some(reply),
                },
            }
        }
        Ok(request) => Event::Query { request, reply },
    };
    let response = match tx.send(event) {
        Ok(()) => answer
            .recv()
            .unwrap_or_else(|_| Response::failed("the host is stopping")),
        Err(_) => Response::failed("the host is stopping"),
    };
    let _ = control::write_response(stream, &response);
}
