//! A blocking client: connect, wait for the handshake, send typed packets,
//! receive through handlers or as events, close, wait for the close.
//!
//! The client drives one socket with its own small poller, so it never spins
//! and never deadlocks on a peer that writes while it writes: whenever it
//! waits for room to send, it also reads.
//!
//! ```no_run
//! use peng3dnet_core::registry::Packet;
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::CloseReason;
//! use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
//! use peng3dnet_std::StdRegistry;
//! use std::time::Duration;
//!
//! struct Echo;
//! impl Packet for Echo {
//!     const NAME: &'static str = "echo:echo";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! let mut registry = StdRegistry::new();
//! registry.register::<Echo>().unwrap();
//! let mut client = Client::connect("127.0.0.1:8080", registry, ClientOptions::default())?;
//! client.wait_connected(Duration::from_secs(5))?;
//! client.send::<Echo>(&"hello")?;
//! if let ClientEvent::Packet(p) = client.recv(Duration::from_secs(5))? {
//!     assert_eq!(p.decode::<Echo>()?, "hello");
//! }
//! client.close(CloseReason::UserRequest)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::buffer::HeapBuffer;
use crate::codec::ZLIB_DEFAULT;
use crate::tls::{TlsClientConfig, TlsError};
use crate::transport::Transport;
use crate::{core_duration, core_timeout, Clock, StdRegistry, REGISTRY_CAPACITY};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use peng3dnet_core::codec::{Codec, CodecError, Postcard};
use peng3dnet_core::connection::{Config, DecodeError, Incoming, NewConnectionError, SendError};
use peng3dnet_core::registry::{Packet, RegistryMismatch, SyncPolicy};
use peng3dnet_core::{
    CloseReason, Closed, Connection, Event, Initiator, Mode, SecurityLevel, State,
};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The connection type asked for: `classic` (default), `ping`.
    pub conntype: &'static str,
    /// How long connecting (TCP) may take.
    pub connect_timeout: Duration,
    /// The core's handshake timer (the connection closes with
    /// `handshaketimeout` after it).
    pub handshake_timeout: Duration,
    /// Time from a frame's first byte to its last before `frametimeout`
    /// (30 s).
    pub frame_timeout: Duration,
    /// Time the server may send nothing before the client closes with
    /// `idletimeout` (a half-open connection is found so); `None` (the
    /// default) never. Servers of this crate send keepalives every 15 s by
    /// default.
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive when nothing was sent for this long (15 s; `None`:
    /// never), so that a server's idle timeout does not drop an idle client.
    /// This blocking client sends it while one of its calls waits (`recv`,
    /// `events`, `wait_connected`, `wait_closed`); the tokio client's task
    /// sends it on its own.
    pub keepalive_interval: Option<Duration>,
    /// What to do when the server's registry holds other names.
    pub sync_policy: SyncPolicy,
    /// The largest frame accepted from the server.
    pub max_frame: usize,
    /// The most bytes queued for sending.
    pub max_write_queue: usize,
    /// Speak TLS with this configuration (plain TCP when `None`). Its
    /// verification decides the security level: see [`crate::tls`].
    pub tls: Option<TlsClientConfig>,
    /// Compress bodies above 8,192 bytes (zlib level 6), as the reference
    /// does. Compressed frames from the server are always accepted.
    pub compression: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            conntype: peng3dnet_core::CONNTYPE_CLASSIC,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            sync_policy: SyncPolicy::CloseConnection,
            max_frame: 1 << 20,
            max_write_queue: 1 << 20,
            tls: None,
            compression: true,
        }
    }
}

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed.
    Io(io::Error),
    /// No address of the server could be connected to: the last one tried,
    /// and why.
    Connect {
        /// The address.
        addr: SocketAddr,
        /// What connecting to it gave.
        error: io::Error,
    },
    /// Waiting took longer than the timeout given.
    Timeout,
    /// The connection is closed: why, and by whom.
    Closed(Closed),
    /// A send was refused (rules, registry, size).
    Send(SendError),
    /// A received packet did not decode.
    Decode(DecodeError),
    /// The connection could not be set up.
    Setup(NewConnectionError),
    /// `expect::<P>` got something else than a `P` (or nothing in time).
    Unexpected {
        /// The name of the packet it waited for.
        expected: &'static str,
        /// What came instead.
        got: UnexpectedEvent,
    },
    /// The handshake closed the connection with `packetregmismatch`: the
    /// server's packet registry differs from ours, as told
    /// ([`Client::registry_mismatch`]).
    RegistryMismatch(RegistryMismatch),
    /// TLS failed while the connection was set up: the server does not
    /// speak TLS ([`TlsError::NotTls`]), or the TLS handshake failed with
    /// rustls's reason ([`TlsError::Handshake`]: a certificate that
    /// verification rejected says why).
    Tls(TlsError),
    /// A client without TLS got nothing from the server, not even its
    /// `hello`, before it timed out (`closed` is `None`) or the connection
    /// closed: what a TLS server does to a client that does not start TLS.
    NoHello {
        /// How the connection ended, if it did.
        closed: Option<Closed>,
    },
}

