//! The sending side: [`Outbox`], what [`Connection::poll_with`](super::Connection::poll_with)
//! lends beside a received packet, [`Take`], and the checks every
//! application send passes (SmartPacket rules, the connection type) before
//! its frame is queued.

use super::conntype::ConnType;
use super::error::SendError;
use super::transmit::CLOSE_RESERVE;
use super::Inner;
use crate::buffer::Buffer;
use crate::codec::{Codec, CodecError};
use crate::registry::{Entry, Packet, Registry, RegistryAccess, FIRST_AUTO_ID};
use crate::rules::InvalidAction;
use crate::types::{CloseReason, Mode, State};
use serde::Serialize;

/// What [`Connection::poll_with`](super::Connection::poll_with) does with the packet it handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Take {
    /// The packet is handled: free its bytes.
    Consume,
    /// Leave the packet buffered; the next `poll` or `poll_with` hands it out
    /// again (after its rules are checked again).
    Keep,
}

/// The sending side of a [`Connection`](super::Connection), borrowed apart from its receive
/// buffer: [`Connection::poll_with`](super::Connection::poll_with) hands it out beside a received packet so
/// that a handler can answer in place. Sends are checked as
/// [`Connection::send`](super::Connection::send)'s are.
pub struct Outbox<'c, 'a, C, T, const N: usize, G> {
    pub(super) inner: &'c mut Inner<'a, C, T, N, G>,
}

impl<C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Outbox<'_, '_, C, T, N, G> {
    /// Sends a typed packet (see [`Connection::send`](super::Connection::send)).
    pub fn send<P: Packet>(&mut self, msg: &P::Message<'_>) -> Result<(), SendError> {
        self.inner.send_by_name(P::NAME, msg)
    }

    /// Sends any serde value as the registered packet `name`.
    pub fn send_by_name<M: Serialize + ?Sized>(
        &mut self,
        name: &str,
        msg: &M,
    ) -> Result<(), SendError> {
        self.inner.send_by_name(name, msg)
    }

    /// Sends any serde value as the registered packet with this id.
    pub fn send_by_id<M: Serialize + ?Sized>(
        &mut self,
        packet_id: u32,
        msg: &M,
    ) -> Result<(), SendError> {
        self.inner.send_by_id(packet_id, msg)
    }

    /// Sends an already encoded body as the registered packet with this id
    /// (to echo or relay a received body without decoding it).
    pub fn send_encoded(&mut self, packet_id: u32, body: &[u8]) -> Result<(), SendError> {
        self.inner.send_encoded(packet_id, body)
    }

    /// Closes the connection with `reason` (see [`Connection::close`](super::Connection::close)).
    pub fn close(&mut self, reason: CloseReason) {
        self.inner.close(reason);
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The protocol state.
    pub fn state(&self) -> State {
        self.inner.progress.state()
    }

    /// The application mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The registry (with the server's ids, on a synced client).
    pub fn registry(&self) -> &Registry<N> {
        self.inner.registry.registry()
    }

    /// Bytes queued and not yet written to the transport.
    pub fn pending_transmit(&self) -> usize {
        self.inner.tx.pending().len()
    }
}

impl<'a, C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Inner<'a, C, T, N, G> {
    /// Checks rules and connection type before an application send.
    fn admit(&mut self, entry: &Entry) -> Result<(), SendError> {
        if self.is_closed() || self.transport_ended {
            return Err(SendError::Closed);
        }
        if entry.id < FIRST_AUTO_ID {
            // The protocol's own packets are sent by the state machine only.
            return Err(SendError::NotRegistered);
        }
        if let Err(v) = self.check_rules(&entry.rules, true) {
            if entry.rules.on_invalid == InvalidAction::Close {
                self.close(CloseReason::SmartPacketInvalid);
            }
            return Err(SendError::Rules {
                packet: entry.name,
                violation: v,
            });
        }
        let conntype = self.progress.packet_conntype();
        let allowed = match conntype {
            ConnType::Ping => false,
            ConnType::Custom(_) => conntype
                .hooks(&self.config)
                .is_none_or(|h| h.allow_send(self.side, entry.id)),
            ConnType::NotSet | ConnType::Classic => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(SendError::ConnTypeRefused)
        }
    }

    /// Sends `msg` as the packet registered as `name`.
    pub(super) fn send_by_name<M: Serialize + ?Sized>(
        &mut self,
        name: &str,
        msg: &M,
    ) -> Result<(), SendError> {
        let entry = *self
            .registry
            .registry()
            .by_name(name)
            .ok_or(SendError::NotRegistered)?;
        self.send_entry(&entry, msg)
    }

    /// Sends `msg` as the packet registered with this id.
    pub(super) fn send_by_id<M: Serialize + ?Sized>(
        &mut self,
        packet_id: u32,
        msg: &M,
    ) -> Result<(), SendError> {
        let entry = *self
            .registry
            .registry()
            .by_id(packet_id)
            .ok_or(SendError::NotRegistered)?;
        self.send_entry(&entry, msg)
    }

    /// Sends an encoded body as the packet registered with this id. Out of
    /// line on bare metal, where a server's broadcast, its handle's sends
    /// and its handlers' echoes share one copy (flash); inlined on a host,
    /// where it is a relay's hot path.
    #[cfg_attr(target_os = "none", inline(never))]
    #[cfg_attr(not(target_os = "none"), inline)]
    pub(super) fn send_encoded(&mut self, packet_id: u32, body: &[u8]) -> Result<(), SendError> {
        let entry = *self
            .registry
            .registry()
            .by_id(packet_id)
            .ok_or(SendError::NotRegistered)?;
        self.admit(&entry)?;
        self.tx.push_frame(
            entry.id,
            CLOSE_RESERVE,
            self.config.compressor,
            |out| {
                let dst = out
                    .get_mut(..body.len())
                    .ok_or(CodecError::BufferTooSmall)?;
                dst.copy_from_slice(body);
                Ok(body.len())
            },
            || Ok(body.len()),
        )
    }

    /// Checks and queues `msg` as the packet `entry`.
    #[inline]
    fn send_entry<M: Serialize + ?Sized>(
        &mut self,
        entry: &Entry,
        msg: &M,
    ) -> Result<(), SendError> {
        self.admit(entry)?;
        let codec = &self.codec;
        self.tx.push_frame(
            entry.id,
            CLOSE_RESERVE,
            self.config.compressor,
            |out| codec.encode(msg, out),
            || codec.encoded_len(msg),
        )
    }
}
