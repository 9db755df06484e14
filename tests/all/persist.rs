//! State that outlives the process (`--state-dir`, `--durable`): the real `hotswap` as a child
//! process, killed with SIGKILL under load, its files truncated and bit-flipped, restarted on
//! newer and older modules, rolled back. Every wait is bounded by [`PATIENCE`].

use crate::cli::{PATIENCE, Running, control_socket, run, stderr};
use crate::operators::{client, control_json, exit_of};
use hotswap_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tempfile::TempDir;

/// Each test's state directory, beside its control socket.
fn state_dir(dir: &TempDir) -> String {
    dir.path().join("state").to_str().unwrap().to_owned()
}

/// A host and what it logged as it started.
pub(crate) struct Started {
    pub host: Running,
    pub socket: String,
    log: Vec<String>,
}

impl Started {
    /// The line of the start's log that contains `needle`.
    fn said(&self, needle: &str) -> &str {
        self.log
            .iter()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line says {needle:?}: {:#?}", self.log))
    }
}

/// `hotswap run MODULE --state-dir DIR/state --control DIR/control.sock EXTRA…` reading
/// messages on stdin, once its control socket listens.
pub(crate) fn keeping(module: &str, dir: &TempDir, extra: &[&str]) -> Started {
    let (state, socket) = (state_dir(dir), control_socket(dir));
    let mut args = vec!["run", module, "--state-dir", &state, "--control", &socket];
    args.extend_from_slice(extra);
    let host = Running::start(&args);
    let mut log = Vec::new();
    while !log
        .last()
        .is_some_and(|line: &String| line.contains("control socket"))
    {
        match host.stderr.recv_timeout(PATIENCE) {
            Ok(line) => log.push(line),
            Err(_) => panic!("the host did not start: {log:#?}"),
        }
    }
    Started { host, socket, log }
}

/// `hotswap state --json`'s decoded state.
pub(crate) fn state_json(socket: &str) -> serde_json::Value {
    control_json("state", socket)["state"]["value"].clone()
}

/// Stops the host through its control socket and checks it exited cleanly.
pub(crate) fn stop(mut host: Running, socket: &str) {
    drop(host.stdin.take());
    let _ = client(&["stop", "--control", socket], b"");
    let status = exit_of(&mut host);
    assert!(status.success(), "hotswap exited with {status}");
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// The files in `DIR/state/SUB`, oldest name first.
fn listed(dir: &TempDir, sub: &str) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(Path::new(&state_dir(dir)).join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
}

/// The hit count in a `todo` reply (`todo-v2 hits=N`).
fn hits_in(body: &str) -> u64 {
    body.split("hits=")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a hit reply: {body:?}"))
}

/// What clients did before the host was killed: hits sent and hits answered with a 200.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    acked: AtomicU64,
    highest: AtomicU64,
}

/// A client that sends `POST /hit` until the connection fails (the host was killed).
fn hitter(addr: String, load: Arc<Load>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn = Conn::open(&addr);
        loop {
            load.sent.fetch_add(1, Ordering::SeqCst);
            match conn.request("POST", "/hit", "") {
                Ok(reply) if reply.status == 200 => {
                    load.acked.fetch_add(1, Ordering::SeqCst);
                    load.highest
                        .fetch_max(hits_in(&reply.body), Ordering::SeqCst);
                }
                Ok(reply) => panic!("a hit answered {}: {}", reply.status, reply.body),
                Err(_) => return,
            }
        }
    })
}

/// Swaps todo v2 and v3 (same state) back and forth until told to stop or the host is gone.
fn swapper(socket: String, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut swaps = 0;
        for module in [TODO_V3, TODO_V2].iter().cycle() {
            if done.load(Ordering::SeqCst) {
                break;
            }
            let output = client(&["reload", module, "--control", &socket], b"");
            if !output.status.success() {
                break;
            }
            swaps += 1;
        }
        swaps
    })
}

/// A small random number from the clock (the tests print what they drew).
fn draw(below: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % below
}