/// What came instead of the packet an `expect` waited for
/// ([`ClientError::Unexpected`]). The event itself was taken off the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnexpectedEvent {
    /// Another packet.
    Packet {
        /// Its id on the wire.
        packet_id: u32,
        /// Its registry name, if the id is registered.
        name: Option<&'static str>,
    },
    /// A packet was dropped (unknown id, or its rules said ignore).
    Ignored {
        /// Its id.
        packet_id: u32,
    },
    /// A ping answer.
    Pong,
    /// The connection closed (or had closed before).
    Closed(Closed),
    /// Nothing came within the timeout.
    Nothing(Duration),
}

impl fmt::Display for UnexpectedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnexpectedEvent::Packet {
                packet_id,
                name: Some(name),
            } => write!(f, "packet {name} (id {packet_id})"),
            UnexpectedEvent::Packet {
                packet_id,
                name: None,
            } => write!(f, "unregistered packet id {packet_id}"),
            UnexpectedEvent::Ignored { packet_id } => {
                write!(f, "packet id {packet_id}, ignored")
            }
            UnexpectedEvent::Pong => f.write_str("a ping answer"),
            UnexpectedEvent::Closed(c) => write!(f, "the connection {c}"),
            UnexpectedEvent::Nothing(t) => write!(f, "nothing within {t:?}"),
        }
    }
}

/// One step of an `expect::<P>`: the event's verdict, `None` to skip it
/// (`Connected`) and wait on.
pub(crate) fn expected<P: Packet, C>(
    event: ClientEvent<C>,
) -> Option<Result<Incoming<Vec<u8>, C>, ClientError>> {
    let got = match event {
        ClientEvent::Connected => return None,
        ClientEvent::Packet(p) if p.is::<P>() => return Some(Ok(p)),
        ClientEvent::Packet(p) => UnexpectedEvent::Packet {
            packet_id: p.packet_id,
            name: p.name,
        },
        ClientEvent::Pong { .. } => UnexpectedEvent::Pong,
        ClientEvent::Ignored { packet_id } => UnexpectedEvent::Ignored { packet_id },
        ClientEvent::Closed(c) => UnexpectedEvent::Closed(c),
    };
    Some(Err(ClientError::Unexpected {
        expected: P::NAME,
        got,
    }))
}

/// A blocking `expect::<P>(timeout)` over `recv_until` (the next event
/// before a deadline): the blocking client's and `StreamConnection`'s.
pub(crate) fn expect_blocking<P: Packet, C>(
    timeout: Duration,
    mut recv_until: impl FnMut(Instant) -> Result<ClientEvent<C>, ClientError>,
) -> Result<Incoming<Vec<u8>, C>, ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let event = recv_until(deadline).map_err(|e| expect_error::<P>(e, timeout))?;
        if let Some(r) = expected::<P, C>(event) {
            return r;
        }
    }
}

/// A receive's error as an `expect::<P>`'s: a close or a timeout is what
/// came instead; others stay as they are.
pub(crate) fn expect_error<P: Packet>(e: ClientError, timeout: Duration) -> ClientError {
    let got = match e {
        ClientError::Timeout => UnexpectedEvent::Nothing(timeout),
        ClientError::Closed(c) => UnexpectedEvent::Closed(c),
        e => return e,
    };
    ClientError::Unexpected {
        expected: P::NAME,
        got,
    }
}

