//! The host against hostile clients and careless operators, end to end: the real `hotswap`
//! command as a child process, real sockets on 127.0.0.1, real files, FIFOs and symlinks, real
//! signals and resource limits. Every wait is bounded by [`PATIENCE`]; no test asserts speed.

use crate::cli::{PATIENCE, Running, app_copy, command, control_socket, json, rename_over, stderr};
use hotswap_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A limit set on the host before it starts (resource limits: soft and hard).
#[derive(Clone, Copy)]
enum Rlimit {
    /// `RLIMIT_NOFILE`: open file descriptors.
    Files(u64),
    /// `RLIMIT_DATA`: heap, in bytes (so that a build that reads an endless file fails fast
    /// instead of taking the machine's memory).
    Data(u64),
    /// Every thread on the first CPU the test may use: a thread woken by another then mostly
    /// waits until that one blocks or exits, which makes an exit race repeatable.
    OneCpu(usize),
}

/// Starts `hotswap` with its three standard streams piped and these resource limits.
fn start(args: &[&str], rlimits: &[Rlimit]) -> Running {
    use std::os::unix::process::CommandExt as _;
    let mut command = command(args);
    let rlimits = rlimits.to_vec();
    // SAFETY: between fork and exec the closure only calls setrlimit and sched_setaffinity
    // (async-signal-safe) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for limit in &rlimits {
                let (resource, value) = match *limit {
                    Rlimit::Files(n) => (libc::RLIMIT_NOFILE, n),
                    Rlimit::Data(n) => (libc::RLIMIT_DATA, n),
                    Rlimit::OneCpu(cpu) => {
                        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
                        libc::CPU_SET(cpu, &mut set);
                        if libc::sched_setaffinity(0, size_of_val(&set), &set) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        continue;
                    }
                };
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Running::of(command.spawn().expect("start hotswap"))
}

/// [`Running::serving`] with these resource limits.
fn serve(
    module: &str,
    dir: &TempDir,
    extra: &[&str],
    rlimits: &[Rlimit],
) -> (Running, String, String) {
    Running::serving_by(|args| start(args, rlimits), module, dir, extra)
}

/// [`Running::controlled`] with these resource limits.
fn controlled(
    module: &str,
    dir: &TempDir,
    extra: &[&str],
    rlimits: &[Rlimit],
) -> (Running, String) {
    Running::controlled_by(|args| start(args, rlimits), module, dir, extra)
}

/// Runs a `hotswap` client command to its end with this stdin; panics if it takes longer than
/// [`PATIENCE`] (it is killed then).
pub(crate) fn client(args: &[&str], input: &[u8]) -> Output {
    client_to(args, input, Stdio::piped())
}

/// [`client`] with its stdout sent to `stdout`.
fn client_to(args: &[&str], input: &[u8], stdout: Stdio) -> Output {
    let mut child = command(args).stdout(stdout).spawn().expect("start hotswap");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("`hotswap {}` did not finish: killed", args.join(" "));
        }
    }
}

/// `hotswap COMMAND --control SOCKET --json`'s answer.
pub(crate) fn control_json(command: &str, socket: &str) -> serde_json::Value {
    json(&client(&[command, "--control", socket, "--json"], b""))
}

/// Waits for the host to exit; kills it and panics if it does not within [`PATIENCE`].
pub(crate) fn exit_of(host: &mut Running) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = host.child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = host.child.kill();
            let _ = host.child.wait();
            let log: Vec<String> = host.stderr.try_iter().collect();
            panic!(
                "the host did not exit: killed; its log:\n{}",
                log.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first CPU this process may run on.
fn first_cpu() -> usize {
    // SAFETY: sched_getaffinity writes into the set it is given, of the size given.
    unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size_of_val(&set), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .expect("a CPU")
    }
}

pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a process id this test started.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

/// The number of threads of a process (`Threads:` in /proc/PID/status).
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads: line")
}

