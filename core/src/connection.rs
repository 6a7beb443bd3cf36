//! One endpoint of one connection: the client, or the server's view of one
//! client. Sans-IO: bytes and time go in, events and bytes come out.
//!
//! # Driving a connection
//! An adapter repeats, in this order:
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
//!    then call [`Connection::handle_timeout`].
//! 5. Once [`Connection::is_finished`] is true, close the transport.
//!
//! Commands ([`Connection::send`], [`Connection::close`], ...) may be issued at
//! any time between those steps; what they queue leaves through step 3.
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

use crate::buffer::Buffer;
use crate::codec::{Codec, CodecError};
use crate::messages::{
    CloseConn, HandshakeAccept, HandshakeOut, HandshakeSeed, Hello, PeerInfo, PingRequest,
    PingResponse, SetType, PROTOVERSION,
};
use crate::registry::{
    internal, Entry, Packet, Registry, RegistryAccess, SyncError, SyncPolicy, FIRST_AUTO_ID,
};
use crate::rules::{InvalidAction, RuleContext, Violation};
use crate::time::{Duration, Instant, MaybeInstant};
use crate::types::{
    CloseReason, Initiator, Mode, SecurityLevel, Side, State, CONNTYPE_CLASSIC, CONNTYPE_NOTSET,
    CONNTYPE_PING,
};
use crate::wire::{write_header, Flags, FrameDecoder, FrameError, FRAME_OVERHEAD, MAX_BODY_LEN};
use core::fmt;
use serde::{Deserialize, Serialize};

/// Bytes of the transmit buffer held back so that a `closeconn` always fits.
pub const CLOSE_RESERVE: usize = 96;
/// The smallest transmit buffer a connection accepts.
pub const MIN_TX_BUFFER: usize = 2 * CLOSE_RESERVE;

/// What a server answers to pings with (the reference's `PingableServerMixin`).
#[derive(Clone, Copy, Debug)]
pub struct PingServerConfig<'a> {
    /// The release string under `peng3dnet.release`.
    pub release: &'a str,
    /// Further entries of the answer (the reference's `pingdata`).
    pub data: &'a [(&'a str, &'a str)],
}

/// Settings shared by every connection of an endpoint. Build it once (it can
/// be a `static`) and lend it to each connection.
#[derive(Clone, Copy)]
pub struct Config<'a> {
    /// Software version sent in `hello`, `handshake` and ping answers.
    pub version: &'a str,
    /// How long a connection may take from its start to [`Event::Connected`]
    /// (or, on a ping connection, to its end) before it closes with
    /// `handshaketimeout`.
    pub handshake_timeout: Duration,
    /// Whether a client adopts the server's registry ids (the reference's
    /// `net.registry.autosync`, on by default).
    pub autosync: bool,
    /// What a client does when the registries hold other names.
    pub sync_policy: SyncPolicy,
    /// On a server: answer `ping` connections with this; `None` refuses the
    /// `ping` connection type with `unknownconntype`.
    pub ping: Option<PingServerConfig<'a>>,
    /// Connection types beyond `classic` and `ping`, in a table of the
    /// caller's size.
    pub conntypes: &'a [CustomConnType<'a>],
    /// Accept zlib-compressed frames (needs the `zlib` feature; on by default
    /// with it). Without, a compressed frame closes with
    /// `compressionnotenabled`.
    pub decompress: bool,
    /// Compress bodies larger than its threshold before sending, as the
    /// reference does above 8,192 bytes. `None` sends everything plain.
    pub compressor: Option<&'a (dyn Compressor + Sync)>,
}

/// Compresses outgoing bodies (zlib, RFC 1950). The core has no compressor of
/// its own (a deflater needs a heap); a host adapter provides one.
pub trait Compressor {
    /// Bodies longer than this are compressed.
    fn threshold(&self) -> usize;

    /// Compresses `input` into `out` as one zlib stream and returns its
    /// length, or `None` if it does not fit (the body is then sent plain).
    fn compress(&self, input: &[u8], out: &mut [u8]) -> Option<usize>;
}

impl<'a> Config<'a> {
    /// The defaults: this crate's version, a 10 s handshake timeout, autosync
    /// closing on a mismatch, pings answered, no custom connection type.
    pub const fn new() -> Self {
        Config {
            version: env!("CARGO_PKG_VERSION"),
            handshake_timeout: Duration::from_secs(10),
            autosync: true,
            sync_policy: SyncPolicy::CloseConnection,
            ping: Some(PingServerConfig {
                release: env!("CARGO_PKG_VERSION"),
                data: &[],
            }),
            conntypes: &[],
            decompress: cfg!(feature = "zlib"),
            compressor: None,
        }
    }
}

impl Default for Config<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Config<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("version", &self.version)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("autosync", &self.autosync)
            .field("sync_policy", &self.sync_policy)
            .field("ping", &self.ping)
            .field("conntypes", &self.conntypes.len())
            .field("decompress", &self.decompress)
            .field("compressor", &self.compressor.map(|c| c.threshold()))
            .finish()
    }
}

