//! One endpoint of one connection: the client, or the server's view of one
//! client. Sans-IO: bytes and time go in, events and bytes come out.
//!
//! # Driving a connection
//! An adapter repeats, in this order, and starts with step 3 (a server
//! connection has `hello` to write before it read anything):
//! 1. Put received bytes in: read into [`Connection::receive_buffer`] and call
//!    [`Connection::commit_received`], or copy with [`Connection::handle_input`].
//!    On end of stream or a transport error call
//!    [`Connection::handle_transport_closed`].
//! 2. Call [`Connection::poll`] until it returns `None`, acting on each
//!    [`Event`]. Only then is buffer space freed for more input.
//!    [`Connection::poll_with`] does the same and lends the connection's
//!    [`Outbox`] beside each event, to answer a packet while its body is
//!    still borrowed from the receive buffer (no copy).
//! 3. Write [`Connection::poll_transmit`] to the transport and report what was
//!    written with [`Connection::transmitted`].
//! 4. Sleep until input arrives or until [`Connection::poll_timeout`], and
//!    then call [`Connection::handle_timeout`] (the handshake, frame and idle
//!    timers close; the keepalive queues a frame: write it as in step 3).
//! 5. Once [`Connection::is_finished`] is true, close the transport.
//!
//! Commands ([`Connection::send`], [`Connection::close`], ...) may be issued at
//! any time between those steps; what they queue leaves through step 3.
//!
//! [`Connection::server`] queues `hello` when it creates the connection, and
//! the client says nothing before it: a driver that blocks in a read first
//! waits forever on both ends. Write first (step 3), then wait for input no
//! longer than [`Connection::poll_timeout`] (a blocking driver's read
//! timeout), as `peng3dnet_std::stream` does; an async driver writes until
//! the transport is not ready, reads until it is not ready, and sleeps until
//! it is or until `poll_timeout` (as `peng3dnet_std::tokio_client` does).
//!
//! The protocol itself is in `docs/PROTOCOL.md`: the classic handshake
//! ("Handshake"), the ping connection type, SmartPacket rules and closing.
//!
//! ```
//! use peng3dnet_core::connection::{Config, Connection, Event};
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::registry::Registry;
//! use peng3dnet_core::time::Instant;
//!
//! let config = Config::new();
//! let server_reg = Registry::<8>::new();
//! let mut client_reg = Registry::<8>::new();
//! let now = Instant::ZERO;
//! let mut server =
//!     Connection::server(&config, &server_reg, Postcard, [0u8; 512], [0u8; 512], now).unwrap();
//! let mut client = Connection::client(
//!     &config, &mut client_reg, Postcard, [0u8; 512], [0u8; 512], "classic", now,
//! )
//! .unwrap();
//!
//! // Shuttle bytes both ways until both sides are connected.
//! let mut connected = 0;
//! for _ in 0..4 {
//!     let n = client.handle_input(server.poll_transmit());
//!     server.transmitted(n);
//!     while let Some(event) = client.poll(now) {
//!         connected += matches!(event, Event::Connected) as u32;
//!     }
//!     let n = server.handle_input(client.poll_transmit());
//!     client.transmitted(n);
//!     while let Some(event) = server.poll(now) {
//!         connected += matches!(event, Event::Connected) as u32;
//!     }
//! }
//! assert_eq!(connected, 2);
//! ```

// The code by concern: `config` (settings), `conntype` (connection types),
// `event` (what `poll` reports), `error` (refused creations and sends),
// `progress` (how far a connection has come, the wire state derived from
// it, open and close), `receive` (what a frame does), `handshake`, `ping`,
// `transmit` (the transmit queue and compression) and `outbox` (the sending
// side and the checks before a send).
mod config;
mod conntype;
mod error;
mod event;
mod handshake;
mod outbox;
mod ping;
mod progress;
mod receive;
mod timers;
mod transmit;

pub use config::{Compressor, Config, PingServerConfig};
pub use conntype::{CloseKind, ConnTypeHooks, CustomConnType, Dispatch};
pub use error::{NewConnectionError, SendError};
pub use event::{DecodeError, Event, IgnoreCause, Incoming};
pub use handshake::{server_tx_required, Role};
pub use outbox::{Outbox, Take};
pub use transmit::{CLOSE_RESERVE, MIN_TX_BUFFER};