/// The hit count a restarted host holds: it answers one more hit, counted here too.
fn restored_hits(addr: &str) -> u64 {
    let reply = Conn::open(addr).request("POST", "/hit", "").unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    hits_in(&reply.body) - 1
}

#[test]
fn a_durable_host_killed_under_load_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--durable", "--snapshot-every", "50"];
    let state = state_dir(&dir);
    let (mut sent, mut acked, mut highest) = (0, 0, 0);
    for round in 0..6 {
        let module = [TODO_V2, TODO_V3][round % 2];
        let mut extra = vec!["--state-dir", &state];
        extra.extend_from_slice(&args);
        let (host, addr, socket) = Running::serving(module, &dir, &extra);
        let held = restored_hits(&addr);
        assert!(
            acked <= held && highest <= held && held <= sent,
            "round {round}: restored {held} hits; {acked} were acknowledged (the highest count \
             answered {highest}), {sent} sent"
        );
        // The probe was acknowledged: from here the model is exact again.
        (sent, acked, highest) = (held + 1, held + 1, held + 1);
        let load = Arc::new(Load::default());
        let clients: Vec<_> = (0..4).map(|_| hitter(addr.clone(), load.clone())).collect();
        let done = Arc::new(AtomicBool::new(false));
        let swaps = swapper(socket, done.clone());
        let lifetime = Duration::from_millis(150 + draw(600));
        std::thread::sleep(lifetime);
        host.kill();
        done.store(true, Ordering::SeqCst);
        clients.into_iter().for_each(|c| c.join().unwrap());
        let swaps = swaps.join().unwrap();
        sent += load.sent.load(Ordering::SeqCst);
        acked += load.acked.load(Ordering::SeqCst);
        highest = highest.max(load.highest.load(Ordering::SeqCst));
        eprintln!("round {round}: killed after {lifetime:?}, {swaps} swaps, {acked} acknowledged");
        assert!(
            load.acked.load(Ordering::SeqCst) > 0,
            "round {round}: no hit answered"
        );
    }
    let mut extra = vec!["--state-dir", &state];
    extra.extend_from_slice(&args);
    let (host, addr, socket) = Running::serving(TODO_V2, &dir, &extra);
    let held = restored_hits(&addr);
    assert!(acked <= held && highest <= held && held <= sent);
    stop(host, &socket);
}

#[test]
fn snapshots_alone_lose_nothing_older_than_the_last_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut host, socket, ..
    } = keeping(COUNTER_V1, &dir, &[]);
    for _ in 0..3 {
        host.ask("inc");
    }
    let output = client(&["snapshot", "--control", &socket], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    for _ in 0..2 {
        host.ask("inc");
    }
    host.kill();
    let started = keeping(COUNTER_V1, &dir, &[]);
    started.said("restored counter_v1.wasm");
    let Started {
        mut host, socket, ..
    } = started;
    assert_eq!(host.ask("get"), "counter v1: value=15");
    stop(host, &socket);
}

/// Flips one bit in the middle of a file.
fn flip_bit(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len() as usize;
    flip_bit_at(path, len / 2);
}

/// Flips one bit of the byte at `at`.
fn flip_bit_at(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Cuts the last `n` bytes off a file.
fn cut_end(path: &Path, n: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    cut(path, (len - n) as usize);
}

/// Cuts a file to its first `len` bytes.
fn cut(path: &Path, len: usize) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len as u64).unwrap();
}

/// Overwrites `n` bytes at `at` with zeros.
fn zero(path: &Path, at: usize, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at..at + n].fill(0);
    std::fs::write(path, bytes).unwrap();
}

/// Where a journal segment's last record ends: its records are framed `len: u32, crc: u32,
/// body` after a 12-byte header, and zeros follow them.
fn journal_tail(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 12;
    while let Some(frame) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(frame.try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 8 + len;
    }
    at
}

