//! Why a connection could not be created ([`NewConnectionError`]) or a send
//! was refused ([`SendError`]).

use crate::codec::CodecError;
use crate::rules::Violation;
use core::fmt;

/// Why a connection could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NewConnectionError {
    /// The transmit buffer is smaller than [`MIN_TX_BUFFER`](super::MIN_TX_BUFFER).
    TxBufferTooSmall {
        /// The least size accepted.
        required: usize,
    },
    /// The client asked for a connection type that is neither built in nor in
    /// [`Config::conntypes`](super::Config::conntypes).
    UnknownConnType,
    /// The server's `hello` did not fit into the transmit buffer.
    HelloTooLarge,
    /// (Server) The `handshake`, which carries the whole registry, can never
    /// fit into the transmit buffer beside the close reserve
    /// ([`server_tx_required`](super::server_tx_required)).
    HandshakeTooLarge {
        /// The transmit capacity it needs.
        required: usize,
        /// The transmit buffer's capacity.
        capacity: usize,
    },
}

impl fmt::Display for NewConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewConnectionError::TxBufferTooSmall { required } => {
                write!(f, "transmit buffer must hold at least {required} bytes")
            }
            NewConnectionError::UnknownConnType => f.write_str("unknown connection type"),
            NewConnectionError::HelloTooLarge => {
                f.write_str("hello does not fit the transmit buffer")
            }
            NewConnectionError::HandshakeTooLarge { required, capacity } => write!(
                f,
                "the handshake (the whole packet registry) needs a transmit buffer of \
                 {required} bytes, this one holds {capacity}"
            ),
        }
    }
}

impl core::error::Error for NewConnectionError {}

/// Why a send was refused. Nothing reached the transmit buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed or closing.
    Closed,
    /// No packet of that name or id is registered.
    NotRegistered,
    /// The packet breaks its SmartPacket rules. If its invalid action is
    /// `close`, the connection is now closing with `smartpacketinvalid`.
    Rules {
        /// The packet's registry name.
        packet: &'static str,
        /// The rule it broke.
        violation: Violation,
    },
    /// The connection type does not carry this packet (a `ping` connection
    /// carries no application packets; a custom type's hook refused).
    ConnTypeRefused,
    /// Not enough free space now: write out [`Connection::poll_transmit`](super::Connection::poll_transmit) and
    /// try again.
    WouldBlock {
        /// Bytes the frame needs.
        required: usize,
    },
    /// The frame can never fit into this connection's transmit buffer.
    TooLarge {
        /// Bytes the frame needs.
        required: usize,
        /// The most a frame may take in this buffer.
        capacity: usize,
    },
    /// The message could not be encoded.
    Encode(CodecError),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed => f.write_str("connection closed"),
            SendError::NotRegistered => f.write_str("packet not registered"),
            SendError::Rules { packet, violation } => {
                write!(f, "packet {packet} breaks its rules: {violation}")
            }
            SendError::ConnTypeRefused => f.write_str("connection type does not carry this packet"),
            SendError::WouldBlock { required } => {
                write!(f, "transmit buffer full ({required} bytes needed)")
            }
            SendError::TooLarge { required, capacity } => {
                write!(
                    f,
                    "frame of {required} bytes exceeds the transmit capacity of {capacity}"
                )
            }
            SendError::Encode(e) => write!(f, "encoding failed: {e}"),
        }
    }
}

impl core::error::Error for SendError {}
