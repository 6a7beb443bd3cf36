//! The protocol's constants as types: states, modes, sides, security levels,
//! connection types and close reasons (`docs/PROTOCOL.md`, "Constants" and
//! "Closing").

use core::fmt;

/// A connection state as the protocol numbers it. SmartPacket rules match it
/// exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum State {
    /// 0: nothing happened yet.
    Init = 0,
    /// 1: waiting for the registry handshake (`handshake` on the client,
    /// `handshake.accept` on the server).
    HandshakeWait1 = 1,
    /// 2: defined by the protocol, never used.
    HandshakeWait2 = 2,
    /// 3: the server waits for `settype`; the client has sent it.
    WaitType = 3,
    /// 4: waiting for `hello` (client) or about to send it (server).
    HelloWait = 4,
    /// 64: the handshake is complete; application packets flow.
    Active = 64,
    /// 65: an application-defined state after [`Active`](Self::Active).
    LoggedIn = 65,
    /// 128: closed.
    Closed = 128,
}

impl State {
    /// The protocol's number for the state.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The state with the protocol number `code`, if there is one.
    pub const fn from_code(code: u8) -> Option<State> {
        Some(match code {
            0 => State::Init,
            1 => State::HandshakeWait1,
            2 => State::HandshakeWait2,
            3 => State::WaitType,
            4 => State::HelloWait,
            64 => State::Active,
            65 => State::LoggedIn,
            128 => State::Closed,
            _ => return None,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Init => "INIT",
            State::HandshakeWait1 => "HANDSHAKE_WAIT1",
            State::HandshakeWait2 => "HANDSHAKE_WAIT2",
            State::WaitType => "WAITTYPE",
            State::HelloWait => "HELLOWAIT",
            State::Active => "ACTIVE",
            State::LoggedIn => "LOGGEDIN",
            State::Closed => "CLOSED",
        })
    }
}

/// An application mode. The protocol names five; applications may define more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Mode(pub u16);

impl Mode {
    /// 0: no mode set (the initial mode).
    pub const NOTSET: Mode = Mode(0);
    /// 1: closed.
    pub const CLOSED: Mode = Mode(1);
    /// 2: a ping connection.
    pub const PING: Mode = Mode(2);
    /// 3: playing.
    pub const PLAY: Mode = Mode(3);
    /// 4: chatting.
    pub const CHAT: Mode = Mode(4);
}

impl fmt::Display for Mode {
    /// The protocol's name for the five it names (`PLAY (3)`), the number
    /// for an application's own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "NOTSET",
            1 => "CLOSED",
            2 => "PING",
            3 => "PLAY",
            4 => "CHAT",
            n => return write!(f, "{n}"),
        };
        write!(f, "{name} ({})", self.0)
    }
}

/// The side of a connection an endpoint is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Side {
    /// 0: the side that connected.
    Client = 0,
    /// 1: the side that accepted.
    Server = 1,
}

impl Side {
    /// The other side.
    pub const fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// How well the transport protects the connection, as the adapter established
/// it. Ordered: a rule's minimum is met by any level at or above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SecurityLevel {
    /// 0: plain TCP.
    #[default]
    None = 0,
    /// 1: wrapped in TLS, nothing known about it.
    Wrapped = 1,
    /// 2: encrypted, no certificate verified.
    Encrypted = 2,
    /// 3: the server's certificate and host name were verified.
    ServerAuth = 3,
    /// 4: both certificates were verified.
    BothAuth = 4,
}

impl fmt::Display for SecurityLevel {
    /// The protocol's name (`SERVERAUTH`) and what it means.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecurityLevel::None => "NONE (plain TCP)",
            SecurityLevel::Wrapped => "WRAPPED (TLS, nothing known)",
            SecurityLevel::Encrypted => "ENCRYPTED (TLS, no certificate verified)",
            SecurityLevel::ServerAuth => "SERVERAUTH (server certificate verified)",
            SecurityLevel::BothAuth => "BOTHAUTH (both certificates verified)",
        })
    }
}