/// The CPU time a process has used, user and system (utime + stime in /proc/PID/stat).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (in parentheses): the third field, `state`, first.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// Checks that a host whose descriptors are exhausted does not spin: the CPU time it uses
/// over 2 s is a spin check with a wide margin.
fn assert_no_spin(pid: u32) {
    let (cpu_before, started) = (cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (cpu, wall) = (cpu_time(pid) - cpu_before, started.elapsed());
    assert!(
        cpu < Duration::from_millis(500),
        "the host used {cpu:?} of CPU in {wall:?} with its descriptors exhausted: a spin"
    );
}

/// Whether the host closed the connection: reads until the end of the stream, feeding it
/// `feed` (when given) every 50 ms meanwhile; panics if it is still open after [`PATIENCE`].
fn wait_closed(stream: &mut TcpStream, feed: Option<&[u8]>) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0; 4096];
    while Instant::now() < deadline {
        if let Some(bytes) = feed
            && stream.write_all(bytes).is_err()
        {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    panic!("the host kept the connection open");
}

/// Sends one raw request line on the control socket and returns the host's answer.
fn control_raw(socket: &str, request: &serde_json::Value) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).expect("connect to the control socket");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    writeln!(stream, "{request}").unwrap();
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .expect("the host answers the control request");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt as _;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
}

fn assert_fails_with(output: &Output, needle: &str) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
}

// 1. Running out of file descriptors.

/// Opens `n` connections and leaves them idle (without a byte sent).
fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect (the kernel's backlog takes it)"))
        .collect()
}

/// With `--max-connections` above what the descriptor limit allows, idle clients exhaust the
/// host's descriptors: both accept loops back off instead of spinning (the host's CPU time over
/// 2 s of exhaustion is a spin check with a wide margin), and once the idle clients leave, a new
/// client is served and the control socket answers.
#[test]
fn out_of_descriptors_the_accept_loops_back_off_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let limits = [Rlimit::Files(64)];
    let (host, addr, socket) = serve(TODO_V2, &dir, &["--max-connections", "1000"], &limits);
    let idle = idle_connections(&addr, 80);
    let line = host.log_until("cannot accept an HTTP connection");
    assert!(line.contains("Too many open files"), "{line}");
    // A control client waits in the control socket's backlog too, while descriptors are out.
    let waiting_control = UnixStream::connect(&socket).unwrap();
    assert_no_spin(host.child.id());
    drop(idle);
    drop(waiting_control);
    let mut conn = Conn::open(&addr);
    let reply = conn.request("POST", "/todos", "milk").unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (201, "added #1\n"));
    let status = control_json("status", &socket);
    assert_eq!(status["status"]["events"], 1);
    host.kill();
}

