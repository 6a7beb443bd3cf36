//! What the fuzz targets share: packet types and a registry, the input
//! format ([`Script`]), a reference frame parser ([`parse_stream`]), the
//! invariants every target asserts, a driver for one core [`Connection`]
//! ([`Driver`]), and the seed generator ([`seeds`]).
//!
//! Every connection target reads its input as a [`Script`]: three option
//! bytes, a step count, two bytes per step (fragment length, action), then
//! the bytes the peer sends. See `fuzz/README.md`.

use peng3dnet_core::buffer::Buffer;
use peng3dnet_core::codec::{Codec, CodecError};
use peng3dnet_core::connection::{
    CloseKind, ConnTypeHooks, CustomConnType, Dispatch, IgnoreCause, Incoming, PingServerConfig,
    SendError, Take, CLOSE_RESERVE,
};
use peng3dnet_core::messages::CloseConn;
use peng3dnet_core::registry::{Packet, Registry, RegistryAccess, SyncPolicy, FIRST_AUTO_ID};
use peng3dnet_core::rules::{InvalidAction, RuleContext, Rules};
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::types::MAX_REASON_LEN;
use peng3dnet_core::wire::{Flags, FrameError, FRAME_OVERHEAD, HEADER_LEN, LENGTH_PREFIX_LEN};
use peng3dnet_core::{
    CloseReason, Closed, Config, Connection, Event, Initiator, Mode, SecurityLevel,
};
use peng3dnet_core::{Side, State};
use peng3dnet_std::buffer::HeapBuffer;
use peng3dnet_std::codec::Zlib;
use serde::{Deserialize, Serialize};

pub mod seeds;

// ---------------------------------------------------------------------------
// Packets, registry, connection types, config
// ---------------------------------------------------------------------------

/// Registry capacity of every target: the 5 internal packets and 6 of ours,
/// one slot free.
pub const REG_N: usize = 12;

/// A sequence-numbered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbered<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Text.
    #[serde(borrow)]
    pub text: &'a str,
}

/// SmartPacket defaults (state ACTIVE, ignore when broken), id 64.
pub struct Echo;
impl Packet for Echo {
    const NAME: &'static str = "fuzz:echo";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a str;
}

/// No rules at all, id 65.
pub struct Plain;
impl Packet for Plain {
    const NAME: &'static str = "fuzz:plain";
    type Message<'a> = u32;
}

/// Received only by the server; breaking a rule closes, id 66.
pub struct Strict;
impl Packet for Strict {
    const NAME: &'static str = "fuzz:strict";
    const RULES: Rules = Rules::SMART
        .side(Side::Server)
        .on_invalid(InvalidAction::Close);
    type Message<'a> = Numbered<'a>;
}

/// Received only by the client, id 67.
pub struct ToClient;
impl Packet for ToClient {
    const NAME: &'static str = "fuzz:toclient";
    const RULES: Rules = Rules::SMART.side(Side::Client);
    type Message<'a> = u64;
}

/// Sent only over an encrypted transport; breaking it closes, id 68.
pub struct Secret;
impl Packet for Secret {
    const NAME: &'static str = "fuzz:secret";
    const RULES: Rules = Rules::SMART
        .min_security(SecurityLevel::Encrypted)
        .on_invalid(InvalidAction::Close);
    type Message<'a> = &'a str;
}

/// State LOGGEDIN and mode PLAY; fixed id 100.
pub struct Moved;
impl Packet for Moved {
    const NAME: &'static str = "fuzz:move";
    const ID: Option<u32> = Some(100);
    const RULES: Rules = Rules::SMART.state(State::LoggedIn).mode(Mode::PLAY);
    type Message<'a> = (i32, i32);
}

/// The registry of every target (and of the seed transcripts).
pub fn registry() -> Registry<REG_N> {
    let mut reg = Registry::new();
    reg.register::<Echo>().unwrap();
    reg.register::<Plain>().unwrap();
    reg.register::<Strict>().unwrap();
    reg.register::<ToClient>().unwrap();
    reg.register::<Secret>().unwrap();
    reg.register::<Moved>().unwrap();
    reg
}

/// A registry with other names and ids, for mismatching handshakes.
pub fn other_registry() -> Registry<REG_N> {
    let mut reg = Registry::new();
    reg.register_raw("fuzz:other", Some(64), Rules::NONE)
        .unwrap();
    reg.register::<Plain>().unwrap();
    reg.register::<Echo>().unwrap();
    reg.register::<Moved>().unwrap();
    reg
}

/// The custom connection type `fuzz`: ids 64 + 3k go through the registry,
/// 65 + 3k are consumed, 66 + 3k close; it refuses to send id 65.
pub struct FuzzType;
impl ConnTypeHooks for FuzzType {
    fn init(&self, side: Side) -> State {
        match side {
            Side::Client => State::Active,
            Side::Server => State::LoggedIn,
        }
    }