#[test]
fn a_damaged_snapshot_is_set_aside_and_the_one_before_it_used() {
    for damage in [flip_bit as fn(&Path), |path: &Path| cut_end(path, 7)] {
        let dir = tempfile::tempdir().unwrap();
        let Started {
            mut host, socket, ..
        } = keeping(COUNTER_V1, &dir, &[]);
        for round in 0..2 {
            for _ in 0..3 {
                host.ask("inc");
            }
            let output = client(&["snapshot", "--control", &socket], b"");
            assert!(
                output.status.success(),
                "round {round}: {}",
                stderr(&output)
            );
        }
        host.kill();
        let newest = listed(&dir, "snapshots").pop().unwrap();
        damage(&newest);
        let started = keeping(COUNTER_V1, &dir, &[]);
        let line = started.said("set aside");
        assert!(line.contains("00000000000000000006.snap"), "{line}");
        let line = started.said("restored counter_v1.wasm");
        assert!(line.contains("snapshot at record 3"), "{line}");
        let Started {
            mut host, socket, ..
        } = started;
        assert_eq!(host.ask("get"), "counter v1: value=15");
        assert!(
            !newest.exists(),
            "the damaged snapshot is moved, not left in place"
        );
        let aside = listed(&dir, "quarantine");
        assert_eq!(aside.len(), 1, "{aside:?}");
        stop(host, &socket);
    }
}

#[test]
fn a_torn_journal_tail_is_set_aside_and_the_events_before_it_replayed() {
    // Segments are grown with zeros ahead of the records: the damage goes into the last record.
    for damage in [
        |path: &Path| flip_bit_at(path, journal_tail(path) - 5),
        |path: &Path| cut(path, journal_tail(path) - 3),
        |path: &Path| zero(path, journal_tail(path) - 3, 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let Started {
            mut host,
            socket: _,
            ..
        } = keeping(COUNTER_V1, &dir, &["--durable"]);
        assert_eq!(host.ask("inc"), "counter v1: value=5");
        host.kill();
        let started = keeping(COUNTER_V1, &dir, &["--durable"]);
        started.said("restored counter_v1.wasm");
        let mut host = started.host;
        for value in [10, 15] {
            assert_eq!(host.ask("inc"), format!("counter v1: value={value}"));
        }
        host.kill();
        // The last record is the second `inc` of the second run: as if the host had died
        // while writing it, before it answered. (The second run began with a snapshot of the
        // first run's event, written in the background: it may not have been on disk yet.)
        damage(&listed(&dir, "journal").pop().unwrap());
        let started = keeping(COUNTER_V1, &dir, &["--durable"]);
        started.said("journal");
        let line = started.said("restored counter_v1.wasm");
        assert!(
            line.contains("snapshot at record 1, 1 event and")
                || line.contains("snapshot at record 0, 2 events and"),
            "{line}"
        );
        let Started {
            mut host, socket, ..
        } = started;
        assert_eq!(host.ask("get"), "counter v1: value=10");
        assert_eq!(listed(&dir, "quarantine").len(), 1);
        stop(host, &socket);
    }
}

#[test]
fn a_restore_into_a_newer_module_migrates_and_into_an_older_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut host, socket, ..
    } = keeping(KV_V1, &dir, &["--durable"]);
    assert_eq!(host.ask("set a 1"), "kv v1: ok");
    assert_eq!(host.ask("set b 2"), "kv v1: ok");
    stop(host, &socket);

    let started = keeping(KV_V3, &dir, &["--durable"]);
    started.said("restored kv_v1.wasm");
    let swap = started.said("swapped");
    assert!(swap.contains("state v1 → v2"), "{swap}");
    let Started {
        mut host, socket, ..
    } = started;
    assert_eq!(host.ask("get a"), "kv v3: 1");
    assert_eq!(host.ask("set a 3"), "kv v3: ok");
    stop(host, &socket);

    let before = files(Path::new(&state_dir(&dir)));
    let output = run(&["run", KV_V1, "--state-dir", &state_dir(&dir)], "get a\n");
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        output.stdout.is_empty(),
        "no event ran: {:?}",
        output.stdout
    );
    assert!(log.contains("cannot take the restored state"), "{log}");
    assert!(log.contains("is left as it was"), "{log}");
    assert_eq!(
        files(Path::new(&state_dir(&dir))),
        before,
        "the state dir changed"
    );

    let Started {
        mut host, socket, ..
    } = keeping(KV_V3, &dir, &["--durable"]);
    assert_eq!(host.ask("get a"), "kv v3: 3");
    stop(host, &socket);
}

