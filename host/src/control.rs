//! The control channel: a Unix socket on which a running `hotswap run` takes requests, the
//! server side that bounds and times out its connections, and the client side used by
//! `hotswap reload|status|state|snapshot|rollback|limits|stop`.
//!
//! Protocol: one request per connection. The client writes one JSON object on one line; for a
//! reload with `"len"`, exactly that many bytes of module follow the line. The host answers with
//! one JSON object on one line and closes the connection.
//!
//! | request | answer (besides `"ok"` and `"message"`) |
//! |---|---|
//! | `{"op": "reload", "module": "/path/v2.wasm", "len": N}` + N bytes | `"swap"`: the swap report, when `"ok"` is true |
//! | `{"op": "reload", "module": "/abs/path.wasm"}` (no `len`: the host reads the file) | the same |
//! | either, with `"plan": {"trial": N, "shadow_ms": MS, "expect_same": true, "keep_shadow_state": true, "canary_ms": MS, "max_errors": K}` (each optional; [`crate::deploy::Plan`]) | answered when the deployment ends: committed (and its canary passed), or refused, or rolled back |
//! | `{"op": "status"}` | `"status"`: module, origin, watched path, hash, state version and size, uptime, counters, limits, last pause |
//! | `{"op": "state"}` | `"state"`: the state version, size, and the state in its readable form ([`crate::state_view`]) |
//! | `{"op": "export"}` | `"state"`: `state_version`, `module` (64 hex digits) and `hex`, the state's bytes as the app exported them (for `hotswap state --save` and `check --against`) |
//! | `{"op": "limits", "timeout_ms": T, "max_memory_mib": M}` (each optional) | `"status"`, with the limits now in force |
//! | `{"op": "stop"}` | answered once the host has stopped gracefully |
//! | `{"op": "snapshot"}` | answered once the snapshot is on disk |
//! | `{"op": "rollback"}` | answered once the rollback is in the journal |
//!
//! `"message"` is the line a person reads: for a reload, the same swap (or refusal) line the
//! host logs. `"ok": false` means the request failed (a reload refused, for instance), and
//! `"message"` says why. The socket is created owner-only (mode 0600, in a directory of mode
//! 0700 when the host creates it). The host serves at most [`MAX_CONNECTIONS`] connections at
//! once (more are answered "busy") and gives each [`REQUEST_TIME`] to send its request.

use crate::text::log;
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest request line the host reads.
const MAX_REQUEST: u64 = 64 * 1024;

/// The most control connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client has to send its whole request (a module's bytes included).
pub const REQUEST_TIME: Duration = Duration::from_secs(30);

/// How long the host waits for a client to take its answer.
const WRITE_TIME: Duration = Duration::from_secs(10);

/// A request to a running host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Swap in this module.
    Reload {
        /// Where the module came from (the client's path, for messages); without `len`, the file
        /// the host reads.
        module: PathBuf,
        /// The module's size, when its bytes follow the request line.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        len: Option<u64>,
        /// How it is deployed: a trial, a shadow run, a canary ([`crate::deploy::Plan`]).
        #[serde(default, skip_serializing_if = "crate::deploy::Plan::is_default")]
        plan: crate::deploy::Plan,
    },
    /// Report the host's status.
    Status,
    /// Report the app's current state.
    State,
    /// The app's state as it exported it, hex-encoded, with its state version and module.
    Export,
    /// Change the limits and report them.
    Limits {
        /// The new call time limit, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// The new memory limit, in MiB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_memory_mib: Option<u64>,
    },
    /// Stop gracefully.
    Stop,
    /// Take a snapshot now.
    Snapshot,
    /// Roll back the last swap.
    Rollback,
}

/// A running host's answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The line a person reads.
    pub message: String,
    /// The swap, for a reload that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<serde_json::Value>,
    /// The status, for `status` and `limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
    /// The state, for `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}