/// Why a connection was not set up, as far as a client can tell: the
/// registries differ (`mismatch`), TLS failed (`tls_failure`), nothing came
/// from the server over plain TCP (`silent`: a TLS server, for a client
/// without TLS), or else how it closed (`None`: it timed out).
pub(crate) fn setup_failure(
    mismatch: Option<RegistryMismatch>,
    tls_failure: Option<&rustls::Error>,
    silent: bool,
    closed: Option<Closed>,
) -> ClientError {
    if let Some(m) = mismatch {
        return ClientError::RegistryMismatch(m);
    }
    if let Some(e) = tls_failure {
        return ClientError::Tls(TlsError::from_session(e.clone()));
    }
    if silent {
        return ClientError::NoHello { closed };
    }
    match closed {
        Some(c) => ClientError::Closed(c),
        None => ClientError::Timeout,
    }
}

/// The TLS failure inside a transport error, if it is one.
pub(crate) fn tls_failure_of(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Connect { addr, error } => write!(f, "connecting to {addr}: {error}"),
            ClientError::Timeout => f.write_str("timed out"),
            ClientError::Closed(c) => write!(f, "connection {c}"),
            ClientError::Send(e) => write!(f, "send refused: {e}"),
            ClientError::Decode(e) => write!(f, "{e}"),
            ClientError::Setup(e) => write!(f, "{e}"),
            ClientError::Unexpected { expected, got } => {
                write!(f, "expected packet {expected}, got {got}")
            }
            ClientError::RegistryMismatch(m) => {
                write!(f, "connection closed (packetregmismatch): {m}")
            }
            ClientError::Tls(e) => write!(f, "{e}"),
            ClientError::NoHello { closed } => {
                match closed {
                    None => f.write_str("timed out")?,
                    Some(c) => write!(f, "connection {c}")?,
                }
                f.write_str(
                    " before the server sent anything, not even its hello; \
                     a TLS server waits for the client to start TLS: connect with TLS if it is one",
                )
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            ClientError::Connect { error, .. } => Some(error),
            ClientError::Send(e) => Some(e),
            ClientError::Decode(e) => Some(e),
            ClientError::Setup(e) => Some(e),
            ClientError::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<SendError> for ClientError {
    fn from(e: SendError) -> Self {
        ClientError::Send(e)
    }
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Decode(e)
    }
}

/// What a client receives.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent<C = Postcard> {
    /// The handshake completed.
    Connected,
    /// An application packet without a handler.
    Packet(Incoming<Vec<u8>, C>),
    /// A ping answer (on a `ping` connection), with the round trip and body.
    Pong {
        /// Round-trip delay.
        delay: Duration,
        /// The answer's body.
        body: Vec<u8>,
    },
    /// A packet was dropped (unknown id, or its rules said ignore).
    Ignored {
        /// Its id.
        packet_id: u32,
    },
    /// The connection closed.
    Closed(Closed),
}

type ClientHandler = Box<dyn FnMut(&[u8]) -> Result<(), CodecError> + Send>;

/// The connection type of a client: it owns its registry.
pub type ClientConn<C> =
    Connection<'static, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY, StdRegistry>;

/// A client's connection as `options` describe it, its handshake timer
/// started now.
pub(crate) fn new_connection<C: Codec>(
    options: &ClientOptions,
    registry: StdRegistry,
    codec: C,
    clock: &Clock,
) -> Result<ClientConn<C>, ClientError> {
    let config = connection_config(options);
    Connection::client(
        &config,
        registry,
        codec,
        HeapBuffer::new(options.max_frame, 1024),
        HeapBuffer::new(options.max_write_queue, 1024),
        options.conntype,
        clock.now(),
    )
    .map_err(ClientError::Setup)
}

/// The core's settings of a connection as `options` describe them (timers,
/// sync policy, compression; pings not answered).
pub(crate) fn connection_config(options: &ClientOptions) -> Config<'static> {
    Config {
        handshake_timeout: core_duration(options.handshake_timeout),
        frame_timeout: core_duration(options.frame_timeout),
        idle_timeout: core_timeout(options.idle_timeout),
        keepalive_interval: core_timeout(options.keepalive_interval),
        sync_policy: options.sync_policy,
        ping: None,
        compressor: options
            .compression
            .then_some(&ZLIB_DEFAULT as &(dyn peng3dnet_core::connection::Compressor + Sync)),
        ..Config::new()
    }
}

