//! The `hotswap` command end to end, as a child process: stdin in, stdout out, swaps by writing
//! the watched file, and a clear error with a non-zero exit for every bad input.

use hotswap_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tempfile::TempDir;

/// The `hotswap` command built for the tests (see `tests/src/bin/hotswap-under-test.rs`), or the
/// binary that `HOTSWAP_UNDER_TEST` names: run the tests against an older build to see which
/// fail without a fix.
pub fn hotswap_bin() -> String {
    std::env::var("HOTSWAP_UNDER_TEST")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_hotswap-under-test").to_owned())
}

/// Guards against a hang, not a performance goal.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running `hotswap` with its stdout and stderr read line by line.
pub struct Running {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: mpsc::Receiver<String>,
    pub stderr: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &Path)]) -> Self {
        Self::of(spawn(args, env))
    }

    /// A started `hotswap` (see [`command`]), its stdout and stderr read from now on.
    pub fn of(mut child: Child) -> Self {
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        Running {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// `hotswap run MODULE --control DIR/control.sock EXTRA…`, started by `start` (such as
    /// [`Running::start`]), once its control socket listens; with the socket's path.
    pub fn controlled_by(
        start: impl FnOnce(&[&str]) -> Running,
        module: &str,
        dir: &TempDir,
        extra: &[&str],
    ) -> (Self, String) {
        let socket = control_socket(dir);
        let mut args = vec!["run", module, "--control", &socket];
        args.extend_from_slice(extra);
        let host = start(&args);
        host.log_until("control socket");
        (host, socket)
    }

    /// [`Running::controlled_by`] [`Running::start`].
    pub fn controlled(module: &str, dir: &TempDir, extra: &[&str]) -> (Self, String) {
        Self::controlled_by(Self::start, module, dir, extra)
    }

    /// [`Running::controlled_by`], serving HTTP on a free port of 127.0.0.1: the host, the
    /// address it serves and the control socket.
    pub fn serving_by(
        start: impl FnOnce(&[&str]) -> Running,
        module: &str,
        dir: &TempDir,
        extra: &[&str],
    ) -> (Self, String, String) {
        let mut args = vec!["--http", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let (host, socket) = Self::controlled_by(start, module, dir, &args);
        let line = host.log_until("serving HTTP on http://");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_owned();
        (host, addr, socket)
    }

    /// [`Running::serving_by`] [`Running::start`].
    pub fn serving(module: &str, dir: &TempDir, extra: &[&str]) -> (Self, String, String) {
        Self::serving_by(Self::start, module, dir, extra)
    }

    /// `hotswap run APP --watch EXTRA…`, once it watches.
    pub fn watching(app: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["run", app.to_str().unwrap(), "--watch"];
        args.extend_from_slice(extra);
        let host = Self::start(&args);
        host.log_until("watching");
        host
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("write to hotswap's stdin");
    }

    pub fn reply(&self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .expect("hotswap printed no reply")
    }

    /// Sends a line and returns the reply.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.reply()
    }

    /// Reads stderr until a line contains `needle`; returns that line.
    pub fn log_until(&self, needle: &str) -> String {
        let mut seen = Vec::new();
        loop {
            match self.stderr.recv_timeout(PATIENCE) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "no stderr line contains {needle:?}; saw:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    /// Stops a host that does not stop at the end of stdin (one that serves HTTP).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin and waits for a clean exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.stderr.try_iter().collect();
        assert!(
            status.success(),
            "hotswap exited with {status}:\n{}",
            rest.join("\n")
        );
    }
}

/// A test that fails leaves no host running (one that serves HTTP would not stop by itself).
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `hotswap` with these arguments and its three standard streams piped.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(hotswap_bin());
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts `hotswap` with its three standard streams piped.
pub fn spawn(args: &[&str], env: &[(&str, &Path)]) -> Child {
    command(args)
        .envs(env.iter().copied())
        .spawn()
        .expect("start hotswap")
}

/// Runs `hotswap` to the end with this stdin.
pub fn run(args: &[&str], stdin: &str) -> Output {
    run_with_env(args, stdin, &[])
}

/// [`run`] with extra environment variables.
pub fn run_with_env(args: &[&str], stdin: &str, env: &[(&str, &Path)]) -> Output {
    let mut child = spawn(args, env);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The control socket of a test's host: `control.sock` in `dir`.
pub fn control_socket(dir: &TempDir) -> String {
    dir.path().join("control.sock").to_str().unwrap().to_owned()
}

/// A copy of `module` as `app.wasm` in `dir`, for a host to watch.
pub fn app_copy(dir: &TempDir, module: &str) -> PathBuf {
    let app = dir.path().join("app.wasm");
    std::fs::copy(module, &app).unwrap();
    app
}

/// Replaces `app` with a copy of `module` by an atomic rename, as deployment tools do.
pub fn rename_over(app: &Path, module: &str) {
    let staged = app.with_file_name("staged.wasm");
    std::fs::copy(module, &staged).unwrap();
    std::fs::rename(&staged, app).unwrap();
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn run_swap_by_writing_the_watched_file() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_copy(&dir, COUNTER_V1);
    let mut hotswap = Running::watching(&app, &[]);
    assert_eq!(hotswap.ask("inc"), "counter v1: value=5");
    assert_eq!(hotswap.ask("inc"), "counter v1: value=10");

    std::fs::copy(COUNTER_V2, &app).unwrap();
    let line = hotswap.log_until("swapped");
    assert!(line.starts_with("hotswap: swapped app.wasm@"), "{line}");
    assert!(
        line.contains("state v1 → v1") && line.contains("pause"),
        "{line}"
    );
    assert_eq!(hotswap.ask("inc"), "counter v2: value=11");

    // A broken file is refused with its reason; the app keeps its state and code.
    std::fs::write(&app, b"not wasm").unwrap();
    let line = hotswap.log_until("refused");
    assert!(
        line.contains("not a WebAssembly module") && line.contains("still running app.wasm@"),
        "{line}"
    );
    assert_eq!(hotswap.ask("inc"), "counter v2: value=12");

    // An atomic rename brings v1 back (from the cache).
    rename_over(&app, COUNTER_V1);
    let line = hotswap.log_until("swapped");
    assert!(line.contains("cached"), "{line}");
    assert_eq!(hotswap.ask("get"), "counter v1: value=12");
    hotswap.finish();
}

#[test]
fn a_failed_event_prints_an_error_line_and_the_app_serves_on() {
    let output = run(&["run", PANIC_IN_HANDLER], "inc\npanic\ninc\n");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0], "panic-in-handler: value=1");
    assert!(
        lines[1].starts_with("error: guest panicked: panicked at "),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("the handler panicked on purpose at value 1"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "panic-in-handler: value=2");
    assert!(
        stderr(&output).contains("message failed: guest panicked"),
        "{}",
        stderr(&output)
    );
    assert!(output.status.success());
}

/// The guest's own output (its `println!`, through WASI stdout) goes to stderr, each line marked
/// `guest: `, so that stdout holds exactly one reply per input.
#[test]
fn ticks_reach_the_app_and_guest_output_goes_to_stderr() {
    let mut hotswap = Running::start(&["run", TICKER, "--tick", "5"]);
    hotswap.log_until("guest: ticker: step 3 ball at");
    let reply = hotswap.ask("where");
    let steps: u64 = reply
        .strip_prefix("ticker: the ball is at (")
        .and_then(|r| r.split(" after ").nth(1))
        .and_then(|r| r.strip_suffix(" steps"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {reply:?}"));
    assert!(steps >= 3, "{reply}");
    hotswap.finish();
}

#[test]
fn bad_inputs_exit_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let traps = dir.path().join("traps.wat");
    std::fs::write(
        &traps,
        crate::failures::abi_module(&[(
            "hotswap_start",
            r#"(func (export "hotswap_start") (result i32) unreachable)"#,
        )]),
    )
    .unwrap();
    let cases: [(&str, &str); 4] = [
        (
            "/no/such/app.wasm",
            "cannot read /no/such/app.wasm: No such file or directory",
        ),
        (
            not_wasm.to_str().unwrap(),
            "not a WebAssembly module: it does not start with `\\0asm`",
        ),
        (
            WRONG_ABI_WAT,
            "the module speaks Hotswap ABI version 99; this host speaks version 1",
        ),
        (
            traps.to_str().unwrap(),
            "the app failed to start: guest trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
    ];
    for (module, message) in cases {
        let output = run(&["run", module], "");
        assert_eq!(
            output.status.code(),
            Some(1),
            "{module}: {}",
            stderr(&output)
        );
        let text = stderr(&output);
        assert!(text.starts_with("hotswap: error: "), "{module}: {text}");
        assert!(
            text.contains(message),
            "{module}: expected {message:?} in {text}"
        );
        assert!(!text.contains("panicked"), "{module}: {text}");
        // Each cause is printed once (an error that is both in the message and the source chain
        // would print twice under `{:#}`).
        let cause = message.rsplit(": ").next().unwrap_or(message);
        assert_eq!(text.matches(cause).count(), 1, "{module}: {text}");
        assert_eq!(text.lines().count(), 1, "{module}: one line: {text}");
    }
}

#[test]
fn env_and_dir_flags_reach_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("motd.txt"), "from the host").unwrap();
    let mapping = format!("{}::/data", dir.path().display());
    let output = run(
        &[
            "run",
            WASI_PROBE,
            "--env",
            "GREETING=hi there",
            "--dir",
            &mapping,
        ],
        "env GREETING\nread /data/motd.txt\n",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout, "probe #1: hi there\nprobe #2: from the host\n");
    // A directory that does not exist is a clear error, not a panic.
    let output = run(&["run", WASI_PROBE, "--dir", "/no/such/dir"], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot open --dir /no/such/dir"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_reports_the_versions() {
    let output = run(&["check", KV_V3], "");
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("kv_v3.wasm@") && stdout.contains("ok: Hotswap ABI v1, state v2"),
        "{stdout}"
    );
    let output = run(&["check", WRONG_ABI_WAT], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("fails the check: the module speaks Hotswap ABI version 99"));
}

/// `--compile-cache`: the second host to see a module loads it instead of compiling it; a file
/// others could have written, or that is not compiled code, is passed over and replaced.
#[test]
fn compiled_modules_are_kept_on_disk_for_the_next_host() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let check = || {
        let output = run(&["check", TODO_V2, "--compile-cache", cache_arg], "");
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(check().contains("), compiled,"));
    assert!(check().contains("loaded from the compile cache"));
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&cache), mode(&files[0])), (0o700, 0o600));

    // Writable by others: not trusted.
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(check().contains("), compiled,"));
    assert_eq!(mode(&files[0]), 0o600, "replaced by a fresh file");
    // Not compiled code: wasmtime refuses it.
    std::fs::write(&files[0], b"not compiled code").unwrap();
    assert!(check().contains("), compiled,"));
    assert!(check().contains("loaded from the compile cache"));
    // Another module's compiled code under this module's name: its trailer says so.
    let output = run(&["check", KV_V1, "--compile-cache", cache_arg], "");
    assert!(output.status.success(), "{}", stderr(&output));
    let other = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path());
    let other = other.filter(|p| *p != files[0]).collect::<Vec<_>>();
    assert_eq!(other.len(), 1, "{other:?}");
    std::fs::copy(&other[0], &files[0]).unwrap();
    assert!(check().contains("), compiled,"));
    assert!(check().contains("loaded from the compile cache"));
    // And none at all.
    let output = run(&["check", TODO_V2, "--no-compile-cache"], "");
    assert!(String::from_utf8_lossy(&output.stdout).contains("), compiled,"));
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["run"][..],
        &["run", COUNTER_V1, "--tick", "0"],
        &["run", COUNTER_V1, "--tick", "soon"],
        &["run", COUNTER_V1, "--env", "=x"],
        &["run", COUNTER_V1, "--dir", "::guest"],
        &["run", COUNTER_V1, "--max-memory", "5000"],
        &["run", COUNTER_V1, "--debounce", "10"],
        &["frobnicate"],
    ] {
        let output = run(args, "");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("error:"), "{args:?}");
    }
}

