//! Transports that lend their own buffers to a [`Session`](crate::Session):
//! [`Input`] and [`Output`].
//!
//! A session copies received bytes into its connection's receive buffer and
//! queued bytes out of its transmit buffer. An `embassy-net` TCP socket has
//! buffers of its own and lends them for that copy, so
//! [`Session::run_io`](crate::Session::run_io) needs no buffer in between and
//! keeps no future of its own per direction: `TcpReader` and `TcpWriter`
//! implement these traits. Any other `embedded_io_async` reader or writer (a
//! TLS session, a UART) is served by [`Session::run`](crate::Session::run),
//! through two copy buffers.
//!
//! The methods are poll functions: they may be called again and again, and a
//! call that returns `Pending` has arranged for the task to be woken when it
//! is worth calling again.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll};
use embassy_net::tcp::{Error as TcpError, TcpReader, TcpWriter};
use embedded_io_async::Read;

/// Received bytes, lent to a closure.
pub trait Input {
    /// The transport's error.
    type Error;

    /// If bytes were received, offers them to `take`, which returns how many
    /// it took (the rest are offered again next time), and returns
    /// `Ready(Ok(true))`; `Ready(Ok(false))` once the stream ended. `Pending`
    /// (without calling `take`) until then.
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&[u8]) -> usize,
    ) -> Poll<Result<bool, Self::Error>>;
}

/// Room for bytes to send, lent to a closure.
pub trait Output {
    /// The transport's error.
    type Error;

    /// If there is room, lets `fill` write into it (`fill` returns how many
    /// bytes it wrote; they count as sent) and returns `Ready(Ok(()))`.
    /// `Pending` (without calling `fill`) until then.
    fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Poll<Result<(), Self::Error>>;

    /// `Ready` once every byte sent so far left.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>>;
}

// embassy-net's socket futures check the socket on their first poll and
// register the waker when they are not ready; they hold no state, so each
// poll below makes a fresh one and drops it.

impl Input for TcpReader<'_> {
    type Error = TcpError;

    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&[u8]) -> usize,
    ) -> Poll<Result<bool, TcpError>> {
        let polled = pin!(self.read_with(|bytes| (take(bytes), ()))).poll(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(true)),
            // `read_with` reports an orderly end of stream as a reset: a
            // plain read tells the two apart (nothing is buffered now). Into
            // no room: the end is `Ok(0)`, a reset an error, and the read's
            // copy compiles away (flash).
            Poll::Ready(Err(e)) => {
                let ended = matches!(pin!(Read::read(self, &mut [])).poll(cx), Poll::Ready(Ok(0)));
                Poll::Ready(if ended { Ok(false) } else { Err(e) })
            }
        }
    }
}

impl Output for TcpWriter<'_> {
    type Error = TcpError;

    fn poll_write_from(
        &mut self,
        cx: &mut Context<'_>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Poll<Result<(), TcpError>> {
        pin!(self.write_with(|room| (fill(room), ()))).poll(cx)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TcpError>> {
        pin!(TcpWriter::flush(self)).poll(cx)
    }
}
