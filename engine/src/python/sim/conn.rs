//! One accepted connection, which a request may ask to end with a TCP reset.
//!
//! The reset faults need a real RST on the wire, not hyper's orderly close (FIN): a
//! request sets the connection's `Reset` flag and ends without an answer, hyper drops
//! the connection, and the drop sets SO_LINGER to zero before the socket is closed, so
//! the kernel discards what is unsent and answers the peer with RST. Once the flag is
//! set, nothing more is read or written on the socket, and no FIN is sent ahead of it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Shared by a connection and the requests it serves: set, the connection is reset.
#[derive(Debug, Clone, Default)]
pub(super) struct Reset(Arc<AtomicBool>);

impl Reset {
    /// Asks for the connection to be reset (RST) when it ends, with nothing more sent.
    pub(super) fn arm(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn armed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A TCP stream that ends in a reset once its `Reset` is armed.
pub(super) struct Conn {
    stream: TcpStream,
    reset: Reset,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, reset: Reset) -> Conn {
        Conn { stream, reset }
    }

    fn refused(&self) -> Option<io::Error> {
        self.reset
            .armed()
            .then(|| io::Error::from(io::ErrorKind::ConnectionReset))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.armed() {
            // Zero linger never blocks the close (tokio's note on SO_LINGER); it turns
            // the close into an abort. Failing, the peer sees an orderly close instead.
            if let Err(err) = self.stream.set_zero_linger() {
                eprintln!("simulator: cannot reset a connection: {err}");
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(err) = self.refused() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.refused() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.refused() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(err) = self.refused() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // No FIN ahead of the reset: the close in `drop` is the only goodbye.
        if let Some(err) = self.refused() {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
