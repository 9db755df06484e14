//! The app's actor: the one thread that owns the [`App`] and handles, one at a time, the inputs
//! for the guest and the commands to the host that every source sends it.
//!
//! Strategy: sources (stdin, the ticker, HTTP, the watcher, the control socket, signals) are
//! threads that only send [`Event`]s into one channel. An [`Input`] is a value the guest handles
//! (a message, a tick with its time, an HTTP request), paired with where its answer goes; a
//! [`Command`] is for the host (a prepared version to swap in, a refused one, a query, a stop).
//! The actor never blocks on anything but the channel and the guest. A stop finishes what is
//! queued, then waits (at most the drain time) for the HTTP connections in flight to finish.

mod deploying;

use crate::app::App;
use crate::control::Response;
use crate::deploy::{Outcome, Plan, describe_input};
use crate::error::SwapError;
use crate::persist::journal::Release;
use crate::persist::keeper::Keeper;
use crate::report::{SwapPath, SwapReport, format_duration};
use crate::runtime::Prepared;
pub use crate::text::log;
use deploying::{Watch, Watched};
use hotswap_abi::http;
use serde_json::json;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// An input for the guest: a plain value, recorded in the journal and replayed from it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    /// A message (a line of stdin, without its line ending).
    Message(#[serde(with = "crate::persist::journal::bin")] Vec<u8>),
    /// A timer tick at this Unix time, in milliseconds.
    Tick {
        /// When it fired.
        now_ms: u64,
    },
    /// An HTTP request.
    Http(http::Request),
}

/// Where an input's answer goes.
pub enum Answer {
    /// A line on stdout (the reply, or `error: ...`).
    Stdout,
    /// The HTTP connection that sent the request.
    Http(tokio::sync::oneshot::Sender<http::Response>),
    /// Nowhere (ticks).
    Nobody,
}

/// Where the answer to a command goes, when a control client waits for it.
pub type Reply = Option<mpsc::Sender<Response>>;

/// A question to the host.
#[derive(Clone, Debug)]
pub enum Query {
    /// Module, versions, counters, limits.
    Status,
    /// The app's state, decoded.
    State,
    /// The app's state as it exported it (for `hotswap state --save` and `check --against`).
    Export,
    /// Change the limits (each when given) and report them.
    Limits {
        /// The call time limit.
        timeout: Option<Duration>,
        /// The memory limit, in bytes.
        max_memory: Option<usize>,
    },
}

/// A command to the host.
pub enum Command {
    /// Swap in a prepared version, which came from `origin`.
    Swap {
        /// The new version.
        prepared: Box<Prepared>,
        /// Where it came from.
        origin: PathBuf,
        /// Who waits for the outcome.
        reply: Reply,
        /// What it must get through before and after its commit.
        plan: Plan,
    },
    /// A trial's verdict on a version: a summary line, or why it failed.
    Trialed {
        /// The verdict.
        verdict: Result<String, String>,
        /// The version tried.
        prepared: Box<Prepared>,
    },
    /// A scrape wants the metrics as they are now: publish them, then say so.
    PublishMetrics {
        /// Told once they are published.
        done: mpsc::Sender<()>,
    },
    /// A version that could not be prepared.
    Refused {
        /// What was attempted.
        attempted: String,
        /// Why it was refused.
        error: SwapError,
        /// Who waits for the outcome.
        reply: Reply,
    },
    /// A question.
    Query {
        /// Which.
        query: Query,
        /// Who waits for the answer.
        reply: mpsc::Sender<Response>,
    },
    /// Take a snapshot now (`hotswap snapshot`); answered once it is on disk.
    Snapshot {
        /// Who waits for the outcome.
        reply: mpsc::Sender<Response>,
    },
    /// Roll back the last swap (`hotswap rollback`).
    Rollback {
        /// Who waits for the outcome.
        reply: Reply,
    },
    /// Stop gracefully (a signal, `hotswap stop`).
    Stop {
        /// Why, for the log.
        why: String,
        /// Who waits for the outcome.
        reply: Reply,
    },
    /// The HTTP server has finished every connection after a stop.
    Drained,
    /// Stdin ended.
    Eof,
}

/// What reaches the actor.
pub enum Event {
    /// An input, and where its answer goes.
    Input(Input, Answer),
    /// A command.
    Command(Command),
}

