//! Test helpers shared by peng3dnet's crates (not published).
//!
//! One copy of what the tests of `peng3dnet-core`, `peng3dnet-std`, the
//! cross-crate suite in `tests/` and the fuzz targets would otherwise each
//! write for themselves:
//!
//! - **test packet types** ([`Chat`], [`ToServer`], [`ToClient`], [`Secret`],
//!   [`Move`], [`Plain`], [`AfterLogin`], [`CustomOnly`]) and the
//!   [`registry`] and [`config`] of two test peers;
//! - **a core pair**: the [`Conn`] type, owned event records ([`Rec`],
//!   [`record`], [`drain`]), byte pumps ([`deliver`], [`take_tx`],
//!   [`exchange`], the [`pair!`] and [`connected!`] fixtures) and handshake
//!   [`transcript`]s;
//! - **a growable buffer** ([`GrowBuf`]) for the core's `Buffer` trait;
//! - **frame builders** that do not use the encoder under test ([`frame`],
//!   [`encode`], [`postcard`], [`zlib`], [`zlib_stored`]) and a frame reader
//!   ([`frames_of`]);
//! - **a raw TCP peer** ([`RawPeer`]) that writes whatever frames a test
//!   wants and reads the other side's answer with bounded waits.
//!
//! It depends on `peng3dnet-core` only (with `zlib`, so that the core's own
//! tests run with the inflater the std adapter turns on too); whatever
//! needs `peng3dnet-std` stays with the tests that use it.

mod frames;
mod raw;

pub use frames::{encode, frame, frames_of, postcard, zlib, zlib_stored};
pub use raw::{Arrival, Ending, RawPeer};

use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{Config, Connection, Event};
use peng3dnet_core::registry::{Packet, Registry, RegistryAccess};
use peng3dnet_core::rules::{InvalidAction, Rules};
use peng3dnet_core::time::Instant;
use peng3dnet_core::{CloseReason, Closed, Initiator, Mode, SecurityLevel, Side, State};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The instant every core test starts at.
pub const T0: Instant = Instant::ZERO;

/// Registry capacity used by the tests.
pub const CAP: usize = 16;
/// Buffer size used by the tests.
pub const BUF: usize = 4096;

/// The connection type of the tests (a server's, sharing its registry, by
/// default).
pub type Conn<'a, G = &'a Registry<CAP>> = Connection<'a, Postcard, [u8; BUF], [u8; BUF], CAP, G>;

/// A client's connection, which syncs its own registry.
pub type ClientConn<'a> = Conn<'a, &'a mut Registry<CAP>>;

/// A sequence-numbered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbered<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Text.
    pub text: &'a str,
}

/// A smart packet both sides may send and receive.
pub struct Chat;
impl Packet for Chat {
    const NAME: &'static str = "test:chat";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = Numbered<'a>;
}

/// Received only by the server; breaking it closes the connection.
pub struct ToServer;
impl Packet for ToServer {
    const NAME: &'static str = "test:toserver";
    const RULES: Rules = Rules::SMART
        .side(Side::Server)
        .on_invalid(InvalidAction::Close);
    type Message<'a> = u32;
}

/// Received only by the client; breaking it is ignored.
pub struct ToClient;
impl Packet for ToClient {
    const NAME: &'static str = "test:toclient";
    const RULES: Rules = Rules::SMART.side(Side::Client);
    type Message<'a> = u32;
}

/// Needs an encrypted transport to be sent.
pub struct Secret;
impl Packet for Secret {
    const NAME: &'static str = "test:secret";
    const RULES: Rules = Rules::SMART.min_security(SecurityLevel::Encrypted);
    type Message<'a> = &'a str;
}

/// Needs mode PLAY.
pub struct Move;
impl Packet for Move {
    const NAME: &'static str = "test:move";
    const RULES: Rules = Rules::SMART.mode(Mode::PLAY);
    type Message<'a> = (i32, i32);
}

/// A plain packet: no rules, any state.
pub struct Plain;
impl Packet for Plain {
    const NAME: &'static str = "test:plain";
    type Message<'a> = &'a [u8];
}