#[test]
fn help_explains_the_commands() {
    let output = run(&["--help"], "");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("replace its code while it runs")
            && text.contains("run")
            && text.contains("check"),
        "{text}"
    );
    let output = run(&["run", "--help"], "");
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--watch",
        "--tick <MS>",
        "--dir <HOST[::GUEST]>",
        "--env <KEY=VALUE>",
        "--timeout <MS>",
        "--max-memory <MIB>",
    ] {
        assert!(text.contains(flag), "run --help lacks {flag}:\n{text}");
    }
}

/// The answer `hotswap ... --json` printed.
pub fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

#[test]
fn reload_status_and_state_over_the_control_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut hotswap, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    let socket = socket.as_str();
    let mode = std::fs::metadata(socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is owner-only");
    assert_eq!(hotswap.ask("inc"), "counter v1: value=5");

    let output = run(&["reload", "--control", socket, COUNTER_V2], "");
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8_lossy(&output.stdout);
    assert!(
        line.starts_with("swapped counter_v1.wasm@") && line.contains("→ counter_v2.wasm@"),
        "{line}"
    );
    assert_eq!(hotswap.ask("inc"), "counter v2: value=6");

    // A refused reload exits 1 with the reason; the app keeps running v2 with its state.
    let output = run(&["reload", "--control", socket, WRONG_ABI_WAT], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("refused: the module speaks Hotswap ABI version 99"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("still running counter_v2.wasm@"),
        "{}",
        stderr(&output)
    );

    let status = json(&run(&["status", "--control", socket, "--json"], ""));
    let status = &status["status"];
    assert_eq!(status["swaps"], 1);
    assert_eq!(status["refused"], 1);
    assert_eq!(status["events"], 2);
    assert_eq!(status["state_version"], 1);
    assert_eq!(status["name"], "counter_v2.wasm");
    assert!(
        status["module"]
            .as_str()
            .unwrap()
            .ends_with("counter_v2.wasm"),
        "{status}"
    );
    assert!(status["last_pause_us"].as_f64().unwrap() > 0.0);

    let state = json(&run(&["state", "--control", socket, "--json"], ""));
    assert_eq!(state["state"]["value"], serde_json::json!({ "value": 6 }));
    let output = run(&["state", "--control", socket], "");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "{\n  \"value\": 6\n}\n"
    );

    hotswap.finish();
    assert!(
        !Path::new(socket).exists(),
        "the socket is removed when the host stops"
    );
}

