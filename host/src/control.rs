//! The control channel: a Unix socket on which a running `hotswap run` takes requests, and the
//! client side used by `hotswap reload`, `hotswap status` and `hotswap state`.
//!
//! Protocol: one request per connection. The client writes one JSON object on one line; the
//! host answers with one JSON object on one line and closes the connection.
//!
//! | request | answer (besides `"ok"` and `"message"`) |
//! |---|---|
//! | `{"op": "reload", "module": "/abs/path.wasm"}` | `"swap"`: the swap report, when `"ok"` is true |
//! | `{"op": "status"}` | `"status"`: module, hash, state version and size, uptime, counters, last pause |
//! | `{"op": "state"}` | `"state"`: the state version, size, and the state as JSON when it decodes as MessagePack |
//!
//! `"message"` is the line a person reads: for a reload, the same swap (or refusal) line the
//! host logs. `"ok": false` means the request failed (a reload refused, for instance), and
//! `"message"` says why. The socket is created owner-only (mode 0600, in a directory of mode
//! 0700 when the host creates it).

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest request line the host reads.
const MAX_REQUEST: u64 = 64 * 1024;

/// A request to a running host.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Swap in this module file.
    Reload {
        /// The module file, absolute.
        module: PathBuf,
    },
    /// Report the host's status.
    Status,
    /// Report the app's current state.
    State,
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
    /// The status, for `status`.
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

/// Removes the control socket when dropped (when the host stops).
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Binds the control socket owner-only. A socket left behind by a host that is gone is
/// replaced; one that a running host answers on is an error.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
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
    if path.exists() {
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
    Ok(listener)
}

/// Reads one request from a connection.
pub fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.take(MAX_REQUEST));
    reader
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    serde_json::from_str(line.trim_end()).map_err(|e| format!("not a valid request: {e}"))
}

/// Writes the answer to a connection.
pub fn write_response(mut stream: &UnixStream, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Sends a request to the host listening on `path` and waits for its answer.
pub fn send(path: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(path).with_context(|| {
        format!(
            "cannot reach a running hotswap on {} (is `hotswap run` running, with this --control?)",
            path.display()
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).context("cannot send the request")?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    serde_json::from_str(answer.trim_end())
        .with_context(|| format!("the host's answer is not valid: {:?}", answer.trim_end()))
}