/// What a custom connection type does with an application packet it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// Check its rules and report it as [`Event::Packet`], as `classic` does.
    Registry,
    /// Report it as [`Event::ConnTypePacket`], without registry or rules.
    Consume,
    /// Close the connection with this reason's wire name... see
    /// [`CloseReason`]; the peer is told.
    Close(CloseKind),
}

/// A close reason a hook may choose (a `Copy` subset of [`CloseReason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseKind {
    /// `smartpacketinvalid`.
    SmartPacketInvalid,
    /// `invalidpingpacket`-like refusal of a packet the type does not carry:
    /// reported as `malformedpacket`.
    MalformedPacket,
    /// `userrequest`.
    UserRequest,
}

impl From<CloseKind> for CloseReason {
    fn from(k: CloseKind) -> CloseReason {
        match k {
            CloseKind::SmartPacketInvalid => CloseReason::SmartPacketInvalid,
            CloseKind::MalformedPacket => CloseReason::MalformedPacket,
            CloseKind::UserRequest => CloseReason::UserRequest,
        }
    }
}

/// The hooks of a custom connection type (the reference's `ConnectionType`).
/// Each returns a decision; the connection carries it out. Every method has a
/// default that behaves like a connection without a handshake.
pub trait ConnTypeHooks {
    /// Called on both sides once the type is agreed (client: after it sent
    /// `settype`; server: when it received it). Returns the state the
    /// connection enters; [`State::Active`] or [`State::LoggedIn`] makes it
    /// connected ([`Event::Connected`]).
    fn init(&self, side: Side) -> State {
        let _ = side;
        State::Active
    }

    /// Called for every received packet with an id of 64 or above.
    fn receive(&self, side: Side, packet_id: u32) -> Dispatch {
        let _ = (side, packet_id);
        Dispatch::Registry
    }

    /// Called before an application packet (id 64 or above) is sent; `false`
    /// refuses it with [`SendError::ConnTypeRefused`].
    fn allow_send(&self, side: Side, packet_id: u32) -> bool {
        let _ = (side, packet_id);
        true
    }
}

/// A named custom connection type in [`Config::conntypes`].
#[derive(Clone, Copy)]
pub struct CustomConnType<'a> {
    /// The name sent in `settype`.
    pub name: &'static str,
    /// Its hooks.
    pub hooks: &'a (dyn ConnTypeHooks + Sync),
}

impl fmt::Debug for CustomConnType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomConnType")
            .field("name", &self.name)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    NotSet,
    Classic,
    Ping,
    Custom(u16),
}

/// Why a connection could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NewConnectionError {
    /// The transmit buffer is smaller than [`MIN_TX_BUFFER`].
    TxBufferTooSmall {
        /// The least size accepted.
        required: usize,
    },
    /// The client asked for a connection type that is neither built in nor in
    /// [`Config::conntypes`].
    UnknownConnType,
    /// The server's `hello` did not fit into the transmit buffer.
    HelloTooLarge,
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
    Rules(Violation),
    /// The connection type does not carry this packet (a `ping` connection
    /// carries no application packets; a custom type's hook refused).
    ConnTypeRefused,
    /// Not enough free space now: write out [`Connection::poll_transmit`] and
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
            SendError::Rules(v) => write!(f, "packet rules broken: {v}"),
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
    codec: &'a C,
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

