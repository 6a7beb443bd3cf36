//! The handshake (`docs/PROTOCOL.md`, "Handshake"): the server's `hello`,
//! the client's `settype`, entering the agreed connection type, the
//! registry sync of `handshake` and its `handshake.accept`.

use super::config::Config;
use super::conntype::ConnType;
use super::error::NewConnectionError;
use super::progress::{OpenState, Progress};
use super::receive::Outcome;
use super::transmit::CLOSE_RESERVE;
use super::Inner;
use crate::buffer::Buffer;
use crate::codec::{Codec, CodecError};
use crate::messages::{
    ClientHandshakeSeed, HandshakeAccept, HandshakeOut, Hello, HelloIn, SetType, PROTOVERSION,
};
use crate::registry::{internal, Registry, RegistryAccess, FIRST_AUTO_ID};
use crate::time::Instant;
use crate::types::{CloseReason, Side, State};
use crate::wire::FRAME_OVERHEAD;

/// Which side's protocol code a poll runs: what a protocol packet that
/// passed its rules (`hello`, `settype`, `handshake`, `handshake.accept`) and
/// a packet of a `ping` connection do.
///
/// [`Connection::poll`](super::Connection::poll) and the other polls run
/// [`Role::any`], which picks the connection's side when a packet comes. A
/// driver that knows its side when it makes the connection passes
/// [`Role::client`] or [`Role::server`] to
/// [`poll_with_role`](super::Connection::poll_with_role) and
/// [`poll_protocol_role`](super::Connection::poll_protocol_role) instead:
/// the role is a function pointer, so a firmware image that only makes
/// clients links none of the server's handling (its `handshake` with the
/// whole registry, its ping answer; about 2 KB of flash on a Cortex-M4F),
/// and one that only serves none of the client's (the registry sync). The
/// role MUST be the connection's side (checked in debug builds); the other
/// side's role ignores every protocol packet.
pub struct Role<'a, C, T, const N: usize, G> {
    side: Option<Side>,
    handle: RoleFn<'a, C, T, N, G>,
}

type RoleFn<'a, C, T, const N: usize, G> =
    fn(&mut Inner<'a, C, T, N, G>, u32, &[u8], Instant) -> Outcome;

impl<C, T, const N: usize, G> Clone for Role<'_, C, T, N, G> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, T, const N: usize, G> Copy for Role<'_, C, T, N, G> {}

impl<C, T, const N: usize, G> core::fmt::Debug for Role<'_, C, T, N, G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Role").field(&self.side).finish()
    }
}

impl<'a, C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Role<'a, C, T, N, G> {
    /// The client's code only.
    pub fn client() -> Self {
        Role {
            side: Some(Side::Client),
            handle: Inner::client_role,
        }
    }

    /// The server's code only.
    pub fn server() -> Self {
        Role {
            side: Some(Side::Server),
            handle: Inner::server_role,
        }
    }

    /// Both sides' code, chosen by the connection's side.
    pub fn any() -> Self {
        Role {
            side: None,
            handle: Inner::any_role,
        }
    }

