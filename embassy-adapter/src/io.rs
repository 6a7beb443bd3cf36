//! How a [`Session`](crate::Session) moves bytes: [`Input`] and [`Output`].
//!
//! A session copies received bytes into its connection's receive buffer and
//! queued bytes out of its transmit buffer. Where the transport has buffers
//! of its own (an `embassy-net` TCP socket), it lends them for the copy and
//! the session needs no buffer in between: `TcpReader` and `TcpWriter`
//! implement these traits in place. Any other `embedded_io_async` reader or
//! writer (a TLS session, a UART) goes through [`Chunked`], a copy buffer of
//! `K` bytes.

use embassy_net::tcp::{Error as TcpError, TcpReader, TcpWriter};
use embedded_io_async::{Read, Write};

/// Received bytes, lent to a closure.
#[allow(async_fn_in_trait)]
pub trait Input {
    /// The transport's error.
    type Error;

    /// Waits until bytes were received (or the stream ended), then offers
    /// them to `take`, which returns how many it took; the rest are offered
    /// again next time. Returns `Ok(false)` at the end of the stream.
    async fn read_into(&mut self, take: impl FnMut(&[u8]) -> usize) -> Result<bool, Self::Error>;
}

/// Room for bytes to send, lent to a closure.
#[allow(async_fn_in_trait)]
pub trait Output {
    /// The transport's error.
    type Error;

    /// Waits until there is room, then lets `fill` write into it; `fill`
    /// returns how many bytes it wrote, and they count as sent. Returns
    /// `Ok(false)` if the transport takes no more bytes (it was closed).
    async fn write_from(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<bool, Self::Error>;

    /// Waits until every byte sent so far left.
    async fn flush(&mut self) -> Result<(), Self::Error>;
}

/// An `embedded_io_async` reader or writer behind a copy buffer of `K`
/// bytes, as an [`Input`] or [`Output`].
pub struct Chunked<T, const K: usize> {
    io: T,
    buf: [u8; K],
    start: usize,
    end: usize,
}

impl<T, const K: usize> Chunked<T, K> {
    /// Wraps `io`.
    pub const fn new(io: T) -> Self {
        Chunked {
            io,
            buf: [0; K],
            start: 0,
            end: 0,
        }
    }

    /// The reader or writer back (bytes still in the buffer are dropped).
    pub fn into_inner(self) -> T {
        self.io
    }
}

impl<R: Read, const K: usize> Input for Chunked<R, K> {
    type Error = R::Error;

    async fn read_into(&mut self, mut take: impl FnMut(&[u8]) -> usize) -> Result<bool, R::Error> {
        if self.start == self.end {
            let n = self.io.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(false);
            }
            self.start = 0;
            self.end = n;
        }
        let taken = take(&self.buf[self.start..self.end]);
        self.start = (self.start + taken).min(self.end);
        Ok(true)
    }
}

impl<W: Write, const K: usize> Chunked<W, K> {
    /// Writes what the buffer holds once; `Ok(false)` if the writer is
    /// closed.
    async fn drain_once(&mut self) -> Result<bool, W::Error> {
        let n = self.io.write(&self.buf[self.start..self.end]).await?;
        if n == 0 {
            return Ok(false);
        }
        self.start = (self.start + n).min(self.end);
        Ok(true)
    }
}

impl<W: Write, const K: usize> Output for Chunked<W, K> {
    type Error = W::Error;

    async fn write_from(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<bool, W::Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = fill(&mut self.buf).min(K);
            if self.end == 0 {
                return Ok(true);
            }
        }
        self.drain_once().await
    }

    async fn flush(&mut self) -> Result<(), W::Error> {
        while self.start < self.end {
            if !self.drain_once().await? {
                // A writer that takes nothing more cannot flush either.
                break;
            }
        }
        self.io.flush().await
    }
}

impl Input for TcpReader<'_> {
    type Error = TcpError;

    async fn read_into(&mut self, mut take: impl FnMut(&[u8]) -> usize) -> Result<bool, TcpError> {
        match self.read_with(|bytes| (take(bytes), ())).await {
            Ok(()) => Ok(true),
            // `read_with` reports an orderly end of stream as a reset: a
            // plain read tells the two apart.
            Err(e) => match Read::read(self, &mut [0u8; 1]).await {
                Ok(0) => Ok(false),
                _ => Err(e),
            },
        }
    }
}

impl Output for TcpWriter<'_> {
    type Error = TcpError;

    async fn write_from(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<bool, TcpError> {
        self.write_with(|room| {
            let n = fill(room);
            (n, ())
        })
        .await?;
        Ok(true)
    }

    async fn flush(&mut self) -> Result<(), TcpError> {
        Write::flush(self).await
    }
}
