//! The byte stream under a server's connection: plain TCP (TLS joins here).

use mio::net::TcpStream;
use peng3dnet_core::SecurityLevel;
use std::io::{self, Read, Write};

/// A client's socket on the server.
pub(crate) enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
}

impl Transport {
    pub(crate) fn plain(stream: TcpStream) -> Self {
        Transport::Plain(stream)
    }

    /// Reads received (decrypted) bytes; `Ok(0)` at end of stream.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
        }
    }

    /// Writes bytes to send; how many were taken.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
        }
    }

    /// Pushes out what the transport itself buffered.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Whether the transport has bytes of its own to write.
    pub(crate) fn wants_write(&self) -> bool {
        false
    }

    /// The security level, once known.
    pub(crate) fn security_level(&self) -> Option<SecurityLevel> {
        match self {
            Transport::Plain(_) => Some(SecurityLevel::None),
        }
    }

    pub(crate) fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
        }
    }

    pub(crate) fn shutdown(&mut self) {
        let _ = self.socket_mut().shutdown(std::net::Shutdown::Both);
    }
}
