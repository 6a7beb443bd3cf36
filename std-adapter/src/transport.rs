//! The byte stream under a connection: plain TCP or TLS over it. The server
//! drives it non-blocking; the blocking client too (with its own poller),
//! and the tokio client over any async byte stream (`S`, any non-blocking
//! `Read + Write`).

use crate::tls::{TlsClientConfig, TlsError, TlsServerConfig, TlsStream};
use mio::net::TcpStream;
use peng3dnet_core::SecurityLevel;
use std::io::{self, Read, Write};

/// A connection's socket: `S` is mio's `TcpStream` but for the tokio client
/// (a non-blocking view of its async stream).
pub(crate) enum Transport<S = TcpStream> {
    /// Plain TCP.
    Plain(S),
    /// TLS over TCP.
    Tls(Box<TlsStream<S>>),
}

impl<S: Read + Write> Transport<S> {
    pub(crate) fn plain(stream: S) -> Self {
        Transport::Plain(stream)
    }

    pub(crate) fn tls_server(stream: S, config: &TlsServerConfig) -> Result<Self, TlsError> {
        Ok(Transport::Tls(Box::new(TlsStream::server(stream, config)?)))
    }

    pub(crate) fn tls_client(stream: S, config: &TlsClientConfig) -> Result<Self, TlsError> {
        Ok(Transport::Tls(Box::new(TlsStream::client(stream, config)?)))
    }

    /// Reads received (decrypted) bytes; `Ok(0)` at end of stream.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read_plain(buf),
        }
    }

    /// Writes bytes to send; how many were taken.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write_plain(buf),
        }
    }

    /// Pushes out what the transport itself buffered (TLS records).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush_tls().map(|_| ()),
        }
    }

    /// Whether this is plain TCP (a short read then means the socket is
    /// empty).
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Whether the transport has bytes of its own to write.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.wants_write(),
        }
    }

    /// The security level, once known (after a TLS handshake).
    pub(crate) fn security_level(&self) -> Option<SecurityLevel> {
        match self {
            Transport::Plain(_) => Some(SecurityLevel::None),
            Transport::Tls(t) => t.security_level(),
        }
    }

    /// Queues TLS's `close_notify` and writes what the socket takes.
    pub(crate) fn close_notify(&mut self) {
        if let Transport::Tls(t) = self {
            t.send_close_notify();
            let _ = t.flush_tls();
        }
    }
}

impl<S> Transport<S> {
    /// The stream under TLS (or the plain one).
    pub(crate) fn socket_mut(&mut self) -> &mut S {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.get_mut(),
        }
    }
}

impl Transport<TcpStream> {
    pub(crate) fn shutdown(&mut self) {
        self.close_notify();
        let _ = self.socket_mut().shutdown(std::net::Shutdown::Both);
    }
}