/// The number of open file descriptors of a process.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Idle control clients can exhaust the descriptors of a host without HTTP: its control accept
/// loop then backs off instead of spinning, and resumes once they leave.
#[test]
fn out_of_descriptors_the_control_socket_backs_off_and_resumes() {
    const FILES: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let (host, socket) = controlled(COUNTER_V1, &dir, &[], &[Rlimit::Files(FILES as u64)]);
    let pid = host.child.id();
    // Fewer than 16 (the cap on control connections) take every descriptor; the rest wait in
    // the backlog.
    let idle: Vec<UnixStream> = (0..FILES)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while open_files(pid) < FILES {
        assert!(
            Instant::now() < deadline,
            "the host did not take the connections"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_no_spin(pid);
    drop(idle);
    let status = control_json("status", &socket);
    assert_eq!(status["status"]["events"], 0);
    host.finish();
}

/// By default the host takes at most half its descriptor limit in connections: the rest wait
/// in the backlog, the control socket keeps answering meanwhile, and once the idle clients
/// leave, the waiting ones and a new one are served.
#[test]
fn the_default_connection_cap_keeps_descriptors_in_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let (host, addr, socket) = serve(TODO_V2, &dir, &[], &[Rlimit::Files(64)]);
    let idle = idle_connections(&addr, 60);
    let line = host.log_until("connections open, the --max-connections limit");
    assert!(
        line.starts_with("hotswap: HTTP: 32 connections open"),
        "{line}"
    );
    let status = control_json("status", &socket);
    assert_eq!(status["status"]["http_connections"], 32);
    drop(idle);
    let mut conn = Conn::open(&addr);
    assert_eq!(conn.request("POST", "/todos", "milk").unwrap().status, 201);
    let status = control_json("status", &socket);
    assert_eq!(status["status"]["events"], 1);
    let log = stop_and_read_log(host);
    assert!(
        !log.contains("cannot accept"),
        "the cap left no descriptors:\n{log}"
    );
}

/// Kills the host; returns what it logged that no test has read yet.
fn stop_and_read_log(mut host: Running) -> String {
    let _ = host.child.kill();
    let _ = host.child.wait();
    // The reader ends at the end of the pipe.
    host.stderr.iter().collect::<Vec<_>>().join("\n")
}

// 2. Clients that hold a connection without using it.

/// A header sent one byte at a time is cut off after `--header-timeout`, an idle kept-alive
/// connection after `--idle-timeout`, and a body that never ends (chunked, or shorter than its
/// Content-Length) is answered 408 after `--body-timeout`.
#[test]
fn slow_and_idle_clients_are_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--header-timeout",
        "300",
        "--idle-timeout",
        "300",
        "--body-timeout",
        "300",
    ];
    let (host, addr, _) = serve(TODO_V2, &dir, &flags, &[]);

    // Slowloris: a header that never ends, one byte every 50 ms.
    let mut slow = Conn::open(&addr);
    let stream = slow.stream();
    stream
        .write_all(b"GET /todos HTTP/1.1\r\nhost: test\r\nx-slow: ")
        .unwrap();
    wait_closed(stream, Some(b"a"));

    // Idle between two requests.
    let mut idle = Conn::open(&addr);
    assert_eq!(idle.request("POST", "/todos", "milk").unwrap().status, 201);
    wait_closed(idle.stream(), None);

    // A chunked body that trickles on without end.
    let mut chunked = Conn::open(&addr);
    chunked
        .stream()
        .write_all(b"POST /todos HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    let mut trickle = chunked.stream().try_clone().unwrap();
    let answered = Arc::new(AtomicBool::new(false));
    let writer = {
        let answered = answered.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while !answered.load(Ordering::SeqCst) && Instant::now() < deadline {
                if trickle.write_all(b"1\r\na\r\n").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let reply = chunked.reply().unwrap().expect("an answer");
    answered.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(reply.status, 408, "{}", reply.body);

    // A Content-Length with no body after it.
    let mut short = Conn::open(&addr);
    short
        .stream()
        .write_all(b"POST /todos HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\n")
        .unwrap();
    let reply = short.reply().unwrap().expect("an answer");
    assert_eq!(reply.status, 408, "{}", reply.body);
    assert_eq!(reply.body, "the request body did not arrive within 0.3 s");

    // Only the first request reached the app.
    let mut conn = Conn::open(&addr);
    assert_eq!(
        conn.request("GET", "/todos", "").unwrap().body,
        "[ ] milk\n"
    );
    host.kill();
}

/// A Content-Length over `--max-body` is answered 413 at once, before any of the body is sent
/// (with the default limits: the body timeout, 30 s, would answer 408 instead).
#[test]
fn an_announced_body_over_the_limit_gets_413_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (host, addr, _) = serve(TODO_V2, &dir, &[], &[]);
    let mut huge = Conn::open(&addr);
    huge.stream()
        .write_all(b"POST /todos HTTP/1.1\r\nhost: test\r\ncontent-length: 10000000000\r\n\r\n")
        .unwrap();
    let reply = huge.reply().unwrap().expect("an answer");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (413, "request body over the 1048576-byte limit")
    );
    host.kill();
}

// 3. The control socket.

/// Idle control connections (connected, nothing sent) take at most 16 threads; the rest, and
/// any request while 16 are held, are answered "busy" at once instead of waiting; once the
/// idle clients leave, `hotswap status` answers again.
#[test]
fn idle_control_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (host, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    let status = client(&["status", "--control", &socket], b"");
    assert!(status.status.success(), "{}", stderr(&status));
    let pid = host.child.id();
    let before = threads(pid);

    let idle: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    // The host takes connections in order: this one comes after the 40.
    let busy = client(&["status", "--control", &socket], b"");
    let during = threads(pid);
    assert!(
        during <= before + 16,
        "40 idle control connections took the host from {before} to {during} threads"
    );
    assert_fails_with(&busy, "busy: 16 control connections are open already");
    for mut stream in idle.iter().skip(16) {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("busy"), "{answer:?}");
    }

    drop(idle);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = client(&["status", "--control", &socket], b"");
        if status.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&status));
        std::thread::sleep(Duration::from_millis(50));
    }
    host.finish();
}