/// Needs state LOGGEDIN.
pub struct AfterLogin;
impl Packet for AfterLogin {
    const NAME: &'static str = "test:afterlogin";
    const RULES: Rules = Rules::SMART.state(State::LoggedIn);
    type Message<'a> = ();
}

/// Only on connections of the custom type `custom`.
pub struct CustomOnly;
impl Packet for CustomOnly {
    const NAME: &'static str = "test:customonly";
    const RULES: Rules = Rules::SMART.conntype("custom");
    type Message<'a> = u8;
}

/// The registry both test peers use.
pub fn registry() -> Registry<CAP> {
    let mut reg = Registry::new();
    reg.register::<Chat>().unwrap();
    reg.register::<ToServer>().unwrap();
    reg.register::<ToClient>().unwrap();
    reg.register::<Secret>().unwrap();
    reg.register::<Move>().unwrap();
    reg.register::<Plain>().unwrap();
    reg.register::<AfterLogin>().unwrap();
    reg.register::<CustomOnly>().unwrap();
    reg
}

/// A config with a fixed version string, so frames are byte-for-byte stable,
/// and no keepalive, so that the only timers a test sees are those it is
/// about (`core/tests/timers.rs` tests the keepalive).
pub fn config() -> Config<'static> {
    Config {
        version: "t1",
        keepalive_interval: peng3dnet_core::time::Duration::MAX,
        ..Config::new()
    }
}

/// An event, owned, for transcripts and assertions.
#[derive(Clone, Debug, PartialEq)]
pub enum Rec {
    /// [`Event::Connected`].
    Connected,
    /// [`Event::Packet`] with its name and body.
    Packet(u32, Option<&'static str>, Vec<u8>),
    /// [`Event::ConnTypePacket`].
    ConnTypePacket(u32, Vec<u8>),
    /// [`Event::Pong`].
    Pong,
    /// [`Event::PingAnswered`].
    PingAnswered,
    /// [`Event::Ignored`].
    Ignored(u32),
    /// [`Event::Closed`].
    Closed(CloseReason, Initiator),
}

impl std::fmt::Display for Rec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rec::Connected => f.write_str("Connected"),
            Rec::Packet(id, name, body) => write!(f, "Packet {id} {name:?} {body:?}"),
            Rec::ConnTypePacket(id, body) => write!(f, "ConnTypePacket {id} {body:?}"),
            Rec::Pong => f.write_str("Pong"),
            Rec::PingAnswered => f.write_str("PingAnswered"),
            Rec::Ignored(id) => write!(f, "Ignored {id}"),
            Rec::Closed(r, i) => write!(f, "Closed {r} {i:?}"),
        }
    }
}

/// Turns an event into a record.
pub fn record<C>(event: Event<'_, C>) -> Rec {
    match event {
        Event::Connected => Rec::Connected,
        Event::Packet(p) => Rec::Packet(p.packet_id, p.name, p.body.to_vec()),
        Event::ConnTypePacket(p) => Rec::ConnTypePacket(p.packet_id, p.body.to_vec()),
        Event::Pong { .. } => Rec::Pong,
        Event::PingAnswered => Rec::PingAnswered,
        Event::Ignored { packet_id, .. } => Rec::Ignored(packet_id),
        Event::Closed(Closed { reason, initiator }) => Rec::Closed(reason, initiator),
    }
}

/// Every pending event of `conn`, as records (bounded: at most 100,000).
pub fn drain<G: RegistryAccess<CAP>>(conn: &mut Conn<'_, G>, now: Instant) -> Vec<Rec> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match conn.poll(now) {
            Some(e) => out.push(record(e)),
            None => return out,
        }
    }
    panic!("poll did not run dry after 100,000 events");
}

/// Feeds `bytes` into `conn` in pieces ending at `cuts` (ascending offsets),
/// draining events after each piece.
pub fn deliver<G: RegistryAccess<CAP>>(
    conn: &mut Conn<'_, G>,
    bytes: &[u8],
    cuts: &[usize],
    now: Instant,
) -> Vec<Rec> {
    let mut events = Vec::new();
    let mut pos = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let end = end.clamp(pos, bytes.len());
        while pos < end {
            let n = conn.handle_input(&bytes[pos..end]);
            pos += n;
            events.extend(drain(conn, now));
            assert!(n > 0 || conn.is_closed(), "no progress");
            if n == 0 {
                return events;
            }
        }
    }
    events.extend(drain(conn, now));
    events
}

