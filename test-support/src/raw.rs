//! A raw peer: a plain blocking TCP socket that speaks frames, for tests that
//! must send what a real client or server never would and read the other
//! side's exact answer. Every read is bounded by the peer's limit.

use crate::frames::{encode, frame};
use flate2::read::ZlibDecoder;
use peng3dnet_core::codec::Codec;
use peng3dnet_core::messages::{CloseConn, HandshakeAccept, HandshakeOut, Hello, SetType};
use peng3dnet_core::registry::{internal, Packet, Registry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest frame length (after the prefix) a raw peer accepts to read.
const MAX_READ_LEN: usize = 16 << 20;

/// What one raw read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// A whole frame: its packet id, its flags as they came, and its body
    /// (inflated when the flags say it was compressed).
    Frame(u32, u16, Vec<u8>),
    /// The stream ended (or was reset) before the first byte of a frame.
    End,
    /// The stream was reset inside a frame.
    Cut,
    /// Nothing (or not all of a frame) within the bound.
    Timeout,
}

/// How a connection ended, as the raw peer saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The other side sent `closeconn` with this reason, then ended the
    /// stream.
    Closed(String),
    /// The stream ended (or was reset) without a `closeconn`.
    Ended,
    /// The other side sent `closeconn` with this reason but the stream went
    /// on: a frame with this id came after it.
    FrameAfterClose(String, u32),
    /// No end within the bound.
    Timeout,
}

impl Ending {
    /// `Ending::Closed(reason)`.
    pub fn closed(reason: &str) -> Ending {
        Ending::Closed(reason.to_string())
    }
}

/// The server's `handshake` as a raw client decodes it.
#[derive(Deserialize)]
struct RawHandshake {
    #[allow(dead_code)]
    version: String,
    protoversion: u32,
    registry: BTreeMap<String, u32>,
}

/// A peer on a plain blocking socket that writes whatever frames a test
/// wants, with bodies in codec `C`, and reads the other side's frames, each
/// read bounded by its limit.
///
/// As a client it learns the server's packet ids from the handshake
/// ([`handshake`](Self::handshake)); as a server it announces a registry's
/// ([`server_handshake`](Self::server_handshake)); either way
/// [`send`](Self::send) then sends a typed packet by its name.
pub struct RawPeer<C> {
    /// The socket, for tests that read or write around the frame helpers.
    pub stream: TcpStream,
    /// The codec of the bodies.
    pub codec: C,
    ids: BTreeMap<String, u32>,
    limit: Duration,
}

impl<C: Codec> RawPeer<C> {
    /// Connects to `addr` within `limit`, which then bounds every wait.
    ///
    /// # Panics
    ///
    /// When the connection fails.
    #[track_caller]
    pub fn connect(addr: SocketAddr, codec: C, limit: Duration) -> RawPeer<C> {
        let stream = TcpStream::connect_timeout(&addr, limit).expect("raw connect");
        RawPeer::from_stream(stream, codec, limit)
    }

    /// A raw peer on an accepted or connected `stream`; `limit` bounds every
    /// wait.
    ///
    /// # Panics
    ///
    /// When the socket options cannot be set.
    pub fn from_stream(stream: TcpStream, codec: C, limit: Duration) -> RawPeer<C> {
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_write_timeout(Some(limit))
            .expect("a write timeout");
        stream
            .set_read_timeout(Some(limit))
            .expect("a read timeout");
        RawPeer {
            stream,
            codec,
            ids: BTreeMap::new(),
            limit,
        }
    }

    /// Writes all of `bytes` (bounded by the write timeout).
    #[track_caller]
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// Writes raw bytes; the error if the other side is gone.
    pub fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one frame.
    #[track_caller]
    pub fn frame(&mut self, id: u32, flags: u16, body: &[u8]) {
        self.write(&frame(id, flags, body));
    }

    /// `msg` in the peer's codec.
    pub fn enc<M: Serialize + ?Sized>(&self, msg: &M) -> Vec<u8> {
        encode(&self.codec, msg)
    }

    /// Writes `msg` as packet `id`, uncompressed.
    #[track_caller]
    pub fn send_as<M: Serialize + ?Sized>(&mut self, id: u32, msg: &M) {
        let body = self.enc(msg);
        self.frame(id, 0, &body);
    }

    /// Writes `msg` as packet `P`, with the id the handshake gave its name.
    #[track_caller]
    pub fn send<P: Packet>(&mut self, msg: &P::Message<'_>) {
        let id = self.id(P::NAME);
        self.send_as(id, msg);
    }