/// What one end of a completed TLS handshake verified: the facts its
/// [`SecurityLevel`] is derived from ([`security_level`](Self::security_level)).
/// Every TLS adapter builds these from what its TLS library verified
/// (rustls in `peng3dnet-std`, embedded-tls in `peng3dnet-embassy`) and
/// takes the level from here, so that one handshake means one level
/// whichever adapter ran it.
///
/// ```
/// use peng3dnet_core::{SecurityLevel, TlsFacts};
///
/// let facts = TlsFacts::Client { server_verified: true, client_cert_sent: false };
/// assert_eq!(facts.security_level(), SecurityLevel::ServerAuth);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TlsFacts {
    /// The client's view.
    Client {
        /// In this handshake, the server's certificate chain was verified
        /// against the trusted CA, its name against the host name the client
        /// asked for, and its handshake signature with the certificate's key.
        server_verified: bool,
        /// The server asked for a client certificate, and the client sent one
        /// and signed the handshake with its key. The client cannot tell a
        /// server that requires one from a server that merely asks, nor (in
        /// TLS 1.3, where the client finishes first) whether the server
        /// accepted it: a server that rejects it makes the next read fail
        /// with the server's alert.
        client_cert_sent: bool,
    },
    /// The server's view.
    Server {
        /// The server required a client certificate, and the client's
        /// certificate was verified against the client CA.
        client_cert_verified: bool,
    },
}

impl TlsFacts {
    /// The security level these facts establish:
    ///
    /// | side | facts | level |
    /// |---|---|---|
    /// | client | server not verified | [`Encrypted`](SecurityLevel::Encrypted), whatever else |
    /// | client | server verified, no client certificate sent | [`ServerAuth`](SecurityLevel::ServerAuth) |
    /// | client | server verified, client certificate asked for and sent | [`BothAuth`](SecurityLevel::BothAuth) |
    /// | server | client certificate required and verified | [`BothAuth`](SecurityLevel::BothAuth) |
    /// | server | otherwise | [`Encrypted`](SecurityLevel::Encrypted) |
    ///
    /// The server cannot know whether its client verified the server's
    /// certificate, so it never reports `ServerAuth`, and its `BothAuth`
    /// rests on the client's side of the bargain: a client should present a
    /// certificate only when it verifies the server (the clients of both
    /// adapters refuse a configuration that would). A client that sent a
    /// certificate to a server it did not verify is still only `Encrypted`.
    /// Plain TCP is [`SecurityLevel::None`], which no TLS connection
    /// reports.
    pub const fn security_level(self) -> SecurityLevel {
        match self {
            TlsFacts::Client {
                server_verified: false,
                ..
            } => SecurityLevel::Encrypted,
            TlsFacts::Client {
                server_verified: true,
                client_cert_sent: false,
            } => SecurityLevel::ServerAuth,
            TlsFacts::Client {
                server_verified: true,
                client_cert_sent: true,
            } => SecurityLevel::BothAuth,
            TlsFacts::Server {
                client_cert_verified: true,
            } => SecurityLevel::BothAuth,
            TlsFacts::Server {
                client_cert_verified: false,
            } => SecurityLevel::Encrypted,
        }
    }
}

/// The built-in classic connection type: registry handshake, then packets.
pub const CONNTYPE_CLASSIC: &str = "classic";
/// The built-in ping connection type.
pub const CONNTYPE_PING: &str = "ping";
/// The placeholder connection type before `settype`.
pub const CONNTYPE_NOTSET: &str = "_notset";

/// The longest close reason kept; a longer one from a peer is cut at a
/// character boundary.
pub const MAX_REASON_LEN: usize = 48;