    fn receive(&self, _side: Side, packet_id: u32) -> Dispatch {
        match (packet_id - FIRST_AUTO_ID) % 3 {
            0 => Dispatch::Registry,
            1 => Dispatch::Consume,
            _ => Dispatch::Close(CloseKind::MalformedPacket),
        }
    }

    fn allow_send(&self, _side: Side, packet_id: u32) -> bool {
        packet_id != 65
    }
}

static FUZZ_TYPE: FuzzType = FuzzType;
/// The custom connection types of every config.
pub static CONNTYPES: [CustomConnType<'static>; 1] = [CustomConnType {
    name: "fuzz",
    hooks: &FUZZ_TYPE,
}];

/// A compressor with a small threshold, so that short bodies are compressed.
pub static SMALL_ZLIB: Zlib = Zlib {
    threshold: 24,
    level: 1,
};

/// Config option bits (first option byte).
pub mod opt {
    /// Server: MessagePack codec. Client: the hello is MessagePack.
    pub const MSGPACK: u8 = 1;
    /// Compress outgoing bodies above 24 bytes.
    pub const COMPRESS: u8 = 2;
    /// `Config::decompress = false`.
    pub const NO_DECOMPRESS: u8 = 4;
    /// `Config::ping = None`.
    pub const NO_PING: u8 = 8;
    /// `SyncPolicy::Ignore`.
    pub const SYNC_IGNORE: u8 = 16;
    /// `Config::autosync = false`.
    pub const NO_AUTOSYNC: u8 = 32;
    /// A short handshake timeout (1 s instead of 10 s).
    pub const SHORT_TIMEOUT: u8 = 64;
}

/// The config selected by the first option byte.
pub fn config(o: u8) -> Config<'static> {
    let mut c = Config::new();
    c.version = "fuzz-1";
    c.conntypes = &CONNTYPES;
    c.ping = Some(PingServerConfig {
        release: "r1",
        data: &[("motd", "fuzzing")],
    });
    if o & opt::COMPRESS != 0 {
        c.compressor = Some(&SMALL_ZLIB);
    }
    if o & opt::NO_DECOMPRESS != 0 {
        c.decompress = false;
    }
    if o & opt::NO_PING != 0 {
        c.ping = None;
    }
    if o & opt::SYNC_IGNORE != 0 {
        c.sync_policy = SyncPolicy::Ignore;
    }
    if o & opt::NO_AUTOSYNC != 0 {
        c.autosync = false;
    }
    if o & opt::SHORT_TIMEOUT != 0 {
        c.handshake_timeout = Duration::from_secs(1);
    }
    c
}

/// Receive buffer sizes (second option byte, bits 0-1).
pub const RX_SIZES: [usize; 4] = [64, 256, 1024, 8192];
/// Transmit buffer sizes (second option byte, bits 2-3).
pub const TX_SIZES: [usize; 4] = [192, 256, 1024, 8192];

/// A fixed slice or the std adapter's growable heap buffer, behind one type.
pub enum Buf<'a> {
    /// Caller storage of a fixed size.
    Fixed(&'a mut [u8]),
    /// Grows up to its maximum, shrinks when empty.
    Heap(HeapBuffer),
}

impl Buffer for Buf<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Fixed(b) => b,
            Buf::Heap(h) => h.bytes(),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Buf::Fixed(b) => b,
            Buf::Heap(h) => h.bytes_mut(),
        }
    }

    fn max_capacity(&self) -> usize {
        match self {
            Buf::Fixed(b) => b.len(),
            Buf::Heap(h) => h.max_capacity(),
        }
    }

    fn reserve(&mut self, min_len: usize) {
        if let Buf::Heap(h) = self {
            h.reserve(min_len)
        }
    }

    fn release(&mut self) {
        if let Buf::Heap(h) = self {
            h.release()
        }
    }

    fn reserve_scratch(&mut self, min_len: usize) {
        if let Buf::Heap(h) = self {
            h.reserve_scratch(min_len)
        }
    }

    fn shrink(&mut self, used: usize) {
        if let Buf::Heap(h) = self {
            h.shrink(used)
        }
    }
}

/// A registry the connection owns (a client adopts the server's ids) or
/// shares (ids must already agree).
#[allow(clippy::large_enum_variant)] // one per run, on the stack, like a real client's
pub enum Reg<'a> {
    /// May change.
    Owned(Registry<REG_N>),
    /// Read only.
    Shared(&'a Registry<REG_N>),
}

