//! Metrics for Prometheus (`hotswap run --metrics ADDR`): events by kind and outcome, event
//! latency, queue depth, swaps (done, refused, rolled back), the pause by phase, state size,
//! memory, HTTP connections and journal fsync latency, served as Prometheus text at
//! `http://ADDR/metrics`.
//!
//! Strategy: the event path stays cheap. The actor counts in a [`Tally`] of its own (plain
//! integers, no atomics, no lock, no timer; the latency of one event in [`TIME_ONE_IN`]) and
//! publishes a copy into [`Shared`] when a scrape
//! asks, with a command queued behind the events already waiting; the scrape waits at most
//! [`FRESH_TIME`] for it (an app busy in one long call, say) and then uses the last copy. A
//! scrape encodes it with `prometheus-client`, plus what other threads keep: the HTTP
//! connections, the journal's fsyncs, and the queue's depth, as inputs sent less inputs
//! taken, each counted by the one thread that writes it on a cache line of its own.

use crate::actor::Input;
use crate::report::SwapReport;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a scrape waits for the actor to publish its tally before it uses the last one.
pub const FRESH_TIME: Duration = Duration::from_secs(1);

/// A count written by one thread only, read by scrapes, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct OneWriter(AtomicU64);

impl OneWriter {
    /// Adds one. Only the one writing thread may call this (a load and a store, not a locked
    /// add).
    pub fn bump(&self) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where an input comes from, for the queue's depth.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// A line on stdin (the stdin thread).
    Stdin = 0,
    /// An HTTP request (the HTTP server's thread).
    Http = 1,
}

/// Bucket bounds of the event latency, in seconds (10 µs to 10 s).
const EVENT_BOUNDS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0, 10.0,
];

/// Bucket bounds of the swap's pause and its phases, in seconds (100 µs to 10 s).
const PAUSE_BOUNDS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5, 10.0,
];

/// Bucket bounds of the journal's fsyncs, in seconds (50 µs to 1 s).
const FSYNC_BOUNDS: &[f64] = &[
    5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0,
];

/// The kinds of event, as labelled.
const KINDS: [&str; 3] = ["message", "tick", "http"];

/// The phases of a swap's pause, as labelled.
const PHASES: [&str; 5] = ["export", "copy", "import", "verify", "total"];

/// A histogram kept by one thread: counts per bucket (the last one past every bound), and the
/// sum of what was observed.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: [u64; MAX_BUCKETS],
    sum: f64,
}

/// The most buckets of a histogram (its bounds, and one past them).
const MAX_BUCKETS: usize = 16;

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        assert!(bounds.len() < MAX_BUCKETS, "too many buckets");
        Histogram {
            bounds,
            counts: [0; MAX_BUCKETS],
            sum: 0.0,
        }
    }

    /// The journal's fsync durations.
    pub fn fsync() -> Self {
        Self::new(FSYNC_BOUNDS)
    }

    /// Counts one observation.
    pub fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let at = self.bounds.partition_point(|bound| *bound < seconds);
        self.counts[at] += 1;
        self.sum += seconds;
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = (self.bounds.iter().copied())
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .take(self.bounds.len() + 1)
            .collect();
        let count = self.counts.iter().sum();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum, count, &buckets, None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The event latency times one event in this many (the first of each run of them): two clock
/// reads per event measured as a few percent of the event path, where one in 16 costs nothing
/// measurable. The events themselves are all counted.
pub const TIME_ONE_IN: u32 = 16;

/// What the actor counts, on its own thread.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Events since the last one timed.
    untimed: u32,
    /// Events by kind (as [`KINDS`]) and outcome (ok, failed).
    events: [[u64; 2]; 3],
    /// Event latency by kind.
    latency: [Histogram; 3],
    /// The pause by phase (as [`PHASES`]).
    pause: [Histogram; 5],
    /// Swaps committed, refused, rolled back by a canary or by `hotswap rollback`.
    pub swaps: [u64; 3],
    /// The state's size at the last swap or snapshot, in bytes.
    pub state_bytes: u64,
    /// The running instance's linear memory, in bytes.
    pub memory_bytes: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            untimed: TIME_ONE_IN - 1,
            events: [[0; 2]; 3],
            latency: std::array::from_fn(|_| Histogram::new(EVENT_BOUNDS)),
            pause: std::array::from_fn(|_| Histogram::new(PAUSE_BOUNDS)),
            swaps: [0; 3],
            state_bytes: 0,
            memory_bytes: 0,
        }
    }
}