/// The events of the rollback tests, in order, and where the swap goes.
const BEFORE_SWAP: [&str; 3] = ["set a 1", "set b 2", "del b"];
const AFTER_SWAP: [&str; 4] = ["set a 3", "set c 4", "writes a", "set b 5"];

#[test]
fn a_rollback_equals_running_the_old_code_on_every_event() {
    // kv v2 → v3 migrates (v3 counts writes per key); the rollback goes back to v2 without a
    // down-migration.
    let model_dir = tempfile::tempdir().unwrap();
    let (mut model, model_socket) = Running::controlled(KV_V2, &model_dir, &[]);
    let model_replies: Vec<String> = BEFORE_SWAP
        .iter()
        .chain(&AFTER_SWAP)
        .map(|event| model.ask(event))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut host, socket, ..
    } = keeping(KV_V2, &dir, &["--durable"]);
    for event in BEFORE_SWAP {
        host.ask(event);
    }
    let output = client(&["reload", KV_V3, "--control", &socket], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    for event in AFTER_SWAP {
        host.ask(event);
    }
    let output = client(&["rollback", "--control", &socket], b"");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(said.contains("kv_v2.wasm"), "{said}");
    assert!(said.contains("4 events"), "{said}");
    assert_eq!(state_json(&socket), state_json(&model_socket));
    assert_eq!(host.ask("get b"), model.ask("get b"));
    assert_eq!(model_replies.last().unwrap(), "kv v2: ok");

    // The rollback is journaled: a restart after a kill comes back to the same state.
    host.kill();
    let Started { host, socket, .. } = keeping(KV_V2, &dir, &["--durable"]);
    assert_eq!(state_json(&socket), state_json(&model_socket));
    stop(host, &socket);
    stop(model, &model_socket);
}

#[test]
fn a_rollback_without_a_journal_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut host, socket, ..
    } = keeping(COUNTER_V1, &dir, &[]);
    host.ask("inc");
    let output = client(&["reload", COUNTER_V2, "--control", &socket], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    let output = client(&["rollback", "--control", &socket], b"");
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--durable"), "{}", stderr(&output));
    assert_eq!(host.ask("inc"), "counter v2: value=6");
    stop(host, &socket);
}

#[test]
fn a_graceful_stop_and_start_keeps_the_state_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let Started {
        mut host, socket, ..
    } = keeping(KV_V1, &dir, &["--snapshot-every", "7"]);
    assert!(host.ask("fill 2000").starts_with("kv v1: "));
    for i in 0..20 {
        host.ask(&format!("set key{i} value{i}"));
    }
    let before = client(&["state", "--control", &socket, "--json"], b"");
    assert!(before.status.success());
    stop(host, &socket);

    let started = keeping(KV_V1, &dir, &[]);
    let line = started.said("restored kv_v1.wasm");
    assert!(
        line.contains("0 events"),
        "a graceful stop leaves nothing to replay: {line}"
    );
    let after = client(&["state", "--control", &socket, "--json"], b"");
    assert_eq!(
        String::from_utf8_lossy(&after.stdout),
        String::from_utf8_lossy(&before.stdout)
    );
    stop(started.host, &started.socket);
}