/// What the actor knows besides the app, and the hooks it calls.
pub struct Actor {
    /// The app.
    pub app: App,
    /// Where the running version came from.
    pub origin: PathBuf,
    /// The path watched for new versions, if any.
    pub watching: Option<PathBuf>,
    /// When the host started.
    pub started: Instant,
    /// The size of the last state carried over: new versions reserve that much before the pause.
    pub state_len: Arc<AtomicUsize>,
    /// The running version's layout description (for the preparing threads: a version with the
    /// same one needs no room reserved for the state).
    pub layout: Arc<std::sync::Mutex<Option<Arc<str>>>>,
    /// Set while a tick waits in the queue (so at most one does).
    pub tick_queued: Arc<AtomicBool>,
    /// Open HTTP connections, when serving HTTP.
    pub http_connections: Option<Arc<AtomicUsize>>,
    /// Asks the HTTP server to finish its connections and send [`Command::Drained`].
    pub shut_http: Option<Box<dyn FnOnce()>>,
    /// How long a stop waits for connections in flight.
    pub drain_timeout: Duration,
    /// The state directory, when the state is kept.
    pub keeper: Option<Keeper>,
    /// The actor's own channel, for verdicts that come back from other threads (a trial's).
    pub events: mpsc::Sender<Event>,
    /// A deployment under way (a trial, a shadow run or a canary), and how the last one ended.
    pub deployments: deploying::Deployments,
    /// Where the metrics are published, when the host serves them (`--metrics`).
    pub metrics: Option<Arc<crate::metrics::Shared>>,
    /// What the actor counts for the metrics, published now and then.
    pub tally: crate::metrics::Tally,
}

/// Why the actor stopped.
pub enum Stopped {
    /// Stdin ended (without HTTP).
    Eof,
    /// A stop, gracefully.
    Stop(String),
    /// Every source is gone.
    Disconnected,
}

/// A stop under way: until when it waits for HTTP connections, why, and who waits for it.
struct Stopping {
    until: Instant,
    why: String,
    waiting: Vec<mpsc::Sender<Response>>,
}

impl Actor {
    /// Handles events until a stop, the end of stdin (without HTTP), or the end of every source.
    pub fn run(mut self, events: mpsc::Receiver<Event>) -> anyhow::Result<(Stopped, App)> {
        let mut stopping: Option<Stopping> = None;
        let stopped = loop {
            let event = match self.next_event(&events, stopping.as_ref()) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) if stopping.is_none() => {
                    self.deployment_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let drain = self.drain_timeout.as_millis();
                    log(format_args!(
                        "HTTP connections still open after the {drain} ms drain time"
                    ));
                    break Stopped::Stop(
                        stopping.as_ref().map(|s| s.why.clone()).unwrap_or_default(),
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break Stopped::Disconnected,
            };
            match event {
                Event::Input(input, answer) => self.input(input, answer)?,
                Event::Command(Command::Stop { why, reply }) => {
                    if self.begin_stop(&mut stopping, why, reply) {
                        break Stopped::Stop(
                            stopping.as_ref().map(|s| s.why.clone()).unwrap_or_default(),
                        );
                    }
                }
                Event::Command(Command::Drained) if stopping.is_some() => {
                    break Stopped::Stop(
                        stopping.as_ref().map(|s| s.why.clone()).unwrap_or_default(),
                    );
                }
                Event::Command(Command::Eof) if self.http_connections.is_none() => {
                    break Stopped::Eof;
                }
                Event::Command(Command::Eof) => {
                    log(format_args!("stdin closed; still serving HTTP"))
                }
                Event::Command(command) => self.command(command),
            }
        };
        if let Some(keeper) = &mut self.keeper {
            keeper.stop(&mut self.app);
        }
        let message = format!("stopped after {} events", self.app.stats().events);
        for reply in stopping.into_iter().flat_map(|s| s.waiting) {
            let _ = reply.send(Response {
                ok: true,
                message: message.clone(),
                ..Response::default()
            });
        }
        Ok((stopped, self.app))
    }

    /// The next event, waiting at most until the stop's or the deployment step's deadline.
    fn next_event(
        &mut self,
        events: &mpsc::Receiver<Event>,
        stopping: Option<&Stopping>,
    ) -> Result<Event, mpsc::RecvTimeoutError> {
        let deadline = match stopping {
            Some(s) => Some(s.until),
            None => self.deployments.deadline(),
        };
        match deadline {
            None => events
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(at) => events.recv_timeout(at.saturating_duration_since(Instant::now())),
        }
    }