impl RegistryAccess<REG_N> for Reg<'_> {
    fn registry(&self) -> &Registry<REG_N> {
        match self {
            Reg::Owned(r) => r,
            Reg::Shared(r) => r,
        }
    }

    fn registry_mut(&mut self) -> Option<&mut Registry<REG_N>> {
        match self {
            Reg::Owned(r) => Some(r),
            Reg::Shared(_) => None,
        }
    }
}

/// The connection type of the targets.
pub type Conn<'a, 'b, C, G> = Connection<'a, C, Buf<'b>, Buf<'b>, REG_N, G>;

// ---------------------------------------------------------------------------
// Input format
// ---------------------------------------------------------------------------

/// A target's input: options, fragmentation/action steps, and the bytes.
#[derive(Clone, Debug)]
pub struct Script<'a> {
    /// Option bytes (missing ones are 0).
    pub opts: [u8; 3],
    /// `(fragment length, action)` pairs, used in a cycle.
    pub steps: Vec<(u8, u8)>,
    /// The bytes fed to the connection.
    pub data: &'a [u8],
}

/// The most steps in one script.
pub const MAX_STEPS: usize = 32;

impl<'a> Script<'a> {
    /// Reads `opts[3] nsteps (len action){nsteps % 33} data...`.
    pub fn parse(input: &'a [u8]) -> Script<'a> {
        let mut opts = [0u8; 3];
        for (i, o) in opts.iter_mut().enumerate() {
            *o = input.get(i).copied().unwrap_or(0);
        }
        let rest = input.get(3..).unwrap_or(&[]);
        let (n, rest) = match rest.split_first() {
            Some((&n, rest)) => (n as usize % (MAX_STEPS + 1), rest),
            None => (0, rest),
        };
        let n = n.min(rest.len() / 2);
        let steps = rest[..2 * n].chunks(2).map(|c| (c[0], c[1])).collect();
        Script {
            opts,
            steps,
            data: &rest[2 * n..],
        }
    }

    /// The bytes of a script (for seeds).
    pub fn encode(opts: [u8; 3], steps: &[(u8, u8)], data: &[u8]) -> Vec<u8> {
        assert!(steps.len() <= MAX_STEPS);
        let mut v = opts.to_vec();
        v.push(steps.len() as u8);
        for &(l, a) in steps {
            v.push(l);
            v.push(a);
        }
        v.extend_from_slice(data);
        v
    }

    /// The fragments of `data` with their actions: the steps in a cycle
    /// (every step at least once, at most 4096 in all); once a whole cycle
    /// took no byte, the rest comes in one piece.
    pub fn fragments(&self) -> Vec<(&'a [u8], u8)> {
        let steps: &[(u8, u8)] = if self.steps.is_empty() {
            &[(255, 0)]
        } else {
            &self.steps
        };
        let cycle: usize = steps.iter().map(|s| s.0 as usize).sum();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while (pos < self.data.len() || i < steps.len()) && i < 4096 {
            let (len, action) = steps[i % steps.len()];
            let len = if cycle == 0 && i >= steps.len() {
                self.data.len() - pos
            } else {
                (len as usize).min(self.data.len() - pos)
            };
            out.push((&self.data[pos..pos + len], action));
            pos += len;
            i += 1;
        }
        if pos < self.data.len() {
            out.push((&self.data[pos..], 0));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Reference frame parser
// ---------------------------------------------------------------------------

/// One frame of a stream, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefFrame<'a> {
    /// Packet id.
    pub packet_id: u32,
    /// Flags.
    pub flags: Flags,
    /// Body.
    pub body: &'a [u8],
}

/// How a stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// With this many bytes of an incomplete frame (0: at a frame boundary).
    Partial(usize),
    /// With an error at the frame after the last one returned.
    Error(FrameError),
}

/// Splits a whole stream into frames as `docs/PROTOCOL.md` defines them,
/// written independently of `FrameDecoder`: the oracle of `frame_decoder`.
/// `max_len` is the largest accepted value of a length prefix.
pub fn parse_stream(stream: &[u8], max_len: usize) -> (Vec<RefFrame<'_>>, StreamEnd) {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let avail = &stream[pos..];
        if avail.len() < LENGTH_PREFIX_LEN {
            return (frames, StreamEnd::Partial(avail.len()));
        }
        let length = u32::from_be_bytes(avail[..4].try_into().unwrap());
        if (length as usize) < HEADER_LEN {
            return (frames, StreamEnd::Error(FrameError::TooShort { length }));
        }
        if length as usize > max_len {
            return (
                frames,
                StreamEnd::Error(FrameError::TooLarge {
                    length,
                    max: max_len,
                }),
            );
        }
        let total = 4 + length as usize;
        if avail.len() < total {
            return (frames, StreamEnd::Partial(avail.len()));
        }
        let flags = Flags(u16::from_be_bytes([avail[8], avail[9]]));
        if flags.0 & !3 != 0 {
            return (frames, StreamEnd::Error(FrameError::UnknownFlags { flags }));
        }
        if flags.0 & 2 != 0 {
            return (frames, StreamEnd::Error(FrameError::EncryptionUnsupported));
        }
        frames.push(RefFrame {
            packet_id: u32::from_be_bytes(avail[4..8].try_into().unwrap()),
            flags,
            body: &avail[10..total],
        });
        pos += total;
    }
}

// One frame as bytes, and a message encoded with a codec: the test support
// crate's builders, written from the protocol rather than with the encoder
// under test.
pub use peng3dnet_test_support::{encode, frame};

// ---------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------

/// Every close reason `docs/PROTOCOL.md` and the README document.
pub const DOCUMENTED_REASONS: [&str; 26] = [
    "smartpacketinvalid",
    "protoversionmismatch",
    "unknownconntype",
    "packetregmismatch",
    "pingcomplete",
    "pinginvalidside",
    "invalidpingpacket",
    "servershutdown",
    "socketclose",
    "command",
    "userrequest",
    "handshaketimeout",
    "frametimeout",
    "idletimeout",
    "packettoolarge",
    "malformedframe",
    "unknownflags",
    "encryptionunsupported",
    "compressionnotenabled",
    "decompressionfailed",
    "malformedpacket",
    "handshakefailed",
    "serverfull",
    "writequeuefull",
    "toomanyconnections",
    "serverbusy",
];

/// A reported close: a local or transport close has a documented reason; a
/// peer's reason is whatever it sent (a documented one, `nil`, or its own
/// text cut to `MAX_REASON_LEN`).
pub fn check_close(reason: &CloseReason, initiator: Initiator) {
    match initiator {
        Initiator::Local | Initiator::Transport => {
            let wire = reason
                .as_wire()
                .unwrap_or_else(|| panic!("{initiator:?} close without a reason"));
            assert!(
                DOCUMENTED_REASONS.contains(&wire) && !matches!(reason, CloseReason::Other(_)),
                "{initiator:?} close with an undocumented reason {wire:?}"
            );
            if initiator == Initiator::Transport {
                assert_eq!(*reason, CloseReason::SocketClose);
            }
        }
        Initiator::Peer => {
            if let Some(wire) = reason.as_wire() {
                assert!(
                    wire.len() <= MAX_REASON_LEN,
                    "peer reason not cut: {wire:?}"
                );
                assert_eq!(&CloseReason::from_wire(Some(wire)), reason);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The connection driver
// ---------------------------------------------------------------------------

/// Runs one connection through a [`Script`] and checks the invariants after
/// every call.
pub struct Driver {
    /// The virtual clock.
    pub now: Instant,
    /// Every byte written to the "transport".
    pub tx_record: Vec<u8>,
    /// The reported close.
    pub closed: Option<(CloseReason, Initiator)>,
    /// `Connected` events seen.
    pub connected: u32,
    /// Read through `receive_buffer`/`commit_received` instead of `handle_input`.
    pub zero_copy: bool,
    /// Events seen.
    pub events: u64,
    /// Application packets delivered.
    pub packets: u64,
    /// Take events through `poll_with`, leaving every other packet buffered
    /// (`Take::Keep`): `poll` must then hand the same packet out again.
    pub in_place: bool,
    seq: u32,
    kept: u64,
}

impl Driver {
    /// A driver at time zero.
    pub fn new(zero_copy: bool) -> Self {
        Driver {
            now: Instant::ZERO,
            tx_record: Vec::new(),
            closed: None,
            connected: 0,
            zero_copy,
            events: 0,
            packets: 0,
            in_place: false,
            seq: 0,
            kept: 0,
        }
    }

    /// Feeds the script's fragments with its actions, then ends the transport.
    /// With `end_early`, the transport ends right after the last fragment
    /// arrived, before it is polled: the frames it completed must still be
    /// handed out, then the close.
    pub fn run<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        script: &Script<'_>,
        end_early: bool,
    ) {
        let fragments = script.fragments();
        let last = fragments.len().saturating_sub(1);
        for (i, (fragment, action)) in fragments.into_iter().enumerate() {
            if end_early && i == last {
                self.drain(conn, usize::MAX);
                // What does not fit is lost with the transport.
                let _ = conn.handle_input(fragment);
                conn.handle_transport_closed();
                self.check(conn);
                self.poll_all(conn, false);
                assert!(
                    conn.is_closed(),
                    "open after the transport ended and was polled"
                );
                break;
            }
            self.step(conn, fragment, action);
        }
        self.finish(conn);
    }

    /// One step: time passes, a command, the fragment in, events out, some
    /// bytes written.
    pub fn step<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        fragment: &[u8],
        action: u8,
    ) {
        let dt = match (action >> 3) & 3 {
            0 => 0,
            1 => 1_000 * fragment.len() as u64,
            2 => 1_000_000,
            _ => 6_000_000,
        };
        self.now = self.now + Duration::from_micros(dt);
        let expired = conn.poll_timeout().is_some_and(|d| self.now >= d);
        // Before the handshake completed the timer due is the handshake's
        // (the frame timer closes too); once connected it may also be the
        // keepalive, which queues a frame and closes nothing.
        let connected = conn.is_connected();
        conn.handle_timeout(self.now);
        if expired && !connected {
            assert!(
                conn.is_closed(),
                "the handshake timer expired without a close"
            );
        }
        self.check(conn);
        self.command(conn, action & 7, fragment.len());
        self.check(conn);
        self.feed(conn, fragment, action & 0x80 != 0);
        match (action >> 5) & 3 {
            0 => self.drain(conn, usize::MAX),
            1 => self.drain(conn, conn.poll_transmit().len() / 2),
            2 => {}
            _ => self.drain(conn, 1),
        }
        self.check(conn);
    }

    fn command<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        command: u8,
        len: usize,
    ) {
        self.seq += 1;
        let before = conn.poll_transmit().len();
        let was_closed = conn.is_closed();
        let (result, rules) = match command {
            0 => return,
            1 => (conn.send::<Echo>(&"echo, echo"), Echo::RULES),
            2 => (conn.send::<Plain>(&self.seq), Plain::RULES),
            3 => {
                let msg = Numbered {
                    seq: self.seq,
                    text: "strict",
                };
                (conn.send::<Strict>(&msg), Strict::RULES)
            }
            4 => (conn.send::<ToClient>(&(len as u64)), ToClient::RULES),
            5 => (conn.send::<Secret>(&"a secret"), Secret::RULES),
            6 => {
                if conn.mode() == Mode::PLAY {
                    conn.set_mode(Mode::NOTSET);
                    conn.set_state(State::Active);
                } else {
                    conn.set_mode(Mode::PLAY);
                    conn.set_state(State::LoggedIn);
                }
                (conn.send::<Moved>(&(1, -1)), Moved::RULES)
            }
            _ => match len % 4 {
                0 => {
                    conn.close(CloseReason::UserRequest);
                    assert!(conn.is_closed());
                    return;
                }
                1 => {
                    conn.set_security_level(SecurityLevel::Encrypted);
                    return;
                }
                _ => {
                    let id = 64 + (len % 40) as u32;
                    let known = conn.registry().by_id(id).copied();
                    let r = if len % 8 < 4 {
                        conn.send_encoded(id, &[0x02, 0x00, 0x01])
                    } else {
                        conn.send_by_id(id, &self.seq)
                    };
                    match known {
                        None => assert_eq!(r, Err(SendError::NotRegistered)),
                        Some(e) => self.check_send(conn, r, before, was_closed, e.rules),
                    }
                    return;
                }
            },
        };
        self.check_send(conn, result, before, was_closed, rules);
    }

    fn check_send<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        result: Result<(), SendError>,
        before: usize,
        was_closed: bool,
        rules: Rules,
    ) {
        let tx_cap = conn.buffers().1.max_capacity();
        match result {
            Ok(()) => {
                assert!(
                    !was_closed && !conn.is_closed(),
                    "a send succeeded on a closed connection"
                );
                assert!(conn.poll_transmit().len() > before, "a send queued nothing");
                let ctx = RuleContext {
                    side: conn.side(),
                    state: conn.state(),
                    mode: conn.mode(),
                    conntype: conn.conntype(),
                    security: conn.security_level(),
                };
                assert_eq!(rules.check_send(&ctx), Ok(()), "a send broke its rules");
                assert_ne!(
                    conn.conntype(),
                    "ping",
                    "an application packet on a ping connection"
                );
            }
            Err(SendError::Closed) => {
                assert!(conn.is_closed() || was_closed || self.closed.is_some())
            }
            Err(SendError::WouldBlock { required }) => {
                assert!(required <= tx_cap - CLOSE_RESERVE);
                assert!(
                    before + required > tx_cap - CLOSE_RESERVE,
                    "WouldBlock for {required} bytes with {before} of {tx_cap} queued"
                );
                assert_eq!(
                    conn.poll_transmit().len(),
                    before,
                    "WouldBlock queued bytes"
                );
            }
            Err(SendError::TooLarge { required, capacity }) => {
                assert!(required > capacity && capacity == tx_cap - CLOSE_RESERVE);
            }
            Err(SendError::Rules { .. }) => {
                if rules.on_invalid == InvalidAction::Ignore {
                    assert_eq!(conn.is_closed(), was_closed, "an ignored rule closed");
                } else {
                    assert!(conn.is_closed(), "a rule with action close did not close");
                }
            }
            Err(SendError::Encode(e)) => panic!("a registered message failed to encode: {e:?}"),
            Err(_) => assert_eq!(conn.poll_transmit().len(), before),
        }
    }

    /// Puts `bytes` in, polling whenever the buffer is full; asserts that
    /// a full poll always makes room.
    pub fn feed<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        bytes: &[u8],
        protocol_only: bool,
    ) {
        let mut rest = bytes;
        let mut stalled = 0;
        loop {
            let closed_before = conn.is_closed();
            let n = if self.zero_copy && !closed_before {
                let space = conn.receive_buffer();
                let n = space.len().min(rest.len());
                space[..n].copy_from_slice(&rest[..n]);
                conn.commit_received(n);
                n
            } else {
                conn.handle_input(rest)
            };
            assert!(n <= rest.len());
            if closed_before {
                assert_eq!(n, rest.len(), "a closed connection must take every byte");
            }
            rest = &rest[n..];
            self.poll_all(conn, protocol_only && stalled == 0);
            if rest.is_empty() {
                return;
            }
            if n == 0 {
                stalled += 1;
                assert!(
                    stalled < 3,
                    "receive stalled: no byte taken after a full poll ({:?}, {} buffered)",
                    conn,
                    conn.has_buffered_frame()
                );
            } else {
                stalled = 0;
            }
        }
    }