#[test]
fn a_state_dir_that_cannot_be_restored_refuses_the_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let Started { mut host, .. } = keeping(COUNTER_V1, &dir, &[]);
    host.ask("inc");
    host.finish();
    let start = || {
        run(
            &["run", COUNTER_V1, "--state-dir", &state_dir(&dir)],
            "get\n",
        )
    };

    // Written by a newer host: nothing is touched.
    let newest = listed(&dir, "snapshots").pop().unwrap();
    let original = std::fs::read(&newest).unwrap();
    let mut bytes = original.clone();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&newest, &bytes).unwrap();
    let before = files(Path::new(&state_dir(&dir)));
    let output = start();
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("written by a newer hotswap"), "{log}");
    assert_eq!(files(Path::new(&state_dir(&dir))), before);

    // Every snapshot damaged: not a silent fresh start.
    std::fs::write(&newest, &original).unwrap();
    for snapshot in listed(&dir, "snapshots") {
        cut_end(&snapshot, 5);
    }
    let output = start();
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("none of the 2 snapshots"), "{log}");
    assert!(output.stdout.is_empty());
    assert_eq!(listed(&dir, "quarantine").len(), 2);
}

#[test]
fn runs_with_and_without_durable_on_one_state_dir_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let Started { mut host, .. } = keeping(KV_V1, &dir, &["--durable"]);
    for key in ["a", "b", "c"] {
        assert_eq!(host.ask(&format!("set {key} 1")), "kv v1: ok");
    }
    host.kill();
    // Without --durable the record numbers move on with nothing journaled; its graceful stop
    // snapshots them.
    let Started { mut host, .. } = keeping(KV_V1, &dir, &[]);
    for key in ["d", "e"] {
        assert_eq!(host.ask(&format!("set {key} 1")), "kv v1: ok");
    }
    host.finish();
    let Started { mut host, .. } = keeping(KV_V1, &dir, &["--durable"]);
    for key in ["f", "g"] {
        assert_eq!(host.ask(&format!("set {key} 1")), "kv v1: ok");
    }
    host.kill();
    let started = keeping(KV_V1, &dir, &["--durable"]);
    let line = started.said("restored kv_v1.wasm");
    assert!(line.contains("2 events"), "{line}");
    let Started {
        mut host, socket, ..
    } = started;
    assert_eq!(host.ask("count"), "kv v1: 7");
    assert!(listed(&dir, "quarantine").is_empty());
    stop(host, &socket);
}

#[test]
fn swaps_and_snapshots_around_a_rollback_then_a_kill_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reload = |module: &str, socket: &str| {
        let output = client(&["reload", module, "--control", socket], b"");
        assert!(output.status.success(), "{}", stderr(&output));
    };
    let Started {
        mut host, socket, ..
    } = keeping(COUNTER_V1, &dir, &["--durable"]);
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    reload(COUNTER_V2, &socket);
    assert_eq!(host.ask("inc"), "counter v2: value=6");
    // A snapshot newer than the swap: a restore after the rollback starts from it and must
    // still find the swap in the journal.
    let output = client(&["snapshot", "--control", &socket], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    let output = client(&["rollback", "--control", &socket], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(host.ask("get"), "counter v1: value=10");
    host.kill();

    let Started {
        mut host, socket, ..
    } = keeping(COUNTER_V1, &dir, &["--durable"]);
    assert_eq!(host.ask("get"), "counter v1: value=10");
    // A swap after a rollback is journaled like any other.
    let output = client(&["rollback", "--control", &socket], b"");
    assert!(
        !output.status.success(),
        "nothing to roll back after a restart past a rollback"
    );
    reload(COUNTER_V2, &socket);
    assert_eq!(host.ask("inc"), "counter v2: value=11");
    let output = client(&["rollback", "--control", &socket], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    reload(COUNTER_V2, &socket);
    for value in [16, 17] {
        assert_eq!(host.ask("inc"), format!("counter v2: value={value}"));
    }
    host.kill();

    let started = keeping(COUNTER_V2, &dir, &["--durable"]);
    assert!(
        started.log.iter().all(|l| !l.contains("set aside")),
        "{:#?}",
        started.log
    );
    let Started {
        mut host, socket, ..
    } = started;
    assert_eq!(host.ask("get"), "counter v2: value=17");
    assert!(listed(&dir, "quarantine").is_empty());
    stop(host, &socket);
}