use crate::buffer::Buffer;
use crate::codec::Codec;
#[cfg(feature = "mismatch-report")]
use crate::registry::{MismatchRecord, RegistryMismatch};
use crate::registry::{Packet, Registry, RegistryAccess};
use crate::time::{Duration, Instant, MaybeInstant};
use crate::types::{CloseReason, Closed, Initiator, Mode, SecurityLevel, Side, State};
use crate::wire::{Flags, FrameDecoder};
use conntype::ConnType;
use core::fmt;
use progress::{OpenState, Pending, Progress};
use receive::Found;
use serde::Serialize;
use timers::{Due, Timers};
use transmit::TxBuf;

/// Everything of a connection but its receive buffer, so that events can
/// borrow the received bytes while the state machine runs.
struct Inner<'a, C, T, const N: usize, G> {
    config: Config<'a>,
    registry: G,
    codec: C,
    side: Side,
    /// How far the connection has come; the wire state is derived from it.
    progress: Progress,
    mode: Mode,
    security: SecurityLevel,
    /// The event the last change of `progress` left for the next poll.
    pending: Option<Pending>,
    /// The transport ended while whole frames were still buffered: they are
    /// handed out (sends are refused meanwhile), then the connection closes
    /// with `socketclose`. Apart from `progress` because a connection in any
    /// step may still have frames to read.
    transport_ended: bool,
    /// Where in the registry the packet [`poll`](Connection::poll)'s fast
    /// path handed out last lies: the next frame is most often of the same
    /// packet, and trying that entry first keeps the registry lookup off the
    /// frame's chain of loads. A hint only: the entry's id is compared.
    fast_hint: u16,
    /// The frame, idle and keepalive timers.
    timers: Timers,
    tx: TxBuf<T>,
    /// (Client) how the server's registry differed, when the handshake
    /// closed with `packetregmismatch`.
    #[cfg(feature = "mismatch-report")]
    mismatch: Option<MismatchRecord>,
}

/// One endpoint of one connection over caller-owned [`Buffer`]s: `R` receives,
/// `T` transmits (`[u8; K]`, `&mut [u8]`, a growable host buffer...). `N` is the
/// registry's capacity. See the [module docs](self) for the calling order.
// `repr(C)`, the state machine before the receive buffer: of the layouts
// measured, the fastest receive path (layout alone moves it by 5 to 10%).
#[repr(C)]
pub struct Connection<'a, C, R, T, const N: usize, G = &'a Registry<N>> {
    inner: Inner<'a, C, T, N, G>,
    rx: FrameDecoder<R>,
}

