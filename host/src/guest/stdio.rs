//! A guest's WASI stdout and stderr: to the host's stderr, a line at a time, each line prefixed
//! `guest: ` and escaped like any guest text, so that a guest's output never mixes with the
//! replies on the host's stdout, never forges a host log line, and never runs unbounded.

use crate::text::escape;
use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept whole: a longer one is written in pieces of this size.
const MAX_LINE: usize = 4096;

/// A guest output stream (stdout and stderr share one, so their lines stay in order).
#[derive(Clone, Default)]
pub(crate) struct GuestOutput {
    pending: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    /// Takes bytes the guest wrote: writes every complete line, keeps the rest.
    fn take(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
            emit(&pending[start..start + end]);
            start += end + 1;
        }
        while pending.len() - start >= MAX_LINE {
            emit(&pending[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        pending.drain(..start);
    }
}

impl Drop for GuestOutput {
    fn drop(&mut self) {
        // The last clone (the instance is gone): write what is left of an unfinished line.
        if Arc::strong_count(&self.pending) == 1 {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if !pending.is_empty() {
                emit(&pending);
            }
        }
    }
}

/// Writes one line of guest output to the host's stderr.
fn emit(line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = escape(&String::from_utf8_lossy(line), MAX_LINE);
    crate::text::guest_log(&text);
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 16)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
