//! HTTP/1.1 in front of the app (`hotswap run --http ADDR`).
//!
//! Strategy: hyper serves connections on its own thread (a current-thread tokio runtime), with
//! keep-alive. Each request's body is read up to the size limit (413 beyond it, at once when its
//! `Content-Length` says so), turned into the ABI's [`http::Request`], and submitted as one event
//! to the app's single queue; the connection waits for the app's answer. Requests that arrive
//! while a new version compiles or a swap is in progress wait in that queue: none is refused.
//!
//! Limits, against clients that hold resources without using them: at most
//! [`HttpOptions::max_connections`] connections at once (the rest wait in the kernel's backlog
//! until one closes); a connection is closed when it stays idle between requests longer than
//! the idle timeout or takes longer than the header timeout from a request's first byte to its
//! last header line; a body that is not in within the body timeout is answered 408. Running out
//! of file descriptors makes the accept loop back off and resume, never stop.
//!
//! Stopping: [`HttpServer::shutdown_handle`] stops accepting, lets each connection finish the request
//! it is in (idle ones close at once), and calls `on_drained` when the last one has closed.

use crate::text::log;
use hotswap_abi::http;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{StatusCode, header};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, oneshot, watch};

/// One request for the app, and where its response goes.
pub struct Job {
    /// The request.
    pub request: http::Request,
    /// The app's response (dropping it answers 503).
    pub reply: oneshot::Sender<http::Response>,
}

/// Submits a job to the app; `false` if the app is gone.
pub type Submit = Arc<dyn Fn(Job) -> bool + Send + Sync>;

/// Limits on HTTP clients.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The largest request body accepted, in bytes (413 beyond).
    pub max_body: usize,
    /// The most connections open at once.
    pub max_connections: usize,
    /// From a request's first byte to the end of its header.
    pub header_timeout: Duration,
    /// To read a request's body.
    pub body_timeout: Duration,
    /// Between requests on a kept-alive connection.
    pub idle_timeout: Duration,
}

impl HttpOptions {
    /// The default connection cap: half the file descriptors this process may open (read at
    /// start), at most 10,000, at least 16.
    pub fn default_max_connections() -> usize {
        // SAFETY: getrlimit writes the limits into the struct it is given.
        let soft = unsafe {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur
            } else {
                1024
            }
        };
        (soft / 2).clamp(16, 10_000) as usize
    }
}

/// A running HTTP server.
pub struct HttpServer {
    shutdown: watch::Sender<bool>,
    connections: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Open connections right now.
    pub fn connections(&self) -> Arc<AtomicUsize> {
        self.connections.clone()
    }

    /// A closure that starts a graceful shutdown.
    pub fn shutdown_handle(&self) -> impl FnOnce() + Send + use<> {
        let shutdown = self.shutdown.clone();
        move || {
            let _ = shutdown.send(true);
        }
    }
}

/// Serves HTTP on `listener` on a thread of its own, until shut down.
pub fn spawn(
    listener: std::net::TcpListener,
    options: HttpOptions,
    submit: Submit,
    on_drained: impl FnOnce() + Send + 'static,
) -> anyhow::Result<HttpServer> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let (shutdown, stopped) = watch::channel(false);
    let connections = Arc::new(AtomicUsize::new(0));
    let open = connections.clone();
    std::thread::Builder::new()
        .name("hotswap-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, options, submit, stopped, open).await,
                    Err(e) => log(format_args!("cannot serve HTTP: {e}")),
                }
            });
            on_drained();
        })?;
    Ok(HttpServer {
        shutdown,
        connections,
    })
}

