//! The module watcher on real files: writes in place, atomic renames, remove + create (cargo's
//! way), unchanged rewrites, and a truncated file followed by a good one.

use hotswap::ModuleHash;
use hotswap::watch::{Change, ModuleWatcher, watch};
use hotswap_tests::*;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Guards against a hang, not a performance goal.
const PATIENCE: Duration = Duration::from_secs(30);

struct Watched {
    dir: tempfile::TempDir,
    rx: mpsc::Receiver<Vec<u8>>,
    _watcher: ModuleWatcher,
}

impl Watched {
    /// A directory holding `app.wasm` with `initial`'s content, watched.
    fn new(initial: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.wasm"), initial).unwrap();
        let (tx, rx) = mpsc::channel();
        let watcher = watch(
            &dir.path().join("app.wasm"),
            ModuleHash::of(initial),
            Duration::from_millis(50),
            1 << 30,
            move |change| match change {
                Change::Content(bytes) => tx.send(bytes).unwrap(),
                Change::Error(e) => panic!("watcher error: {e}"),
            },
        )
        .unwrap();
        Watched {
            dir,
            rx,
            _watcher: watcher,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("app.wasm")
    }

    fn next(&self) -> Vec<u8> {
        self.rx
            .recv_timeout(PATIENCE)
            .expect("the watcher saw no change")
    }
}

fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn an_in_place_write_is_seen() {
    let w = Watched::new(&bytes(COUNTER_V1));
    std::fs::write(w.path(), bytes(COUNTER_V2)).unwrap();
    assert!(w.next() == bytes(COUNTER_V2));
    std::fs::copy(COUNTER_V1, w.path()).unwrap();
    assert!(w.next() == bytes(COUNTER_V1));
}

#[test]
fn an_atomic_rename_is_seen_again_and_again() {
    let w = Watched::new(&bytes(COUNTER_V1));
    for version in [COUNTER_V2, COUNTER_V1, COUNTER_V2] {
        let staged = w.dir.path().join("app.wasm.tmp");
        std::fs::copy(version, &staged).unwrap();
        std::fs::rename(&staged, w.path()).unwrap();
        assert!(w.next() == bytes(version));
    }
}

#[test]
fn remove_then_link_is_seen() {
    let w = Watched::new(&bytes(COUNTER_V1));
    let elsewhere = w.dir.path().join("build-output.wasm");
    std::fs::copy(COUNTER_V2, &elsewhere).unwrap();
    std::fs::remove_file(w.path()).unwrap();
    std::fs::hard_link(&elsewhere, w.path()).unwrap();
    assert!(w.next() == bytes(COUNTER_V2));
}

#[test]
fn unchanged_content_is_skipped() {
    let w = Watched::new(&bytes(COUNTER_V1));
    std::fs::write(w.path(), bytes(COUNTER_V1)).unwrap();
    std::fs::write(w.dir.path().join("unrelated.wasm"), b"other file").unwrap();
    std::fs::write(w.path(), bytes(COUNTER_V2)).unwrap();
    // Had the rewrite of v1 (or the other file) been passed on, it would come first.
    assert!(w.next() == bytes(COUNTER_V2));
}

/// A busy neighbour (a log written next to the module, read by `tail -f` or `grep`) must not
/// hold back a new version: the debounce waits for the module file only.
#[test]
fn activity_on_other_files_does_not_delay_a_change() {
    let w = Watched::new(&bytes(COUNTER_V1));
    let log = w.dir.path().join("host.log");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&log, b"a line").unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::fs::write(w.path(), bytes(COUNTER_V2)).unwrap();
    let seen = w.rx.recv_timeout(PATIENCE);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    assert!(seen.expect("the change was held back by the busy neighbour") == bytes(COUNTER_V2));
}

#[test]
fn a_truncated_file_is_refused_and_the_next_write_is_picked_up() {
    let runtime = runtime();
    let mut app = start(&runtime, COUNTER_V1);
    send(&mut app, "inc");
    let w = Watched::new(&bytes(COUNTER_V1));
    let full = bytes(COUNTER_V2);
    std::fs::write(w.path(), &full[..full.len() / 3]).unwrap();
    let seen = w.next();
    let error = runtime
        .prepare("app.wasm", &seen)
        .err()
        .expect("a truncated module is refused");
    assert!(
        error.to_string().starts_with("invalid WebAssembly module"),
        "{error}"
    );
    std::fs::write(w.path(), &full).unwrap();
    let seen = w.next();
    app.swap(runtime.prepare("app.wasm", &seen).unwrap())
        .unwrap();
    assert_eq!(send(&mut app, "inc"), "counter v2: value=6");
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let error = watch(
        Path::new("/no/such/dir/app.wasm"),
        ModuleHash::of(b""),
        Duration::from_millis(50),
        1 << 30,
        |_| {},
    )
    .err()
    .unwrap();
    assert!(
        format!("{error:#}").contains("cannot watch directory /no/such/dir"),
        "{error:#}"
    );
}