    /// Polls until `None`, checking every event.
    pub fn poll_all<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        protocol_only: bool,
    ) {
        let rx_cap = conn.max_frame_len();
        let side = conn.side();
        // After poll_protocol, a frame that waits (has_buffered_frame) is an
        // application frame, which the next full poll turns into an event.
        let mut full_next = false;
        loop {
            let now = self.now;
            let use_protocol = protocol_only && !full_next;
            let ev = if use_protocol {
                conn.poll_protocol(now).map(|ev| seen_of(ev, rx_cap))
            } else if self.in_place {
                self.poll_in_place(conn, rx_cap)
            } else {
                conn.poll(now).map(|ev| seen_of(ev, rx_cap))
            };
            let Some(ev) = ev else {
                if use_protocol && conn.has_buffered_frame() {
                    full_next = true;
                    continue;
                }
                assert!(!full_next, "has_buffered_frame, but poll returned no event");
                break;
            };
            full_next = false;
            if self.closed.is_some() {
                panic!("an event after Closed: {ev:?}");
            }
            self.events += 1;
            let mut delivered = None;
            let mut ignored = None;
            match ev {
                Seen::Connected => {
                    self.connected += 1;
                    assert_eq!(self.connected, 1, "Connected twice");
                }
                Seen::Packet { id, name, conntype } => {
                    assert!(!use_protocol, "poll_protocol returned a packet");
                    delivered = Some(((id, name), conntype));
                }
                Seen::Pong { body_len } => {
                    assert_eq!(side, Side::Client, "a server got a Pong");
                    assert!(body_len + FRAME_OVERHEAD <= rx_cap);
                }
                Seen::PingAnswered => assert_eq!(side, Side::Server, "a client answered a ping"),
                Seen::Ignored { id, cause } => ignored = Some((id, cause)),
                Seen::Closed { reason, initiator } => {
                    check_close(&reason, initiator);
                    self.closed = Some((reason, initiator));
                }
            }
            if let Some((id, cause)) = ignored {
                let known = conn.registry().by_id(id).is_some();
                match cause {
                    IgnoreCause::UnknownId => assert!(!known, "known id {id} ignored as unknown"),
                    IgnoreCause::Rules { .. } => {
                        assert!(known, "unknown id {id} ignored for its rules")
                    }
                }
            }
            if let Some(((id, name), consumed)) = delivered {
                self.packets += 1;
                assert!(id >= FIRST_AUTO_ID, "an internal packet delivered: {id}");
                let entry = conn.registry().by_id(id).copied();
                assert_eq!(entry.map(|e| e.name), name, "name of id {id}");
                if consumed {
                    assert_eq!(conn.conntype(), "fuzz");
                } else {
                    let entry = entry.expect("a delivered packet is registered");
                    let ctx = RuleContext {
                        side: conn.side(),
                        state: conn.state(),
                        mode: conn.mode(),
                        conntype: conn.conntype(),
                        security: conn.security_level(),
                    };
                    assert_eq!(
                        entry.rules.check_receive(&ctx),
                        Ok(()),
                        "a delivered packet broke its rules"
                    );
                    // A plain packet (no rules) is delivered in any state, before
                    // the handshake too, as the reference does; never on ping.
                    assert_ne!(
                        conn.conntype(),
                        "ping",
                        "an application packet on a ping connection"
                    );
                }
                assert!(!conn.is_closed());
            }
        }
        assert_eq!(
            conn.is_closed(),
            self.closed.is_some(),
            "closed without a Closed event (or the reverse)"
        );
    }

    /// The next event through `poll_with`. Every other application packet is
    /// left buffered (`Take::Keep`); `poll` must then hand the very same
    /// packet out again, and that is the event returned.
    fn poll_in_place<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        rx_cap: usize,
    ) -> Option<Seen> {
        let keep = self.events.is_multiple_of(2);
        let mut kept = None;
        let offered = conn.poll_with(self.now, |ev, _outbox| match ev {
            Event::Packet(p) | Event::ConnTypePacket(p) if keep => {
                kept = Some((p.packet_id, p.body.to_vec()));
                (Take::Keep, None)
            }
            ev => (Take::Consume, Some(seen_of(ev, rx_cap))),
        })?;
        if offered.is_some() {
            return offered;
        }
        let (id, body) = kept.expect("a packet was kept");
        self.kept += 1;
        let again = conn
            .poll(self.now)
            .expect("a kept packet was not handed out again");
        match &again {
            Event::Packet(p) | Event::ConnTypePacket(p) => {
                assert_eq!(p.packet_id, id, "another packet after a kept one");
                assert_eq!(p.body, &body[..], "a kept packet came back changed");
            }
            _ => panic!("a kept packet came back as another event"),
        }
        Some(seen_of(again, rx_cap))
    }

    /// Writes up to `n` bytes of the transmit queue out.
    pub fn drain<C: Codec, G: RegistryAccess<REG_N>>(
        &mut self,
        conn: &mut Conn<'_, '_, C, G>,
        n: usize,
    ) {
        let out = conn.poll_transmit();
        let n = n.min(out.len());
        self.tx_record.extend_from_slice(&out[..n]);
        conn.transmitted(n);
    }

    /// The invariants that hold between any two calls.
    pub fn check<C: Codec, G: RegistryAccess<REG_N>>(&self, conn: &Conn<'_, '_, C, G>) {
        let (rx, tx) = conn.buffers();
        let tx_cap = tx.max_capacity();
        let pending = conn.poll_transmit().len();
        assert!(tx.bytes().len() <= tx_cap, "tx storage past its capacity");
        // A growable receive buffer may hold inflate room past its
        // capacity (`Buffer::reserve_scratch`: at most twice it, given back
        // by the next call that takes input); a fixed one never grows.
        assert!(
            rx.bytes().len() <= 2 * rx.max_capacity(),
            "rx storage past twice its capacity"
        );
        if conn.is_closed() {
            assert!(pending <= tx_cap);
            assert!(!conn.is_connected());
            assert_eq!(conn.state(), State::Closed);
        } else {
            assert!(
                pending <= tx_cap - CLOSE_RESERVE,
                "{pending} bytes queued eat into the closeconn reserve of {tx_cap}"
            );
        }
        if conn.is_connected() {
            assert!(matches!(conn.state(), State::Active | State::LoggedIn));
            assert_ne!(conn.conntype(), "ping");
        }
        // The handshake timer runs from the start until connected or closed;
        // after the handshake only the frame, idle and keepalive timers run
        // (the config's keepalive is on), and none after the close.
        if conn.is_closed() {
            assert_eq!(conn.poll_timeout(), None, "a timer after the close");
        } else if self.connected == 0 && self.closed.is_none() {
            assert!(
                conn.poll_timeout().is_some(),
                "no handshake timer before connected"
            );
        }
    }

    /// The end: write everything, check the closeconn, end the transport,
    /// and check that the connection finishes.
    pub fn finish<C: Codec, G: RegistryAccess<REG_N>>(&mut self, conn: &mut Conn<'_, '_, C, G>) {
        self.poll_all(conn, false);
        self.drain(conn, usize::MAX);
        self.check(conn);
        self.check_tx(conn);
        if conn.is_closed() {
            assert!(conn.is_finished(), "closed and drained but not finished");
        }
        conn.handle_transport_closed();
        self.poll_all(conn, false);
        assert!(
            conn.is_closed(),
            "open after the transport ended and every frame was polled"
        );
        let (reason, initiator) = self.closed.clone().expect("no Closed event");
        if initiator == Initiator::Transport {
            assert_eq!(reason, CloseReason::SocketClose);
        }
        self.drain(conn, usize::MAX);
        assert!(conn.is_finished());
        assert!(conn.poll(self.now).is_none());
        if debug() {
            eprintln!(
                "connected {} packets {} (kept and handed out again {}) events {} closed {:?} wrote {} bytes",
                self.connected,
                self.packets,
                self.kept,
                self.events,
                self.closed,
                self.tx_record.len()
            );
        }
        assert!(conn.receive_buffer().is_empty());
    }

    /// Everything written parses as frames of known ids; a local close
    /// ends with a `closeconn` that carries its reason.
    fn check_tx<C: Codec, G: RegistryAccess<REG_N>>(&self, conn: &Conn<'_, '_, C, G>) {
        let (frames, end) = parse_stream(&self.tx_record, u32::MAX as usize);
        let peer_closed = matches!(self.closed, Some((_, Initiator::Peer)));
        match end {
            StreamEnd::Partial(0) => {}
            // A peer's closeconn drops what was queued, even mid-frame.
            StreamEnd::Partial(_) if peer_closed => {}
            other => panic!("the connection wrote a broken stream: {other:?}"),
        }
        for f in &frames {
            assert!(
                matches!(f.packet_id, 1..=4 | 16 | 64..),
                "wrote packet id {}",
                f.packet_id
            );
            assert!(f.flags == Flags::EMPTY || f.flags == Flags::COMPRESSED);
            if f.flags == Flags::COMPRESSED {
                let body = miniz_oxide::inflate::decompress_to_vec_zlib(f.body)
                    .expect("a compressed frame that does not inflate");
                assert!(body.len() > SMALL_ZLIB.threshold);
            }
        }
        if let Some((reason, Initiator::Local)) = &self.closed {
            let last = frames.last().expect("a local close wrote nothing");
            assert_eq!(
                last.packet_id, 16,
                "a local close did not end with closeconn"
            );
            let msg: CloseConn = conn
                .codec()
                .decode(last.body)
                .expect("our closeconn decodes");
            assert_eq!(
                msg.reason,
                reason.as_wire(),
                "closeconn carries another reason"
            );
            let closeconns = frames.iter().filter(|f| f.packet_id == 16).count();
            assert_eq!(closeconns, 1, "closeconn written {closeconns} times");
        } else {
            assert!(
                frames.iter().all(|f| f.packet_id != 16),
                "closeconn written without a local close"
            );
        }
    }
}