    /// Publishes the actor's tally for the metrics endpoint, if it serves one.
    fn publish_metrics(&mut self) {
        let Some(shared) = &self.metrics else {
            return;
        };
        let stats = self.app.stats();
        self.tally.swaps = [stats.swaps, stats.refused, self.deployments.rolled_back];
        self.tally.memory_bytes = self.app.memory_size() as u64;
        self.tally.state_bytes = stats.last_state_len.unwrap_or(0) as u64;
        shared.publish(&self.tally);
    }

    /// Starts a stop (or adds a waiter to one under way); whether the actor can stop at once.
    fn begin_stop(&mut self, stopping: &mut Option<Stopping>, why: String, reply: Reply) -> bool {
        if let Some(s) = stopping {
            s.waiting.extend(reply);
            return false;
        }
        log(format_args!(
            "{why}: stopping; finishing the events in flight"
        ));
        self.cancel_deployment("the host is stopping");
        let waiting = reply.into_iter().collect();
        let shut = self.shut_http.take();
        let until = Instant::now() + self.drain_timeout;
        *stopping = Some(Stopping {
            until,
            why,
            waiting,
        });
        match shut {
            Some(shut) => {
                shut();
                false
            }
            None => true,
        }
    }

    /// Handles one input. Its answer is released at once, or, when the state is kept, by the
    /// keeper once the event is in the journal.
    fn input(&mut self, input: Input, answer: Answer) -> anyhow::Result<()> {
        if let Some(keeper) = &self.keeper {
            keeper.begin_input(&self.app);
        }
        // With metrics: Some, and Some(start) for the events timed.
        let counted = (self.metrics.is_some()).then(|| self.tally.time_next().then(Instant::now));
        let (release, failure) = self.handle(&input, answer);
        if let Some(started) = counted {
            self.count(&input, failure.is_some(), started);
        }
        // Only while a deployment is under way, and only what its step needs.
        let watched = match self.deployments.watching() {
            Watch::Nothing => None,
            Watch::Failures => Some(Watched::Failure(
                failure.map(|why| format!("{}: {why}", describe_input(&input))),
            )),
            Watch::Outcomes { replies } => Some(Watched::Event(
                input.clone(),
                Outcome::of_release(&release, failure, replies),
            )),
        };
        match &mut self.keeper {
            Some(keeper) => keeper.end_input(&mut self.app, input, release),
            None => {
                let mut stdout = std::io::stdout().lock();
                release.release(&mut stdout)?;
                stdout.flush()?;
            }
        }
        if let Some(watched) = watched {
            self.watch_event(watched);
        }
        Ok(())
    }

    /// Counts an event for the metrics.
    fn count(&mut self, input: &Input, failed: bool, started: Option<Instant>) {
        if let Some(shared) = &self.metrics {
            shared.taken();
        }
        self.tally
            .event(input, failed, started.map(|s| s.elapsed()));
    }

    /// Delivers one input to the app: the answer it owes, and why the event failed if it did
    /// (a trap, a timeout, a broken contract, an error status, or an HTTP 5xx).
    fn handle(&mut self, input: &Input, answer: Answer) -> (Release, Option<String>) {
        match (input, answer) {
            (Input::Message(line), _) => {
                let (mut out, failure) = match self.app.message(line) {
                    Ok(reply) => (reply, None),
                    Err(e) => {
                        log(format_args!("message failed: {e}"));
                        (format!("error: {e}").into_bytes(), Some(e.to_string()))
                    }
                };
                out.push(b'\n');
                (Release::Stdout(out), failure)
            }
            (Input::Tick { now_ms }, _) => {
                self.tick_queued.store(false, Ordering::Release);
                let failure = self.app.tick(*now_ms).err().map(|e| {
                    log(format_args!("tick failed: {e}"));
                    e.to_string()
                });
                (Release::Nothing, failure)
            }
            (Input::Http(request), answer) => {
                let (response, failure) = self.http(request);
                match answer {
                    Answer::Http(reply) => (Release::Http(reply, response), failure),
                    _ => (Release::Nothing, failure),
                }
            }
        }
    }

    /// An HTTP request's response: the app's, or a 500 (the reason goes to the log); and why
    /// it failed, if it did (a 5xx from the app counts).
    fn http(&mut self, request: &http::Request) -> (http::Response, Option<String>) {
        match self.app.http(request) {
            Ok(response) if response.status >= 500 => {
                let why = format!("HTTP status {}", response.status);
                (response, Some(why))
            }
            Ok(response) => (response, None),
            Err(e) => {
                let (method, path) = (
                    crate::text::escape(&request.method, 100),
                    crate::text::escape(&request.path, 200),
                );
                log(format_args!("HTTP {method} {path} failed: {e}"));
                let response = http::Response {
                    status: 500,
                    // The reason is in the host's log, not for the client.
                    body: http::Bytes(b"internal error\n".to_vec()),
                    ..Default::default()
                };
                (response, Some(e.to_string()))
            }
        }
    }

