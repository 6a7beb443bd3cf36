//! An async byte stream seen as the non-blocking `Read + Write` that
//! [`Transport`](crate::transport::Transport) (and TLS inside it) reads and
//! writes: what the tokio client's driver task and the tokio server's
//! client tasks run their connections over, TCP or any other stream.

use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The byte streams the tokio client and server run over (blanket: every
/// `AsyncRead + AsyncWrite + Send + Unpin`).
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// Each call polls the stream once with the waker of the task that owns
/// it, `WouldBlock` when it is not ready; the stream wakes that task when
/// it is.
pub(crate) struct PollStream {
    io: Box<dyn ByteStream>,
    /// The owning task's waker, as of its last poll.
    waker: Waker,
}

impl PollStream {
    /// `io`, polled with a waker that does nothing until
    /// [`set_waker`](Self::set_waker).
    pub(crate) fn new(io: Box<dyn ByteStream>) -> Self {
        PollStream {
            io,
            waker: Waker::noop().clone(),
        }
    }

    /// The waker of the task that polls from now on.
    pub(crate) fn set_waker(&mut self, waker: &Waker) {
        if !self.waker.will_wake(waker) {
            self.waker = waker.clone();
        }
    }

    /// Polls the stream's own flush (a buffered stream's): `WouldBlock`
    /// while it is not done.
    pub(crate) fn flush_stream(&mut self) -> io::Result<()> {
        let mut cx = Context::from_waker(&self.waker);
        match Pin::new(&mut self.io).poll_flush(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(ErrorKind::WouldBlock.into()),
        }
    }

    /// Polls the stream's shutdown (TCP's end of stream).
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl io::Read for PollStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(&self.waker);
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut self.io).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(ErrorKind::WouldBlock.into()),
        }
    }
}

impl io::Write for PollStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(&self.waker);
        match Pin::new(&mut self.io).poll_write(&mut cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(ErrorKind::WouldBlock.into()),
        }
    }

    /// Nothing: the owning task flushes the stream itself
    /// ([`PollStream::flush_stream`]) once per turn after writing, not per
    /// TLS record.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