impl Response {
    /// A failed request.
    pub fn failed(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            message: message.into(),
            ..Response::default()
        }
    }
}

/// The directory where hosts put their control sockets by default:
/// `$XDG_RUNTIME_DIR/hotswap`, or `/tmp/hotswap-$UID` without `XDG_RUNTIME_DIR`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("hotswap"),
        _ => {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self")
                .map_or_else(|_| "user".into(), |m| m.uid().to_string());
            PathBuf::from(format!("/tmp/hotswap-{uid}"))
        }
    }
}

/// A host's default control socket: `<default_dir>/<pid>.sock`, so hosts never collide.
pub fn default_path() -> PathBuf {
    default_dir().join(format!("{}.sock", std::process::id()))
}

/// The control socket of the one running host in [`default_dir`]: an error if there is none,
/// or several.
pub fn discover() -> anyhow::Result<PathBuf> {
    let dir = default_dir();
    let mut live = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sock") && UnixStream::connect(&path).is_ok() {
            live.push(path);
        }
    }
    match live.len() {
        0 => anyhow::bail!(
            "no running hotswap has a control socket in {}: is `hotswap run` running?",
            dir.display()
        ),
        1 => Ok(live.remove(0)),
        _ => {
            let list: Vec<String> = live.iter().map(|p| p.display().to_string()).collect();
            anyhow::bail!(
                "several hotswap hosts are running: pick one with --control ({})",
                list.join(", ")
            )
        }
    }
}

/// The control socket this host made: removed when dropped (when the host stops), and only if
/// it is still the socket this host made (not a file someone put there since).
pub struct SocketFile {
    path: PathBuf,
    inode: Option<u64>,
}

impl SocketFile {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket if it is still this host's.
    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && Some(m.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Binds the control socket owner-only. A socket left behind by a host that is gone is
/// replaced; one that a running host answers on is an error, and so is anything that is not a
/// socket (a file at that path is never deleted).
pub fn bind(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!(
                    "cannot create the control socket's directory {}",
                    dir.display()
                )
            })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "--control {} names an existing file that is not a socket: pick another path (it is left alone)",
                path.display()
            );
        }
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another hotswap is listening on the control socket {}: pass --control PATH",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| {
            format!("cannot remove the stale control socket {}", path.display())
        })?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot create the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(|| {
        format!(
            "cannot make the control socket {} owner-only",
            path.display()
        )
    })?;
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::symlink_metadata(path).ok().map(|m| m.ino());
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            inode,
        },
    ))
}

/// What the host does with one request: its bytes (for a reload that sent them) and the answer.
pub type Handler = Arc<dyn Fn(Request, Option<Vec<u8>>) -> Response + Send + Sync>;

/// The requests being handled and answered right now (not the connections that have sent no
/// request yet), so that a stopping host can let the answers it owes reach their clients: that
/// of `hotswap stop` above all, which is sent only once the host has stopped.
#[derive(Clone, Default)]
pub struct Answering(Arc<(Mutex<usize>, Condvar)>);

impl Answering {
    fn begin(&self) -> AnswerGuard {
        *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        AnswerGuard(self.clone())
    }

    /// Waits until every request taken has been answered, at most `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let (count, done) = &*self.0;
        let count = count.lock().unwrap_or_else(|e| e.into_inner());
        let _ = done.wait_timeout_while(count, timeout, |n| *n > 0);
    }
}

/// One request in [`Answering`], until dropped.
struct AnswerGuard(Answering);

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        let (count, done) = &*self.0.0;
        *count.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        done.notify_all();
    }
}