    /// Handles a command other than a stop.
    fn command(&mut self, command: Command) {
        match command {
            Command::Swap {
                prepared,
                origin,
                reply,
                plan,
            } => self.deploy(prepared, origin, reply, plan),
            Command::Trialed { verdict, prepared } => self.trialed(verdict, prepared),
            Command::Refused {
                attempted,
                error,
                reply,
            } => self.refuse(attempted, error, reply),
            Command::Snapshot { reply } => self.snapshot(reply),
            Command::PublishMetrics { done } => {
                self.publish_metrics();
                let _ = done.send(());
            }
            Command::Query { query, reply } => {
                let _ = reply.send(self.query(&query));
            }
            Command::Rollback { reply } => {
                if self.keeper.is_none() {
                    let why = "a rollback replays the journal since the last swap, and this host keeps none: run it with --state-dir and --durable";
                    return answer(reply, Response::failed(why));
                }
                self.cancel_deployment("a `hotswap rollback` ran");
                let Some(keeper) = &mut self.keeper else {
                    return;
                };
                match keeper.rollback(&mut self.app, reply.clone()) {
                    Ok(()) => {
                        self.origin = keeper.dir().module_path(&self.app.module().hash);
                        self.deployments.rolled_back += 1;
                    }
                    Err(why) => {
                        log(format_args!("rollback refused: {why}"));
                        answer(reply, Response::failed(format!("rollback refused: {why}")));
                    }
                }
            }
            Command::Stop { .. } | Command::Drained | Command::Eof => {}
        }
    }

    /// `hotswap snapshot`: answered once the snapshot is on disk.
    fn snapshot(&mut self, reply: mpsc::Sender<Response>) {
        let Some(keeper) = &mut self.keeper else {
            let why = "this host keeps no snapshots: run it with --state-dir DIR";
            let _ = reply.send(Response::failed(why));
            return;
        };
        let started = Instant::now();
        let done: crate::persist::keeper::Done = Box::new(move |written| {
            let response = match written {
                Ok(path) => Response {
                    ok: true,
                    message: format!(
                        "snapshot {} in {}",
                        path.display(),
                        format_duration(started.elapsed())
                    ),
                    ..Response::default()
                },
                Err(why) => Response::failed(format!("no snapshot: {why}")),
            };
            let _ = reply.send(response);
        });
        let _ = keeper.snapshot(&mut self.app, Some(done));
    }

    /// A refused swap to `attempted`: counted, logged and answered.
    fn refuse(&mut self, attempted: String, error: SwapError, reply: Reply) {
        let refused = self.app.refused(attempted, error);
        log(format_args!("{refused}"));
        answer(reply, Response::failed(refused.to_string()));
    }

    /// Swaps in a prepared version now (or adopts a shadow run's app). The client waiting on
    /// `reply`, if any, is answered (the swap line, with `notes`) once the swap is journaled,
    /// or told the refusal (already logged and counted). The swap's answer, or the refusal.
    fn swap(
        &mut self,
        new: Incoming,
        origin: PathBuf,
        reply: Reply,
        notes: &str,
    ) -> Result<Response, String> {
        let from = (self.app.module().hash, self.app.state_version());
        let report = match new {
            Incoming::Prepared(prepared) => match self.app.swap(*prepared) {
                Ok(report) => report,
                Err(refused) => {
                    log(format_args!("{refused}"));
                    answer(reply, Response::failed(refused.to_string()));
                    return Err(refused.to_string());
                }
            },
            Incoming::Shadow(app) => self.app.adopt(*app),
        };
        if report.state_len > 0 {
            self.state_len.store(report.state_len, Ordering::Relaxed);
        }
        *self.layout.lock().unwrap_or_else(|e| e.into_inner()) = self.app.layout().map(Arc::from);
        self.tally.swapped(&report);
        self.origin = origin;
        log(format_args!("{report}"));
        let message = match notes {
            "" => report.to_string(),
            notes => format!("{report}; {notes}"),
        };
        let response = Response {
            ok: true,
            message,
            swap: Some(report_json(&report)),
            ..Response::default()
        };
        match &mut self.keeper {
            Some(keeper) => {
                let release =
                    reply.map_or(Release::Nothing, |r| Release::Control(r, response.clone()));
                keeper.swapped(&mut self.app, from, release);
            }
            None => answer(reply, response.clone()),
        }
        Ok(response)
    }

