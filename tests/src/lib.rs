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

    pub fn request(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<Reply> {
        let stream = self.reader.get_mut();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        stream.flush()?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
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
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap_or(0));
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Starts `hotswap run MODULE --http 127.0.0.1:0 --control SOCKET EXTRA...` (the binary at
/// `hotswap`) and returns it with the address it serves on. Its log is read and dropped, so the
/// host never blocks on a full pipe.
pub fn serve_http(hotswap: &str, module: &str, socket: &Path, extra: &[&str]) -> (Child, String) {
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
    let addr = loop {
        let line = log
            .next()
            .expect("hotswap exited before serving")
            .expect("read the log");
        if let Some(rest) = line.split("serving HTTP on http://").nth(1) {
            break rest.split(' ').next().unwrap_or_default().to_owned();
        }
    };
    std::thread::spawn(move || log.for_each(drop));
    (host, addr)
}