/// Why a connection closed. The string of each variant is what travels in
/// `closeconn` and what the Python reference reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// `smartpacketinvalid`: a packet broke its SmartPacket rules and its
    /// invalid action is `close`.
    SmartPacketInvalid,
    /// `protoversionmismatch`: the peers speak different protocol versions.
    ProtoVersionMismatch,
    /// `unknownconntype`: the client asked for a connection type the server
    /// does not have.
    UnknownConnType,
    /// `packetregmismatch`: the registries differ and the policy is to close.
    PacketRegMismatch,
    /// `pingcomplete`: a ping connection ended normally.
    PingComplete,
    /// `pinginvalidside`: a ping packet arrived on the side that sends it.
    PingInvalidSide,
    /// `invalidpingpacket`: a ping connection carried another packet.
    InvalidPingPacket,
    /// `servershutdown`: the server is shutting down.
    ServerShutdown,
    /// `socketclose`: the transport closed without a `closeconn`.
    SocketClose,
    /// `command`: closed by an operator's command.
    Command,
    /// `userrequest`: closed at the user's request.
    UserRequest,
    /// `handshaketimeout`: the handshake did not finish in time (this project).
    HandshakeTimeout,
    /// `frametimeout`: a frame started did not complete within
    /// [`Config::frame_timeout`](crate::connection::Config::frame_timeout)
    /// (this project).
    FrameTimeout,
    /// `idletimeout`: the peer sent nothing for
    /// [`Config::idle_timeout`](crate::connection::Config::idle_timeout)
    /// (this project).
    IdleTimeout,
    /// `packettoolarge`: a frame exceeded the receiver's maximum (this project).
    FrameTooLarge,
    /// `malformedframe`: a length prefix shorter than the header (this project).
    MalformedFrame,
    /// `unknownflags`: a frame set undefined flag bits (this project).
    UnknownFlags,
    /// `encryptionunsupported`: a frame set the reserved AES flag (this project).
    EncryptionUnsupported,
    /// `compressionnotenabled`: a compressed frame arrived where compression is
    /// off (this project).
    CompressionNotEnabled,
    /// `decompressionfailed`: a compressed body was invalid or inflated past the
    /// receiver's buffer (this project).
    DecompressionFailed,
    /// `malformedpacket`: the body of a protocol packet did not decode
    /// (this project).
    MalformedPacket,
    /// `handshakefailed`: the client answered the handshake with
    /// `success: false` (this project).
    HandshakeFailed,
    /// `serverfull`: the server has no free client slot (this project).
    ServerFull,
    /// `toomanyconnections`: the server holds as many clients from this
    /// address as it takes (this project).
    TooManyConnections,
    /// `serverbusy`: more clients arrived than the server accepts a second;
    /// try again later (this project).
    ServerBusy,
    /// `writequeuefull`: the peer did not read and its write queue filled
    /// (this project).
    WriteQueueFull,
    /// A `closeconn` without a reason (`nil`).
    Unspecified,
    /// Any other reason, cut to [`MAX_REASON_LEN`] bytes.
    Other(heapless::String<MAX_REASON_LEN>),
}

#[cfg_attr(not(test), allow(dead_code))]
const NAMED: [(CloseReason, &str); 26] = [
    (CloseReason::SmartPacketInvalid, "smartpacketinvalid"),
    (CloseReason::ProtoVersionMismatch, "protoversionmismatch"),
    (CloseReason::UnknownConnType, "unknownconntype"),
    (CloseReason::PacketRegMismatch, "packetregmismatch"),
    (CloseReason::PingComplete, "pingcomplete"),
    (CloseReason::PingInvalidSide, "pinginvalidside"),
    (CloseReason::InvalidPingPacket, "invalidpingpacket"),
    (CloseReason::ServerShutdown, "servershutdown"),
    (CloseReason::SocketClose, "socketclose"),
    (CloseReason::Command, "command"),
    (CloseReason::UserRequest, "userrequest"),
    (CloseReason::HandshakeTimeout, "handshaketimeout"),
    (CloseReason::FrameTimeout, "frametimeout"),
    (CloseReason::IdleTimeout, "idletimeout"),
    (CloseReason::FrameTooLarge, "packettoolarge"),
    (CloseReason::MalformedFrame, "malformedframe"),
    (CloseReason::UnknownFlags, "unknownflags"),
    (CloseReason::EncryptionUnsupported, "encryptionunsupported"),
    (CloseReason::CompressionNotEnabled, "compressionnotenabled"),
    (CloseReason::DecompressionFailed, "decompressionfailed"),
    (CloseReason::MalformedPacket, "malformedpacket"),
    (CloseReason::HandshakeFailed, "handshakefailed"),
    (CloseReason::ServerFull, "serverfull"),
    (CloseReason::TooManyConnections, "toomanyconnections"),
    (CloseReason::ServerBusy, "serverbusy"),
    (CloseReason::WriteQueueFull, "writequeuefull"),
];

/// The wire names of [`NAMED`] alone, in its order (the variants' order of
/// declaration, so that a name's position and its variant convert by
/// arithmetic, with no table): what runs on a board. One string and the end
/// of each name in it, rather than a table of `&str` (8 bytes a name) or of
/// [`NAMED`]'s pairs (a whole `CloseReason`, 64 bytes, a name: 1.4 KB of
/// flash). `reasons_round_trip_through_their_wire_names` checks them
/// against [`NAMED`].
static NAMES: &str = concat!(
    "smartpacketinvalidprotoversionmismatchunknownconntypepacketregmismatch",
    "pingcompletepinginvalidsideinvalidpingpacketservershutdownsocketclose",
    "commanduserrequesthandshaketimeoutframetimeoutidletimeout",
    "packettoolargemalformedframeunknownflagsencryptionunsupported",
    "compressionnotenableddecompressionfailedmalformedpackethandshakefailed",
    "serverfulltoomanyconnectionsserverbusywritequeuefull",
);

