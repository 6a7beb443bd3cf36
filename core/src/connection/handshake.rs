//! The handshake (`docs/PROTOCOL.md`, "Handshake"): the server's `hello`,
//! the client's `settype`, entering the agreed connection type, the
//! registry sync of `handshake` and its `handshake.accept`.

use super::conntype::ConnType;
use super::error::NewConnectionError;
use super::progress::{OpenState, Progress};
use super::transmit::CLOSE_RESERVE;
use super::Inner;
use crate::buffer::Buffer;
use crate::codec::Codec;
use crate::messages::{HandshakeAccept, HandshakeOut, HandshakeSeed, Hello, SetType, PROTOVERSION};
use crate::registry::{internal, RegistryAccess, SyncError};
use crate::time::{Instant, MaybeInstant};
use crate::types::{CloseReason, Side, State};

impl<'a, C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Inner<'a, C, T, N, G> {
    /// (Server) queues `hello`, the first thing a server says.
    pub(super) fn queue_hello(&mut self) -> Result<(), NewConnectionError> {
        let hello = Hello {
            version: self.config.version,
            protoversion: PROTOVERSION,
        };
        let codec = &self.codec;
        self.tx
            .push_frame(
                internal::HELLO,
                CLOSE_RESERVE,
                self.config.compressor,
                |out| codec.encode(&hello, out),
                || codec.encoded_len(&hello),
            )
            .map_err(|_| NewConnectionError::HelloTooLarge)
    }

    /// Handles a protocol packet (an id below 64) that passed its rules.
    pub(super) fn handle_internal(&mut self, packet_id: u32, body: &[u8], now: Instant) {
        match packet_id {
            internal::HELLO => self.handle_hello(body, now),
            internal::SETTYPE => {
                let Ok(msg) = self.codec.decode::<SetType>(body) else {
                    return self.close(CloseReason::MalformedPacket);
                };
                match ConnType::find(msg.conntype, self.side, &self.config) {
                    Some(conntype) => {
                        let deadline = self.progress.deadline();
                        self.enter(conntype, deadline, now);
                    }
                    None => self.close(CloseReason::UnknownConnType),
                }
            }
            internal::HANDSHAKE => self.handle_handshake(body),
            internal::HANDSHAKE_ACCEPT => match self.codec.decode::<HandshakeAccept>(body) {
                Ok(HandshakeAccept { success: true }) => {
                    self.open(self.progress.conntype(), OpenState::Active);
                }
                Ok(_) => self.close(CloseReason::HandshakeFailed),
                Err(_) => self.close(CloseReason::MalformedPacket),
            },
            // Every id below 64 in a registry is one of the above.
            _ => {}
        }
    }

    /// (Client) `hello`: checks the protocol version, asks for the target
    /// connection type and enters it.
    fn handle_hello(&mut self, body: &[u8], now: Instant) {
        self.codec.detect_from_hello(body);
        let Ok(hello) = self.codec.decode::<Hello>(body) else {
            return self.close(CloseReason::MalformedPacket);
        };
        if hello.protoversion != PROTOVERSION {
            return self.close(CloseReason::ProtoVersionMismatch);
        }
        // The rules admit `hello` on a client in HELLOWAIT only: while it
        // awaits it, or in the setup of a custom type that chose that state
        // (which then asks for its own type again).
        let target = match self.progress {
            Progress::AwaitingHello { target, .. } => target,
            ref other => other.conntype(),
        };
        let msg = SetType {
            conntype: target.name(&self.config),
        };
        self.queue_internal(internal::SETTYPE, &msg);
        if self.is_closed() {
            return;
        }
        let deadline = self.progress.deadline();
        self.enter(target, deadline, now);
    }

    /// Enters the agreed connection type (`init` of the reference's types):
    /// a `classic` server sends its registry in `handshake`, a `ping` client
    /// its request, a custom type runs its [`init`](super::ConnTypeHooks::init).
    fn enter(&mut self, conntype: ConnType, deadline: MaybeInstant, now: Instant) {
        match conntype {
            // Never agreed: `ConnType::find` does not return it.
            ConnType::NotSet => {}
            ConnType::Classic => {
                self.progress = Progress::Handshake { deadline };
                if self.side == Side::Server {
                    self.queue_handshake();
                }
            }
            ConnType::Ping => self.enter_ping(deadline, now),
            ConnType::Custom(index) => {
                let state = conntype
                    .hooks(&self.config)
                    .map_or(State::Active, |h| h.init(self.side));
                match OpenState::from_state(state) {
                    Some(open) => self.open(conntype, open),
                    None => {
                        self.progress = Progress::CustomSetup {
                            index,
                            state,
                            deadline,
                        }
                    }
                }
            }
        }
    }

    /// (Server) queues `handshake` with every name and id of the registry.
    fn queue_handshake(&mut self) {
        let reg = self.registry.registry();
        let msg = HandshakeOut {
            version: self.config.version,
            protoversion: PROTOVERSION,
            registry: reg.as_map(),
        };
        let codec = &self.codec;
        let res = self.tx.push_frame(
            internal::HANDSHAKE,
            CLOSE_RESERVE,
            self.config.compressor,
            |out| codec.encode(&msg, out),
            || codec.encoded_len(&msg),
        );
        if res.is_err() {
            self.close(CloseReason::WriteQueueFull);
        }
    }

    /// (Client) `handshake`: checks the protocol version, syncs the registry
    /// (adopting the server's ids where the registry may change, checking
    /// that they already agree where it is shared), accepts and opens.
    fn handle_handshake(&mut self, body: &[u8]) {
        let seed = HandshakeSeed(self.registry.registry());
        let Ok(hs) = self.codec.decode_seed(seed, body) else {
            return self.close(CloseReason::MalformedPacket);
        };
        if hs.protoversion != PROTOVERSION {
            return self.close(CloseReason::ProtoVersionMismatch);
        }
        if self.config.autosync {
            let policy = self.config.sync_policy;
            let result = match self.registry.registry_mut() {
                Some(reg) => reg.apply_sync(&hs.sync, policy),
                // A shared registry cannot adopt ids: the sync must be one
                // that would change none.
                None => {
                    let reg = self.registry.registry();
                    reg.check_sync(&hs.sync, policy).and_then(|()| {
                        if reg.sync_keeps_ids(&hs.sync) {
                            Ok(())
                        } else {
                            Err(SyncError::Mismatch)
                        }
                    })
                }
            };
            if result.is_err() {
                return self.close(CloseReason::PacketRegMismatch);
            }
        }
        self.queue_internal(
            internal::HANDSHAKE_ACCEPT,
            &HandshakeAccept { success: true },
        );
        if !self.is_closed() {
            self.open(self.progress.conntype(), OpenState::Active);
        }
    }
}
