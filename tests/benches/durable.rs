//! What keeping the state costs, side by side, in one run:
//!
//! 1. **Event throughput and latency** with no `--state-dir`, with `--state-dir` (snapshots
//!    only) and with `--state-dir --durable` (every event journaled, group commit, `fdatasync`
//!    before its reply is released): eight keep-alive clients, no pipelining, `POST /hit` to
//!    `hotswap run todo_v2.wasm --http` as fast as the host answers. Each mode checks that the
//!    app counted every hit acknowledged with a 200, and then that the count survives a restart
//!    (after a graceful stop with snapshots, after `kill -9` with the journal).
//! 2. **Snapshot and restart against state size**: kv v1 filled with N records over stdin,
//!    `hotswap snapshot` timed, a graceful stop timed, then a restart on the same directory
//!    timed until the first reply (and the host's own restore line reported).
//! 3. **Restart against journal length**: kv v1 with `--durable`, J events sent after the
//!    start's snapshot, `kill -9`, then a restart that replays the J events.
//!
//! The state directories are temporary directories under /tmp (a real disk here, so `fsync`
//! costs what it costs). The process exits non-zero if any check fails.
//!
//! `cargo bench -p hotswap-tests --bench durable [-- [SECONDS] [--records 1k,10k,100k,1M]
//! [--journal 1k,10k,100k] [--only throughput|snapshot|journal]]` (SECONDS per mode, default
//! 10). Results and the machine go in BENCHMARKS.md.

use hotswap::control::{self, Request};
use hotswap_tests::{Conn, KV_V1, TODO_V2, serve_http_logged};
use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

const HOTSWAP: &str = env!("CARGO_BIN_EXE_hotswap-under-test");
const CLIENTS: usize = 8;
/// The call time limit for the kv hosts: filling a million records is one event.
const KV_TIMEOUT_MS: &str = "120000";

fn main() {
    let args = BenchArgs::parse();
    let mut failed = Vec::new();
    if args.runs("throughput") {
        failed.extend(throughput(args.seconds));
        println!();
    }
    if args.runs("snapshot") {
        failed.extend(snapshots(&args.records));
        println!();
    }
    if args.runs("journal") {
        failed.extend(journal(&args.journal));
        println!();
    }
    if failed.is_empty() {
        println!("checks: all passed");
    } else {
        println!("checks: FAILED: {}", failed.join("; "));
        std::process::exit(1);
    }
}

/// The command line: seconds per throughput mode, record counts, journal lengths, which part.
struct BenchArgs {
    seconds: u64,
    records: Vec<u64>,
    journal: Vec<u64>,
    only: Option<String>,
}

impl BenchArgs {
    fn parse() -> BenchArgs {
        let mut parsed = BenchArgs {
            seconds: 10,
            records: vec![1_000, 10_000, 100_000, 1_000_000],
            journal: vec![1_000, 10_000, 100_000],
            only: None,
        };
        // `cargo bench` passes `--bench` to a harness-less bench; it is skipped like any flag.
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .unwrap_or_else(|| usage(&format!("{arg} VALUE")))
            };
            match arg.as_str() {
                "--records" => parsed.records = counts(&value()),
                "--journal" => parsed.journal = counts(&value()),
                "--only" => parsed.only = Some(value()),
                _ if arg.starts_with("--") => {}
                n => parsed.seconds = n.parse().unwrap_or_else(|_| usage(n)),
            }
        }
        parsed
    }

    fn runs(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == part)
    }
}

fn usage(bad: &str) -> ! {
    eprintln!(
        "unexpected {bad:?}; usage: durable [SECONDS] [--records 1k,10k,100k,1M] [--journal 1k,10k,100k] [--only throughput|snapshot|journal]"
    );
    std::process::exit(2)
}