/// Where each name of [`NAMES`] ends.
static NAME_ENDS: [u16; 26] = [
    18, 38, 53, 70, 82, 97, 114, 128, 139, 146, 157, 173, 185, 196, 210, 224, 236, 257, 278, 297,
    312, 327, 337, 355, 365, 379,
];

/// The wire name at position `i` of [`NAMES`].
fn name_at(i: usize) -> Option<&'static str> {
    let end = usize::from(*NAME_ENDS.get(i)?);
    let start = match i.checked_sub(1) {
        Some(before) => usize::from(*NAME_ENDS.get(before)?),
        None => 0,
    };
    NAMES.get(start..end)
}

impl CloseReason {
    /// The position of a named reason in [`NAMES`].
    fn index(&self) -> Option<usize> {
        Some(match self {
            CloseReason::SmartPacketInvalid => 0,
            CloseReason::ProtoVersionMismatch => 1,
            CloseReason::UnknownConnType => 2,
            CloseReason::PacketRegMismatch => 3,
            CloseReason::PingComplete => 4,
            CloseReason::PingInvalidSide => 5,
            CloseReason::InvalidPingPacket => 6,
            CloseReason::ServerShutdown => 7,
            CloseReason::SocketClose => 8,
            CloseReason::Command => 9,
            CloseReason::UserRequest => 10,
            CloseReason::HandshakeTimeout => 11,
            CloseReason::FrameTimeout => 12,
            CloseReason::IdleTimeout => 13,
            CloseReason::FrameTooLarge => 14,
            CloseReason::MalformedFrame => 15,
            CloseReason::UnknownFlags => 16,
            CloseReason::EncryptionUnsupported => 17,
            CloseReason::CompressionNotEnabled => 18,
            CloseReason::DecompressionFailed => 19,
            CloseReason::MalformedPacket => 20,
            CloseReason::HandshakeFailed => 21,
            CloseReason::ServerFull => 22,
            CloseReason::TooManyConnections => 23,
            CloseReason::ServerBusy => 24,
            CloseReason::WriteQueueFull => 25,
            CloseReason::Unspecified | CloseReason::Other(_) => return None,
        })
    }

    /// The named reason at position `i` of [`NAMES`] (`Unspecified` past
    /// the end, which no caller passes).
    fn from_index(i: usize) -> CloseReason {
        match i {
            0 => CloseReason::SmartPacketInvalid,
            1 => CloseReason::ProtoVersionMismatch,
            2 => CloseReason::UnknownConnType,
            3 => CloseReason::PacketRegMismatch,
            4 => CloseReason::PingComplete,
            5 => CloseReason::PingInvalidSide,
            6 => CloseReason::InvalidPingPacket,
            7 => CloseReason::ServerShutdown,
            8 => CloseReason::SocketClose,
            9 => CloseReason::Command,
            10 => CloseReason::UserRequest,
            11 => CloseReason::HandshakeTimeout,
            12 => CloseReason::FrameTimeout,
            13 => CloseReason::IdleTimeout,
            14 => CloseReason::FrameTooLarge,
            15 => CloseReason::MalformedFrame,
            16 => CloseReason::UnknownFlags,
            17 => CloseReason::EncryptionUnsupported,
            18 => CloseReason::CompressionNotEnabled,
            19 => CloseReason::DecompressionFailed,
            20 => CloseReason::MalformedPacket,
            21 => CloseReason::HandshakeFailed,
            22 => CloseReason::ServerFull,
            23 => CloseReason::TooManyConnections,
            24 => CloseReason::ServerBusy,
            25 => CloseReason::WriteQueueFull,
            _ => CloseReason::Unspecified,
        }
    }
}

