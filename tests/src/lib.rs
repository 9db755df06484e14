//! Shared pieces of Hotswap's tests and benchmarks: the paths of the example guests (built from
//! source by `build.rs`) and small helpers around the host library.

use hotswap::{App, Config, Prepared, Runtime};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// A runtime with the default limits, and the guests' output kept off the test's stdout.
pub fn runtime() -> Arc<Runtime> {
    runtime_with(Config {
        inherit_stdio: false,
        ..Config::default()
    })
}

/// A runtime with these limits.
pub fn runtime_with(config: Config) -> Arc<Runtime> {
    Runtime::new(config).expect("create a runtime")
}

/// The benchmarks' runtime: room for states of hundreds of MB (the whole 4 GiB of memory) and
/// two minutes per call, the guests' output discarded.
pub fn bench_runtime() -> Arc<Runtime> {
    runtime_with(Config {
        inherit_stdio: false,
        max_memory: 4 << 30,
        call_timeout: Duration::from_secs(120),
        ..Config::default()
    })
}

/// Compiles, checks and instantiates a guest file, panicking with the reason if it fails.
pub fn prepare(runtime: &Runtime, path: &str) -> Prepared {
    runtime
        .prepare_file(Path::new(path))
        .unwrap_or_else(|e| panic!("prepare {path}: {e}"))
}

/// Starts a guest file with fresh state.
pub fn start(runtime: &Arc<Runtime>, path: &str) -> App {
    App::start(runtime.clone(), prepare(runtime, path))
        .unwrap_or_else(|e| panic!("start {path}: {e}"))
}

/// Sends a text message and returns the reply as text, panicking if the event fails.
pub fn send(app: &mut App, message: &str) -> String {
    let reply = app
        .message(message.as_bytes())
        .unwrap_or_else(|e| panic!("message {message:?}: {e}"));
    String::from_utf8(reply).expect("the example guests reply in UTF-8")
}

/// Swaps a guest file in, panicking with the refusal if it is refused.
pub fn swap(app: &mut App, path: &str) -> hotswap::SwapReport {
    let prepared = prepare(app.runtime(), path);
    app.swap(prepared)
        .unwrap_or_else(|e| panic!("swap to {path}: {e}"))
}

/// The state as the running code exports it.
pub fn state(app: &mut App) -> Vec<u8> {
    app.export_state().expect("export the state")
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

/// A response: status, headers (names lowercase), body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    /// Connects to `addr`; each read waits at most 60 s (a guard against a hang).
    pub fn open(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    /// The connection itself, for raw writes and reads.
    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    /// Sends a request, and returns its response.
    pub fn request(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<Reply> {
        self.send(method, path, body)?;
        self.reply()?
            .ok_or_else(|| std::io::Error::other("the connection closed before a response"))
    }

    /// Sends a request with a body.
    pub fn send(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<()> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream().write_all(request.as_bytes())
    }

    /// Reads one response. `Ok(None)`: the connection ended before its first byte (the host
    /// closed it, or reset it); an error: it ended in the middle of a response, or the response
    /// is not HTTP.
    pub fn reply(&mut self) -> std::io::Result<Option<Reply>> {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
        let reader = &mut self.reader;
        match reader.fill_buf() {
            Ok([]) => return Ok(None),
            Err(e) if matches!(e.kind(), ConnectionReset | ConnectionAborted) => return Ok(None),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let partial = |what: &str| std::io::Error::other(format!("a partial response: {what}"));
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| partial(&format!("status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(partial("the header ends early"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_lowercase(), value.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .ok_or_else(|| partial("no content-length"))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        let body = String::from_utf8_lossy(&body).into_owned();
        Ok(Some(Reply {
            status,
            headers,
            body,
        }))
    }
}

/// Starts `hotswap run MODULE --http 127.0.0.1:0 --control SOCKET EXTRA...` (the binary at
/// `hotswap`) and returns it with the address it serves on. Its log is read and dropped, so the
/// host never blocks on a full pipe.
pub fn serve_http(hotswap: &str, module: &str, socket: &Path, extra: &[&str]) -> (Child, String) {
    let (host, addr, _log) = serve_http_logged(hotswap, module, socket, extra);
    (host, addr)
}

/// As [`serve_http`], and also returns the host's log lines before it served (what it
/// restored from a state directory, for one).
pub fn serve_http_logged(
    hotswap: &str,
    module: &str,
    socket: &Path,
    extra: &[&str],
) -> (Child, String, Vec<String>) {
    let mut host = Command::new(hotswap)
        .args(["run", module, "--http", "127.0.0.1:0", "--control"])
        .arg(socket)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hotswap");
    let mut log = BufReader::new(host.stderr.take().expect("piped")).lines();
    let mut before = Vec::new();
    let addr = loop {
        let line = log
            .next()
            .unwrap_or_else(|| panic!("hotswap exited before serving: {before:#?}"))
            .expect("read the log");
        if let Some(rest) = line.split("serving HTTP on http://").nth(1) {
            break rest.split(' ').next().unwrap_or_default().to_owned();
        }
        before.push(line);
    };
    std::thread::spawn(move || log.for_each(drop));
    (host, addr, before)
}
