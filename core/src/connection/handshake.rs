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
use crate::registry::{internal, RegistryAccess};
use crate::time::Instant;
use crate::types::{CloseReason, Side, State};

impl<'a, C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Inner<'a, C, T, N, G> {
    /// (Server) queues `hello`, the first thing a server says.
    pub(super) fn queue_hello(&mut self) -> Result<(), NewConnectionError> {
        let hello = Hello {
            version: self.config.version,
            protoversion: PROTOVERSION,
        };
        // Through `push_frame` rather than `push_message` (the size it
        // computes is not reported either): measured, the firmware's server
        // image is about 400 bytes smaller this way.
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
    // Out of line, like the poll path's other rare branches (a ping,
    // `closeconn`, a close): a compact per-packet loop measured faster.
    #[inline(never)]
    pub(super) fn handle_internal(&mut self, packet_id: u32, body: &[u8], now: Instant) {
        match packet_id {
            internal::HELLO => self.handle_hello(body, now),
            internal::SETTYPE => {
                let Ok(msg) = self.codec.decode::<SetType>(body) else {
                    return self.close(CloseReason::MalformedPacket);
                };
                match ConnType::find(msg.conntype, self.side, &self.config) {
                    Some(conntype) => self.enter(conntype, now),
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
        self.enter(target, now);
    }

    /// Enters the agreed connection type (`init` of the reference's types):
    /// a `classic` server sends its registry in `handshake`, a `ping` client
    /// its request, a custom type runs its [`init`](super::ConnTypeHooks::init).
    /// The handshake timer keeps running.
    fn enter(&mut self, conntype: ConnType, now: Instant) {
        let deadline = self.progress.deadline();
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
        let queued = self.tx.push_message(
            internal::HANDSHAKE,
            CLOSE_RESERVE,
            self.config.compressor,
            &self.codec,
            &msg,
        );
        if !queued {
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
                // A shared registry cannot adopt ids: the server's must be
                // the ones it has.
                None => self
                    .registry
                    .registry()
                    .check_sync_unchanged(&hs.sync, policy),
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

#[cfg(test)]
mod tests {
    use crate::codec::Postcard;
    use crate::connection::{Config, Connection, Event};
    use crate::registry::{Registry, RegistryAccess, SyncPolicy};
    use crate::rules::Rules;
    use crate::time::Instant;
    use crate::types::Closed;
    use crate::types::{CloseReason, Initiator};

    /// The handshake of a server over `server` and a client over `client`:
    /// how each side ended (`None`: connected; else closed with a reason).
    fn handshake<G: RegistryAccess<8>>(
        config: &Config<'_>,
        server: &Registry<8>,
        client: G,
    ) -> [Option<(CloseReason, Initiator)>; 2] {
        let now = Instant::ZERO;
        let mut s =
            Connection::server(config, server, Postcard, [0u8; 512], [0u8; 512], now).unwrap();
        let mut c = Connection::client(
            config, client, Postcard, [0u8; 512], [0u8; 512], "classic", now,
        )
        .unwrap();
        let mut ended = [None, None];
        let mut connected = [false, false];
        for _ in 0..4 {
            let n = c.handle_input(s.poll_transmit());
            s.transmitted(n);
            while let Some(event) = c.poll(now) {
                match event {
                    Event::Connected => connected[1] = true,
                    Event::Closed(Closed { reason, initiator }) => {
                        ended[1] = Some((reason, initiator))
                    }
                    _ => {}
                }
            }
            let n = s.handle_input(c.poll_transmit());
            c.transmitted(n);
            while let Some(event) = s.poll(now) {
                match event {
                    Event::Connected => connected[0] = true,
                    Event::Closed(Closed { reason, initiator }) => {
                        ended[0] = Some((reason, initiator))
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(connected, [ended[0].is_none(), ended[1].is_none()]);
        ended
    }

    #[test]
    fn a_shared_client_registry_needs_the_servers_ids() {
        let mismatch = [
            Some((CloseReason::PacketRegMismatch, Initiator::Peer)),
            Some((CloseReason::PacketRegMismatch, Initiator::Local)),
        ];
        let mut server = Registry::<8>::new();
        server.register_raw("x:one", None, Rules::NONE).unwrap();
        server.register_raw("x:two", None, Rules::NONE).unwrap();
        let config = Config::new();
        // The same names on the same ids: shared or not, it connects.
        assert_eq!(handshake(&config, &server, &server.clone()), [None, None]);
        // The same names on other ids: only a registry that may change
        // adopts them.
        let mut swapped = Registry::<8>::new();
        swapped.register_raw("x:two", None, Rules::NONE).unwrap();
        swapped.register_raw("x:one", None, Rules::NONE).unwrap();
        assert_eq!(handshake(&config, &server, &swapped), mismatch);
        assert_eq!(handshake(&config, &server, &mut swapped), [None, None]);
        assert_eq!(swapped.by_name("x:one").unwrap().id, 64);
        // Fewer names: a mismatch, unless the policy ignores it and the
        // shared names have the same ids.
        let mut fewer = Registry::<8>::new();
        fewer.register_raw("x:one", None, Rules::NONE).unwrap();
        assert_eq!(handshake(&config, &server, &fewer), mismatch);
        let ignore = Config {
            sync_policy: SyncPolicy::Ignore,
            ..Config::new()
        };
        assert_eq!(handshake(&ignore, &server, &fewer), [None, None]);
        let mut other = Registry::<8>::new();
        other.register_raw("x:two", None, Rules::NONE).unwrap();
        assert_eq!(handshake(&ignore, &server, &other), mismatch);
    }
}