/// Whether `PENG3DNET_FUZZ_DEBUG` is set: the driver then prints a summary
/// of each run (for checking what seeds reach).
pub fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("PENG3DNET_FUZZ_DEBUG").is_some())
}

/// Checks a delivered packet and decodes it as every packet type.
/// An event, owned and checked.
#[derive(Debug)]
enum Seen {
    Connected,
    Packet {
        id: u32,
        name: Option<&'static str>,
        /// A `ConnTypePacket`.
        conntype: bool,
    },
    Pong {
        body_len: usize,
    },
    PingAnswered,
    Ignored {
        id: u32,
        cause: IgnoreCause,
    },
    Closed {
        reason: CloseReason,
        initiator: Initiator,
    },
}

/// Checks what can be checked of an event on its own, and keeps the rest.
fn seen_of<C: Codec>(ev: Event<'_, C>, rx_cap: usize) -> Seen {
    match ev {
        Event::Connected => Seen::Connected,
        Event::Packet(inc) => {
            let (id, name) = check_incoming(&inc, rx_cap);
            Seen::Packet {
                id,
                name,
                conntype: false,
            }
        }
        Event::ConnTypePacket(inc) => {
            let (id, name) = check_incoming(&inc, rx_cap);
            Seen::Packet {
                id,
                name,
                conntype: true,
            }
        }
        Event::Pong { body, .. } => Seen::Pong {
            body_len: body.len(),
        },
        Event::PingAnswered => Seen::PingAnswered,
        Event::Ignored { packet_id, cause } => Seen::Ignored {
            id: packet_id,
            cause,
        },
        Event::Closed(Closed { reason, initiator }) => Seen::Closed { reason, initiator },
    }
}

fn check_incoming<C: Codec>(
    inc: &Incoming<&[u8], C>,
    rx_cap: usize,
) -> (u32, Option<&'static str>) {
    assert!(
        inc.body.len() + FRAME_OVERHEAD <= rx_cap,
        "a body larger than the buffer"
    );
    let _ = inc.decode::<Echo>();
    let _ = inc.decode::<Plain>();
    let _ = inc.decode::<Strict>();
    let _ = inc.decode::<ToClient>();
    let _ = inc.decode::<Secret>();
    let _ = inc.decode::<Moved>();
    if inc.name != Some(Echo::NAME) {
        assert!(inc.decode::<Echo>().is_err());
    }
    let _ = inc.decode_as::<CloseConn>();
    (inc.packet_id, inc.name)
}

/// Whether a codec error is one a too-small output buffer may give.
pub fn is_buffer_error(e: CodecError) -> bool {
    e == CodecError::BufferTooSmall
}
