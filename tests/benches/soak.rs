//! Hostile load, held for a while: what issue 9 asks a run to survive. Eight keep-alive clients
//! send `POST /hit` as fast as they can to `hotswap run todo_v2.wasm --http`, while this process
//! swaps todo v2 and v3 (same state) over the control socket every few milliseconds, and slow
//! clients (a header byte at a time) and idle connections hold sockets alongside.
//!
//! At the end it checks what matters: every hit acknowledged with a 200 is in the app's count
//! (nothing lost), every good request got a 200 (no good client refused), every swap was
//! acknowledged, the slow clients were closed by the header timeout, and the host's threads,
//! descriptors and memory are what they were. It exits non-zero if any of that fails.
//!
//! `cargo bench -p hotswap-tests --bench soak [-- SECONDS]` (default 20). Results and the
//! machine go in BENCHMARKS.md.

use hotswap::control::{self, Request};
use hotswap_tests::{Conn, TODO_V2, TODO_V3, serve_http};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOTSWAP: &str = env!("CARGO_BIN_EXE_hotswap-under-test");
const CLIENTS: usize = 8;
const SWAP_EVERY: Duration = Duration::from_millis(5);
const SLOW: usize = 200;
const IDLE: usize = 200;
/// The host's header timeout here (the default is 10 s): slow clients must be gone well
/// within a run.
const HEADER_TIMEOUT_MS: &str = "2000";

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    bad: AtomicU64,
    swaps: AtomicU64,
    refused: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

fn main() {
    let seconds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("control.sock");
    let extra = ["--header-timeout", HEADER_TIMEOUT_MS];
    let (mut host, addr) = serve_http(HOTSWAP, TODO_V2, &socket, &extra);
    let pid = host.id();
    let before = Usage::of(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(&addr).expect("idle"))
        .collect();
    let slow: Vec<_> = (0..SLOW).map(|_| spawn_slow(&addr, &stop)).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| spawn_client(&addr, &stop, &tally))
        .collect();
    let swapper = spawn_swapper(socket.clone(), &stop, &tally);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let during = Usage::of(pid);
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().expect("client"));
    swapper.join().expect("swapper");
    let slow_closed = slow
        .into_iter()
        .map(|s| s.join().expect("slow client"))
        .filter(|closed| *closed)
        .count();
    drop(idle);
    let elapsed = started.elapsed();
    let counted = final_count(&addr);
    let after = Usage::of(pid);
    let _ = control::send(&socket, &Request::Stop, None);
    let status = host.wait().expect("wait for the host");
    let failures = report(
        &tally,
        elapsed,
        counted,
        slow_closed,
        [&before, &during, &after],
    );
    println!("host exit: {status}");
    if failures > 0 || !status.success() {
        std::process::exit(1);
    }
}

/// A keep-alive client: `POST /hit` as fast as the host answers.
fn spawn_client(
    addr: &str,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> std::thread::JoinHandle<()> {
    let (addr, stop, tally) = (addr.to_owned(), stop.clone(), tally.clone());
    std::thread::spawn(move || {
        let mut conn = Conn::open(&addr);
        let mut latencies = Vec::with_capacity(1 << 16);
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            match conn.request("POST", "/hit", "") {
                Ok(reply) if reply.status == 200 => tally.ok.fetch_add(1, Ordering::Relaxed),
                _ => tally.bad.fetch_add(1, Ordering::Relaxed),
            };
            latencies.push(start.elapsed());
        }
        tally.latencies.lock().unwrap().extend(latencies);
    })
}

/// Swaps todo v2 and v3 in turn every [`SWAP_EVERY`], over the control socket.
fn spawn_swapper(
    socket: std::path::PathBuf,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> std::thread::JoinHandle<()> {
    let (stop, tally) = (stop.clone(), tally.clone());
    let modules = [TODO_V3, TODO_V2].map(|m| (m, std::fs::read(m).expect("read a module")));
    std::thread::spawn(move || {
        for (path, bytes) in modules.iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let request = Request::Reload {
                module: path.into(),
                len: Some(bytes.len() as u64),
                plan: Default::default(),
            };
            match control::send(&socket, &request, Some(bytes)) {
                Ok(answer) if answer.ok => tally.swaps.fetch_add(1, Ordering::Relaxed),
                _ => tally.refused.fetch_add(1, Ordering::Relaxed),
            };
            std::thread::sleep(SWAP_EVERY);
        }
    })
}

/// A slowloris client: a header byte every 100 ms until the host closes the connection (true)
/// or the run ends (false).
fn spawn_slow(addr: &str, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<bool> {
    let (addr, stop) = (addr.to_owned(), stop.clone());
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).expect("slow client");
        let header = b"POST /hit HTTP/1.1\r\nhost: slow\r\nx-slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        for byte in header {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            if stream.write_all(&[*byte]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            // A closed connection reads as end of file.
            stream.set_nonblocking(true).ok();
            let closed = matches!(stream.read(&mut [0; 64]), Ok(0));
            stream.set_nonblocking(false).ok();
            if closed {
                return true;
            }
        }
        false
    })
}

/// The app's own count of hits (a hit more, answered `todo-v? hits=N`).
fn final_count(addr: &str) -> u64 {
    let reply = Conn::open(addr)
        .request("POST", "/hit", "")
        .expect("final request");
    let hits: u64 = (reply.body.rsplit('=').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("hits=N");
    hits - 1
}

/// Threads, open descriptors and resident memory of a process.
struct Usage {
    threads: u64,
    fds: usize,
    rss_kib: u64,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default();
            line.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        Usage {
            threads: field("Threads:"),
            fds,
            rss_kib: field("VmRSS:"),
        }
    }
}

/// Prints the run's numbers; returns how many checks failed.
fn report(
    tally: &Tally,
    elapsed: Duration,
    counted: u64,
    slow_closed: usize,
    usage: [&Usage; 3],
) -> usize {
    let (ok, bad) = (
        tally.ok.load(Ordering::Relaxed),
        tally.bad.load(Ordering::Relaxed),
    );
    let (swaps, refused) = (
        tally.swaps.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    let mut latencies = std::mem::take(&mut *tally.latencies.lock().unwrap());
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "## Soak: {CLIENTS} keep-alive clients, a swap every {} ms, {SLOW} slow and {IDLE} idle connections, {:.1} s",
        SWAP_EVERY.as_millis(),
        elapsed.as_secs_f64()
    );
    println!(
        "requests: {ok} answered 200 ({:.0}/s), {bad} not",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    println!("swaps: {swaps} acknowledged, {refused} refused or failed");
    println!("hits counted by the app: {counted} (acknowledged: {ok})");
    println!("slow clients closed by the header timeout: {slow_closed} of {SLOW}");
    for (when, u) in ["before", "during", "after"].iter().zip(usage) {
        println!(
            "host {when}: {} threads, {} descriptors, {} MiB resident",
            u.threads,
            u.fds,
            u.rss_kib / 1024
        );
    }
    let checks = [
        (counted == ok, "every acknowledged hit is counted"),
        (bad == 0, "every good request got a 200"),
        (refused == 0 && swaps > 0, "every swap was acknowledged"),
        (slow_closed == SLOW, "every slow client was closed"),
        (
            usage[2].threads <= usage[0].threads + 2,
            "no threads left behind",
        ),
        (
            usage[2].fds <= usage[0].fds + 2,
            "no descriptors left behind",
        ),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| *what)
        .collect();
    println!(
        "checks: {}",
        if failed.is_empty() {
            "all passed".to_owned()
        } else {
            format!("FAILED: {}", failed.join("; "))
        }
    );
    failed.len()
}
