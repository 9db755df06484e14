//! The metrics endpoint (`hotswap run --metrics ADDR`) scraped over a real socket, and the log
//! in JSON (`--log-format json`, `RUST_LOG`).

use crate::cli::{PATIENCE, Running, run_with_env, stderr};
use crate::operators::client;
use hotswap_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A raw HTTP/1.1 request to `addr`: the status line and the body.
fn get(addr: &str, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete answer");
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample named exactly `sample` (with its labels), if scraped.
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `sample` reads `expected` (the actor publishes when its queue runs empty, a
/// moment after the reply), or panics with the last scrape.
fn scrape_until(addr: &str, sample: &str, expected: f64) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, text) = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        if value(&text, sample) == Some(expected) || Instant::now() > deadline {
            assert_eq!(value(&text, sample), Some(expected), "{sample}:\n{text}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_metrics_endpoint_counts_events_swaps_and_fsyncs_in_prometheus_text() {
    let dir = TempDir::new().unwrap();
    let state = dir.path().join("state");
    let extra = ["--metrics", "127.0.0.1:0", "--durable", "--state-dir"];
    let (mut host, socket) = Running::controlled(
        COUNTER_V1,
        &dir,
        &[&extra[..], &[state.to_str().unwrap()]].concat(),
    );
    let line = host.log_until("serving metrics on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics");
    for event in ["inc", "inc", "oops"] {
        host.ask(event);
    }
    let reload = |module: &str, flags: &[&str]| {
        let mut args = vec!["reload", module, "--control", &socket];
        args.extend_from_slice(flags);
        client(&args, b"").status.success()
    };
    assert!(
        !reload(PANICKING_COMMAND, &["--trial", "50"]),
        "\"oops\" is journaled"
    );
    assert!(reload(PANICKING_COMMAND, &[]));
    assert!(
        host.ask("oops").starts_with("error: "),
        "the new version panics"
    );
    assert!(reload(COUNTER_V1, &[]));

    let failed = r#"hotswap_events_total{kind="message",outcome="failed"}"#;
    let text = scrape_until(addr, failed, 1.0);
    let ok = r#"hotswap_events_total{kind="message",outcome="ok"}"#;
    assert_eq!(value(&text, ok), Some(3.0), "{text}");
    let text = scrape_until(addr, r#"hotswap_swaps_total{result="committed"}"#, 2.0);
    assert_eq!(value(&text, failed), Some(1.0), "{text}");
    let refused = r#"hotswap_swaps_total{result="refused"}"#;
    assert_eq!(value(&text, refused), Some(1.0), "{text}");
    let pauses = r#"hotswap_swap_pause_seconds_count{phase="total"}"#;
    assert_eq!(value(&text, pauses), Some(2.0), "{text}");
    // One event in 16 is timed, the first of each 16: of these 4, the first.
    let latency = r#"hotswap_event_duration_seconds_count{kind="message"}"#;
    assert_eq!(value(&text, latency), Some(1.0), "{text}");
    assert!(
        value(&text, "hotswap_journal_fsync_seconds_count").unwrap() >= 4.0,
        "{text}"
    );
    assert!(
        value(&text, "hotswap_memory_bytes").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(value(&text, "hotswap_queue_depth"), Some(0.0), "{text}");
    // Prometheus's conventions: one prefix, counters end in _total, units in the name.
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let [_, _, name, kind] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{line}")
        };
        assert!(name.starts_with("hotswap_"), "{line}");
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{line}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{line}"),
            _ => {}
        }
    }
    promtool_accepts(&text);

    let (status, _) = get(addr, "GET /other HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    // A client that never sends its request does not keep the next scrape out for long.
    let _silent = TcpStream::connect(addr).unwrap();
    scrape_until(addr, "hotswap_queue_depth", 0.0);
    host.finish();
}

/// `promtool check metrics` (Prometheus's own linter) accepts the text, where it is installed
/// (`.ci/run` installs it where it can).
fn promtool_accepts(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("promtool is not installed: the metrics were checked by this test alone");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_log_in_json_is_one_object_per_line_and_rust_log_filters_it() {
    let args = ["run", COUNTER_V1, "--log-format", "json"];
    let output = run_with_env(&args, "inc\nget\n", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = stderr(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let running = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .starts_with("running counter_v1.wasm")
        })
        .expect("the start is logged");
    assert_eq!(running["level"], "INFO");
    assert_eq!(running["target"], "hotswap");
    assert!(running["timestamp"].is_string(), "{running}");

    // RUST_LOG=warn keeps the host's INFO lines out; the replies are unaffected.
    let quiet = std::process::Command::new(crate::cli::hotswap_bin())
        .args(["run", COUNTER_V1])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "", "nothing at INFO");
    // A bad input still says why in one line, whatever the filter.
    let bad = std::process::Command::new(crate::cli::hotswap_bin())
        .args(["run", "/nonexistent.wasm"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).starts_with("hotswap: error: "),
        "{}",
        stderr(&bad)
    );
}