#[test]
fn a_live_control_socket_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let (hotswap, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    let socket = socket.as_str();
    let output = run(&["run", COUNTER_V2, "--control", socket], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("another hotswap is listening on the control socket"),
        "{}",
        stderr(&output)
    );
    // The first host is unaffected.
    let status = json(&run(&["status", "--control", socket, "--json"], ""));
    assert_eq!(status["status"]["name"], "counter_v1.wasm");
    hotswap.finish();
}

#[test]
fn clients_find_the_one_running_host() {
    let runtime_dir = tempfile::tempdir().unwrap();
    let env = [("XDG_RUNTIME_DIR", runtime_dir.path())];
    let output = run_with_env(&["status"], "", &env);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no running hotswap has a control socket in"),
        "{}",
        stderr(&output)
    );

    let first = Running::start_with_env(&["run", COUNTER_V1], &env);
    first.log_until("control socket");
    let output = run_with_env(&["status"], "", &env);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("running counter_v1.wasm@"));

    let second = Running::start_with_env(&["run", COUNTER_V2], &env);
    second.log_until("control socket");
    let output = run_with_env(&["status"], "", &env);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("several hotswap hosts are running: pick one with --control"),
        "{}",
        stderr(&output)
    );
    first.finish();
    second.finish();
}

#[test]
fn control_errors_are_clear() {
    let output = run(&["status", "--control", "/no/such/control.sock"], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot reach a running hotswap on /no/such/control.sock"),
        "{}",
        stderr(&output)
    );

    let dir = tempfile::tempdir().unwrap();
    let (hotswap, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream.write_all(b"{\"op\": \"fly\"}\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("not a valid request"),
        "{answer}"
    );
    let output = run(&["reload", "--control", &socket, "/no/such/v2.wasm"], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot read /no/such/v2.wasm"),
        "{}",
        stderr(&output)
    );
    hotswap.finish();
}