/// Accepts control connections until the process ends, each on its own thread (so a reload
/// that compiles does not hold up a status request), at most [`MAX_CONNECTIONS`] at once.
/// `max_module` bounds the bytes a reload may send; `answering` counts the requests in hand.
pub fn serve(listener: UnixListener, max_module: u64, handler: Handler, answering: Answering) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut last_error: Option<Instant> = None;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning, log once a second.
                if last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
                    log(format_args!("cannot accept a control connection: {e}"));
                    last_error = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(WRITE_TIME));
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::AcqRel);
            let busy = format!("busy: {MAX_CONNECTIONS} control connections are open already");
            let _ = write_response(&stream, &Response::failed(busy));
            continue;
        }
        let (active, handler, answering) = (active.clone(), handler.clone(), answering.clone());
        let spawned = std::thread::Builder::new()
            .name("hotswap-control-conn".into())
            .spawn(move || {
                let (response, _answering) = match read_request(&stream, max_module) {
                    Ok((request, bytes)) => {
                        let guard = answering.begin();
                        (handler(request, bytes), Some(guard))
                    }
                    Err(message) => (Response::failed(message), None),
                };
                let _ = write_response(&stream, &response);
                active.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads one request, and the module bytes that follow a reload's line, within
/// [`REQUEST_TIME`].
fn read_request(
    stream: &UnixStream,
    max_module: u64,
) -> Result<(Request, Option<Vec<u8>>), String> {
    let deadline = Instant::now() + REQUEST_TIME;
    let mut reader = BufReader::new(Deadlined { stream, deadline });
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_REQUEST)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if line.last() != Some(&b'\n') {
        return Err(format!(
            "the request did not end with a newline within {MAX_REQUEST} bytes and {} s",
            REQUEST_TIME.as_secs()
        ));
    }
    let request: Request =
        serde_json::from_slice(&line).map_err(|e| format!("not a valid request: {e}"))?;
    let Request::Reload {
        len: Some(len),
        module,
        ..
    } = &request
    else {
        return Ok((request, None));
    };
    if *len > max_module {
        return Err(format!(
            "{} is {len} bytes, over the {max_module}-byte limit on modules (--max-module-size)",
            module.display()
        ));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(*len as usize)
        .map_err(|_| format!("cannot hold {len} bytes of module"))?;
    reader
        .take(*len)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the module's bytes: {e}"))?;
    if bytes.len() as u64 != *len {
        return Err(format!(
            "the client sent {} of the {len} bytes it announced",
            bytes.len()
        ));
    }
    Ok((request, Some(bytes)))
}

/// A socket whose reads can be given a timeout.
pub(crate) trait ReadTimeout {
    /// The socket's `set_read_timeout`.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
    /// One read.
    fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl ReadTimeout for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
    fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self).read(buf)
    }
}

impl ReadTimeout for std::net::TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, timeout)
    }
    fn read_some(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self).read(buf)
    }
}

/// A stream whose reads fail once the deadline has passed: a client that sends a byte at a
/// time cannot hold a connection longer than that.
pub(crate) struct Deadlined<'a, S: ReadTimeout> {
    /// The socket.
    pub stream: &'a S,
    /// When reading ends.
    pub deadline: Instant,
}

impl<S: ReadTimeout> Read for Deadlined<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took too long",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read_some(buf)
    }
}

/// Writes the answer to a connection.
pub fn write_response(mut stream: &UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Sends a request (and, for a reload, the module's bytes) to the host listening on `path` and
/// waits for its answer.
pub fn send(path: &Path, request: &Request, bytes: Option<&[u8]>) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach a running hotswap on {} (is `hotswap run` running, with this --control?)",
            path.display()
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    let sent =
        (stream.write_all(&line).context("cannot send the request")).and_then(|()| match bytes {
            Some(bytes) => stream.write_all(bytes).context("cannot send the module"),
            None => Ok(()),
        });
    // The host may answer before it has read everything (busy, or a module over its limit)
    // and close the connection: then the write fails, and the answer says why.
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    if answer.is_empty() {
        sent?;
        read.context("cannot read the answer")?;
        anyhow::bail!("the host closed the connection without an answer (did it stop?)");
    }
    serde_json::from_str(answer.trim_end())
        .with_context(|| format!("the host's answer is not valid: {:?}", answer.trim_end()))
}