// 4. Stopping: signals and `hotswap stop`.

/// How a test stops the host.
#[derive(Clone, Copy, Debug)]
enum Stopper {
    Signal(libc::c_int),
    StopCommand,
}

/// What a keep-alive client saw until the host closed its connection.
struct Load {
    /// Requests answered in full.
    answered: u64,
    /// Problems: partial answers, wrong ones.
    problems: Vec<String>,
}

/// Sends `POST /hit` on one kept-alive connection until the host closes it, counting
/// `progress` up with each answer.
fn keep_hitting(addr: &str, progress: Arc<AtomicU64>) -> Load {
    let mut conn = Conn::open(addr);
    let mut load = Load {
        answered: 0,
        problems: Vec::new(),
    };
    loop {
        if conn.send("POST", "/hit", "").is_err() {
            break;
        }
        match conn.reply() {
            Ok(None) => break,
            Ok(Some(reply)) => {
                load.answered += 1;
                progress.store(load.answered, Ordering::SeqCst);
                let expected = format!("todo-v2 hits={}", load.answered);
                if (reply.status, reply.body.as_str()) != (200, expected.as_str()) {
                    load.problems.push(format!(
                        "{}: {:?}, expected {expected:?}",
                        reply.status, reply.body
                    ));
                }
            }
            Err(e) => {
                load.problems.push(e.to_string());
                break;
            }
        }
    }
    load
}

/// Stops a host that serves a stream of kept-alive requests: every request answered is
/// answered in full, the host exits 0 and removes its control socket.
fn stop_under_load(stopper: Stopper) {
    let dir = tempfile::tempdir().unwrap();
    let (mut host, addr, socket) = serve(TODO_V2, &dir, &[], &[]);
    let progress = Arc::new(AtomicU64::new(0));
    let load = {
        let (addr, progress) = (addr.clone(), progress.clone());
        std::thread::spawn(move || keep_hitting(&addr, progress))
    };
    let deadline = Instant::now() + PATIENCE;
    while progress.load(Ordering::SeqCst) < 50 {
        assert!(Instant::now() < deadline, "the load made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopped = match stopper {
        Stopper::Signal(signo) => {
            signal(host.child.id(), signo);
            None
        }
        Stopper::StopCommand => Some(client(&["stop", "--control", &socket], b"")),
    };
    let status = exit_of(&mut host);
    let load = load.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stopper:?}: {status}");
    assert!(
        load.problems.is_empty(),
        "{stopper:?}: {} answered, then {:?}",
        load.answered,
        load.problems
    );
    assert!(!Path::new(&socket).exists(), "the control socket is left");
    if let Some(output) = stopped {
        assert!(output.status.success(), "{}", stderr(&output));
        let events = load.answered;
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("stopped after {events} events\n")
        );
    }
}

#[test]
fn sigterm_stops_gracefully_under_load() {
    stop_under_load(Stopper::Signal(libc::SIGTERM));
}

#[test]
fn sigint_stops_gracefully_under_load() {
    stop_under_load(Stopper::Signal(libc::SIGINT));
}

#[test]
fn hotswap_stop_stops_gracefully_under_load() {
    stop_under_load(Stopper::StopCommand);
}

/// The host's thread with this name (as /proc shows it: 15 bytes at most), waited for.
fn thread_named(pid: u32, name: &str) -> libc::pid_t {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == name {
                return task.file_name().to_str().unwrap().parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no thread {name}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `hotswap stop` gets its answer: the host does not exit before the control thread that
/// waits for the stop has written it. The race is made repeatable: the host runs on one CPU,
/// and its control threads at idle priority (those that serve connections inherit it from the
/// one that accepts them), so they run only once the main thread blocks, or never if it exits.
#[test]
fn hotswap_stop_answers_before_the_host_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut host, socket) = controlled(COUNTER_V1, &dir, &[], &[Rlimit::OneCpu(first_cpu())]);
    let control = thread_named(host.child.id(), "hotswap-control");
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call on a thread of a process this test started, with a valid param.
    let set = unsafe { libc::sched_setscheduler(control, libc::SCHED_IDLE, &idle) };
    assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    let output = client(&["stop", "--control", &socket], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "stopped after 1 events\n"
    );
    assert_eq!(exit_of(&mut host).code(), Some(0));
    assert!(!Path::new(&socket).exists(), "the control socket is left");
}