    fn query(&mut self, query: &Query) -> Response {
        match query {
            Query::Status => self.status(),
            Query::Export => match self.app.export_state() {
                Ok(bytes) => Response {
                    ok: true,
                    message: format!("the state, {}", crate::text::bytes(bytes.len())),
                    state: Some(serde_json::json!({
                        "state_version": self.app.state_version(),
                        "module": format!("{:?}", self.app.module().hash),
                        "hex": crate::text::to_hex(&bytes),
                    })),
                    ..Response::default()
                },
                Err(e) => Response::failed(format!("cannot export the state: {e}")),
            },
            Query::State => match self.app.export_state() {
                Ok(bytes) => {
                    let (message, state) =
                        crate::state_view::show(&bytes, self.app.state_version());
                    Response {
                        ok: true,
                        message,
                        state: Some(state),
                        ..Response::default()
                    }
                }
                Err(e) => Response::failed(format!("cannot export the state: {e}")),
            },
            Query::Limits {
                timeout,
                max_memory,
            } => {
                let limits = self.app.runtime().limits();
                limits.set(*timeout, *max_memory);
                let message = format!(
                    "limits: --timeout {} ms, --max-memory {} MiB",
                    limits.call_timeout().as_millis(),
                    limits.max_memory() >> 20
                );
                if timeout.is_some() || max_memory.is_some() {
                    log(format_args!("{message} (changed by `hotswap limits`)"));
                }
                Response {
                    ok: true,
                    message,
                    status: Some(self.status_json()),
                    ..Response::default()
                }
            }
        }
    }

    fn status(&self) -> Response {
        let stats = self.app.stats();
        let watching = self
            .watching
            .as_ref()
            .map_or_else(String::new, |w| format!(", watching {}", w.display()));
        let damaged = stats.damaged.as_ref().map_or_else(String::new, |d| format!("; the instance may be damaged ({d}): the next swap moves its state into a fresh one"));
        let message = format!(
            "running {} from {} (state v{}){watching}, up {:.0} s, {} events, {} swaps, {} refused, last pause {}{damaged}",
            self.app.module(),
            self.origin.display(),
            self.app.state_version(),
            self.started.elapsed().as_secs_f64(),
            stats.events,
            stats.swaps,
            stats.refused,
            stats
                .last_pause
                .map_or_else(|| "none".to_owned(), format_duration),
        );
        let message = match &self.keeper {
            Some(keeper) => format!("{message}; {}", keeper.status().0),
            None => message,
        };
        let message = match self.deployments.status() {
            Some(deploying) => format!("{message}; {deploying}"),
            None => message,
        };
        Response {
            ok: true,
            message,
            status: Some(self.status_json()),
            ..Response::default()
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let stats = self.app.stats();
        let module = self.app.module();
        let limits = self.app.runtime().limits();
        json!({
            "module": self.origin,
            "watching": self.watching,
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
            "damaged": stats.damaged,
            "last_pause_us": stats.last_pause.map(|d| d.as_secs_f64() * 1e6),
            "http_connections": self.http_connections.as_ref().map(|c| c.load(Ordering::Relaxed)),
            "limits": {
                "timeout_ms": limits.call_timeout().as_millis() as u64,
                "max_memory_bytes": limits.max_memory(),
            },
            "state_dir": self.keeper.as_ref().map(|k| k.status().1),
            "deployment": self.deployments.status_json(),
        })
    }
}

/// What a swap puts in place of the running version.
enum Incoming {
    /// A prepared version, which takes the running version's state.
    Prepared(Box<Prepared>),
    /// A shadow run's app, with the state it built.
    Shadow(Box<App>),
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
        "verify_us": us(report.phases.verify),
        "kept_shadow_state": report.path == SwapPath::ShadowState,
        "path": report.path.name(),
        "by_value_because": report.path.reason(),
        "in_place": match &report.path {
            SwapPath::InPlace(t) => json!({
                "clear_us": us(t.clear),
                "instantiate_us": us(t.instantiate),
                "adopt_us": us(t.adopt),
            }),
            SwapPath::ByValue(_) | SwapPath::ShadowState => serde_json::Value::Null,
        },
    })
}