/// What happened on a connection, returned by [`Connection::poll`].
#[derive(Debug)]
#[must_use]
pub enum Event<'a, C> {
    /// The connection is established: the classic handshake completed, or a
    /// custom connection type entered an active state.
    Connected,
    /// An application packet that passed its rules.
    Packet(Incoming<'a, C>),
    /// A packet a custom connection type consumed ([`Dispatch::Consume`]).
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

/// A linear transmit queue over caller storage.
struct TxBuf<B> {
    buf: B,
    start: usize,
    end: usize,
}

impl<B: Buffer> TxBuf<B> {
    fn capacity(&self) -> usize {
        self.buf.max_capacity()
    }

    fn pending(&self) -> &[u8] {
        &self.buf.bytes()[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.buf.release();
    }

    /// Writes one frame whose body `body` encodes into the free space, keeping
    /// `reserve` bytes free. All or nothing.
    fn push_frame(
        &mut self,
        packet_id: u32,
        reserve: usize,
        compressor: Option<&(dyn Compressor + Sync)>,
        body: impl Fn(&mut [u8]) -> Result<usize, CodecError>,
        body_len: impl FnOnce() -> Result<usize, CodecError>,
    ) -> Result<(), SendError> {
        let capacity = self.capacity().saturating_sub(reserve);
        let mut compacted = false;
        loop {
            let len = self.buf.bytes().len().min(capacity);
            let limit = len.saturating_sub(self.end);
            if limit >= FRAME_OVERHEAD {
                let end = self.end;
                let out = &mut self.buf.bytes_mut()[end..end + limit];
                match body(&mut out[FRAME_OVERHEAD..]) {
                    Ok(n) if n <= MAX_BODY_LEN => {
                        let wants = compressor.filter(|c| n > c.threshold());
                        if wants.is_some() {
                            // A growable buffer makes room for the deflated
                            // copy after the body (zlib's worst case).
                            let need = end + FRAME_OVERHEAD + n + zlib_bound(n);
                            if need > self.buf.bytes().len() {
                                self.buf.reserve(need.min(capacity));
                            }
                        }
                        let len = self.buf.bytes().len().min(capacity);
                        let out = &mut self.buf.bytes_mut()[end..len];
                        let (n, flags) = compress_in_place(&mut out[FRAME_OVERHEAD..], n, wants);
                        write_header(out, packet_id, flags, n);
                        self.end += FRAME_OVERHEAD + n;
                        return Ok(());
                    }
                    Ok(_) => return Err(SendError::Encode(CodecError::Unsupported)),
                    Err(CodecError::BufferTooSmall) => {}
                    Err(e) => return Err(SendError::Encode(e)),
                }
            }
            if len < capacity {
                // A growable buffer: double (at least by a frame header).
                let want = (len * 2)
                    .max(len + FRAME_OVERHEAD + 1)
                    .min(capacity + reserve);
                self.buf.reserve(want);
                if self.buf.bytes().len() > len {
                    continue;
                }
            }
            if compacted || self.start == 0 {
                break;
            }
            let (start, end) = (self.start, self.end);
            self.buf.bytes_mut().copy_within(start..end, 0);
            self.start = 0;
            self.end = end - start;
            compacted = true;
        }
        let required = FRAME_OVERHEAD + body_len().map_err(SendError::Encode)?;
        if required > capacity {
            Err(SendError::TooLarge { required, capacity })
        } else {
            Err(SendError::WouldBlock { required })
        }
    }
}

/// The most bytes zlib may need for `n` bytes of input (deflate's stored
/// blocks plus the zlib header and checksum), with some slack.
fn zlib_bound(n: usize) -> usize {
    n + n / 1000 + 5 * (n / 16_384 + 1) + 64
}

/// Compresses the `n`-byte body at the start of `area` in place when a
/// compressor wants it and it shrinks; returns the body's length and flags.
fn compress_in_place(
    area: &mut [u8],
    n: usize,
    compressor: Option<&(dyn Compressor + Sync)>,
) -> (usize, Flags) {
    let Some(c) = compressor else {
        return (n, Flags::EMPTY);
    };
    if n <= c.threshold() {
        return (n, Flags::EMPTY);
    }
    let (body, rest) = area.split_at_mut(n);
    match c.compress(body, rest) {
        Some(m) if m < n && m <= rest.len() => {
            area.copy_within(n..n + m, 0);
            (m, Flags::COMPRESSED)
        }
        _ => (n, Flags::EMPTY),
    }
}

#[derive(Default)]
struct Pending {
    connected: bool,
    ping_answered: bool,
    closed: bool,
}

/// Everything of a connection but its receive buffer, so that events can
/// borrow the received bytes while the state machine runs.
struct Inner<'a, C, T, const N: usize, G> {
    config: Config<'a>,
    registry: G,
    codec: C,
    side: Side,
    state: State,
    mode: Mode,
    kind: Kind,
    target: Kind,
    security: SecurityLevel,
    tx: TxBuf<T>,
    /// The handshake timer (none once connected or closed).
    deadline: MaybeInstant,
    ping_sent: MaybeInstant,
    closed: Option<(CloseReason, Initiator)>,
    pending: Pending,
    /// [`Event::Connected`] was reported.
    connected: bool,
    /// The transport ended; buffered frames are still handed out.
    transport_ended: bool,
}

/// What [`Connection::poll`] found, before it borrows the receive buffer.
enum Found<'e, C> {
    /// An event that borrows nothing.
    Pending(Event<'e, C>),
    /// A frame's outcome; `range` starts at the frame's length prefix.
    Frame {
        packet_id: u32,
        range: core::ops::Range<usize>,
        body: core::ops::Range<usize>,
        outcome: Outcome,
    },
}

impl<'e, C> Found<'e, C> {
    #[inline(always)]
    fn into_event<'b, B: Buffer>(self, rx: &'b FrameDecoder<B>, codec: &'b C) -> Event<'b, C>
    where
        'e: 'b,
    {
        let (packet_id, body, outcome) = match self {
            Found::Pending(event) => return event,
            Found::Frame {
                packet_id,
                body,
                outcome,
                ..
            } => (packet_id, rx.stored(body), outcome),
        };
        match outcome {
            Outcome::Ignored(packet_id, cause) => Event::Ignored { packet_id, cause },
            Outcome::Packet(name) => Event::Packet(Incoming {
                packet_id,
                name,
                body,
                codec,
            }),
            Outcome::ConnTypePacket(name) => Event::ConnTypePacket(Incoming {
                packet_id,
                name,
                body,
                codec,
            }),
            Outcome::Pong(delay) => Event::Pong { delay, body },
            // `next_found` reports frames that yield an event only.
            Outcome::Nothing => Event::Ignored {
                packet_id,
                cause: IgnoreCause::UnknownId,
            },
        }
    }
}

/// What a frame turned into.
enum Outcome {
    Nothing,
    Packet(Option<&'static str>),
    ConnTypePacket(Option<&'static str>),
    Pong(Duration),
    Ignored(u32, IgnoreCause),
}

impl<'a, C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Inner<'a, C, T, N, G> {
    fn kind_name(&self, kind: Kind) -> &'a str {
        match kind {
            Kind::NotSet => CONNTYPE_NOTSET,
            Kind::Classic => CONNTYPE_CLASSIC,
            Kind::Ping => CONNTYPE_PING,
            Kind::Custom(i) => self.config.conntypes[i as usize].name,
        }
    }

    fn hooks(&self) -> Option<&'a (dyn ConnTypeHooks + Sync)> {
        match self.kind {
            Kind::Custom(i) => Some(self.config.conntypes[i as usize].hooks),
            _ => None,
        }
    }

    fn rule_context(&self) -> RuleContext<'a> {
        RuleContext {
            side: self.side,
            state: self.state,
            mode: self.mode,
            conntype: self.kind_name(self.kind),
            security: self.security,
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Queues a protocol message; a failure closes the connection.
    fn queue_internal<M: Serialize>(&mut self, packet_id: u32, msg: &M) {
        let codec = &self.codec;
        let res = self.tx.push_frame(
            packet_id,
            CLOSE_RESERVE,
            self.config.compressor,
            |out| codec.encode(msg, out),
            || codec.encoded_len(msg),
        );
        if res.is_err() {
            self.close(CloseReason::WriteQueueFull);
        }
    }

    /// Starts a local close: queues `closeconn` and reports the reason.
    fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        let codec = &self.codec;
        let msg = CloseConn {
            reason: reason.as_wire(),
        };
        // The reserve holds a closeconn with the longest reason; should a
        // codec need more, the peer is not told and sees the socket close.
        let _ = self.tx.push_frame(
            internal::CLOSECONN,
            0,
            None,
            |out| codec.encode(&msg, out),
            || codec.encoded_len(&msg),
        );
        self.finish(reason, Initiator::Local);
    }

    fn finish(&mut self, reason: CloseReason, initiator: Initiator) {
        self.state = State::Closed;
        self.deadline = MaybeInstant::NONE;
        self.closed = Some((reason, initiator));
        self.pending.closed = true;
    }

    fn connected(&mut self) {
        self.deadline = MaybeInstant::NONE;
        self.connected = true;
        self.pending.connected = true;
    }

    fn take_pending<'e>(&mut self) -> Option<Event<'e, C>> {
        if self.pending.connected {
            self.pending.connected = false;
            return Some(Event::Connected);
        }
        if self.pending.ping_answered {
            self.pending.ping_answered = false;
            return Some(Event::PingAnswered);
        }
        if self.pending.closed {
            self.pending.closed = false;
            if let Some((reason, initiator)) = &self.closed {
                return Some(Event::Closed {
                    reason: reason.clone(),
                    initiator: *initiator,
                });
            }
        }
        None
    }

    /// Enters the agreed connection type (`init` of the reference's types).
    fn init_kind(&mut self, now: Instant) {
        match self.kind {
            Kind::NotSet => {}
            Kind::Classic => {
                self.state = State::HandshakeWait1;
                if self.side == Side::Server {
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
            }
            Kind::Ping => {
                self.state = State::Active;
                if self.side == Side::Client {
                    self.mode = Mode::PING;
                    self.ping_sent = MaybeInstant::new(now);
                    let req = PingRequest {
                        time: now.as_secs_f64(),
                    };
                    self.queue_internal(internal::PING_REQUEST, &req);
                }
            }
            Kind::Custom(_) => {
                let state = self.hooks().map_or(State::Active, |h| h.init(self.side));
                self.state = state;
                if matches!(state, State::Active | State::LoggedIn) {
                    self.connected();
                }
            }
        }
    }

    fn find_kind(&self, name: &str) -> Option<Kind> {
        match name {
            CONNTYPE_CLASSIC => Some(Kind::Classic),
            CONNTYPE_PING if self.side == Side::Client || self.config.ping.is_some() => {
                Some(Kind::Ping)
            }
            _ => self
                .config
                .conntypes
                .iter()
                .position(|t| t.name == name)
                .map(|i| Kind::Custom(i as u16)),
        }
    }

    fn frame_error(&mut self, e: FrameError) {
        self.close(match e {
            FrameError::TooLarge { .. } => CloseReason::FrameTooLarge,
            FrameError::TooShort { .. } => CloseReason::MalformedFrame,
            FrameError::UnknownFlags { .. } => CloseReason::UnknownFlags,
            FrameError::EncryptionUnsupported => CloseReason::EncryptionUnsupported,
        });
    }

    fn handle_frame(&mut self, packet_id: u32, flags: Flags, body: &[u8], now: Instant) -> Outcome {
        if flags.contains(Flags::COMPRESSED) {
            // Inflated by the caller when enabled; here only if it is not.
            self.close(CloseReason::CompressionNotEnabled);
            return Outcome::Nothing;
        }
        if packet_id == internal::CLOSECONN {
            // Accepted in any state; a body that does not decode still closes.
            let reason = match self.codec.decode::<CloseConn>(body) {
                Ok(msg) => CloseReason::from_wire(msg.reason),
                Err(_) => CloseReason::Unspecified,
            };
            self.tx.clear();
            self.finish(reason, Initiator::Peer);
            return Outcome::Nothing;
        }
        if packet_id >= FIRST_AUTO_ID {
            match self.kind {
                Kind::Ping => return self.handle_ping(packet_id, body, now),
                Kind::Custom(_) => {
                    let dispatch = self
                        .hooks()
                        .map_or(Dispatch::Registry, |h| h.receive(self.side, packet_id));
                    match dispatch {
                        Dispatch::Registry => {}
                        Dispatch::Consume => {
                            let name = self.registry.registry().by_id(packet_id).map(|e| e.name);
                            return Outcome::ConnTypePacket(name);
                        }
                        Dispatch::Close(kind) => {
                            self.close(kind.into());
                            return Outcome::Nothing;
                        }
                    }
                }
                Kind::NotSet | Kind::Classic => {}
            }
        }
        let Some(entry) = self.registry.registry().by_id(packet_id) else {
            return self.ignore(packet_id, IgnoreCause::UnknownId);
        };
        if let Err(v) = entry.rules.check_receive(&self.rule_context()) {
            return match entry.rules.on_invalid {
                InvalidAction::Ignore => self.ignore(packet_id, IgnoreCause::Rules(v)),
                InvalidAction::Close => {
                    self.close(CloseReason::SmartPacketInvalid);
                    Outcome::Nothing
                }
            };
        }
        if packet_id < FIRST_AUTO_ID {
            let entry = *entry;
            self.handle_internal(&entry, body, now);
            return Outcome::Nothing;
        }
        Outcome::Packet(Some(entry.name))
    }

    fn ignore(&mut self, packet_id: u32, cause: IgnoreCause) -> Outcome {
        Outcome::Ignored(packet_id, cause)
    }

    fn handle_internal(&mut self, entry: &Entry, body: &[u8], now: Instant) {
        match entry.id {
            internal::HELLO => {
                self.codec.detect_from_hello(body);
                let Ok(hello) = self.codec.decode::<Hello>(body) else {
                    return self.close(CloseReason::MalformedPacket);
                };
                if hello.protoversion != PROTOVERSION {
                    return self.close(CloseReason::ProtoVersionMismatch);
                }
                self.state = State::WaitType;
                let msg = SetType {
                    conntype: self.kind_name(self.target),
                };
                self.queue_internal(internal::SETTYPE, &msg);
                if self.is_closed() {
                    return;
                }
                self.kind = self.target;
                self.init_kind(now);
            }
            internal::SETTYPE => {
                let Ok(msg) = self.codec.decode::<SetType>(body) else {
                    return self.close(CloseReason::MalformedPacket);
                };
                match self.find_kind(msg.conntype) {
                    Some(kind) => {
                        self.kind = kind;
                        self.init_kind(now);
                    }
                    None => self.close(CloseReason::UnknownConnType),
                }
            }
            internal::HANDSHAKE => {
                let seed = HandshakeSeed(self.registry.registry());
                let Ok(hs) = self.codec.decode_seed(seed, body) else {
                    return self.close(CloseReason::MalformedPacket);
                };
                if hs.protoversion != PROTOVERSION {
                    return self.close(CloseReason::ProtoVersionMismatch);
                }
                if self.config.autosync {
                    let policy = self.config.sync_policy;
                    let entries = self.registry.registry().entries();
                    let same_ids = (0..hs.sync.ours)
                        .all(|i| hs.sync.remote_ids[i].is_none_or(|id| id == entries[i].id));
                    let result = match self.registry.registry_mut() {
                        Some(reg) => reg.apply_sync(&hs.sync, policy),
                        // A shared registry cannot adopt ids: only identical
                        // ones can be used.
                        None => {
                            let same = same_ids;
                            if same && (hs.sync.same_names() || policy == SyncPolicy::Ignore) {
                                Ok(())
                            } else {
                                Err(SyncError::Mismatch)
                            }
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
                    self.state = State::Active;
                    self.connected();
                }
            }
            internal::HANDSHAKE_ACCEPT => match self.codec.decode::<HandshakeAccept>(body) {
                Ok(HandshakeAccept { success: true }) => {
                    self.state = State::Active;
                    self.connected();
                }
                Ok(_) => self.close(CloseReason::HandshakeFailed),
                Err(_) => self.close(CloseReason::MalformedPacket),
            },
            // Every id below 64 in a registry is one of the above.
            _ => {}
        }
    }

    fn handle_ping(&mut self, packet_id: u32, body: &[u8], now: Instant) -> Outcome {
        match (packet_id, self.side) {
            (internal::PING_REQUEST, Side::Server) => {
                let Ok(req) = self.codec.decode::<PingRequest>(body) else {
                    self.close(CloseReason::InvalidPingPacket);
                    return Outcome::Nothing;
                };
                self.mode = Mode::PING;
                let ping = self.config.ping.unwrap_or(PingServerConfig {
                    release: "",
                    data: &[],
                });
                let answer = PingResponse {
                    oldmsg: req,
                    peng3dnet: PeerInfo {
                        version: self.config.version,
                        release: ping.release,
                        protoversion: PROTOVERSION,
                    },
                    data: ping.data,
                };
                self.queue_internal(internal::PING_RESPONSE, &answer);
                if !self.is_closed() {
                    self.pending.ping_answered = true;
                }
                Outcome::Nothing
            }
            (internal::PING_RESPONSE, Side::Client) => {
                let delay = now - self.ping_sent.get().unwrap_or(now);
                self.close(CloseReason::PingComplete);
                Outcome::Pong(delay)
            }
            (internal::PING_REQUEST | internal::PING_RESPONSE, _) => {
                self.close(CloseReason::PingInvalidSide);
                Outcome::Nothing
            }
            _ => {
                self.close(CloseReason::InvalidPingPacket);
                Outcome::Nothing
            }
        }
    }

    /// Checks rules and connection type before an application send.
    fn admit(&mut self, entry: &Entry) -> Result<(), SendError> {
        if self.is_closed() || self.transport_ended {
            return Err(SendError::Closed);
        }
        if entry.id < FIRST_AUTO_ID {
            // The protocol's own packets are sent by the state machine only.
            return Err(SendError::NotRegistered);
        }
        if let Err(v) = entry.rules.check_send(&self.rule_context()) {
            if entry.rules.on_invalid == InvalidAction::Close {
                self.close(CloseReason::SmartPacketInvalid);
            }
            return Err(SendError::Rules(v));
        }
        let allowed = match self.kind {
            Kind::Ping => false,
            Kind::Custom(_) => self
                .hooks()
                .is_none_or(|h| h.allow_send(self.side, entry.id)),
            Kind::NotSet | Kind::Classic => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(SendError::ConnTypeRefused)
        }
    }

    fn send_by_name<M: Serialize + ?Sized>(
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

    fn send_by_id<M: Serialize + ?Sized>(
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

    fn send_encoded(&mut self, packet_id: u32, body: &[u8]) -> Result<(), SendError> {
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

/// One endpoint of one connection over caller-owned [`Buffer`]s: `R` receives,
/// `T` transmits (`[u8; K]`, `&mut [u8]`, a growable host buffer...). `N` is the
/// registry's capacity. See the [module docs](self) for the calling order.
pub struct Connection<'a, C, R, T, const N: usize, G = &'a Registry<N>> {
    rx: FrameDecoder<R>,
    inner: Inner<'a, C, T, N, G>,
}

impl<'a, C, R, T, const N: usize, G> Connection<'a, C, R, T, N, G>
where
    C: Codec,
    R: Buffer,
    T: Buffer,
    G: RegistryAccess<N>,
{
    fn new(
        side: Side,
        config: &Config<'a>,
        registry: G,
        codec: C,
        rx: R,
        tx: T,
        now: Instant,
    ) -> Result<Self, NewConnectionError> {
        let tx_len = tx.max_capacity();
        if tx_len < MIN_TX_BUFFER {
            return Err(NewConnectionError::TxBufferTooSmall {
                required: MIN_TX_BUFFER,
            });
        }
        Ok(Connection {
            rx: FrameDecoder::new(rx),
            inner: Inner {
                config: *config,
                registry,
                codec,
                side,
                state: State::HelloWait,
                mode: Mode::NOTSET,
                kind: Kind::NotSet,
                target: Kind::NotSet,
                security: SecurityLevel::None,
                tx: TxBuf {
                    buf: tx,
                    start: 0,
                    end: 0,
                },
                deadline: MaybeInstant::new(now + config.handshake_timeout),
                ping_sent: MaybeInstant::NONE,
                closed: None,
                pending: Pending::default(),
                connected: false,
                transport_ended: false,
            },
        })
    }

    /// The server's view of a client that just connected. Queues `hello`.
    /// `registry` is usually `&Registry` (shared by every connection).
    pub fn server(
        config: &Config<'a>,
        registry: G,
        codec: C,
        rx: R,
        tx: T,
        now: Instant,
    ) -> Result<Self, NewConnectionError> {
        let mut conn = Self::new(Side::Server, config, registry, codec, rx, tx, now)?;
        let inner = &mut conn.inner;
        let hello = Hello {
            version: config.version,
            protoversion: PROTOVERSION,
        };
        let codec = &inner.codec;
        inner
            .tx
            .push_frame(
                internal::HELLO,
                CLOSE_RESERVE,
                inner.config.compressor,
                |out| codec.encode(&hello, out),
                || codec.encoded_len(&hello),
            )
            .map_err(|_| NewConnectionError::HelloTooLarge)?;
        inner.state = State::WaitType;
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
        let mut conn = Self::new(Side::Client, config, registry, codec, rx, tx, now)?;
        conn.inner.target = conn
            .inner
            .find_kind(conntype)
            .ok_or(NewConnectionError::UnknownConnType)?;
        Ok(conn)
    }

    // ---- getters ----

    /// The side of this endpoint.
    pub fn side(&self) -> Side {
        self.inner.side
    }

    /// The protocol state.
    pub fn state(&self) -> State {
        self.inner.state
    }

    /// The application mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The connection type (`_notset` until agreed).
    pub fn conntype(&self) -> &str {
        self.inner.kind_name(self.inner.kind)
    }

    /// The transport's security level, as the adapter set it.
    pub fn security_level(&self) -> SecurityLevel {
        self.inner.security
    }

    /// Whether the handshake completed and the connection is not closed.
    /// A `ping` connection never is: it has no handshake.
    pub fn is_connected(&self) -> bool {
        self.inner.connected
            && matches!(self.inner.state, State::Active | State::LoggedIn)
            && !self.inner.is_closed()
            && !self.inner.transport_ended
    }

    /// Whether the connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Why and by whom the connection closed, once it has.
    pub fn close_reason(&self) -> Option<(&CloseReason, Initiator)> {
        self.inner.closed.as_ref().map(|(r, i)| (r, *i))
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

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.inner.codec
    }

    /// The receive and transmit storage, for inspection (a host adapter
    /// reports their current sizes, say).
    pub fn buffers(&self) -> (&R, &T) {
        (self.rx.buffer(), &self.inner.tx.buf)
    }

    /// Gives the receive and transmit storage back (a server slot reuses
    /// them for its next client); whatever they hold is dropped.
    pub fn into_buffers(self) -> (R, T) {
        (self.rx.into_buffer(), self.inner.tx.buf)
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
        self.rx.commit(n);
    }

    /// Copies received bytes in and returns how many were taken; feed the
    /// rest after [`poll`](Self::poll) returned `None`. Bytes arriving after
    /// the connection closed are taken and dropped.
    pub fn handle_input(&mut self, bytes: &[u8]) -> usize {
        if self.inner.is_closed() {
            return bytes.len();
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

    /// Time passed: fires the handshake timer if `now` is past it.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.inner.deadline.get() {
            if now >= deadline {
                self.inner.close(CloseReason::HandshakeTimeout);
            }
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
        let app_state = !matches!(
            state,
            State::Init
                | State::HandshakeWait1
                | State::HandshakeWait2
                | State::WaitType
                | State::HelloWait
                | State::Closed
        );
        if app_state && self.is_connected() {
            self.inner.state = state;
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
    pub fn poll(&mut self, now: Instant) -> Option<Event<'_, C>> {
        self.poll_events(now, false)
    }

    /// Like [`poll`](Self::poll), but stops before an application packet
    /// (which stays buffered for a later [`poll`](Self::poll)), so it never
    /// returns [`Event::Packet`] or [`Event::ConnTypePacket`]. A driver task
    /// calls it to run the handshake, pings and closes while the
    /// application's receiver takes packets when it is ready; frames are
    /// still handled in order. [`has_buffered_frame`](Self::has_buffered_frame)
    /// then says whether a packet waits.
    pub fn poll_protocol(&mut self, now: Instant) -> Option<Event<'_, C>> {
        self.poll_events(now, true)
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
    /// # let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
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
    ) -> Option<X>
    where
        C: Clone,
    {
        let found = self.next_found(now, false)?;
        // The event borrows a copy of the codec so that the outbox may
        // borrow the state machine mutably.
        let codec = self.inner.codec.clone();
        let frame_start = match &found {
            Found::Frame { range, .. } => Some(range.start),
            Found::Pending(_) => None,
        };
        let event = found.into_event(&self.rx, &codec);
        let is_packet = matches!(event, Event::Packet(_) | Event::ConnTypePacket(_));
        let mut outbox = Outbox {
            inner: &mut self.inner,
        };
        let (take, x) = f(event, &mut outbox);
        if let (Take::Keep, true, Some(start)) = (take, is_packet, frame_start) {
            if !self.inner.is_closed() {
                self.rx.unread(start);
            }
        }
        Some(x)
    }

    fn poll_events(&mut self, now: Instant, protocol_only: bool) -> Option<Event<'_, C>> {
        let found = self.next_found(now, protocol_only)?;
        Some(found.into_event(&self.rx, &self.inner.codec))
    }

    /// Runs the state machine up to the next event; what it found refers to
    /// the receive buffer by range, so the caller decides what to borrow.
    #[inline(always)]
    fn next_found<'e>(&mut self, now: Instant, protocol_only: bool) -> Option<Found<'e, C>>
    where
        C: 'e,
    {
        if let Some(event) = self.inner.take_pending() {
            return Some(Found::Pending(event));
        }
        loop {
            if self.inner.is_closed() {
                return None;
            }
            let (packet_id, flags, range) = match self.rx.next_frame_range() {
                Ok(Some(frame)) => frame,
                Ok(None) if self.inner.transport_ended => {
                    self.inner
                        .finish(CloseReason::SocketClose, Initiator::Transport);
                    return self.inner.take_pending().map(Found::Pending);
                }
                Ok(None) => return None,
                Err(e) => {
                    self.inner.frame_error(e);
                    return self.inner.take_pending().map(Found::Pending);
                }
            };
            let frame_start = range.start - FRAME_OVERHEAD;
            if protocol_only && packet_id >= FIRST_AUTO_ID && self.inner.kind != Kind::Ping {
                // An application frame: leave it for `poll`.
                self.rx.unread(frame_start);
                return None;
            }
            let (flags, body_range) = match self.inflate(flags, range) {
                Ok(inflated) => inflated,
                Err(reason) => {
                    self.inner.close(reason);
                    return self.inner.take_pending().map(Found::Pending);
                }
            };
            let body = self.rx.stored(body_range.clone());
            match self.inner.handle_frame(packet_id, flags, body, now) {
                Outcome::Nothing => {
                    if let Some(event) = self.inner.take_pending() {
                        return Some(Found::Pending(event));
                    }
                }
                outcome => {
                    return Some(Found::Frame {
                        packet_id,
                        range: frame_start..body_range.end,
                        body: body_range,
                        outcome,
                    })
                }
            }
        }
    }

    /// Inflates a compressed body when decompression is on; otherwise hands
    /// the frame on as it is.
    #[cfg(feature = "zlib")]
    fn inflate(
        &mut self,
        flags: Flags,
        range: core::ops::Range<usize>,
    ) -> Result<(Flags, core::ops::Range<usize>), CloseReason> {
        if !flags.contains(Flags::COMPRESSED) || !self.inner.config.decompress {
            return Ok((flags, range));
        }
        match self.rx.inflate(range) {
            Ok(inflated) => Ok((Flags(flags.0 & !Flags::COMPRESSED.0), inflated)),
            Err(_) => Err(CloseReason::DecompressionFailed),
        }
    }

    #[cfg(not(feature = "zlib"))]
    fn inflate(
        &mut self,
        flags: Flags,
        range: core::ops::Range<usize>,
    ) -> Result<(Flags, core::ops::Range<usize>), CloseReason> {
        Ok((flags, range))
    }

    /// Bytes waiting to be written to the transport.
    pub fn poll_transmit(&self) -> &[u8] {
        self.inner.tx.pending()
    }

    /// Marks the first `n` bytes of [`poll_transmit`](Self::poll_transmit) as
    /// written.
    pub fn transmitted(&mut self, n: usize) {
        self.inner.tx.consume(n);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next, if
    /// a timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.inner.deadline.get()
    }
}

/// What [`Connection::poll_with`] does with the packet it handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Take {
    /// The packet is handled: free its bytes.
    Consume,
    /// Leave the packet buffered; the next `poll` or `poll_with` hands it out
    /// again (after its rules are checked again).
    Keep,
}

/// The sending side of a [`Connection`], borrowed apart from its receive
/// buffer: [`Connection::poll_with`] hands it out beside a received packet so
/// that a handler can answer in place. Sends are checked as
/// [`Connection::send`]'s are.
pub struct Outbox<'c, 'a, C, T, const N: usize, G> {
    inner: &'c mut Inner<'a, C, T, N, G>,
}

impl<C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Outbox<'_, '_, C, T, N, G> {
    /// Sends a typed packet (see [`Connection::send`]).
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

    /// Closes the connection with `reason` (see [`Connection::close`]).
    pub fn close(&mut self, reason: CloseReason) {
        self.inner.close(reason);
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The protocol state.
    pub fn state(&self) -> State {
        self.inner.state
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

impl<C, R, T, const N: usize, G> fmt::Debug for Connection<'_, C, R, T, N, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.inner.side)
            .field("state", &self.inner.state)
            .field("mode", &self.inner.mode)
            .field("closed", &self.inner.closed)
            .finish()
    }
}