/// While a graceful stop waits for a request in flight (here, one whose body never comes), a
/// second signal exits at once with 128 + the signal's number, and removes the socket.
#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let long = ["--drain-timeout", "600000", "--body-timeout", "600000"];
    let (mut host, addr, socket) = serve(TODO_V2, &dir, &long, &[]);
    let mut conn = Conn::open(&addr);
    assert_eq!(conn.request("POST", "/hit", "").unwrap().status, 200);
    conn.stream()
        .write_all(b"POST /todos HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\n")
        .unwrap();
    // Not a speed assumption: the request only has to be read before the signal, and the test
    // checks below that the first signal left the host waiting for it.
    std::thread::sleep(Duration::from_millis(300));
    let pid = host.child.id();
    signal(pid, libc::SIGINT);
    host.log_until("SIGINT received: stopping");
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the first signal did not wait for the request in flight"
    );
    signal(pid, libc::SIGTERM);
    let status = exit_of(&mut host);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
    host.log_until("second SIGTERM: exiting at once");
    assert!(!Path::new(&socket).exists(), "the control socket is left");
}

/// Without HTTP, SIGTERM stops the host even though its stdin is still open.
#[test]
fn sigterm_without_http_exits_0_with_stdin_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut host, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    signal(host.child.id(), libc::SIGTERM);
    let status = exit_of(&mut host);
    assert_eq!(status.code(), Some(0), "{status}");
    let line = host.log_until("stopped after");
    assert!(
        line.contains("SIGTERM received; stopped after 1 events"),
        "{line}"
    );
    assert!(!Path::new(&socket).exists(), "the control socket is left");
    drop(host.stdin.take());
}

// 5. A control path that names a file.

/// `--control` naming a regular file (or a symlink to one) is refused, and the file is left as
/// it was.
#[test]
fn a_control_path_naming_a_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "do not delete me").unwrap();
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&notes, &link).unwrap();
    for path in [&notes, &link] {
        let output = client(
            &["run", COUNTER_V1, "--control", path.to_str().unwrap()],
            b"inc\n",
        );
        assert_fails_with(
            &output,
            &format!(
                "--control {} names an existing file that is not a socket",
                path.display()
            ),
        );
        assert_eq!(std::fs::read_to_string(path).unwrap(), "do not delete me");
    }
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
}

// 6. Paths that are not module files.

const FIFO_REFUSED: &str = "is a FIFO (named pipe): a module must be a regular file";

/// `hotswap run` and `hotswap check` of a FIFO are refused without waiting for a writer.
#[test]
fn a_fifo_is_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("app.wasm");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    assert_fails_with(&client(&["run", fifo], b""), FIFO_REFUSED);
    assert_fails_with(&client(&["check", fifo], b""), FIFO_REFUSED);
}

/// A reload of a FIFO or a device is refused without reading it: by the host, when a request
/// names the path, and by `hotswap reload`, which reads what it sends. The app serves on.
#[test]
fn a_reload_of_a_fifo_or_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The heap limit turns a build that reads /dev/zero to the end into a quick failure.
    let (mut host, socket) = controlled(COUNTER_V1, &dir, &[], &[Rlimit::Data(1 << 30)]);
    let fifo = dir.path().join("v2.wasm");
    mkfifo(&fifo);
    for (module, refused) in [
        (fifo.to_str().unwrap(), FIFO_REFUSED),
        (
            "/dev/zero",
            "is a character device: a module must be a regular file",
        ),
    ] {
        let request = serde_json::json!({ "op": "reload", "module": module });
        let answer = control_raw(&socket, &request);
        assert_eq!(answer["ok"], false, "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(refused), "{message}");
        assert!(
            message.contains("still running counter_v1.wasm@"),
            "{message}"
        );
    }
    let output = client(&["reload", "--control", &socket, "/dev/zero"], b"");
    assert_fails_with(
        &output,
        "/dev/zero is a character device: a module must be a regular file or a pipe",
    );
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    host.finish();
}

