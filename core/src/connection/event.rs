//! What a connection reports: [`Event`], a received packet ([`Incoming`]),
//! why one was dropped ([`IgnoreCause`]) or did not decode
//! ([`DecodeError`]).

use crate::codec::{Codec, CodecError};
use crate::registry::Packet;
use crate::rules::Violation;
use crate::time::Duration;
use crate::types::Closed;
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

/// A received application packet: its id, its registry name, its body and
/// the codec that decodes it. Every adapter hands out this one type; `B` says
/// where the body lies:
/// - `&[u8]` lent from the connection's receive buffer, as
///   [`Connection::poll`](super::Connection::poll) reports it, or copied into
///   a caller's buffer (the embassy `Session::receive`);
/// - an owned buffer such as `Vec<u8>` on a host (the std client's events),
///   made with [`with_body`](Self::with_body).
///
/// ```
/// use peng3dnet_core::codec::Postcard;
/// use peng3dnet_core::connection::Incoming;
/// use peng3dnet_core::registry::Packet;
///
/// struct Chat;
/// impl Packet for Chat {
///     const NAME: &'static str = "app:chat";
///     type Message<'de> = &'de str;
/// }
///
/// let body = [5, b'h', b'e', b'l', b'l', b'o'];
/// let packet = Incoming::new(64, Some("app:chat"), &body[..], Postcard);
/// assert!(packet.is::<Chat>());
/// assert_eq!(packet.decode::<Chat>(), Ok("hello"));
/// // The same packet with a body of its own, which outlives `body`.
/// let kept: Incoming<[u8; 6], Postcard> = packet.with_body(body);
/// assert_eq!(kept.decode::<Chat>(), Ok("hello"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Incoming<B, C> {
    /// Its id on the wire.
    pub packet_id: u32,
    /// Its registry name, if the id is registered.
    pub name: Option<&'static str>,
    /// The encoded body.
    pub body: B,
    codec: C,
}

impl<B, C> Incoming<B, C> {
    /// A packet of id `packet_id` (named `name` in the registry) whose
    /// `body` `codec` decodes.
    pub fn new(packet_id: u32, name: Option<&'static str>, body: B, codec: C) -> Self {
        Incoming {
            packet_id,
            name,
            body,
            codec,
        }
    }

    /// Whether it is a `P`.
    pub fn is<P: Packet>(&self) -> bool {
        self.name == Some(P::NAME)
    }

    /// The codec that decodes it.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The same packet with `body` in place of its body: a copy of it, say,
    /// that outlives the buffer it was received in.
    pub fn with_body<B2>(self, body: B2) -> Incoming<B2, C> {
        Incoming {
            packet_id: self.packet_id,
            name: self.name,
            body,
            codec: self.codec,
        }
    }
}

impl<B: AsRef<[u8]>, C: Codec> Incoming<B, C> {
    /// Decodes it as a `P`; fails if it is another packet type. The message
    /// may borrow from the body (`&str`, `&[u8]` fields).
    pub fn decode<P: Packet>(&self) -> Result<P::Message<'_>, DecodeError> {
        if !self.is::<P>() {
            return Err(DecodeError::WrongPacket);
        }
        self.codec
            .decode(self.body.as_ref())
            .map_err(DecodeError::Codec)
    }

    /// Decodes the body as any `M`, whatever the packet type.
    pub fn decode_as<'s, M: Deserialize<'s>>(&'s self) -> Result<M, CodecError> {
        self.codec.decode(self.body.as_ref())
    }
}

impl<B: AsRef<[u8]>, C> fmt::Debug for Incoming<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("packet_id", &self.packet_id)
            .field("name", &self.name)
            .field("body_len", &self.body.as_ref().len())
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
    Rules {
        /// The packet's registry name.
        packet: &'static str,
        /// The rule it broke.
        violation: Violation,
    },
}

/// As in `packet demo:chat broke its rules: requires mode PLAY (3), connection
/// is in NOTSET (0)`.
impl fmt::Display for IgnoreCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreCause::UnknownId => f.write_str("no packet of this id is registered"),
            IgnoreCause::Rules { packet, violation } => {
                write!(f, "packet {packet} broke its rules: {violation}")
            }
        }
    }
}

/// What happened on a connection, returned by [`Connection::poll`](super::Connection::poll).
#[derive(Debug)]
#[must_use]
pub enum Event<'a, C> {
    /// The connection is established: the classic handshake completed, or a
    /// custom connection type entered an active state.
    Connected,
    /// An application packet that passed its rules.
    Packet(Incoming<&'a [u8], C>),
    /// A packet a custom connection type consumed ([`Dispatch::Consume`](super::Dispatch::Consume)).
    ConnTypePacket(Incoming<&'a [u8], C>),
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
    Closed(Closed),
}
