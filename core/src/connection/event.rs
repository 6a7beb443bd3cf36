//! What a connection reports: [`Event`], a received packet ([`Incoming`]),
//! why one was dropped ([`IgnoreCause`]) or did not decode
//! ([`DecodeError`]).

use crate::codec::{Codec, CodecError};
use crate::registry::Packet;
use crate::rules::Violation;
use crate::time::Duration;
use crate::types::{CloseReason, Initiator};
use core::fmt;
use serde::Deserialize;

/// Why [`Incoming::decode`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// The packet is not of the requested type.
    WrongPacket,
    /// The body is not a valid message of the type.
    Codec(CodecError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::WrongPacket => f.write_str("packet is of another type"),
            DecodeError::Codec(e) => write!(f, "decoding failed: {e}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A received application packet, borrowed from the receive buffer.
pub struct Incoming<'a, C> {
    /// Its id on the wire.
    pub packet_id: u32,
    /// Its registry name, if the id is registered.
    pub name: Option<&'static str>,
    /// The encoded body.
    pub body: &'a [u8],
    pub(super) codec: &'a C,
}

impl<'a, C: Codec> Incoming<'a, C> {
    /// Whether it is a `P`.
    pub fn is<P: Packet>(&self) -> bool {
        self.name == Some(P::NAME)
    }

    /// Decodes it as a `P`; fails if it is another packet type.
    pub fn decode<P: Packet>(&self) -> Result<P::Message<'a>, DecodeError> {
        if !self.is::<P>() {
            return Err(DecodeError::WrongPacket);
        }
        self.codec.decode(self.body).map_err(DecodeError::Codec)
    }

    /// Decodes the body as any `M`, whatever the packet type.
    pub fn decode_as<M: Deserialize<'a>>(&self) -> Result<M, CodecError> {
        self.codec.decode(self.body)
    }

    /// The connection's codec.
    pub fn codec(&self) -> &'a C {
        self.codec
    }
}

impl<C> fmt::Debug for Incoming<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("packet_id", &self.packet_id)
            .field("name", &self.name)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why a received packet was dropped without closing the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IgnoreCause {
    /// No packet of this id is registered (the reference ignores these too).
    UnknownId,
    /// It broke its rules and its invalid action is `ignore`.
    Rules(Violation),
}

/// What happened on a connection, returned by [`Connection::poll`](super::Connection::poll).
#[derive(Debug)]
#[must_use]
pub enum Event<'a, C> {
    /// The connection is established: the classic handshake completed, or a
    /// custom connection type entered an active state.
    Connected,
    /// An application packet that passed its rules.
    Packet(Incoming<'a, C>),
    /// A packet a custom connection type consumed ([`Dispatch::Consume`](super::Dispatch::Consume)).
    ConnTypePacket(Incoming<'a, C>),
    /// (Ping client) the server's answer arrived; the connection is now
    /// closing with `pingcomplete`.
    Pong {
        /// Time from sending the request to receiving the answer.
        delay: Duration,
        /// The answer's body (`oldmsg`, `peng3dnet` and the server's data).
        body: &'a [u8],
    },
    /// (Ping server) a ping request was answered.
    PingAnswered,
    /// A packet was dropped.
    Ignored {
        /// Its id.
        packet_id: u32,
        /// Why.
        cause: IgnoreCause,
    },
    /// The connection closed. Reported once; nothing but the remaining
    /// transmit bytes (the `closeconn`) follows.
    Closed {
        /// Why.
        reason: CloseReason,
        /// Who closed it.
        initiator: Initiator,
    },
}
