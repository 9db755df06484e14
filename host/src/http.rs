//! HTTP/1.1 in front of the app (`hotswap run --http ADDR`).
//!
//! Strategy: hyper serves connections on its own thread (a current-thread tokio runtime), with
//! keep-alive. Each request's body is read up to the size limit (413 beyond it), turned into
//! the ABI's [`http::Request`], and submitted as one event to the app's single queue; the
//! connection waits for the app's answer. Requests that arrive while a new version compiles or
//! a swap is in progress simply wait in that queue: none is refused or dropped.

use hotswap_abi::http;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{StatusCode, header};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::oneshot;

/// One request for the app, and where its response goes.
pub struct Job {
    /// The request.
    pub request: http::Request,
    /// The app's response (dropping it answers 503).
    pub reply: oneshot::Sender<http::Response>,
}

/// Submits a job to the app; `false` if the app is gone.
pub type Submit = Arc<dyn Fn(Job) -> bool + Send + Sync>;

/// Serves HTTP on `listener` until the process ends, on a thread of its own.
pub fn spawn(
    listener: std::net::TcpListener,
    max_body: usize,
    submit: Submit,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    std::thread::Builder::new()
        .name("hotswap-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return eprintln!("hotswap: cannot serve HTTP: {e}"),
                };
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors, say: back off instead of spinning.
                            eprintln!("hotswap: cannot accept an HTTP connection: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // Small requests and responses: do not let Nagle's algorithm hold them back.
                    let _ = stream.set_nodelay(true);
                    let submit = submit.clone();
                    let service =
                        service_fn(move |request| handle(request, max_body, submit.clone()));
                    tokio::spawn(async move {
                        // A connection error (a client that went away) concerns that connection only.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        })?;
    Ok(())
}

async fn handle(
    request: hyper::Request<Incoming>,
    max_body: usize,
    submit: Submit,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the {max_body}-byte limit"),
            ));
        }
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            ));
        }
    };
    let request = http::Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
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
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app is stopping".into(),
        ));
    }
    let Ok(response) = response.await else {
        return Ok(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app is stopping".into(),
        ));
    };
    Ok(to_hyper(response))
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