impl CloseReason {
    /// The reason as it travels in `closeconn`; `None` for
    /// [`Unspecified`](Self::Unspecified).
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            CloseReason::Unspecified => None,
            CloseReason::Other(s) => Some(s.as_str()),
            named => named.index().and_then(name_at),
        }
    }

    /// The reason a peer sent: a known name becomes its variant, anything
    /// else [`Other`](Self::Other), cut to [`MAX_REASON_LEN`] bytes.
    pub fn from_wire(reason: Option<&str>) -> CloseReason {
        CloseReason::from_wire_bytes(reason.map(str::as_bytes))
    }

    /// [`from_wire`](Self::from_wire) over the reason's bytes, which MUST
    /// be valid UTF-8 (a connection decodes them as a
    /// [`WireStr`](crate::text::WireStr), checked).
    pub(crate) fn from_wire_bytes(reason: Option<&[u8]>) -> CloseReason {
        let Some(text) = reason else {
            return CloseReason::Unspecified;
        };
        if let Some(i) =
            (0..NAME_ENDS.len()).position(|i| name_at(i).is_some_and(|s| s.as_bytes() == text))
        {
            return CloseReason::from_index(i);
        }
        CloseReason::other_bytes(text)
    }

    /// An application's own reason, cut to [`MAX_REASON_LEN`] bytes at a
    /// character boundary.
    pub fn other(text: &str) -> CloseReason {
        CloseReason::other_bytes(text.as_bytes())
    }

    /// [`other`](Self::other) over valid UTF-8 bytes.
    fn other_bytes(text: &[u8]) -> CloseReason {
        let mut s = heapless::String::new();
        crate::text::push_cut(s.as_mut_view(), text);
        CloseReason::Other(s)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_wire().unwrap_or("(no reason)"))
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for CloseReason {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(f, "{=str}", self.as_wire().unwrap_or("(no reason)"))
    }
}

/// Who ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Initiator {
    /// This endpoint closed it (by a command or a protocol violation of the
    /// peer's); a `closeconn` was queued for the peer.
    Local,
    /// The peer sent `closeconn`.
    Peer,
    /// The transport ended without a `closeconn`.
    Transport,
}

/// How a connection ended: why, and who ended it. A connection reports it
/// once ([`Event::Closed`](crate::Event::Closed)), a server with the
/// client's buffers ([`Server::take_finished`](crate::server::Server::take_finished)),
/// and every adapter hands out this same value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Closed {
    /// Why.
    pub reason: CloseReason,
    /// Who closed it.
    pub initiator: Initiator,
}

impl Closed {
    /// The transport ended the connection (`socketclose`, by the
    /// transport): also how a connection that was given up before its
    /// close was recorded ended.
    pub const SOCKET_CLOSED: Closed = Closed {
        reason: CloseReason::SocketClose,
        initiator: Initiator::Transport,
    };
}

/// As in `closed (writequeuefull, by Local)`.
impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "closed ({}, by {:?})", self.reason, self.initiator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_wire_names() {
        for (i, (r, s)) in NAMED.iter().enumerate() {
            assert_eq!(r.as_wire(), Some(*s));
            assert_eq!(r.index(), Some(i));
            assert_eq!(&CloseReason::from_index(i), r);
            assert_eq!(&CloseReason::from_wire(Some(s)), r);
        }
        assert_eq!(CloseReason::from_wire(None), CloseReason::Unspecified);
        let long = "é".repeat(40);
        let CloseReason::Other(cut) = CloseReason::from_wire(Some(&long)) else {
            panic!("not Other")
        };
        assert_eq!(cut.len(), 48);
    }

    #[test]
    fn states_have_protocol_codes() {
        for code in 0..=255u8 {
            if let Some(s) = State::from_code(code) {
                assert_eq!(s.code(), code);
            }
        }
        assert_eq!(State::Active.code(), 64);
    }

    #[test]
    fn tls_levels_follow_the_table() {
        use SecurityLevel::*;
        // One row per line of the table on `TlsFacts::security_level`, every
        // combination of the facts.
        let client = |server_verified, client_cert_sent| {
            TlsFacts::Client {
                server_verified,
                client_cert_sent,
            }
            .security_level()
        };
        assert_eq!(client(false, false), Encrypted);
        assert_eq!(client(false, true), Encrypted);
        assert_eq!(client(true, false), ServerAuth);
        assert_eq!(client(true, true), BothAuth);
        let server = |client_cert_verified| {
            TlsFacts::Server {
                client_cert_verified,
            }
            .security_level()
        };
        assert_eq!(server(true), BothAuth);
        assert_eq!(server(false), Encrypted);
        // No TLS handshake is as weak as plain TCP.
        for facts in [
            TlsFacts::Client {
                server_verified: false,
                client_cert_sent: false,
            },
            TlsFacts::Server {
                client_cert_verified: false,
            },
        ] {
            assert!(facts.security_level() > SecurityLevel::None);
        }
    }
}
