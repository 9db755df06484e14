//! HTTP apps on a real socket on 127.0.0.1: keep-alive, the body limit, 500 on a guest failure,
//! swaps through the control channel, and zero downtime under load across 100 swaps.

use crate::cli::{Running, run, stderr};
use hotswap_tests::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn serves_requests_on_one_kept_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (host, addr, _) = Running::serving(TODO_V1, &dir, &[]);
    let mut conn = Conn::open(&addr);
    assert_eq!(conn.request("POST", "/todos", "milk").unwrap().status, 201);
    assert_eq!(conn.request("POST", "/todos", "eggs").unwrap().status, 201);
    let list = conn.request("GET", "/todos", "").unwrap();
    assert_eq!((list.status, list.body.as_str()), (200, "- milk\n- eggs\n"));
    assert_eq!(list.header("x-app-version"), Some("todo-v1"));
    assert_eq!(conn.request("GET", "/nowhere", "").unwrap().status, 404);
    host.kill();
}

#[test]
fn oversized_bodies_get_413_and_guest_failures_500() {
    let dir = tempfile::tempdir().unwrap();
    let (host, addr, _) = Running::serving(TODO_V1, &dir, &["--max-body", "16"]);
    let mut conn = Conn::open(&addr);
    assert_eq!(conn.request("POST", "/todos", "short").unwrap().status, 201);
    assert_eq!(
        Conn::open(&addr)
            .request("POST", "/todos", &"x".repeat(100))
            .unwrap()
            .status,
        413
    );
    let failed = conn.request("GET", "/panic", "").unwrap();
    assert_eq!(
        (failed.status, failed.body.as_str()),
        (500, "internal error\n")
    );
    let line = host.log_until("HTTP GET /panic failed");
    assert!(
        line.contains("guest panicked") && line.contains("/panic was requested"),
        "{line}"
    );
    // The next request is served, with the state intact.
    assert_eq!(conn.request("GET", "/todos", "").unwrap().body, "- short\n");
    host.kill();
}

#[test]
fn swaps_with_a_schema_change_keep_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let (host, addr, socket) = Running::serving(TODO_V1, &dir, &[]);
    let mut conn = Conn::open(&addr);
    conn.request("POST", "/todos", "milk").unwrap();
    let output = run(&["reload", "--control", &socket, TODO_V2], "");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("state v1 → v2"));
    // The same connection, now answered by v2 with migrated records.
    assert_eq!(
        conn.request("POST", "/todos/1/done", "").unwrap().status,
        200
    );
    let list = conn.request("GET", "/todos", "").unwrap();
    assert_eq!(list.body, "[x] milk\n");
    assert_eq!(list.header("x-app-version"), Some("todo-v2"));
    // A module that does not serve HTTP is refused while serving HTTP.
    let output = run(&["reload", "--control", &socket, COUNTER_WAT], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("does not serve HTTP"),
        "{}",
        stderr(&output)
    );
    host.kill();
}

/// The swaps' bookkeeping, shared by the load threads.
struct Swaps {
    /// Swaps acknowledged so far.
    acked: AtomicU64,
    /// Whether a reload is between its request and its acknowledgement.
    in_flight: AtomicBool,
}

/// The version that serves after `acked` swaps: v2 first, then alternating.
fn version_after(acked: u64) -> &'static str {
    if acked.is_multiple_of(2) {
        "todo-v2"
    } else {
        "todo-v3"
    }
}

#[test]
fn zero_downtime_across_100_swaps_under_load() {
    const SWAPS: u64 = 100;
    const THREADS: usize = 4;
    const MAX_REQUESTS_PER_THREAD: usize = 200_000;
    const TIME_CAP: Duration = Duration::from_secs(120);

    let dir = tempfile::tempdir().unwrap();
    let (host, addr, socket) = Running::serving(TODO_V2, &dir, &[]);
    let swaps = Arc::new(Swaps {
        acked: AtomicU64::new(0),
        in_flight: AtomicBool::new(false),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();

    let clients: Vec<_> = (0..THREADS)
        .map(|_| {
            let (addr, swaps, stop, failures) =
                (addr.clone(), swaps.clone(), stop.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                let mut ok = 0u64;
                for _ in 0..MAX_REQUESTS_PER_THREAD {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > TIME_CAP {
                        break;
                    }
                    let (before, in_flight_before) = (
                        swaps.acked.load(Ordering::SeqCst),
                        swaps.in_flight.load(Ordering::SeqCst),
                    );
                    let reply = match conn.request("POST", "/hit", "") {
                        Ok(reply) => reply,
                        Err(e) => {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("request failed: {e}"));
                            break;
                        }
                    };
                    let (after, in_flight_after) = (
                        swaps.acked.load(Ordering::SeqCst),
                        swaps.in_flight.load(Ordering::SeqCst),
                    );
                    let version = reply.header("x-app-version").unwrap_or("none").to_owned();
                    let problem = if reply.status != 200 {
                        Some(format!("status {}: {}", reply.status, reply.body))
                    } else if !reply.body.starts_with(&format!("{version} hits=")) {
                        Some(format!("header says {version}, body says {:?}", reply.body))
                    } else if before == after
                        && !in_flight_before
                        && !in_flight_after
                        && version != version_after(before)
                    {
                        // No swap was in progress: only the acknowledged version may answer.
                        Some(format!(
                            "{version} answered after swap {before} was acknowledged"
                        ))
                    } else {
                        None
                    };
                    match problem {
                        Some(problem) => failures.lock().unwrap().push(problem),
                        None => ok += 1,
                    }
                }
                ok
            })
        })
        .collect();

    for i in 0..SWAPS {
        let next = if i % 2 == 0 { TODO_V3 } else { TODO_V2 };
        swaps.in_flight.store(true, Ordering::SeqCst);
        let output = run(&["reload", "--control", &socket, next], "");
        assert!(output.status.success(), "swap {i}: {}", stderr(&output));
        swaps.acked.fetch_add(1, Ordering::SeqCst);
        swaps.in_flight.store(false, Ordering::SeqCst);
    }
    stop.store(true, Ordering::SeqCst);
    let successes: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();

    eprintln!(
        "{successes} requests from {THREADS} keep-alive clients across {SWAPS} swaps in {:?}",
        started.elapsed()
    );
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(successes > 0);
    // No increment was lost across the 100 swaps.
    let status = crate::cli::json(&run(&["status", "--control", &socket, "--json"], ""));
    assert_eq!(status["status"]["swaps"], SWAPS);
    let mut conn = Conn::open(&addr);
    let last = conn.request("POST", "/hit", "").unwrap();
    assert_eq!(
        last.body,
        format!("{} hits={}", version_after(SWAPS), successes + 1)
    );
    host.kill();
}