impl Tally {
    /// Counts one event.
    pub fn event(&mut self, input: &Input, failed: bool, took: Option<Duration>) {
        let kind = match input {
            Input::Message(_) => 0,
            Input::Tick { .. } => 1,
            Input::Http(_) => 2,
        };
        self.events[kind][failed as usize] += 1;
        if let Some(took) = took {
            self.latency[kind].observe(took);
        }
    }

    /// Whether to time the next event: one in [`TIME_ONE_IN`].
    pub fn time_next(&mut self) -> bool {
        self.untimed += 1;
        if self.untimed < TIME_ONE_IN {
            return false;
        }
        self.untimed = 0;
        true
    }

    /// Counts a committed swap's pause.
    pub fn swapped(&mut self, report: &SwapReport) {
        let p = &report.phases;
        for (at, took) in [p.export, p.copy, p.import, p.verify, p.pause]
            .into_iter()
            .enumerate()
        {
            self.pause[at].observe(took);
        }
    }
}

/// What a scrape reads: the actor's last published tally, and live values other threads keep.
/// The `OnceLock`s are set as the host starts, before the metrics are served.
#[derive(Debug, Default)]
pub struct Shared {
    /// The actor's last published tally.
    pub tally: Mutex<Tally>,
    /// Inputs sent to the actor, by [`Source`].
    sent: [OneWriter; 2],
    /// Inputs the actor took.
    taken: OneWriter,
    /// Open HTTP connections, when the host serves HTTP.
    pub connections: OnceLock<Arc<AtomicUsize>>,
    /// The journal's counters, when it keeps one.
    pub journal: OnceLock<Arc<Mutex<crate::persist::journal::Synced>>>,
    /// The actor's queue, to ask for a fresh tally.
    pub actor: OnceLock<std::sync::mpsc::Sender<crate::actor::Event>>,
}

impl Shared {
    /// Counts an input sent to the actor (only from `source`'s thread).
    pub fn sent(&self, source: Source) {
        self.sent[source as usize].bump();
    }

    /// Counts an input the actor took (only from the actor's thread).
    pub fn taken(&self) {
        self.taken.bump();
    }

    /// Inputs waiting for the app: sent less taken (read at once, so off by the few in flight).
    fn queue_depth(&self) -> u64 {
        let sent: u64 = self.sent.iter().map(OneWriter::get).sum();
        sent.saturating_sub(self.taken.get())
    }

    /// Publishes the actor's tally.
    pub fn publish(&self, tally: &Tally) {
        *self.tally.lock().unwrap_or_else(|e| e.into_inner()) = tally.clone();
    }

    /// Asks the actor to publish its tally, and waits at most [`FRESH_TIME`] for it.
    fn refresh(&self) {
        let Some(actor) = self.actor.get() else {
            return;
        };
        let (done, published) = std::sync::mpsc::channel();
        let ask = crate::actor::Command::PublishMetrics { done };
        if actor.send(crate::actor::Event::Command(ask)).is_ok() {
            let _ = published.recv_timeout(FRESH_TIME);
        }
    }