/// A growable buffer for tests: starts empty, grows in steps of at least
/// `step` bytes up to `max`, and drops its memory on release.
#[derive(Debug)]
pub struct GrowBuf {
    /// The storage.
    pub bytes: Vec<u8>,
    /// The most it may grow to.
    pub max: usize,
    /// The smallest growth.
    pub step: usize,
    /// How often it grew.
    pub grows: usize,
    /// How often it was released while holding memory.
    pub releases: usize,
}

impl GrowBuf {
    /// An empty buffer.
    pub fn new(max: usize, step: usize) -> Self {
        GrowBuf {
            bytes: Vec::new(),
            max,
            step,
            grows: 0,
            releases: 0,
        }
    }
}

impl peng3dnet_core::buffer::Buffer for GrowBuf {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
    fn max_capacity(&self) -> usize {
        self.max
    }
    fn reserve(&mut self, min_len: usize) {
        if min_len > self.bytes.len() {
            let len = min_len.max(self.bytes.len() + self.step).min(self.max);
            self.bytes.resize(len, 0);
            self.grows += 1;
        }
    }
    fn release(&mut self) {
        if !self.bytes.is_empty() {
            self.bytes = Vec::new();
            self.releases += 1;
        }
    }
}

/// Names for ids in transcripts: the protocol's packets by name, others
/// (whose meaning depends on the connection type) by number.
pub fn name_of(id: u32, reg: &Registry<CAP>) -> String {
    match reg.by_id(id) {
        Some(e) if id < 64 => e.name.to_string(),
        _ => format!("#{id}"),
    }
}

/// Takes what `from` queued, as bytes, and marks it transmitted.
pub fn take_tx<G: RegistryAccess<CAP>>(from: &mut Conn<'_, G>) -> Vec<u8> {
    let bytes = from.poll_transmit().to_vec();
    from.transmitted(bytes.len());
    bytes
}

/// Runs the exchange between a server and a client until neither has
/// anything to send (at most 64 rounds), delivering each transfer in pieces
/// chosen by `cuts(len)`. Returns the transcript: frames sent, events, state
/// changes.
pub fn transcript<G1: RegistryAccess<CAP>, G2: RegistryAccess<CAP>>(
    server: &mut Conn<'_, G1>,
    client: &mut Conn<'_, G2>,
    now: Instant,
    cuts: &dyn Fn(usize) -> Vec<usize>,
) -> Vec<String> {
    let names = registry();
    let mut lines = Vec::new();
    let mut states = [server.state(), client.state()];
    for _ in 0..64 {
        let to_client = take_tx(server);
        let moved = !to_client.is_empty();
        step(
            &mut lines,
            "S>C",
            "C",
            &to_client,
            client,
            &mut states[1],
            now,
            cuts,
            &names,
        );
        let to_server = take_tx(client);
        let moved = moved || !to_server.is_empty();
        step(
            &mut lines,
            "C>S",
            "S",
            &to_server,
            server,
            &mut states[0],
            now,
            cuts,
            &names,
        );
        if !moved {
            return lines;
        }
    }
    panic!("exchange did not settle in 64 rounds");
}

/// One transfer of a transcript: the frames, the receiver's events and its
/// new state.
#[allow(clippy::too_many_arguments)]
fn step<G: RegistryAccess<CAP>>(
    lines: &mut Vec<String>,
    tag: &str,
    to_tag: &str,
    bytes: &[u8],
    to: &mut Conn<'_, G>,
    state: &mut State,
    now: Instant,
    cuts: &dyn Fn(usize) -> Vec<usize>,
    names: &Registry<CAP>,
) {
    if bytes.is_empty() {
        return;
    }
    for (id, _, _) in frames_of(bytes) {
        lines.push(format!("{tag} {}", name_of(id, names)));
    }
    for rec in deliver(to, bytes, &cuts(bytes.len()), now) {
        lines.push(format!("{to_tag}: {rec}"));
    }
    if to.state() != *state {
        *state = to.state();
        let mut line = String::new();
        let _ = write!(line, "{to_tag}: state {}", to.state());
        lines.push(line);
    }
}