    /// Runs the role on one packet of `inner`.
    #[inline]
    pub(super) fn handle(
        self,
        inner: &mut Inner<'a, C, T, N, G>,
        packet_id: u32,
        body: &[u8],
        now: Instant,
    ) -> Outcome {
        debug_assert!(
            self.side.is_none_or(|side| side == inner.side),
            "a {:?} role polled a {:?} connection",
            self.side,
            inner.side
        );
        (self.handle)(inner, packet_id, body, now)
    }
}

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

    /// Either side's protocol code, by the connection's side ([`Role::any`]).
    // Out of line, like the poll path's other rare branches (a ping,
    // `closeconn`, a close): a compact per-packet loop measured faster.
    #[inline(never)]
    fn any_role(&mut self, packet_id: u32, body: &[u8], now: Instant) -> Outcome {
        match self.side {
            Side::Client => self.client_role(packet_id, body, now),
            Side::Server => self.server_role(packet_id, body, now),
        }
    }

    /// The client's side of the protocol: a protocol packet (an id below
    /// 64) that passed its rules, or a packet of a `ping` connection
    /// ([`Role::client`]).
    fn client_role(&mut self, packet_id: u32, body: &[u8], now: Instant) -> Outcome {
        match packet_id {
            internal::HELLO => self.handle_hello(body, now),
            internal::HANDSHAKE => self.handle_handshake(body),
            // `settype` and `handshake.accept` are the server's to receive:
            // their rules refused them here already. Every id below 64 in a
            // registry is one of the five.
            id if id < FIRST_AUTO_ID => {}
            _ => return self.client_ping(packet_id, now),
        }
        Outcome::Nothing
    }

    /// The server's side of the protocol, as [`client_role`](Self::client_role)
    /// is the client's ([`Role::server`]).
    fn server_role(&mut self, packet_id: u32, body: &[u8], now: Instant) -> Outcome {
        match packet_id {
            internal::SETTYPE => {
                let Ok(msg) = self.codec.decode::<SetType>(body) else {
                    self.close(CloseReason::MalformedPacket);
                    return Outcome::Nothing;
                };
                match ConnType::find(msg.conntype, self.side, &self.config) {
                    Some(conntype) => {
                        self.enter(conntype, now);
                        if conntype == ConnType::Classic {
                            self.queue_handshake();
                        }
                    }
                    None => self.close(CloseReason::UnknownConnType),
                }
            }
            internal::HANDSHAKE_ACCEPT => match self.codec.decode::<HandshakeAccept>(body) {
                Ok(HandshakeAccept { success: true }) => {
                    self.open(self.progress.conntype(), OpenState::Active);
                }
                Ok(_) => self.close(CloseReason::HandshakeFailed),
                Err(_) => self.close(CloseReason::MalformedPacket),
            },
            // `hello` and `handshake` are the client's to receive (see
            // `client_role`).
            id if id < FIRST_AUTO_ID => {}
            _ => return self.server_ping(packet_id, body),
        }
        Outcome::Nothing
    }

    /// (Client) `hello`: checks the protocol version, asks for the target
    /// connection type and enters it.
    fn handle_hello(&mut self, body: &[u8], now: Instant) {
        self.codec.detect_from_hello(body);
        let Ok(hello) = self.codec.decode::<HelloIn>(body) else {
            return self.close(CloseReason::MalformedPacket);
        };
        if hello.protoversion.0 != PROTOVERSION {
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
    /// a `ping` client sends its request, a custom type runs its
    /// [`init`](super::ConnTypeHooks::init); a `classic` server then sends
    /// its registry in `handshake` (`server_role` does). The handshake timer
    /// keeps running.
    fn enter(&mut self, conntype: ConnType, now: Instant) {
        let deadline = self.progress.deadline();
        match conntype {
            // Never agreed: `ConnType::find` does not return it.
            ConnType::NotSet => {}
            ConnType::Classic => self.progress = Progress::Handshake { deadline },
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
        let msg = handshake_out(&self.config, self.registry.registry());
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

    /// (Server) refuses a transmit buffer that can never hold the
    /// `handshake` ([`server_tx_required`]). What the codec cannot measure
    /// it cannot encode either: the handshake then closes the connection
    /// when it is sent, as before.
    pub(super) fn check_handshake_fits(&self) -> Result<(), NewConnectionError> {
        let capacity = self.tx.buffer().max_capacity();
        match server_tx_required(&self.config, self.registry.registry(), &self.codec) {
            Ok(required) if required > capacity => {
                Err(NewConnectionError::HandshakeTooLarge { required, capacity })
            }
            _ => Ok(()),
        }
    }

    /// (Client) `handshake`: checks the protocol version, syncs the registry
    /// (adopting the server's ids where the registry may change, checking
    /// that they already agree where it is shared), accepts and opens.
    fn handle_handshake(&mut self, body: &[u8]) {
        let seed = ClientHandshakeSeed(self.registry.registry());
        let Ok((protoversion, sync)) = self.codec.decode_seed(seed, body) else {
            return self.close(CloseReason::MalformedPacket);
        };
        if protoversion != PROTOVERSION {
            return self.close(CloseReason::ProtoVersionMismatch);
        }
        if self.config.autosync {
            let policy = self.config.sync_policy;
            let result = match self.registry.registry_mut() {
                Some(reg) => reg.apply_sync(&sync, policy),
                // A shared registry cannot adopt ids: the server's must be
                // the ones it has.
                None => self.registry.registry().check_sync_unchanged(&sync, policy),
            };
            if result.is_err() {
                #[cfg(feature = "mismatch-report")]
                {
                    let adopts_ids = self.registry.registry_mut().is_some();
                    self.mismatch =
                        Some(self.registry.registry().mismatch_record(&sync, adopts_ids));
                }
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

/// The server's `handshake` message: its version and whole registry.
fn handshake_out<'a, const N: usize>(
    config: &Config<'a>,
    registry: &'a Registry<N>,
) -> HandshakeOut<'a, N> {
    HandshakeOut {
        version: config.version,
        protoversion: PROTOVERSION,
        registry: registry.as_map(),
    }
}

/// The least transmit capacity ([`Buffer::max_capacity`]) a server
/// connection over `registry` with `config` and `codec` accepts: its
/// `handshake` frame, which carries the whole registry, uncompressed (it is
/// encoded before it is compressed) beside [`CLOSE_RESERVE`], and never less
/// than [`MIN_TX_BUFFER`](super::MIN_TX_BUFFER).
/// [`Connection::server`](super::Connection::server) refuses a smaller
/// buffer with [`NewConnectionError::HandshakeTooLarge`]; an adapter can
/// check its buffer sizes with it before it accepts anyone.
pub fn server_tx_required<C: Codec, const N: usize>(
    config: &Config<'_>,
    registry: &Registry<N>,
    codec: &C,
) -> Result<usize, CodecError> {
    let body = codec.encoded_len(&handshake_out(config, registry))?;
    Ok((FRAME_OVERHEAD + body + CLOSE_RESERVE).max(super::MIN_TX_BUFFER))
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

    /// A server connection over registry `$server` and a client one over
    /// `$client` (with connection type `$conntype`), 512-byte buffers each,
    /// made at time zero: `(server, client)`.
    macro_rules! pair {
        ($config:expr, $server:expr, $client:expr, $conntype:expr) => {{
            let now = Instant::ZERO;
            let s = Connection::server($config, $server, Postcard, [0u8; 512], [0u8; 512], now)
                .unwrap();
            let c = Connection::client(
                $config, $client, Postcard, [0u8; 512], [0u8; 512], $conntype, now,
            )
            .unwrap();
            (s, c)
        }};
    }

    /// The handshake of a server over `server` and a client over `client`:
    /// how each side ended (`None`: connected; else closed with a reason).
    fn handshake<G: RegistryAccess<8>>(
        config: &Config<'_>,
        server: &Registry<8>,
        client: G,
    ) -> [Option<(CloseReason, Initiator)>; 2] {
        let now = Instant::ZERO;
        let (mut s, mut c) = pair!(config, server, client, "classic");
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

    /// A client and a server each polled with its own side's [`Role`]:
    /// `conntype` completes as with `poll` (events of each side, in order).
    fn with_roles(conntype: &str) -> [heapless::Vec<&'static str, 8>; 2] {
        use crate::connection::{Role, Take};
        let now = Instant::ZERO;
        let config = Config::new();
        let server_reg = Registry::<8>::new();
        let mut client_reg = Registry::<8>::new();
        let (mut s, mut c) = pair!(&config, &server_reg, &mut client_reg, conntype);
        let name = |e: &Event<'_, Postcard>| match e {
            Event::Connected => "connected",
            Event::Pong { .. } => "pong",
            Event::PingAnswered => "ping answered",
            Event::Closed(Closed { reason, .. }) if *reason == CloseReason::PingComplete => {
                "closed pingcomplete"
            }
            Event::Closed(_) => "closed",
            _ => "other",
        };
        let mut seen: [heapless::Vec<&'static str, 8>; 2] = Default::default();
        for _ in 0..4 {
            let n = c.handle_input(s.poll_transmit());
            s.transmitted(n);
            while let Some(e) =
                c.poll_with_role(now, Role::client(), |e, _| (Take::Consume, name(&e)))
            {
                let _ = seen[1].push(e);
            }
            let n = s.handle_input(c.poll_transmit());
            c.transmitted(n);
            while let Some(e) = s.poll_protocol_role(now, Role::server()) {
                let _ = seen[0].push(name(&e));
            }
        }
        seen
    }

    #[test]
    fn each_sides_role_alone_connects_and_pings() {
        let [server, client] = with_roles("classic");
        assert_eq!(server.as_slice(), ["connected"]);
        assert_eq!(client.as_slice(), ["connected"]);
        let [server, client] = with_roles("ping");
        assert_eq!(server.as_slice(), ["ping answered", "closed pingcomplete"]);
        assert_eq!(client.as_slice(), ["pong", "closed pingcomplete"]);
    }

    /// `poll_packet_role` hands a client's packets to its closure, keeps
    /// one the closure keeps, and reports the handshake as a step.
    #[test]
    fn poll_packet_role_hands_out_packets_and_reports_steps() {
        use crate::connection::{ProtocolStep, Role, Take};
        let now = Instant::ZERO;
        let config = Config::new();
        let mut server_reg = Registry::<8>::new();
        server_reg.register_raw("x:num", None, Rules::NONE).unwrap();
        let mut client_reg = server_reg.clone();
        let (mut s, mut c) = pair!(&config, &server_reg, &mut client_reg, "classic");
        let mut steps: heapless::Vec<ProtocolStep, 8> = heapless::Vec::new();
        for _ in 0..4 {
            let n = c.handle_input(s.poll_transmit());
            s.transmitted(n);
            while let Some(step) =
                c.poll_packet_role(now, Role::client(), |_, _| (Take::Consume, ()))
            {
                let _ = steps.push(step.unwrap_err());
            }
            let n = s.handle_input(c.poll_transmit());
            c.transmitted(n);
            while s.poll(now).is_some() {}
        }
        assert_eq!(steps.as_slice(), [ProtocolStep::Connected]);
        s.send_by_name("x:num", &7u32).unwrap();
        let n = c.handle_input(s.poll_transmit());
        s.transmitted(n);
        let kept = c.poll_packet_role(now, Role::client(), |p, _| (Take::Keep, p.packet_id));
        assert_eq!(kept, Some(Ok(64)));
        let got = c.poll_packet_role(now, Role::client(), |p, _| {
            (Take::Consume, p.decode_as::<u32>().unwrap())
        });
        assert_eq!(got, Some(Ok(7)));
        assert_eq!(
            c.poll_packet_role(now, Role::client(), |_, _| (Take::Consume, 0)),
            None
        );
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