/// `1k,10k,1M` as numbers.
fn counts(list: &str) -> Vec<u64> {
    list.split(',')
        .map(|n| {
            let (digits, scale) = match n.trim().to_lowercase() {
                s if s.ends_with('k') => (s.trim_end_matches('k').to_owned(), 1_000),
                s if s.ends_with('m') => (s.trim_end_matches('m').to_owned(), 1_000_000),
                s => (s, 1),
            };
            digits.parse::<u64>().unwrap_or_else(|_| usage(n)) * scale
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput and latency by mode.

/// How the host keeps the state.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Memory,
    Snapshots,
    Durable,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Memory => "no --state-dir",
            Mode::Snapshots => "--state-dir (snapshots)",
            Mode::Durable => "--state-dir --durable",
        }
    }

    fn flags(self, state: &Path) -> Vec<String> {
        let dir = state.display().to_string();
        match self {
            Mode::Memory => vec![],
            Mode::Snapshots => vec!["--state-dir".into(), dir],
            Mode::Durable => vec!["--state-dir".into(), dir, "--durable".into()],
        }
    }
}

/// What the clients saw.
struct Load {
    ok: u64,
    bad: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// A restart after a run: how it was stopped, what the host said it restored, how long until
/// it served, and whether the count came back.
struct Restart {
    stop: &'static str,
    stop_took: Duration,
    restored: String,
    to_serving: Duration,
    hits_before: u64,
    hits_after: u64,
}

fn throughput(seconds: u64) -> Vec<String> {
    println!(
        "## Durable events: {CLIENTS} keep-alive clients, no pipelining, `POST /hit` to todo_v2, {seconds} s per mode"
    );
    println!();
    println!(
        "| mode | requests | requests/s | p50 | p95 | p99 | max | events per fsync | checks |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    let mut restarts = Vec::new();
    for mode in [Mode::Memory, Mode::Snapshots, Mode::Durable] {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("control.sock");
        let flags = mode.flags(&dir.path().join("state"));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (host, addr, _) = serve_http_logged(HOTSWAP, TODO_V2, &socket, &flags);
        let load = load(&addr, seconds);
        let hits = hits(&addr) - 1;
        let fsyncs = status(&socket)
            .pointer("/state_dir/fsyncs")
            .and_then(|f| f.as_u64());
        let mut checks = vec![(hits == load.ok, "every acknowledged hit counted")];
        checks.push((load.bad == 0, "every request answered 200"));
        let restart = restart_http(mode, host, &socket, &flags, hits + 1);
        if let Some(r) = &restart {
            checks.push((
                r.hits_after == r.hits_before,
                "the count survives a restart",
            ));
        }
        println!(
            "| {} | {} | {:.0} | {} | {} |",
            mode.label(),
            load.ok,
            load.ok as f64 / load.elapsed.as_secs_f64(),
            latency_columns(load.latencies, fsyncs.map(|f| load.ok as f64 / f as f64)),
            check_cell(&checks, mode.label(), &mut failed),
        );
        restarts.extend(restart.map(|r| (mode, r)));
    }
    println!();
    print_restarts(&restarts);
    failed
}

/// The p50, p95, p99 and max columns, and the events per fsync.
fn latency_columns(mut latencies: Vec<Duration>, per_fsync: Option<f64>) -> String {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        ms(latencies.get(i).copied().unwrap_or_default())
    };
    format!(
        "{} | {} | {} | {} | {}",
        at(0.5),
        at(0.95),
        at(0.99),
        at(1.0),
        per_fsync.map_or("—".into(), |n| format!("{n:.2}"))
    )
}

/// Eight clients sending `POST /hit` for `seconds`.
fn load(addr: &str, seconds: u64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, stop) = (addr.to_owned(), stop.clone());
            std::thread::spawn(move || client(&addr, &stop))
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut load = Load {
        ok: 0,
        bad: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for client in clients {
        let (ok, bad, latencies) = client.join().expect("client");
        load.ok += ok;
        load.bad += bad;
        load.latencies.extend(latencies);
    }
    load.elapsed = started.elapsed();
    load
}

/// One keep-alive client: its 200s, its other answers, and every request's latency.
fn client(addr: &str, stop: &AtomicBool) -> (u64, u64, Vec<Duration>) {
    let mut conn = Conn::open(addr);
    let (mut ok, mut bad) = (0, 0);
    let mut latencies = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match conn.request("POST", "/hit", "") {
            Ok(reply) if reply.status == 200 => ok += 1,
            _ => bad += 1,
        }
        latencies.push(started.elapsed());
    }
    (ok, bad, latencies)
}