impl<'a, C, R, T, const N: usize, G> Connection<'a, C, R, T, N, G>
where
    C: Codec,
    R: Buffer,
    T: Buffer,
    G: RegistryAccess<N>,
{
    /// A connection of `side` at `progress`, its transmit buffer checked by
    /// the caller.
    #[allow(clippy::too_many_arguments)]
    fn new(
        side: Side,
        progress: Progress,
        config: &Config<'a>,
        registry: G,
        codec: C,
        rx: R,
        tx: T,
        now: Instant,
    ) -> Self {
        Connection {
            rx: FrameDecoder::new(rx),
            inner: Inner {
                config: *config,
                registry,
                codec,
                side,
                progress,
                mode: Mode::NOTSET,
                security: SecurityLevel::None,
                pending: None,
                transport_ended: false,
                fast_hint: 0,
                timers: Timers::new(now, config.idle_timeout, config.keepalive_interval),
                tx: TxBuf::new(tx),
                #[cfg(feature = "mismatch-report")]
                mismatch: None,
            },
        }
    }

    /// The server's view of a client that just connected. Queues `hello`.
    /// `registry` is usually `&Registry` (shared by every connection).
    /// Fails with [`NewConnectionError::HandshakeTooLarge`] when `tx` can
    /// never hold the `handshake`, which carries the whole registry
    /// ([`server_tx_required`]), rather than closing with `writequeuefull`
    /// once a client asks for it.
    pub fn server(
        config: &Config<'a>,
        registry: G,
        codec: C,
        rx: R,
        tx: T,
        now: Instant,
    ) -> Result<Self, NewConnectionError> {
        TxBuf::check_size(&tx)?;
        let deadline = MaybeInstant::new(now + config.handshake_timeout);
        let progress = Progress::AwaitingType { deadline };
        let mut conn = Self::new(Side::Server, progress, config, registry, codec, rx, tx, now);
        conn.inner.check_handshake_fits()?;
        conn.inner.queue_hello()?;
        Ok(conn)
    }

    /// A client that will ask for connection type `conntype` (`"classic"`,
    /// `"ping"` or one of [`Config::conntypes`]) once the server's `hello`
    /// arrives. A registry the client may change (`&mut Registry` or an
    /// owned one) adopts the server's ids in the handshake.
    pub fn client(
        config: &Config<'a>,
        registry: G,
        codec: C,
        rx: R,
        tx: T,
        conntype: &str,
        now: Instant,
    ) -> Result<Self, NewConnectionError> {
        TxBuf::check_size(&tx)?;
        let target = ConnType::find(conntype, Side::Client, config)
            .ok_or(NewConnectionError::UnknownConnType)?;
        let deadline = MaybeInstant::new(now + config.handshake_timeout);
        let progress = Progress::AwaitingHello { target, deadline };
        Ok(Self::new(
            Side::Client,
            progress,
            config,
            registry,
            codec,
            rx,
            tx,
            now,
        ))
    }

    // ---- getters ----

    /// The side of this endpoint.
    pub fn side(&self) -> Side {
        self.inner.side
    }

    /// The protocol state.
    pub fn state(&self) -> State {
        self.inner.progress.state()
    }

    /// The application mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The connection type (`_notset` until agreed).
    pub fn conntype(&self) -> &str {
        self.inner.progress.conntype().name(&self.inner.config)
    }

    /// The transport's security level, as the adapter set it.
    pub fn security_level(&self) -> SecurityLevel {
        self.inner.security
    }

    /// Whether the handshake completed and the connection is not closed.
    /// A `ping` connection never is: it has no handshake.
    pub fn is_connected(&self) -> bool {
        matches!(self.inner.progress, Progress::Open { .. }) && !self.inner.transport_ended
    }

    /// Whether the connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// How the connection ended (why, and who closed it), once it has.
    pub fn closed(&self) -> Option<Closed> {
        self.inner.progress.closed()
    }

    /// Whether the connection is closed and everything queued was written:
    /// the adapter may now close the transport.
    pub fn is_finished(&self) -> bool {
        self.inner.is_closed() && self.inner.tx.pending().is_empty()
    }

    /// The registry this connection uses (with the server's ids, on a synced
    /// client).
    pub fn registry(&self) -> &Registry<N> {
        self.inner.registry.registry()
    }

    /// (Client) How the server's registry differed from ours, if the
    /// handshake closed the connection with `packetregmismatch`
    /// ([`SyncPolicy`](crate::registry::SyncPolicy)): the first name the
    /// server lacks, the first we lack, the first id that differs where ids
    /// must agree, and how many of each. (Feature `mismatch-report`.)
    #[cfg(feature = "mismatch-report")]
    pub fn registry_mismatch(&self) -> Option<RegistryMismatch> {
        let rec = self.inner.mismatch.as_ref()?;
        Some(self.inner.registry.registry().expand_mismatch(rec))
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.inner.codec
    }

    /// The receive and transmit storage, for inspection (a host adapter
    /// reports their current sizes, say).
    pub fn buffers(&self) -> (&R, &T) {
        (self.rx.buffer(), self.inner.tx.buffer())
    }

    /// Gives the receive and transmit storage back (a server slot reuses
    /// them for its next client); whatever they hold is dropped.
    pub fn into_buffers(self) -> (R, T) {
        (self.rx.into_buffer(), self.inner.tx.into_buffer())
    }

    /// The largest frame (length prefix included) this connection receives.
    pub fn max_frame_len(&self) -> usize {
        self.rx.capacity()
    }

    // ---- inputs ----

    /// Free space to read received bytes into; then call
    /// [`commit_received`](Self::commit_received). Empty while the buffer is
    /// full (call [`poll`](Self::poll) first) or after the connection closed.
    pub fn receive_buffer(&mut self) -> &mut [u8] {
        if self.inner.is_closed() {
            return &mut [];
        }
        self.rx.free_space()
    }

    /// Marks `n` bytes written into [`receive_buffer`](Self::receive_buffer)
    /// as received.
    pub fn commit_received(&mut self, n: usize) {
        if n > 0 {
            self.inner.timers.received();
        }
        self.rx.commit(n);
    }

    /// Copies received bytes in and returns how many were taken; feed the
    /// rest after [`poll`](Self::poll) returned `None`. Bytes arriving after
    /// the connection closed are taken and dropped.
    pub fn handle_input(&mut self, bytes: &[u8]) -> usize {
        if self.inner.is_closed() {
            return bytes.len();
        }
        if !bytes.is_empty() {
            self.inner.timers.received();
        }
        self.rx.feed(bytes)
    }

    /// The transport ended (end of stream or error). Closes the connection
    /// with `socketclose` unless it is closed already.
    ///
    /// Whole frames received before the end are still handed out by
    /// [`poll`](Self::poll) in order (a peer's last packets, its
    /// `closeconn`); the close is reported once they are taken.
    pub fn handle_transport_closed(&mut self) {
        self.inner.tx.clear();
        if self.inner.is_closed() {
            return;
        }
        if self.rx.has_frame() {
            self.inner.transport_ended = true;
        } else {
            self.inner
                .finish(CloseReason::SocketClose, Initiator::Transport);
        }
    }

    /// Time passed: fires what is due at `now`: the handshake timer
    /// (`handshaketimeout`), the frame timer (`frametimeout`), the idle timer
    /// (`idletimeout`), or the keepalive (queued; write
    /// [`poll_transmit`](Self::poll_transmit) after).
    pub fn handle_timeout(&mut self, now: Instant) {
        let inner = &mut self.inner;
        if inner.is_closed() {
            return;
        }
        if inner.progress.deadline().get().is_some_and(|at| now >= at) {
            inner.close(CloseReason::HandshakeTimeout);
            return;
        }
        let open = matches!(inner.progress, Progress::Open { .. });
        let tx = &mut inner.tx;
        match inner.timers.fire(
            now,
            || tx.take_queued(),
            open,
            inner.config.keepalive_interval,
        ) {
            Due::Nothing => {}
            Due::Frame => inner.close(CloseReason::FrameTimeout),
            Due::Idle => inner.close(CloseReason::IdleTimeout),
            Due::Keepalive => inner.queue_keepalive(),
        }
    }

    // ---- commands ----

    /// The sending side of the connection (what [`poll_with`](Self::poll_with)
    /// hands out beside a received packet).
    pub fn outbox(&mut self) -> Outbox<'_, 'a, C, T, N, G> {
        Outbox {
            inner: &mut self.inner,
        }
    }

    /// Sends a typed packet, checked against its rules and the connection
    /// type first. Nothing is queued on error.
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
    /// (for broadcasts and relays: encode once, send many times).
    pub fn send_encoded(&mut self, packet_id: u32, body: &[u8]) -> Result<(), SendError> {
        self.inner.send_encoded(packet_id, body)
    }

    /// Closes the connection: queues `closeconn` with `reason` for the peer and
    /// reports [`Event::Closed`] from the next [`poll`](Self::poll). Does
    /// nothing if already closed.
    pub fn close(&mut self, reason: CloseReason) {
        self.inner.close(reason);
    }

    /// Sets the application mode.
    pub fn set_mode(&mut self, mode: Mode) {
        if !self.inner.is_closed() {
            self.inner.mode = mode;
        }
    }

    /// Sets an application state once connected (for example
    /// [`State::LoggedIn`]). Ignored before the handshake completed, after the
    /// connection closed, or for a handshake state.
    pub fn set_state(&mut self, state: State) {
        let Some(open) = OpenState::from_state(state) else {
            return;
        };
        if self.is_connected() {
            if let Progress::Open { state, .. } = &mut self.inner.progress {
                *state = open;
            }
        }
    }

    /// Sets the transport's security level, as the adapter established it
    /// (after a TLS handshake, say).
    pub fn set_security_level(&mut self, level: SecurityLevel) {
        self.inner.security = level;
    }

    // ---- outputs ----

    /// The next event, or `None` when every received frame is processed.
    /// Frees receive buffer space as frames are consumed.
    #[inline(always)]
    pub fn poll(&mut self, now: Instant) -> Option<Event<'_, C>> {
        // The common case (an application packet on an open connection) is
        // a few loads and compares; everything else takes the general path.
        if let Some((packet_id, name, body)) = self.next_fast() {
            let body = self.rx.stored(body);
            let codec = self.inner.codec.clone();
            return Some(Event::Packet(Incoming::new(
                packet_id,
                Some(name),
                body,
                codec,
            )));
        }
        self.poll_general(now)
    }

    /// [`poll`](Self::poll) past its fast path: out of line, so that the
    /// fast path inlines into the caller's loop without the general path's
    /// stack frame.
    #[inline(never)]
    fn poll_general(&mut self, now: Instant) -> Option<Event<'_, C>> {
        let Some(found) = self.next_found(now, false, handshake::Role::any()) else {
            self.update_timers(now);
            return None;
        };
        Some(found.into_event(&self.rx, &self.inner.codec, &self.inner.progress))
    }

    /// Brings the frame and idle timers up to date at the end of a poll
    /// (inputs carry no time; see `timers`).
    // Out of line on a host (three callers); inlined on bare metal, where
    // an image links one or two of them (flash).
    #[cfg_attr(not(target_os = "none"), inline(never))]
    fn update_timers(&mut self, now: Instant) {
        let partial = self.rx.has_partial().then(|| self.rx.position());
        let config = &self.inner.config;
        let (frame, idle) = (config.frame_timeout, config.idle_timeout);
        self.inner.timers.update(now, partial, frame, idle);
    }

    /// Like [`poll`](Self::poll), but stops before an application packet
    /// (which stays buffered for a later [`poll`](Self::poll)), so it never
    /// returns [`Event::Packet`] or [`Event::ConnTypePacket`]. A driver task
    /// calls it to run the handshake, pings and closes while the
    /// application's receiver takes packets when it is ready; frames are
    /// still handled in order. [`has_buffered_frame`](Self::has_buffered_frame)
    /// then says whether a packet waits.
    pub fn poll_protocol(&mut self, now: Instant) -> Option<Event<'_, C>> {
        let found = self.next_found_shared(now, true)?;
        Some(found.into_event(&self.rx, &self.inner.codec, &self.inner.progress))
    }

    /// Whether a whole frame waits in the receive buffer.
    pub fn has_buffered_frame(&self) -> bool {
        !self.inner.is_closed() && self.rx.has_frame()
    }

    /// Like [`poll`](Self::poll), but hands the event to `f` together with
    /// the connection's [`Outbox`], so a packet can be answered while its
    /// body is still borrowed from the receive buffer (no copy). `f` returns
    /// [`Take::Keep`] to leave an application packet buffered, to be handed
    /// out again by the next `poll` or `poll_with` (when the reply does not
    /// fit yet, say); other events are consumed whatever it returns.
    /// `None` when every received frame is processed.
    ///
    /// ```
    /// # use peng3dnet_core::codec::Postcard;
    /// # use peng3dnet_core::connection::{Event, Take};
    /// # use peng3dnet_core::time::Instant;
    /// # use peng3dnet_core::{Config, Connection};
    /// # use peng3dnet_core::registry::Registry;
    /// # let registry = Registry::<8>::new();
    /// # let (mut rx, mut tx) = ([0u8; 256], [0u8; 512]);
    /// # let mut conn = Connection::server(&Config::new(), &registry, Postcard,
    /// #     &mut rx[..], &mut tx[..], Instant::ZERO).unwrap();
    /// // Echo every packet back without copying its body.
    /// while let Some(()) = conn.poll_with(Instant::ZERO, |event, outbox| {
    ///     if let Event::Packet(p) = event {
    ///         if outbox.send_encoded(p.packet_id, p.body).is_err() {
    ///             return (Take::Keep, ()); // try again once bytes left
    ///         }
    ///     }
    ///     (Take::Consume, ())
    /// }) {}
    /// ```
    pub fn poll_with<X>(
        &mut self,
        now: Instant,
        f: impl FnOnce(Event<'_, C>, &mut Outbox<'_, 'a, C, T, N, G>) -> (Take, X),
    ) -> Option<X> {
        let found = self.next_found_shared(now, false)?;
        Some(self.hand_out(found, f))
    }

    /// One step of [`poll_protocol`](Self::poll_protocol) for a driver that
    /// hands no event out (the core's server counts what it needs): no
    /// event is built.
    pub(crate) fn step_protocol(&mut self, now: Instant) -> Option<ProtocolStep> {
        Some(ProtocolStep::of(self.next_found_shared(now, true)?))
    }

    /// The state machine run out of line, once for [`poll_protocol`] and
    /// every [`poll_with`] (their callers differ in what they do with an
    /// event, not in how it is found): on a board, each inlined copy cost
    /// several hundred bytes of flash. [`poll`] keeps its own inlined copy,
    /// the host's receive path.
    ///
    /// [`poll`]: Self::poll
    /// [`poll_protocol`]: Self::poll_protocol
    /// [`poll_with`]: Self::poll_with
    #[inline(never)]
    fn next_found_shared(&mut self, now: Instant, protocol_only: bool) -> Option<Found> {
        let found = self.next_found(now, protocol_only, handshake::Role::any());
        if found.is_none() {
            self.update_timers(now);
        }
        found
    }

    /// The next whole frame waiting in the receive buffer, if one does and
    /// the connection is open: its packet id, length (prefix included) and
    /// whether it is compressed. The server's fair service looks at it
    /// before it hands the frame out.
    pub(crate) fn peek_frame(&self) -> Option<(u32, usize, bool)> {
        if self.inner.is_closed() {
            return None;
        }
        let (id, len, flags) = self.rx.peek_whole()?;
        Some((id, len, flags.contains(Flags::COMPRESSED)))
    }

    /// Body bytes this connection encoded into frames so far, before
    /// compression (a wrapping counter): what its answers cost to encode
    /// and compress.
    pub fn encoded_bytes(&self) -> u64 {
        self.inner.tx.encoded()
    }

    /// Bytes waiting to be written to the transport.
    pub fn poll_transmit(&self) -> &[u8] {
        self.inner.tx.pending()
    }

    /// How many more bytes of frames (headers included) the transmit queue
    /// takes now: its capacity, less what waits and the [`CLOSE_RESERVE`].
    /// A send of a frame that size or smaller does not block.
    pub fn transmit_room(&self) -> usize {
        self.inner
            .tx
            .buffer()
            .max_capacity()
            .saturating_sub(CLOSE_RESERVE)
            .saturating_sub(self.inner.tx.pending().len())
    }

    /// Marks the first `n` bytes of [`poll_transmit`](Self::poll_transmit) as
    /// written.
    pub fn transmitted(&mut self, n: usize) {
        self.inner.tx.consume(n);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if
    /// a timer runs: the handshake, frame, idle or keepalive timer. Up to date
    /// after a [`poll`](Self::poll) that returned `None` (inputs carry no
    /// time: a driver polls after every input, then reads this).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.inner.is_closed() {
            return None;
        }
        self.inner
            .progress
            .deadline()
            .min(self.inner.timers.earliest())
            .get()
    }
}

