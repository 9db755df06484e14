//! 1,000 swaps in one host leave its memory flat: every old instance is dropped whole.
//!
//! Measured in a child process (this test binary, running only `rss_worker`), so that other
//! tests running in parallel threads cannot move the numbers.

use hotswap_tests::*;
use std::process::Command;

/// Generous: a leaked instance of the counter costs over 1 MiB, so 1,000 leaks would be 1 GiB.
const MAX_GROWTH_KIB: u64 = 64 * 1024;

#[test]
fn a_thousand_swaps_leave_memory_flat() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "memory::rss_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the worker");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "worker failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let growth: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rss growth KiB: "))
        .expect("the worker reports its growth")
        .parse()
        .unwrap();
    assert!(
        growth < MAX_GROWTH_KIB,
        "RSS grew by {growth} KiB over 1,000 swaps"
    );
}

#[test]
#[ignore = "run by a_thousand_swaps_leave_memory_flat in a child process"]
fn rss_worker() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    let versions = [COUNTER_V2, COUNTER_V1];
    // Warm up: compile both versions into the cache and reach steady state.
    for i in 0..100 {
        swap(&mut app, versions[i % 2]);
        send(&mut app, "inc");
    }
    settle();
    let before = rss_kib();
    for i in 0..1000 {
        swap(&mut app, versions[i % 2]);
        send(&mut app, "inc");
    }
    settle();
    let after = rss_kib();
    assert_eq!(app.stats().swaps, 1100);
    // 1,100 increments, alternating +1 (v2) and +5 (v1).
    assert_eq!(send(&mut app, "get"), "counter v1: value=3300");
    println!(
        "rss before KiB: {before}\nrss after KiB: {after}\nrss growth KiB: {}",
        after.saturating_sub(before)
    );
}

/// Old instances are dropped on background threads: give the last ones a moment to finish.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(300));
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}