/// Accepts connections within the cap until shut down, then waits for them all to close.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    options: HttpOptions,
    submit: Submit,
    mut stopped: watch::Receiver<bool>,
    open: Arc<AtomicUsize>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let mut last_error: Option<Instant> = None;
    let mut warned_full = false;
    loop {
        if permits.available_permits() == 0 && !warned_full {
            log(format_args!(
                "HTTP: {} connections open, the --max-connections limit; new ones wait",
                options.max_connections
            ));
            warned_full = true;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: back off, log once a second, and go on.
                if last_error.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
                    log(format_args!("cannot accept an HTTP connection: {e}"));
                    last_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        warned_full = false;
        open.fetch_add(1, Ordering::Relaxed);
        let (options, submit, stopped, open) = (
            options.clone(),
            submit.clone(),
            stopped.clone(),
            open.clone(),
        );
        tokio::spawn(async move {
            serve_connection(stream, options, submit, stopped).await;
            open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit until it closes.
    let _ = permits.acquire_many(options.max_connections as u32).await;
}

/// Where a connection is between requests: it decides which timeout applies.
#[derive(Clone, Copy)]
enum Phase {
    /// Waiting for a request's first byte, since then.
    Idle(Instant),
    /// Reading a request's header, since its first byte.
    Header(Instant),
    /// The request is with the service (its body has a timeout of its own).
    Busy,
}

type SharedPhase = Arc<Mutex<Phase>>;

fn set(phase: &SharedPhase, to: Phase) {
    *phase.lock().unwrap_or_else(|e| e.into_inner()) = to;
}

/// Serves one connection until it closes, times out, or the server shuts down.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    options: HttpOptions,
    submit: Submit,
    mut stopped: watch::Receiver<bool>,
) {
    // Small requests and responses: do not let Nagle's algorithm hold them back.
    let _ = stream.set_nodelay(true);
    let phase: SharedPhase = Arc::new(Mutex::new(Phase::Idle(Instant::now())));
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
    });
    let service = {
        let (options, phase) = (options.clone(), phase.clone());
        service_fn(move |request| handle(request, options.clone(), submit.clone(), phase.clone()))
    };
    let connection = http1::Builder::new()
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let check_every = options
        .header_timeout
        .min(options.idle_timeout)
        .div_f32(4.0)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut shutting = *stopped.borrow();
    if shutting {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = &mut connection => return,
            _ = tokio::time::sleep(check_every) => {
                if expired(&phase, &options) {
                    return;
                }
            }
            _ = stopped.wait_for(|stop| *stop), if !shutting => {
                shutting = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Whether the connection has been idle, or in its header, for too long.
fn expired(phase: &SharedPhase, options: &HttpOptions) -> bool {
    match *phase.lock().unwrap_or_else(|e| e.into_inner()) {
        Phase::Idle(since) => since.elapsed() > options.idle_timeout,
        Phase::Header(since) => since.elapsed() > options.header_timeout,
        Phase::Busy => false,
    }
}

/// A socket that notes a request's first byte.
struct Watched {
    inner: tokio::net::TcpStream,
    phase: SharedPhase,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
            if let Phase::Idle(_) = *phase {
                *phase = Phase::Header(Instant::now());
            }
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn handle(
    request: hyper::Request<Incoming>,
    options: HttpOptions,
    submit: Submit,
    phase: SharedPhase,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    set(&phase, Phase::Busy);
    let response = respond(request, &options, &submit).await;
    set(&phase, Phase::Idle(Instant::now()));
    Ok(response)
}

async fn respond(
    request: hyper::Request<Incoming>,
    options: &HttpOptions,
    submit: &Submit,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let max = options.max_body;
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max as u64) {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the {max}-byte limit"),
        );
    }
    let body =
        match tokio::time::timeout(options.body_timeout, Limited::new(body, max).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over the {max}-byte limit"),
                );
            }
            Ok(Err(e)) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                );
            }
            Err(_) => {
                let secs = options.body_timeout.as_secs_f64();
                return plain(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body did not arrive within {secs} s"),
                );
            }
        };
    let request = http::Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: (parts.headers.iter())
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    http::Bytes(value.as_bytes().to_vec()),
                )
            })
            .collect(),
        body: http::Bytes(body.to_vec()),
    };
    let (reply, response) = oneshot::channel();
    if !submit(Job { request, reply }) {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app is stopping".into(),
        );
    }
    match response.await {
        Ok(response) => to_hyper(response),
        Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app is stopping".into(),
        ),
    }
}

/// The app's response, checked: a status or header hyper cannot send becomes a 500.
fn to_hyper(response: http::Response) -> hyper::Response<Full<Bytes>> {
    let Ok(status) = StatusCode::from_u16(response.status) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the app answered with status {}", response.status),
        );
    };
    let mut builder = hyper::Response::builder().status(status);
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.0.as_slice());
    }
    builder
        .body(Full::new(Bytes::from(response.body.0)))
        .unwrap_or_else(|e| {
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the app's response is not valid HTTP: {e}"),
            )
        })
}

/// A plain-text response from the host itself.
fn plain(status: StatusCode, body: String) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
