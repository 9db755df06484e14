//! What deploying with a shadow run and serving metrics cost on the event path, in one run:
//! `hotswap run kv_v1.wasm` fed messages on stdin as fast as it answers (a writer thread
//! keeps up to 256 messages in flight; replies are read and counted), in three modes,
//! alternated round by round:
//!
//! - **plain**: nothing else;
//! - **shadow**: a `hotswap reload kv_v2.wasm --shadow 1h` under way, so every event also
//!   goes to kv v2's throwaway instance after kv v1 has answered it;
//! - **metrics**: `--metrics 127.0.0.1:0` (the actor counts every event, latency included).
//!
//! Each round sends the same EVENTS messages (`set`, `get` and `del` over 10,000 keys) and
//! checks that every reply came back. Two measures per mode: throughput, and the host
//! process's CPU time per event (user + system, from `wait4`'s rusage: all its threads, less
//! sensitive than throughput to how the two processes happen to be scheduled). Medians of the
//! rounds, and each mode against plain.
//!
//! `cargo bench -p hotswap-tests --bench deploy [-- [ROUNDS] [--events N]]` (default 7
//! rounds of 200,000 events). Results and the machine go in BENCHMARKS.md.

use hotswap::control::{self, Request};
use hotswap_tests::{KV_V1, KV_V2};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOTSWAP: &str = env!("CARGO_BIN_EXE_hotswap-under-test");
const MODES: [&str; 3] = ["plain", "shadow", "metrics"];

fn main() {
    let (mut rounds, mut events) = (7usize, 200_000usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => {
                events = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--events N")
            }
            _ if arg.starts_with("--") => {} // `cargo bench` passes --bench.
            n => rounds = n.parse().expect("usage: deploy [ROUNDS] [--events N]"),
        }
    }
    println!("{rounds} rounds of {events} events through `hotswap run kv_v1.wasm` on stdin");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for round in 0..rounds {
        for (at, mode) in MODES.iter().enumerate() {
            let (rate, ns) = run(mode, events);
            println!(
                "round {}: {mode:8} {rate:>9.0} events/s, host CPU {ns:>6.0} ns/event",
                round + 1
            );
            rates[at].push(rate);
            cpu[at].push(ns);
        }
    }
    let (plain, plain_cpu) = (median(&rates[0]), median(&cpu[0]));
    println!(
        "\n| mode | events/s (median) | against plain | host CPU per event (median) | against plain |"
    );
    println!("|---|---|---|---|---|");
    for (at, mode) in MODES.iter().enumerate() {
        let (m, c) = (median(&rates[at]), median(&cpu[at]));
        println!(
            "| {mode} | {m:.0} | {:.3}× | {c:.0} ns | {:.3}× |",
            m / plain,
            c / plain_cpu
        );
    }
}

/// One host in `mode`: its throughput over `events` messages, in events per second, and its
/// CPU time per event, in nanoseconds.
fn run(mode: &str, events: usize) -> (f64, f64) {
    let dir = tempfile::TempDir::new().unwrap();
    let socket = dir.path().join("control.sock");
    let mut command = Command::new(HOTSWAP);
    command.args(["run", KV_V1, "--control"]).arg(&socket);
    if mode == "metrics" {
        command.args(["--metrics", "127.0.0.1:0"]);
    }
    // Reaped by `cpu_at_exit` (wait4), which `Child::wait` cannot replace: it gives no rusage.
    #[allow(clippy::zombie_processes)]
    let mut host = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hotswap");
    wait_for_socket(&socket);
    let deploying = (mode == "shadow").then(|| shadow(&socket));
    let mut stdin = host.stdin.take().unwrap();
    let stdout = BufReader::new(host.stdout.take().unwrap());
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(&mut stdin);
        for i in 0..events {
            let key = i % 10_000;
            let _ = match i % 4 {
                0 | 1 => writeln!(out, "set k{key} value-{i}"),
                2 => writeln!(out, "get k{key}"),
                _ => writeln!(out, "del k{key}"),
            };
        }
        let _ = out.flush();
        drop(out);
        stdin
    });
    let replies = stdout.lines().take(events).count();
    let elapsed = started.elapsed();
    assert_eq!(replies, events, "{mode}: every event answered");
    drop(writer.join().unwrap()); // Closes stdin: the host stops.
    if let Some(reload) = deploying {
        let answer = reload.join().unwrap();
        assert!(
            answer.message.contains("the host is stopping"),
            "the shadow ran to the end: {}",
            answer.message
        );
    }
    let cpu = cpu_at_exit(host.id());
    (
        events as f64 / elapsed.as_secs_f64(),
        cpu.as_nanos() as f64 / events as f64,
    )
}

/// Waits for the child `pid` to exit; the CPU time it used, user and system.
fn cpu_at_exit(pid: u32) -> Duration {
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; `pid` is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as libc::pid_t, "wait4 on the host");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Starts `reload kv_v2.wasm --shadow 1h` and returns once the shadow run is under way.
fn shadow(socket: &Path) -> std::thread::JoinHandle<control::Response> {
    let plan = hotswap::deploy::Plan {
        shadow_ms: Some(3_600_000),
        ..Default::default()
    };
    let request = Request::Reload {
        module: PathBuf::from(KV_V2),
        len: None,
        plan,
    };
    let path = socket.to_owned();
    let reload = std::thread::spawn(move || control::send(&path, &request, None).expect("reload"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = control::send(socket, &Request::Status, None).expect("status");
        let stage = &status.status.as_ref().unwrap()["deployment"]["current"]["stage"];
        if stage == "shadow run" {
            return reload;
        }
        assert!(Instant::now() < deadline, "no shadow run: {status:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_socket(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "the host never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