/// A FIFO put where the watched module was is refused with a message, and the watcher goes on
/// to the next version.
#[test]
fn a_fifo_in_place_of_the_watched_module_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_copy(&dir, COUNTER_V1);
    let mut host = Running::watching(&app, &[]);
    std::fs::remove_file(&app).unwrap();
    mkfifo(&app);
    let line = host.log_until("FIFO");
    assert!(line.contains(FIFO_REFUSED), "{line}");
    std::fs::remove_file(&app).unwrap();
    rename_over(&app, COUNTER_V2);
    host.log_until("swapped");
    assert_eq!(host.ask("inc"), "counter v2: value=1");
    host.finish();
}

/// A module over `--max-module-size` is refused with its size, whether the host reads it from
/// its file or a reload sends it.
#[test]
fn a_module_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.resize(2 << 20, 0);
    std::fs::write(&big, &bytes).unwrap();
    let big = big.to_str().unwrap();
    let over = format!(
        "big.wasm is {} bytes, over the 1048576-byte limit on modules (--max-module-size)",
        2 << 20
    );
    assert_fails_with(&client(&["run", big, "--max-module-size", "1"], b""), &over);

    let (host, socket) = Running::controlled(COUNTER_V1, &dir, &["--max-module-size", "1"]);
    assert_fails_with(&client(&["reload", "--control", &socket, big], b""), &over);
    host.finish();
}

// 7. An app at its memory limit.

/// An app that fills its memory answers 500 with the limit named in the log, and stays
/// inspectable; raising the limit on the running host lets it grow again, a swap carries its
/// state, and no to-do acknowledged with 201 is lost.
#[test]
fn an_app_at_its_memory_limit_can_be_inspected_raised_and_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let (host, addr, socket) = serve(TODO_V2, &dir, &["--max-memory", "16"], &[]);
    let mut conn = Conn::open(&addr);
    let todo = "a".repeat(256 << 10);
    let mut acknowledged = 0;
    let mut refused = false;
    for _ in 0..200 {
        match conn.request("POST", "/todos", &todo).unwrap().status {
            201 => acknowledged += 1,
            500 => {
                refused = true;
                break;
            }
            other => panic!("status {other}"),
        }
    }
    assert!(refused, "16 MiB held {acknowledged} to-dos of 256 KiB");
    let line = host.log_until("HTTP POST /todos failed");
    assert!(
        line.contains("memory limit") && line.contains("hotswap limits --max-memory"),
        "{line}"
    );
    let count =
        |state: &serde_json::Value| state["state"]["value"]["items"].as_array().map(Vec::len);
    let state = control_json("state", &socket);
    assert_eq!(count(&state), Some(acknowledged));

    let output = client(&["limits", "--control", &socket, "--max-memory", "64"], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "limits: --timeout 10000 ms, --max-memory 64 MiB\n"
    );
    assert_eq!(conn.request("POST", "/todos", &todo).unwrap().status, 201);
    acknowledged += 1;
    let output = client(&["reload", "--control", &socket, TODO_V3], b"");
    assert!(output.status.success(), "{}", stderr(&output));
    let version = conn.request("GET", "/version", "").unwrap();
    assert_eq!(version.body, "todo-v3");
    assert_eq!(conn.request("POST", "/todos", &todo).unwrap().status, 201);
    acknowledged += 1;
    let state = control_json("state", &socket);
    assert_eq!(count(&state), Some(acknowledged));
    host.kill();
}

// 8. Symlinked deployments.

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Replaces the symlink `link` (in `dir`) by one to `target`, atomically, as the kubelet and
/// Capistrano do: a new link beside it, renamed over it.
fn switch_symlink(dir: &Path, link: &str, target: &str) {
    let staged = dir.join(format!("{link}_tmp"));
    symlink(target, &staged);
    std::fs::rename(&staged, dir.join(link)).unwrap();
}