    /// The id of `name` in the handshake's registry.
    ///
    /// # Panics
    ///
    /// When no handshake named it.
    #[track_caller]
    pub fn id(&self, name: &str) -> u32 {
        match self.ids.get(name) {
            Some(id) => *id,
            None => panic!("{name} is not in the handshake's registry"),
        }
    }

    /// The next frame, the end of the stream, or a timeout at `deadline`.
    ///
    /// # Panics
    ///
    /// When the other side sends a frame length out of `6..=16 MiB`, ends
    /// the stream cleanly inside a frame, a compressed body does not
    /// inflate, or the socket fails otherwise than by a reset.
    #[track_caller]
    pub fn read_frame(&mut self, deadline: Instant) -> Arrival {
        let mut len = [0u8; 4];
        if let Err(a) = self.read_exact_by(&mut len, deadline, true) {
            return a;
        }
        let len = u32::from_be_bytes(len) as usize;
        assert!(
            (6..=MAX_READ_LEN).contains(&len),
            "the other side sent a frame length of {len}"
        );
        let mut rest = vec![0u8; len];
        if let Err(a) = self.read_exact_by(&mut rest, deadline, false) {
            return a;
        }
        let id = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        let flags = u16::from_be_bytes(rest[4..6].try_into().expect("2 bytes"));
        let mut body = rest.split_off(6);
        if flags & 1 != 0 {
            let mut out = Vec::new();
            ZlibDecoder::new(&body[..])
                .take(MAX_READ_LEN as u64)
                .read_to_end(&mut out)
                .expect("a compressed body inflates");
            body = out;
        }
        Arrival::Frame(id, flags, body)
    }