/// A hit more; the app's count after it (`todo-v2 hits=N`).
fn hits(addr: &str) -> u64 {
    let reply = Conn::open(addr)
        .request("POST", "/hit", "")
        .expect("a request for the count");
    (reply.body.rsplit('=').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected hits=N, got {:?}", reply.body))
}

/// Stops the host (gracefully with snapshots only, `kill -9` with the journal) and, with a
/// state directory, starts it again on it and asks for the count (`hits_before` a hit more).
fn restart_http(
    mode: Mode,
    mut host: Child,
    socket: &Path,
    flags: &[&str],
    hits_before: u64,
) -> Option<Restart> {
    let started = Instant::now();
    let stop = if mode == Mode::Durable {
        host.kill().expect("kill -9 the host");
        host.wait().expect("wait for the host");
        "kill -9"
    } else {
        stop_gracefully(host, socket);
        "hotswap stop"
    };
    let stop_took = started.elapsed();
    if mode == Mode::Memory {
        return None;
    }
    let started = Instant::now();
    let (host, addr, log) = serve_http_logged(HOTSWAP, TODO_V2, socket, flags);
    let to_serving = started.elapsed();
    let restored = restore_summary(&log);
    let hits_after = hits(&addr) - 1;
    stop_gracefully(host, socket);
    Some(Restart {
        stop,
        stop_took,
        restored,
        to_serving,
        hits_before,
        hits_after,
    })
}

fn print_restarts(restarts: &[(Mode, Restart)]) {
    println!("## Restart on the same state directory after the run");
    println!();
    println!(
        "| mode | stopped by | stop took | the host's restore | start → serving HTTP | hits before → after |"
    );
    println!("|---|---|---|---|---|---|");
    for (mode, r) in restarts {
        println!(
            "| {} | {} | {} | {} | {} | {} → {} |",
            mode.label(),
            r.stop,
            ms(r.stop_took),
            r.restored,
            ms(r.to_serving),
            r.hits_before,
            r.hits_after
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Snapshot and restart against state size.

fn snapshots(records: &[u64]) -> Vec<String> {
    println!(
        "## Snapshot and restart by state size (kv v1 over stdin, `--state-dir`, one run each)"
    );
    println!();
    println!(
        "| records | snapshot size | fill | `hotswap snapshot` (of which the write) | graceful stop | the host's restore | start → first reply | checks |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    let mut fresh = Vec::new();
    for &n in records {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let socket = dir.path().join("control.sock");
        let (mut host, log) = KvHost::start(&state, &socket, false);
        fresh.extend(
            log.iter()
                .find_map(|l| l.split(", ready in ").nth(1).map(str::to_owned)),
        );
        let started = Instant::now();
        let filled = host.ask(&format!("fill {n}"));
        let fill = started.elapsed();
        let (snapshot, written) = snapshot_cli(&socket);
        let started = Instant::now();
        host.stop();
        let stop = started.elapsed();
        let (restarted, restored, to_reply) = KvHost::restart(&state, &socket, false);
        let count = restarted.stop_with_count();
        let expected = format!("kv v1: {n}");
        let checks = [
            (filled == expected, "filled"),
            (count == expected, "the records survive a restart"),
        ];
        let bad = check_cell(&checks, &format!("{n} records"), &mut failed);
        println!(
            "| {n} | {} | {} | {} ({}) | {} | {restored} | {} | {bad} |",
            written.1,
            ms(fill),
            ms(snapshot),
            written.0,
            ms(stop),
            ms(to_reply),
        );
    }
    println!();
    println!(
        "For comparison, a fresh start of kv v1 (compile, instantiate, first snapshot) was ready in: {}; \
         compiling kv v1 alone (uncached, in this process, median of 3) takes {}. A restore compiles \
         the module too.",
        fresh.join(", "),
        ms(compile_time(KV_V1))
    );
    failed
}

/// How long a module takes to compile, uncached (a fresh runtime each time): median of 3.
fn compile_time(path: &str) -> Duration {
    let bytes = std::fs::read(path).expect("read the module");
    let mut times: Vec<Duration> = (0..3)
        .map(|_| {
            let runtime = hotswap::Runtime::new(hotswap::Config::default()).expect("runtime");
            runtime.compile(path, &bytes).expect("compile").compile_time
        })
        .collect();
    times.sort();
    times[1]
}

/// Runs `hotswap snapshot --control SOCKET`: how long it took, and the snapshot writer's time
/// and size from `hotswap status`.
fn snapshot_cli(socket: &Path) -> (Duration, (String, String)) {
    let started = Instant::now();
    let out = Command::new(HOTSWAP)
        .arg("snapshot")
        .arg("--control")
        .arg(socket)
        .output()
        .expect("run hotswap snapshot");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "hotswap snapshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = status(socket);
    let newest = status.pointer("/state_dir/newest_snapshot");
    let field = |name: &str| newest.and_then(|n| n.get(name)).and_then(|v| v.as_f64());
    let write = field("write_us").map_or("?".into(), |us| ms(Duration::from_secs_f64(us / 1e6)));
    let size = field("bytes").map_or("?".into(), |b| mib(b as u64));
    (took, (write, size))
}

// ---------------------------------------------------------------------------------------------
// 3. Restart against journal length.

fn journal(lengths: &[u64]) -> Vec<String> {
    println!(
        "## Restart by journal length (kv v1 over stdin, `--durable`, the start's snapshot only, then `kill -9`)"
    );
    println!();
    println!(
        "| events | journal on disk | sent (stdin, pipelined) | events per fsync | the host's restore | start → first reply | checks |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    for &j in lengths {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let socket = dir.path().join("control.sock");
        let (mut host, _) = KvHost::start(&state, &socket, true);
        let started = Instant::now();
        let acknowledged = host.set_many(j);
        let sent = started.elapsed();
        let fsyncs = status(&socket)
            .pointer("/state_dir/fsyncs")
            .and_then(|f| f.as_u64())
            .unwrap_or(0);
        host.kill();
        let on_disk = dir_size(&state.join("journal"));
        let (restarted, restored, to_reply) = KvHost::restart(&state, &socket, true);
        let count = restarted.stop_with_count();
        let checks = [
            (acknowledged == j, "every set acknowledged"),
            (count == format!("kv v1: {j}"), "every set survives kill -9"),
        ];
        let bad = check_cell(&checks, &format!("journal of {j}"), &mut failed);
        println!(
            "| {j} | {} | {} ({:.0}/s) | {:.1} | {restored} | {} | {bad} |",
            mib(on_disk),
            ms(sent),
            j as f64 / sent.as_secs_f64(),
            j as f64 / fsyncs.max(1) as f64,
            ms(to_reply),
        );
    }
    failed
}

// ---------------------------------------------------------------------------------------------
// A kv host over stdin.

/// `hotswap run kv_v1.wasm --state-dir DIR [--durable]`, its stdin and stdout held, its log
/// read into a channel.
struct KvHost {
    child: Child,
    /// Taken by [`KvHost::set_many`]'s writer while it writes.
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    log: mpsc::Receiver<String>,
    socket: PathBuf,
}

impl KvHost {
    /// Starts the host and waits until its control socket is up; the host and its log so far.
    fn start(state: &Path, socket: &Path, durable: bool) -> (KvHost, Vec<String>) {
        let mut command = Command::new(HOTSWAP);
        command
            .args(["run", KV_V1, "--timeout", KV_TIMEOUT_MS, "--state-dir"])
            .arg(state)
            .arg("--control")
            .arg(socket);
        if durable {
            command.arg("--durable");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hotswap");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        while !lines
            .last()
            .is_some_and(|l: &String| l.contains("control socket: "))
        {
            let line = (log.recv_timeout(Duration::from_secs(600)))
                .unwrap_or_else(|_| panic!("the host did not start; its log: {lines:#?}"));
            lines.push(line);
        }
        let host = KvHost {
            child,
            stdin: Some(stdin),
            stdout,
            log,
            socket: socket.to_owned(),
        };
        (host, lines)
    }

    /// Starts a host on a state directory that holds a snapshot: the host, a summary of its
    /// restore, and the time from the start to the reply to a first message.
    fn restart(state: &Path, socket: &Path, durable: bool) -> (KvHost, String, Duration) {
        let started = Instant::now();
        let (mut host, log) = KvHost::start(state, socket, durable);
        host.ask("get 0");
        (host, restore_summary(&log), started.elapsed())
    }

    /// Sends a line; its reply.
    fn ask(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin is back");
        writeln!(stdin, "{line}").expect("write to the host");
        stdin.flush().expect("write to the host");
        self.reply()
    }

    fn reply(&mut self) -> String {
        match self.stdout.next() {
            Some(Ok(line)) => line,
            _ => {
                let log: Vec<String> = self.log.try_iter().collect();
                panic!("the host ended without a reply; its log: {log:#?}")
            }
        }
    }

    /// `set` J distinct keys, written by a thread while the replies are read: how many were
    /// answered ok.
    fn set_many(&mut self, j: u64) -> u64 {
        let stdin = self.stdin.take().expect("stdin is back");
        let writer = std::thread::spawn(move || {
            let mut out = std::io::BufWriter::new(stdin);
            for i in 0..j {
                writeln!(out, "set key-{i:09} value-{i:09}").expect("write to the host");
            }
            out.into_inner().expect("write to the host")
        });
        let ok = (0..j).filter(|_| self.reply() == "kv v1: ok").count() as u64;
        self.stdin = Some(writer.join().expect("writer"));
        ok
    }

    /// Stops the host gracefully and waits for it to exit.
    fn stop(self) {
        let KvHost { child, socket, .. } = self;
        stop_gracefully(child, &socket);
    }

    /// Asks for the record count, then stops the host.
    fn stop_with_count(mut self) -> String {
        let count = self.ask("count");
        self.stop();
        count
    }

    fn kill(mut self) {
        self.child.kill().expect("kill -9 the host");
        self.child.wait().expect("wait for the host");
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// `hotswap stop` over the control socket, and the wait for the host to exit 0.
fn stop_gracefully(mut host: Child, socket: &Path) {
    let answer = control::send(socket, &Request::Stop, None).expect("hotswap stop");
    assert!(answer.ok, "hotswap stop: {}", answer.message);
    let status = host.wait().expect("wait for the host");
    assert!(status.success(), "the host exited with {status}");
}

/// The host's `status` answer, as JSON.
fn status(socket: &Path) -> serde_json::Value {
    let answer = control::send(socket, &Request::Status, None).expect("hotswap status");
    answer.status.unwrap_or_default()
}

/// From the log lines `restored M from DIR: snapshot at record S, R events and W swaps
/// replayed, in T` and `running M (state vV), ready in X`: `snapshot at S, R events replayed,
/// in T; ready in X`.
fn restore_summary(log: &[String]) -> String {
    let restored = log.iter().find_map(|line| {
        let rest = line.split(": snapshot at record ").nth(1)?;
        let (seq, rest) = rest.split_once(", ")?;
        let (replayed, rest) = rest.split_once(" events and ")?;
        let took = rest.rsplit(", in ").next()?;
        Some(format!(
            "snapshot at {seq}, {replayed} events replayed, in {took}"
        ))
    });
    let ready = log.iter().find_map(|line| line.split(", ready in ").nth(1));
    match (restored, ready) {
        (Some(restored), Some(ready)) => format!("{restored}; ready in {ready}"),
        _ => format!("not restored? the log: {log:?}"),
    }
}

/// The checks cell: "ok", or what failed (also added to `failed`, prefixed with `what`).
fn check_cell(checks: &[(bool, &str)], what: &str, failed: &mut Vec<String>) -> String {
    let bad: Vec<&str> = checks.iter().filter(|c| !c.0).map(|c| c.1).collect();
    failed.extend(bad.iter().map(|b| format!("{what}: {b}")));
    if bad.is_empty() {
        "ok".into()
    } else {
        format!("FAILED: {}", bad.join(", "))
    }
}

/// Bytes in the files of a directory.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn ms(d: Duration) -> String {
    match d.as_secs_f64() * 1e3 {
        ms if ms < 1.0 => format!("{:.0} µs", ms * 1e3),
        ms if ms < 10_000.0 => format!("{ms:.2} ms"),
        ms => format!("{:.2} s", ms / 1e3),
    }
}

fn mib(bytes: u64) -> String {
    match bytes {
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}
