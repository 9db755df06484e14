//! HTTP requests and responses, as the ABI encodes them.

pub use hotswap_abi::http::{Bytes, Request, Response};

/// Conveniences for building responses.
pub trait ResponseExt {
    /// A response with this status and a `text/plain` body.
    fn text(status: u16, body: impl Into<String>) -> Self;
    /// Adds a header.
    fn header(self, name: &str, value: impl Into<String>) -> Self;
}

impl ResponseExt for Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Bytes(body.into().into_bytes()),
        }
        .header("content-type", "text/plain; charset=utf-8")
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers
            .push((name.to_owned(), Bytes(value.into().into_bytes())));
        self
    }
}