    fn read_exact_by(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        at_start: bool,
    ) -> Result<(), Arrival> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Arrival::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("a read timeout");
            match self.stream.read(&mut buf[got..]) {
                Ok(0) if at_start && got == 0 => return Err(Arrival::End),
                Ok(0) => panic!("the stream ended inside a frame"),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Arrival::Timeout)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::BrokenPipe
                    ) =>
                {
                    return Err(if at_start && got == 0 {
                        Arrival::End
                    } else {
                        Arrival::Cut
                    })
                }
                Err(e) => panic!("raw read: {e}"),
            }
        }
        Ok(())
    }

    /// The next frame as `(id, flags, body)`, or `None` at the end of the
    /// stream (or a reset before a frame).
    ///
    /// # Panics
    ///
    /// When nothing comes within the limit, or the stream is cut inside a
    /// frame (and as [`read_frame`](Self::read_frame)).
    #[track_caller]
    pub fn next_frame(&mut self) -> Option<(u32, u16, Vec<u8>)> {
        match self.read_frame(Instant::now() + self.limit) {
            Arrival::Frame(id, flags, body) => Some((id, flags, body)),
            Arrival::End => None,
            Arrival::Cut => panic!("the stream was reset inside a frame"),
            Arrival::Timeout => panic!("no frame within {:?}", self.limit),
        }
    }

    /// The next frame, which must come within the limit and be packet `id`
    /// (compressed or not); its body.
    #[track_caller]
    pub fn expect(&mut self, id: u32) -> Vec<u8> {
        match self.read_frame(Instant::now() + self.limit) {
            Arrival::Frame(got, _, body) => {
                assert_eq!(got, id, "expected packet {id}, got {got}");
                body
            }
            other => panic!("expected packet {id}, got {other:?}"),
        }
    }

    /// The next frame, which must be packet `id` with no flags; its body.
    #[track_caller]
    pub fn expect_uncompressed(&mut self, id: u32) -> Vec<u8> {
        let (got, flags, body) = self.next_frame().expect("a frame");
        assert_eq!((got, flags), (id, 0), "packet id and flags");
        body
    }

    /// As a client: reads `hello`, which must be protocol version 2.
    #[track_caller]
    pub fn hello(&mut self) {
        let body = self.expect(internal::HELLO);
        let hello: Hello = self.codec.decode(&body).expect("a hello");
        assert_eq!(hello.protoversion, 2);
    }

    /// Sends `settype`.
    #[track_caller]
    pub fn settype(&mut self, conntype: &str) {
        self.send_as(internal::SETTYPE, &SetType { conntype });
    }

    /// As a client: reads the server's `handshake` (protocol version 2) and
    /// learns its packet ids.
    #[track_caller]
    pub fn read_handshake(&mut self) {
        let body = self.expect(internal::HANDSHAKE);
        let hs: RawHandshake = self.codec.decode(&body).expect("a handshake");
        assert_eq!(hs.protoversion, 2);
        self.ids = hs.registry;
    }

    /// Sends `handshake.accept {success: true}`.
    #[track_caller]
    pub fn accept(&mut self) {
        self.send_as(
            internal::HANDSHAKE_ACCEPT,
            &HandshakeAccept { success: true },
        );
    }

    /// As a client: the whole classic handshake, as a well-behaved client
    /// does it; learns the server's ids.
    #[track_caller]
    pub fn handshake(&mut self) {
        self.hello();
        self.settype("classic");
        self.read_handshake();
        self.accept();
    }

    /// As a server: the whole classic handshake, announcing `reg`, whose ids
    /// the peer then uses.
    #[track_caller]
    pub fn server_handshake<const N: usize>(&mut self, reg: &Registry<N>) {
        self.send_as(
            internal::HELLO,
            &Hello {
                version: "raw",
                protoversion: 2,
            },
        );
        self.expect_settype("classic");
        let hs = HandshakeOut {
            version: "raw",
            protoversion: 2,
            registry: reg.as_map(),
        };
        self.send_as(internal::HANDSHAKE, &hs);
        let body = self.expect_uncompressed(internal::HANDSHAKE_ACCEPT);
        let accept: HandshakeAccept = self.codec.decode(&body).expect("a handshake.accept");
        assert!(accept.success);
        self.ids = reg
            .entries()
            .iter()
            .map(|e| (e.name.to_string(), e.id))
            .collect();
    }

    /// As a server: reads `settype`, which must ask for `conntype`.
    #[track_caller]
    pub fn expect_settype(&mut self, conntype: &str) {
        let body = self.expect_uncompressed(internal::SETTYPE);
        let settype: SetType = self.codec.decode(&body).expect("a settype");
        assert_eq!(settype.conntype, conntype);
    }

    /// Sends `closeconn` with `reason`.
    #[track_caller]
    pub fn send_closeconn(&mut self, reason: &str) {
        self.send_as(
            internal::CLOSECONN,
            &CloseConn {
                reason: Some(reason),
            },
        );
    }

    /// Reads frames (skipping others) up to the other side's `closeconn`,
    /// all within the limit; `Ok(reason)`, `"(none)"` without one, or what
    /// came instead (the end of the stream, a cut, a timeout).
    fn until_closeconn(&mut self) -> Result<String, Arrival> {
        let deadline = Instant::now() + self.limit;
        loop {
            match self.read_frame(deadline) {
                Arrival::Frame(id, _, body) if id == internal::CLOSECONN => {
                    return Ok(match self.codec.decode::<CloseConn>(&body) {
                        Ok(c) => c.reason.unwrap_or("(none)").to_string(),
                        Err(_) => "(undecodable closeconn)".to_string(),
                    });
                }
                Arrival::Frame(..) => {}
                other => return Err(other),
            }
        }
    }

    /// Reads up to the other side's `closeconn` (skipping other frames) and
    /// returns its reason; `None`: the stream ended first.
    ///
    /// # Panics
    ///
    /// When no `closeconn` or end comes within the limit, or the stream is
    /// cut inside a frame.
    #[track_caller]
    pub fn read_closeconn(&mut self) -> Option<String> {
        match self.until_closeconn() {
            Ok(reason) => Some(reason),
            Err(Arrival::End) => None,
            Err(other) => panic!("no closeconn: {other:?}"),
        }
    }

    /// Reads up to the other side's `closeconn` (skipping other frames) and
    /// then the end of the stream, bounded by the limit each.
    #[track_caller]
    pub fn ending(&mut self) -> Ending {
        match self.until_closeconn() {
            Ok(reason) => match self.read_frame(Instant::now() + self.limit) {
                Arrival::End | Arrival::Cut => Ending::Closed(reason),
                Arrival::Frame(id, ..) => Ending::FrameAfterClose(reason, id),
                Arrival::Timeout => Ending::Timeout,
            },
            Err(Arrival::Timeout) => Ending::Timeout,
            Err(_) => Ending::Ended,
        }
    }

    /// The reason of the other side's `closeconn`, after which the stream
    /// must end; `None`: the stream ended without one.
    ///
    /// # Panics
    ///
    /// When a frame follows the `closeconn`, the stream is cut inside a
    /// frame, or no `closeconn` or end comes within the limit.
    #[track_caller]
    pub fn close_reason(&mut self) -> Option<String> {
        let reason = self.read_closeconn()?;
        assert!(
            self.next_frame().is_none(),
            "frames after closeconn ({reason})"
        );
        Some(reason)
    }
}