/// What a client reports of `event` (`None`: nothing; a ping answered by
/// the server side is not a client's), and logs it in the client's `span`.
/// Packets are copied out of the receive buffer.
pub(crate) fn client_event<C: Codec>(
    event: Event<'_, C>,
    span: &tracing::Span,
) -> Option<ClientEvent<C>> {
    Some(match event {
        Event::Connected => {
            tracing::debug!(parent: span, "handshake complete");
            ClientEvent::Connected
        }
        Event::Packet(p) | Event::ConnTypePacket(p) => {
            let body = p.body.to_vec();
            ClientEvent::Packet(p.with_body(body))
        }
        Event::Pong { delay, body } => ClientEvent::Pong {
            delay: Duration::from_micros(delay.as_micros()),
            body: body.to_vec(),
        },
        Event::PingAnswered => return None,
        Event::Ignored { packet_id, cause } => {
            tracing::debug!(parent: span, packet_id, %cause, "packet ignored");
            ClientEvent::Ignored { packet_id }
        }
        Event::Closed(closed) => {
            tracing::info!(
                parent: span,
                reason = %closed.reason,
                initiator = ?closed.initiator,
                "connection closed"
            );
            ClientEvent::Closed(closed)
        }
    })
}

/// A blocking client over TCP.
pub struct Client<C: Codec = Postcard> {
    transport: Transport,
    poll: Poll,
    events: Events,
    conn: Box<ClientConn<C>>,
    clock: Clock,
    queue: VecDeque<ClientEvent<C>>,
    handlers: HashMap<u32, ClientHandler>,
    named_handlers: Vec<(&'static str, ClientHandler)>,
    closed: Option<Closed>,
    /// Why TLS failed, if it did (reported by `wait_connected`).
    tls_failure: Option<rustls::Error>,
    /// Bytes came from the server (a client without TLS that got none may
    /// be at a TLS server).
    received: bool,
    peer: SocketAddr,
    /// The connection's `tracing` span (the server's address).
    span: tracing::Span,
    eof: bool,
    /// The socket may have bytes: cleared when a read found none, set by a
    /// readiness event.
    readable: bool,
}

impl Client<Postcard> {
    /// Connects to `addr` over TCP with the native codec. The handshake runs
    /// while the client is used; [`wait_connected`](Self::wait_connected)
    /// waits for it.
    pub fn connect(
        addr: impl ToSocketAddrs,
        registry: StdRegistry,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addr, registry, Postcard, options)
    }
}

impl<C: Codec> Client<C> {
    /// Connects with the given codec.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        registry: StdRegistry,
        codec: C,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let mut last = None;
        let mut stream = None;
        for a in addr.to_socket_addrs()? {
            match std::net::TcpStream::connect_timeout(&a, options.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(error) => last = Some(ClientError::Connect { addr: a, error }),
            }
        }
        let Some(stream) = stream else {
            return Err(last.unwrap_or_else(|| {
                io::Error::new(ErrorKind::InvalidInput, "no address to connect to").into()
            }));
        };
        let peer = stream.peer_addr()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut socket = TcpStream::from_std(stream);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        let transport = match &options.tls {
            Some(tls) => Transport::tls_client(socket, tls).map_err(io::Error::from)?,
            None => Transport::plain(socket),
        };
        let clock = Clock::new();
        let conn = new_connection(&options, registry, codec, &clock)?;
        let span = tracing::info_span!("peng3dnet_client", server = %peer);
        tracing::debug!(parent: &span, "connected (TCP)");
        Ok(Client {
            transport,
            poll,
            events: Events::with_capacity(4),
            conn: Box::new(conn),
            clock,
            queue: VecDeque::new(),
            handlers: HashMap::new(),
            named_handlers: Vec::new(),
            closed: None,
            tls_failure: None,
            received: false,
            peer,
            span,
            eof: false,
            readable: true,
        })
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The connection's protocol state.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Sets an application state once connected (for example `LOGGEDIN`).
    pub fn set_state(&mut self, state: State) {
        self.conn.set_state(state);
    }

    /// The connection's mode.
    pub fn mode(&self) -> Mode {
        self.conn.mode()
    }

    /// Sets the connection's mode (SmartPacket rules may require one).
    pub fn set_mode(&mut self, mode: Mode) {
        self.conn.set_mode(mode);
    }

    /// The transport's security level.
    pub fn security_level(&self) -> SecurityLevel {
        self.conn.security_level()
    }