/// What one step of [`Connection::step_protocol_role`] did: the events of
/// [`poll_protocol_role`](Connection::poll_protocol_role) a driver acts on,
/// without building them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolStep {
    /// The handshake completed ([`Event::Connected`]).
    Connected,
    /// The connection closed ([`Event::Closed`]; [`Connection::closed`]
    /// says why).
    Closed,
    /// (Ping client) the server's answer came after this round trip
    /// ([`Event::Pong`]).
    Pong(Duration),
    /// Anything else.
    Other,
}

impl ProtocolStep {
    /// The step a poll found.
    fn of(found: Found) -> ProtocolStep {
        match found {
            Found::Pending(Pending::Connected) => ProtocolStep::Connected,
            Found::Pending(Pending::Closed) => ProtocolStep::Closed,
            Found::Frame {
                outcome: receive::Outcome::Pong(delay),
                ..
            } => ProtocolStep::Pong(delay),
            _ => ProtocolStep::Other,
        }
    }
}

impl<C, R, T, const N: usize, G> fmt::Debug for Connection<'_, C, R, T, N, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.inner.side)
            // The wire state's name and what it waits for, or why it closed.
            .field("state", &format_args!("{}", self.inner.progress))
            .field("mode", &self.inner.mode)
            .field("transport_ended", &self.inner.transport_ended)
            .finish()
    }
}