/// Moves bytes both ways (at most 32 rounds) until both connections are
/// quiet; returns the (server, client) events, as records.
///
/// # Panics
///
/// When they are still talking after 32 rounds.
pub fn exchange<G1: RegistryAccess<CAP>, G2: RegistryAccess<CAP>>(
    s: &mut Conn<'_, G1>,
    c: &mut Conn<'_, G2>,
) -> (Vec<Rec>, Vec<Rec>) {
    exchange_at(s, c, T0)
}

/// [`exchange`] at the time `now` (for tests of timers).
///
/// # Panics
///
/// When they are still talking after 32 rounds.
pub fn exchange_at<G1: RegistryAccess<CAP>, G2: RegistryAccess<CAP>>(
    s: &mut Conn<'_, G1>,
    c: &mut Conn<'_, G2>,
    now: Instant,
) -> (Vec<Rec>, Vec<Rec>) {
    let (mut se, mut ce) = (Vec::new(), Vec::new());
    for _ in 0..32 {
        let to_c = take_tx(s);
        let to_s = take_tx(c);
        if to_c.is_empty() && to_s.is_empty() {
            return (se, ce);
        }
        ce.extend(deliver(c, &to_c, &[], now));
        se.extend(deliver(s, &to_s, &[], now));
    }
    panic!("no quiet after 32 rounds");
}

/// `pair!(cfg, sreg, creg, s, c, conntype)`: a server connection `s` over
/// registry `sreg` and a client connection `c` of type `conntype` over
/// `creg` (which it syncs), both with config `cfg`, started at [`T0`],
/// nothing exchanged yet.
#[macro_export]
macro_rules! pair {
    ($cfg:expr, $sreg:ident, $creg:ident, $s:ident, $c:ident, $conntype:expr) => {
        let mut $s: $crate::Conn<'_> = $crate::Conn::server(
            &$cfg,
            &$sreg,
            ::peng3dnet_core::codec::Postcard,
            [0; $crate::BUF],
            [0; $crate::BUF],
            $crate::T0,
        )
        .unwrap();
        let mut $c: $crate::ClientConn<'_> = $crate::Conn::client(
            &$cfg,
            &mut $creg,
            ::peng3dnet_core::codec::Postcard,
            [0; $crate::BUF],
            [0; $crate::BUF],
            $conntype,
            $crate::T0,
        )
        .unwrap();
    };
}

/// `connected!(s, c)`: a [`pair!`] over [`config`] and two [`registry`]s,
/// classic type, through its handshake: both sides reported `Connected` and
/// nothing else.
#[macro_export]
macro_rules! connected {
    ($s:ident, $c:ident) => {
        let cfg = $crate::config();
        let sreg = $crate::registry();
        let mut creg = $crate::registry();
        $crate::pair!(cfg, sreg, creg, $s, $c, "classic");
        let (se, ce) = $crate::exchange(&mut $s, &mut $c);
        assert_eq!(
            (se, ce),
            (vec![$crate::Rec::Connected], vec![$crate::Rec::Connected])
        );
    };
}

/// Checks that a `peng3dnet serve` listening line names the server that
/// `PENG3DNET_RUNTIME` (which the program reads as the default of
/// `--runtime`) asks for: "... (codec ..., tokio)". A suite run with
/// `PENG3DNET_RUNTIME=tokio` is then one against the tokio server.
///
/// # Panics
/// If the line names another runtime.
pub fn expect_runtime(line: &str) {
    let runtime = std::env::var("PENG3DNET_RUNTIME").unwrap_or_else(|_| "mio".into());
    assert!(
        line.ends_with(&format!(", {runtime})")),
        "the server does not run on {runtime} (PENG3DNET_RUNTIME): {line:?}"
    );
}