    /// Whether the handshake completed and the connection is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// The codec in use (after the server's hello, the server's one when the
    /// codec detects it, as [`crate::codec::AnyCodec`] does).
    pub fn codec(&self) -> &C {
        self.conn.codec()
    }

    /// The registry, with the server's ids after the handshake.
    pub fn registry(&self) -> &StdRegistry {
        self.conn.registry()
    }

    /// How the server's registry differed from ours, if the handshake
    /// closed with `packetregmismatch` (see
    /// [`Connection::registry_mismatch`](peng3dnet_core::Connection::registry_mismatch)).
    pub fn registry_mismatch(&self) -> Option<RegistryMismatch> {
        self.conn.registry_mismatch()
    }

    /// Calls `handler` for every `P` received instead of queueing it as an
    /// event. A body that does not decode closes with `malformedpacket`.
    ///
    /// # Panics
    /// If `P` is not in the client's registry.
    pub fn on<P: Packet + 'static>(
        &mut self,
        mut handler: impl for<'m> FnMut(P::Message<'m>) + Send + 'static,
    ) where
        C: Send + 'static,
    {
        assert!(
            self.conn.registry().by_name(P::NAME).is_some(),
            "register {} before adding its handler",
            P::NAME
        );
        let codec = self.conn.codec().clone();
        let h: ClientHandler = Box::new(move |body| {
            let msg = codec.decode::<P::Message<'_>>(body)?;
            handler(msg);
            Ok(())
        });
        // Ids may change at the handshake: keep handlers by name and resolve
        // them once connected.
        self.named_handlers.push((P::NAME, h));
        self.resolve_handlers();
    }

    /// Gives handlers their ids once the handshake fixed them.
    fn resolve_handlers(&mut self) {
        if !self.conn.is_connected() {
            return;
        }
        for (name, h) in std::mem::take(&mut self.named_handlers) {
            if let Some(e) = self.conn.registry().by_name(name) {
                self.handlers.insert(e.id, h);
            }
        }
    }

    /// Waits until the handshake completed. A connection that was not set
    /// up fails with what the client can tell of why:
    /// [`ClientError::RegistryMismatch`] when the registries differ,
    /// [`ClientError::Tls`] when TLS failed (the server does not speak TLS,
    /// or rustls's reason the handshake failed: a rejected certificate says
    /// why), [`ClientError::NoHello`] when a client without TLS got nothing
    /// at all (as from a TLS server), else [`ClientError::Closed`] or
    /// [`ClientError::Timeout`].
    pub fn wait_connected(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.conn.is_connected() {
                return Ok(());
            }
            if let Some(c) = &self.closed {
                return Err(self.setup_failure(Some(c.clone())));
            }
            match self.pump(deadline, false) {
                Ok(()) => {}
                Err(ClientError::Timeout) => return Err(self.setup_failure(None)),
                Err(ClientError::Closed(c)) => return Err(self.setup_failure(Some(c))),
                Err(e) => return Err(e),
            }
        }
    }

    /// Why the connection was not set up, as far as the client can tell:
    /// the registries differ, TLS failed, nothing came from the server
    /// (a TLS server, for a client without TLS), or else how it closed
    /// (`None`: it timed out).
    fn setup_failure(&self, closed: Option<Closed>) -> ClientError {
        setup_failure(
            self.conn.registry_mismatch(),
            self.tls_failure.as_ref(),
            self.transport.is_plain() && !self.received,
            closed,
        )
    }

    /// Sends a typed packet. Waits (reading meanwhile) while the transmit
    /// queue is full; fails on a rule, size or closed connection.
    pub fn send<P: Packet>(&mut self, msg: &P::Message<'_>) -> Result<(), ClientError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.conn.send::<P>(msg) {
                Ok(()) => {
                    self.flush_some()?;
                    return Ok(());
                }
                Err(SendError::WouldBlock { .. }) => self.pump(deadline, false)?,
                Err(SendError::Closed) => {
                    return Err(ClientError::Closed(self.conn.closed().unwrap_or(Closed {
                        reason: CloseReason::Unspecified,
                        initiator: Initiator::Local,
                    })));
                }
                Err(e) => return Err(ClientError::Send(e)),
            }
        }
    }

    /// The next event, waiting up to `timeout`. After the close event, every
    /// call fails with [`ClientError::Closed`].
    pub fn recv(&mut self, timeout: Duration) -> Result<ClientEvent<C>, ClientError> {
        self.recv_until(Instant::now() + timeout)
    }

    /// The next event, waiting until `deadline` at most: the deadline of a
    /// request, kept across the events that come before its answer (a loop
    /// of [`recv`](Self::recv) would restart its timeout on each). Fails
    /// with [`ClientError::Timeout`] once it passed.
    ///
    /// ```no_run
    /// # use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
    /// # use peng3dnet_std::echo::{self, Echo};
    /// # use std::time::{Duration, Instant};
    /// # let mut client = Client::connect("127.0.0.1:8080", echo::registry(),
    /// #     ClientOptions::default()).unwrap();
    /// client.send::<Echo>(&"hello")?;
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// let answer = loop {
    ///     match client.recv_until(deadline)? {
    ///         ClientEvent::Packet(p) if p.is::<Echo>() => break p.decode::<Echo>()?.to_owned(),
    ///         _ => {} // anything else: the deadline still runs
    ///     }
    /// };
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_until(&mut self, deadline: Instant) -> Result<ClientEvent<C>, ClientError> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(e);
            }
            if let Some(c) = &self.closed {
                return Err(ClientError::Closed(c.clone()));
            }
            self.pump(deadline, true)?;
        }
    }

    /// Waits up to `timeout` for a packet of type `P` and returns it (its
    /// [`decode::<P>`](Incoming::decode) gives the message, borrowed from
    /// it). `Connected` is skipped; anything else that comes first (another
    /// packet, an ignored one, a ping answer, the close) or nothing within
    /// `timeout` is [`ClientError::Unexpected`], naming what came (and
    /// taking it off the queue).
    ///
    /// ```no_run
    /// # use peng3dnet_std::client::{Client, ClientOptions};
    /// # use peng3dnet_std::echo::{self, Echo};
    /// # use std::time::Duration;
    /// # let mut client = Client::connect("127.0.0.1:8080", echo::registry(),
    /// #     ClientOptions::default()).unwrap();
    /// client.send::<Echo>(&"hello")?;
    /// let p = client.expect::<Echo>(Duration::from_secs(5))?;
    /// assert_eq!(p.decode::<Echo>()?, "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expect<P: Packet>(
        &mut self,
        timeout: Duration,
    ) -> Result<Incoming<Vec<u8>, C>, ClientError> {
        expect_blocking::<P, C>(timeout, |deadline| self.recv_until(deadline))
    }

    /// The events received so far, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<ClientEvent<C>>, ClientError> {
        if self.queue.is_empty() && self.closed.is_none() {
            self.pump(Instant::now(), true).or_else(|e| match e {
                ClientError::Timeout => Ok(()),
                e => Err(e),
            })?;
        }
        Ok(self.queue.pop_front())
    }

    /// An iterator over events that blocks up to `timeout` for each and ends
    /// after the close (or an error).
    pub fn events(&mut self, timeout: Duration) -> EventIter<'_, C> {
        EventIter {
            client: self,
            timeout,
            done: false,
        }
    }

    /// Closes with `reason` and waits (up to 10 s) until the `closeconn` is
    /// written.
    pub fn close(&mut self, reason: CloseReason) -> Result<(), ClientError> {
        self.conn.close(reason);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.conn.is_finished() {
            match self.pump(deadline, false) {
                Ok(()) => {}
                Err(ClientError::Closed(..)) => break,
                Err(e) => return Err(e),
            }
        }
        self.transport.shutdown();
        Ok(())
    }

    /// Waits until the connection closed (by the server or the transport)
    /// and returns why and by whom.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Closed, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = &self.closed {
                return Ok(c.clone());
            }
            match self.pump(deadline, false) {
                Ok(()) | Err(ClientError::Closed(..)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes queued bytes without waiting.
    fn flush_some(&mut self) -> Result<(), ClientError> {
        loop {
            let data = self.conn.poll_transmit();
            if data.is_empty() {
                if self.transport.wants_write() {
                    let _ = self.transport.flush();
                }
                return Ok(());
            }
            match self.transport.write(data) {
                Ok(0) => return Ok(()),
                Ok(n) => self.conn.transmitted(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.conn.handle_transport_closed();
                    self.drain_events();
                    return Ok(());
                }
            }
        }
    }

    /// Reads what is there, handles events, writes; shuts the socket once
    /// the connection closed and its last bytes left.
    fn turn(&mut self) -> Result<(), ClientError> {
        self.read_some();
        self.drain_events();
        self.flush_some()?;
        if self.closed.is_some() && self.conn.is_finished() && !self.eof {
            self.transport.shutdown();
            self.eof = true;
        }
        Ok(())
    }

    /// One round: a [`turn`](Self::turn), then (unless `until_event` and an
    /// event is queued) a wait for readiness up to `deadline` and the core's
    /// timer, and another turn. Fails with `Timeout` only after waiting.
    fn pump(&mut self, deadline: Instant, until_event: bool) -> Result<(), ClientError> {
        self.turn()?;
        if until_event && !self.queue.is_empty() {
            return Ok(());
        }
        if self.closed.is_some() && self.conn.is_finished() {
            let c = self.closed.clone().expect("checked above");
            return Err(ClientError::Closed(c));
        }
        let now = Instant::now();
        let core_now = self.clock.now();
        let timer = self
            .conn
            .poll_timeout()
            .map(|t| Duration::from_micros(t.saturating_duration_since(core_now).as_micros()));
        let wait = deadline.saturating_duration_since(now);
        let wait = timer.map_or(wait, |t| t.min(wait));
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        if self
            .events
            .iter()
            .any(|e| e.is_readable() || e.is_read_closed() || e.is_error())
        {
            self.readable = true;
        }
        let core_now = self.clock.now();
        if self.conn.poll_timeout().is_some_and(|t| core_now >= t) {
            self.conn.handle_timeout(core_now);
        }
        self.turn()?;
        if until_event && !self.queue.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout);
        }
        Ok(())
    }

    fn read_some(&mut self) {
        for _ in 0..64 {
            if self.eof || self.conn.is_closed() || !self.readable {
                return;
            }
            let buf = self.conn.receive_buffer();
            if buf.is_empty() {
                // Events first, then room.
                self.drain_events();
                if self.conn.receive_buffer().is_empty() {
                    return;
                }
                continue;
            }
            let len = buf.len();
            let res = self.transport.read(buf);
            if let Some(level) = self.transport.security_level() {
                if level != self.conn.security_level() {
                    self.conn.set_security_level(level);
                }
            }
            match res {
                Ok(0) => {
                    self.eof = true;
                    self.conn.handle_transport_closed();
                    return;
                }
                Ok(n) => {
                    // A short read on plain TCP emptied the socket: the next
                    // byte brings a new readiness event (edge-triggered), so
                    // reading again now would only return WouldBlock.
                    if n < len && self.transport.is_plain() {
                        self.readable = false;
                    }
                    self.received = true;
                    self.conn.commit_received(n);
                    self.drain_events();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(tls) = tls_failure_of(&e) {
                        tracing::info!(parent: &self.span, error = %tls, "TLS failed");
                        self.tls_failure = Some(tls.clone());
                    }
                    self.eof = true;
                    self.conn.handle_transport_closed();
                    return;
                }
            }
        }
    }

    fn drain_events(&mut self) {
        let now = self.clock.now();
        loop {
            let Some(event) = self.conn.poll(now) else {
                break;
            };
            if let Event::Packet(p) = &event {
                if let Some(h) = self.handlers.get_mut(&p.packet_id) {
                    if h(p.body).is_err() {
                        self.conn.close(CloseReason::MalformedPacket);
                    }
                    continue;
                }
            }
            let Some(out) = client_event(event, &self.span) else {
                continue;
            };
            match &out {
                ClientEvent::Connected => {
                    self.queue.push_back(out);
                    self.resolve_handlers();
                    continue;
                }
                ClientEvent::Closed(closed) => {
                    if let Some(m) = self.conn.registry_mismatch() {
                        tracing::warn!(parent: &self.span, mismatch = %m, "the server's packet registry differs");
                    }
                    self.closed = Some(closed.clone());
                }
                _ => {}
            }
            self.queue.push_back(out);
        }
    }
}

/// A blocking iterator over a client's events; see [`Client::events`].
pub struct EventIter<'c, C: Codec> {
    client: &'c mut Client<C>,
    timeout: Duration,
    done: bool,
}

impl<C: Codec> Iterator for EventIter<'_, C> {
    type Item = Result<ClientEvent<C>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.client.recv(self.timeout);
        if matches!(item, Err(_) | Ok(ClientEvent::Closed(_))) {
            self.done = true;
        }
        Some(item)
    }
}