    /// Every metric in Prometheus's text format.
    pub fn encode(self: &Arc<Self>) -> String {
        self.refresh();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}

/// A scrape of [`Shared`].
#[derive(Debug)]
struct Scrape(Arc<Shared>);

/// Encodes one metric family with `help`, labelled by `label`, one sample per value.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, &'static str)>, M)>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let t = self
            .0
            .tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let e = &mut encoder;
        let outcomes = ["ok", "failed"];
        let events = (0..3).flat_map(|k| {
            (0..2).map(move |o| (vec![("kind", KINDS[k]), ("outcome", outcomes[o])], k, o))
        });
        let events = events.map(|(labels, k, o)| (labels, ConstCounter::new(t.events[k][o])));
        family(
            e,
            "hotswap_events",
            "Events handled, by kind and outcome (failed: a trap, a timeout, a broken contract, an error status or an HTTP 5xx).",
            MetricType::Counter,
            events,
        )?;
        let latency = (0..3).map(|k| (vec![("kind", KINDS[k])], t.latency[k].clone()));
        family(
            e,
            "hotswap_event_duration_seconds",
            "Time the app took to handle an event (one event in 16 is timed).",
            MetricType::Histogram,
            latency,
        )?;
        let queued = self.0.queue_depth() as i64;
        family(
            e,
            "hotswap_queue_depth",
            "Inputs (messages, HTTP requests) waiting for the app.",
            MetricType::Gauge,
            [(vec![], ConstGauge::new(queued))],
        )?;
        let results = ["committed", "refused", "rolled_back"];
        let swaps = (0..3).map(|r| (vec![("result", results[r])], ConstCounter::new(t.swaps[r])));
        family(
            e,
            "hotswap_swaps",
            "Swaps committed, refused (the old version kept serving) and rolled back.",
            MetricType::Counter,
            swaps,
        )?;
        let pause = (0..5).map(|p| (vec![("phase", PHASES[p])], t.pause[p].clone()));
        family(
            e,
            "hotswap_swap_pause_seconds",
            "The pause of committed swaps, by phase (total: events held).",
            MetricType::Histogram,
            pause,
        )?;
        let gauge = |v: u64| [(vec![], ConstGauge::new(v as i64))];
        family(
            e,
            "hotswap_state_bytes",
            "The state's size at the last swap.",
            MetricType::Gauge,
            gauge(t.state_bytes),
        )?;
        family(
            e,
            "hotswap_memory_bytes",
            "The running instance's linear memory.",
            MetricType::Gauge,
            gauge(t.memory_bytes),
        )?;
        if let Some(open) = self.0.connections.get() {
            let open = open.load(Ordering::Relaxed) as u64;
            family(
                e,
                "hotswap_http_connections",
                "Open HTTP connections.",
                MetricType::Gauge,
                gauge(open),
            )?;
        }
        if let Some(synced) = self.0.journal.get() {
            let fsync = synced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fsync_seconds
                .clone();
            family(
                e,
                "hotswap_journal_fsync_seconds",
                "The journal's fsyncs (one per group of events).",
                MetricType::Histogram,
                [(vec![], fsync)],
            )?;
        }
        Ok(())
    }
}

/// The most bytes of a scrape's request.
const MAX_REQUEST: u64 = 8 * 1024;

/// How long a scraper may take to send its whole request, or to read the answer.
const SCRAPE_TIME: Duration = Duration::from_secs(5);

/// The most scrapes answered at once; a connection beyond them is closed at once.
pub const MAX_SCRAPES: usize = 8;

/// Serves `GET /metrics` on `listener`, each connection on a thread of its own (at most
/// [`MAX_SCRAPES`] at once), until the process ends.
pub fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming().flatten() {
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_SCRAPES {
            active.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (done, shared) = (active.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name("hotswap-scrape".into())
            .spawn(move || {
                let _ = answer(stream, &shared);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Binds the metrics address and serves it on a thread of its own; the address bound.
pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("hotswap-metrics".into())
        .spawn(move || serve(listener, shared))
        .context("cannot start the metrics thread")?;
    Ok(bound)
}

/// Answers one connection: the metrics for `GET /metrics`, 404 or 405 for anything else.
fn answer(stream: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    stream.set_write_timeout(Some(SCRAPE_TIME))?;
    let deadline = std::time::Instant::now() + SCRAPE_TIME;
    let request = crate::control::Deadlined {
        stream: &stream,
        deadline,
    };
    let mut reader = BufReader::new(request.take(MAX_REQUEST));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers, up to the blank line (within the same byte limit).
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line != "\r\n" && line != "\n" {
        line.clear();
    }
    let mut parts = request_line.split_ascii_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => ("200 OK", shared.encode()),
        ("GET", _) => (
            "404 Not Found",
            "not found: metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
    };
    let content_type = match status {
        "200 OK" => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    write!(
        &stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    (&stream).flush()
}