/// A Kubernetes ConfigMap volume: `app.wasm -> ..data/app.wasm`, `..data -> ..<timestamp>`;
/// an update writes a new timestamped directory, renames a new `..data` over the old one and
/// removes the old directory. Each update is swapped in.
#[test]
fn a_configmap_update_is_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let version = |stamp: &str, module: &str| {
        std::fs::create_dir(root.join(stamp)).unwrap();
        std::fs::copy(module, root.join(stamp).join("app.wasm")).unwrap();
    };
    version("..2026_01_01_00_00_00.1", COUNTER_V1);
    symlink("..2026_01_01_00_00_00.1", &root.join("..data"));
    symlink("..data/app.wasm", &root.join("app.wasm"));
    let app = root.join("app.wasm");
    let mut host = Running::watching(&app, &[]);
    assert_eq!(host.ask("inc"), "counter v1: value=5");

    let mut old = "..2026_01_01_00_00_00.1";
    for (stamp, module, reply) in [
        ("..2026_01_01_00_05_00.2", COUNTER_V2, "counter v2: value=6"),
        (
            "..2026_01_01_00_10_00.3",
            COUNTER_V1,
            "counter v1: value=11",
        ),
    ] {
        version(stamp, module);
        switch_symlink(root, "..data", stamp);
        std::fs::remove_dir_all(root.join(old)).unwrap();
        old = stamp;
        let line = host.log_until("swapped");
        assert!(line.contains("app.wasm@"), "{line}");
        assert_eq!(host.ask("inc"), reply);
    }
    host.finish();
}

/// A Capistrano-style deploy: the module is watched through `current -> releases/N`, and each
/// switch of `current` to a new release is swapped in.
#[test]
fn a_release_directory_switch_is_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let release = |n: &str, module: &str| {
        let at = root.join("releases").join(n);
        std::fs::create_dir_all(&at).unwrap();
        std::fs::copy(module, at.join("app.wasm")).unwrap();
    };
    release("1", COUNTER_V1);
    symlink("releases/1", &root.join("current"));
    let app = root.join("current").join("app.wasm");
    let mut host = Running::watching(&app, &[]);
    assert_eq!(host.ask("inc"), "counter v1: value=5");
    for (n, module, reply) in [
        ("2", COUNTER_V2, "counter v2: value=6"),
        ("3", COUNTER_V1, "counter v1: value=11"),
    ] {
        release(n, module);
        switch_symlink(root, "current", &format!("releases/{n}"));
        host.log_until("swapped");
        assert_eq!(host.ask("inc"), reply);
    }
    host.finish();
}

// 9. Status after a reload under --watch.

/// A reload under `--watch` changes where the running version came from, not what is watched:
/// status shows both.
#[test]
fn status_shows_the_origin_and_the_watched_path_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_copy(&dir, COUNTER_V1);
    let socket = control_socket(&dir);
    let host = Running::watching(&app, &["--control", &socket]);
    let app = app.to_str().unwrap();
    let output = client(&["reload", "--control", &socket, COUNTER_V2], b"");
    assert!(output.status.success(), "{}", stderr(&output));

    let status = control_json("status", &socket);
    assert_eq!(status["status"]["module"], COUNTER_V2, "{status}");
    assert_eq!(status["status"]["watching"], app, "{status}");
    let output = client(&["status", "--control", &socket], b"");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("from {COUNTER_V2}")) && text.contains(&format!("watching {app}")),
        "{text}"
    );
    host.finish();
}

// 15. Paths from the client.

/// `hotswap reload /dev/stdin` (what `<(cat v2.wasm)` amounts to) sends the bytes the client
/// reads; the host never opens the client's path.
#[test]
fn a_reload_sends_what_the_client_reads_from_its_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (mut host, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    let module = std::fs::read(COUNTER_V2).unwrap();
    let output = client(&["reload", "--control", &socket, "/dev/stdin"], &module);
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8_lossy(&output.stdout);
    assert!(line.starts_with("swapped counter_v1.wasm@"), "{line}");
    assert_eq!(host.ask("inc"), "counter v2: value=1");
    host.finish();
}

// Found while writing these tests.

/// A client whose stdout reader has gone (`hotswap state --json | head -c 100`) stops quietly
/// with exit 0, as ripgrep does, instead of panicking.
#[test]
fn a_client_whose_reader_has_gone_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (host, socket) = Running::controlled(COUNTER_V1, &dir, &[]);
    for command in ["status", "state"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let args = [command, "--control", &socket, "--json"];
        let output = client_to(&args, b"", writer.into());
        assert!(output.status.success(), "{command}: {}", stderr(&output));
        assert_eq!(stderr(&output), "", "{command}");
    }
    host.finish();
}
