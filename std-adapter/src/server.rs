//! A TCP server for many clients on one event loop (mio), no thread per
//! connection.
//!
//! Build it with [`Server::builder`], register a handler per typed packet and
//! hooks for connect, handshake and close, bind, then [`Server::run`] it on the
//! current thread or [`Server::spawn`] it. A [`ServerHandle`] sends, broadcasts,
//! closes clients and shuts the server down from any thread.
//!
//! ```
//! use peng3dnet_core::registry::Packet;
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_std::server::Server;
//! use peng3dnet_std::StdRegistry;
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
//! let server = Server::builder(registry)
//!     .on::<Echo>(|ctx, text| {
//!         let _ = ctx.send::<Echo>(&text);
//!     })
//!     .bind("127.0.0.1:0")
//!     .unwrap();
//! let addr = server.local_addr();
//! let running = server.spawn().unwrap();
//! // ... clients connect to `addr` ...
//! running.handle().shutdown();
//! running.join().unwrap();
//! # let _ = addr;
//! ```
//!
//! Every client's connection runs the core's state machine
//! ([`peng3dnet_core::connection`]); this module only moves bytes and time.
//! Buffers grow per frame up to [`ServerOptions::max_frame`] (receive) and
//! [`ServerOptions::max_write_queue`] (transmit) and shrink back when idle. A
//! client whose transmit queue is full is closed with `writequeuefull`; while
//! a client's queue is more than half full, the server stops reading from it.

use crate::buffer::HeapBuffer;
use crate::codec::Zlib;
use crate::tls::TlsServerConfig;
use crate::transport::Transport;
use crate::{Clock, StdRegistry, REGISTRY_CAPACITY};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::connection::{Compressor, Config, PingServerConfig, SendError, MIN_TX_BUFFER};
use peng3dnet_core::registry::Packet;
use peng3dnet_core::table::encode_refusal;
use peng3dnet_core::{CloseReason, Connection, Event, Initiator, Mode, SecurityLevel, State};
use slab::Slab;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// The id of a client on a server: unique for the server's lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    fn new(key: usize, generation: u32) -> Self {
        ClientId(((generation as u64) << 32) | key as u64)
    }

    fn key(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The id as a number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a server answers to pings with.
#[derive(Clone, Debug, Default)]
pub struct PingData {
    /// The release string under `peng3dnet.release`.
    pub release: String,
    /// Further entries of the answer.
    pub entries: Vec<(String, String)>,
}

/// Settings of a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The most clients at once; the next is told `serverfull` and closed.
    pub max_clients: usize,
    /// Time from accept to a completed handshake before `handshaketimeout`.
    pub handshake_timeout: Duration,
    /// The largest frame a client may send (length prefix included).
    pub max_frame: usize,
    /// The most bytes queued for one client before it is closed with
    /// `writequeuefull`.
    pub max_write_queue: usize,
    /// Bytes of buffer an idle connection keeps per direction.
    pub idle_buffer: usize,
    /// Answer `ping` connections with this; `None` refuses them.
    pub ping: Option<PingData>,
    /// The software version sent in `hello` and `handshake`.
    pub version: String,
    /// Serve TLS with this configuration (plain TCP when `None`).
    pub tls: Option<TlsServerConfig>,
    /// Compress bodies above a threshold (the reference's default: zlib
    /// level 6 above 8,192 bytes). Compressed frames from clients are always
    /// accepted, inflated within `max_frame`.
    pub compression: Option<Zlib>,
    /// How long a client may leave queued bytes unread (no write progress at
    /// all) before it is dropped with `writequeuefull`.
    pub write_stall_timeout: Duration,
    /// How long a shutdown waits for clients to take their `servershutdown`.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_clients: 10_000,
            handshake_timeout: Duration::from_secs(10),
            max_frame: 1 << 20,
            max_write_queue: 1 << 20,
            idle_buffer: 1024,
            ping: Some(PingData {
                release: env!("CARGO_PKG_VERSION").into(),
                entries: Vec::new(),
            }),
            version: env!("CARGO_PKG_VERSION").into(),
            tls: None,
            compression: Some(Zlib::default()),
            write_stall_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The connection type of one client on the server.
pub type ServerConn<'a, C> =
    Connection<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY, &'a StdRegistry>;

/// What a handler may do with the client whose packet it handles.
pub struct Ctx<'c, 'a, C: Codec> {
    id: ClientId,
    conn: &'c mut ServerConn<'a, C>,
    actions: &'c mut Vec<Action>,
}

impl<C: Codec> Ctx<'_, '_, C> {
    /// The client's id.
    pub fn client_id(&self) -> ClientId {
        self.id
    }

    /// Sends a typed packet to this client. A full transmit queue, or a
    /// message larger than the queue can ever hold, closes the client with
    /// `writequeuefull` (rather than leave it waiting for an answer).
    pub fn send<P: Packet>(&mut self, msg: &P::Message<'_>) -> Result<(), SendError> {
        let res = self.conn.send::<P>(msg);
        if let Err(SendError::WouldBlock { .. } | SendError::TooLarge { .. }) = res {
            self.conn.close(CloseReason::WriteQueueFull);
        }
        res
    }

    /// Sends a typed packet to every connected client but those in `except`
    /// (after this handler returns).
    pub fn broadcast<P: Packet>(
        &mut self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<(), SendError> {
        let id = self
            .conn
            .registry()
            .id_of::<P>()
            .ok_or(SendError::NotRegistered)?;
        let mut body = vec![
            0u8;
            self.conn
                .codec()
                .encoded_len(msg)
                .map_err(SendError::Encode)?
        ];
        self.conn
            .codec()
            .encode(msg, &mut body)
            .map_err(SendError::Encode)?;
        self.actions.push(Action::Broadcast {
            packet_id: id,
            body,
            except: except.to_vec(),
        });
        Ok(())
    }

    /// Sends an already encoded body as a `P` to this client (to echo or
    /// relay a body without decoding it).
    pub fn send_body<P: Packet>(&mut self, body: &[u8]) -> Result<(), SendError> {
        let id = self
            .conn
            .registry()
            .id_of::<P>()
            .ok_or(SendError::NotRegistered)?;
        let res = self.conn.send_encoded(id, body);
        if let Err(SendError::WouldBlock { .. } | SendError::TooLarge { .. }) = res {
            self.conn.close(CloseReason::WriteQueueFull);
        }
        res
    }

    /// The connection's codec.
    pub fn codec(&self) -> &C {
        self.conn.codec()
    }

    /// Closes this client with `reason`.
    pub fn close(&mut self, reason: CloseReason) {
        self.conn.close(reason);
    }

    /// The client's connection state.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Sets an application state (for example `LOGGEDIN`).
    pub fn set_state(&mut self, state: State) {
        self.conn.set_state(state);
    }

    /// The client's mode.
    pub fn mode(&self) -> Mode {
        self.conn.mode()
    }

    /// Sets the client's mode.
    pub fn set_mode(&mut self, mode: Mode) {
        self.conn.set_mode(mode);
    }

    /// The security level of the client's transport.
    pub fn security_level(&self) -> SecurityLevel {
        self.conn.security_level()
    }

    /// The client's connection type.
    pub fn conntype(&self) -> &str {
        self.conn.conntype()
    }
}

/// Work a handler asked for that touches other clients.
enum Action {
    Broadcast {
        packet_id: u32,
        body: Vec<u8>,
        except: Vec<ClientId>,
    },
}

type Handler<C> =
    Box<dyn for<'c, 'a> FnMut(&mut Ctx<'c, 'a, C>, &[u8]) -> Result<(), CloseReason> + Send>;
type Hook<C> = Box<dyn for<'c, 'a> FnMut(&mut Ctx<'c, 'a, C>) + Send>;
type CloseHook = Box<dyn FnMut(ClientId, &CloseReason, Initiator) + Send>;

/// Builds a [`Server`].
pub struct ServerBuilder<C: Codec = Postcard> {
    registry: StdRegistry,
    codec: C,
    options: ServerOptions,
    handlers: HashMap<&'static str, Handler<C>>,
    on_connect: Option<Hook<C>>,
    on_handshake: Option<Hook<C>>,
    on_close: Option<CloseHook>,
}

impl<C: Codec + Clone + Send + 'static> ServerBuilder<C> {
    /// With another codec.
    pub fn codec<D: Codec + Clone + Send + 'static>(self, codec: D) -> ServerBuilder<D> {
        assert!(
            self.handlers.is_empty() && self.on_connect.is_none() && self.on_handshake.is_none(),
            "choose the codec before registering handlers"
        );
        ServerBuilder {
            registry: self.registry,
            codec,
            options: self.options,
            handlers: HashMap::new(),
            on_connect: None,
            on_handshake: None,
            on_close: self.on_close,
        }
    }

    /// With these options.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Changes options in place.
    pub fn with_options(mut self, f: impl FnOnce(&mut ServerOptions)) -> Self {
        f(&mut self.options);
        self
    }

    /// Calls `handler` with every `P` a client sends that passed its rules. A
    /// body that does not decode as `P` closes the client with
    /// `malformedpacket`.
    ///
    /// # Panics
    /// If `P` is not registered in the server's registry.
    pub fn on<P: Packet + 'static>(
        mut self,
        mut handler: impl for<'c, 'a, 'm> FnMut(&mut Ctx<'c, 'a, C>, P::Message<'m>) + Send + 'static,
    ) -> Self {
        assert!(
            self.registry.by_name(P::NAME).is_some(),
            "register {} before adding its handler",
            P::NAME
        );
        let codec = self.codec.clone();
        self.handlers.insert(
            P::NAME,
            Box::new(move |ctx, body| {
                let msg = codec
                    .decode::<P::Message<'_>>(body)
                    .map_err(|_| CloseReason::MalformedPacket)?;
                handler(ctx, msg);
                Ok(())
            }),
        );
        self
    }

    /// Calls `handler` with the encoded body of every `P` that passed its
    /// rules, undecoded (to relay or echo it, or to decode it dynamically).
    ///
    /// # Panics
    /// If `P` is not registered in the server's registry.
    pub fn on_raw<P: Packet + 'static>(
        mut self,
        mut handler: impl for<'c, 'a> FnMut(&mut Ctx<'c, 'a, C>, &[u8]) + Send + 'static,
    ) -> Self {
        assert!(
            self.registry.by_name(P::NAME).is_some(),
            "register {} before adding its handler",
            P::NAME
        );
        self.handlers.insert(
            P::NAME,
            Box::new(move |ctx, body| {
                handler(ctx, body);
                Ok(())
            }),
        );
        self
    }

    /// Called when a client's TCP connection is accepted (before the handshake).
    pub fn on_connect(
        mut self,
        hook: impl for<'c, 'a> FnMut(&mut Ctx<'c, 'a, C>) + Send + 'static,
    ) -> Self {
        self.on_connect = Some(Box::new(hook));
        self
    }

    /// Called when a client completed the handshake.
    pub fn on_handshake(
        mut self,
        hook: impl for<'c, 'a> FnMut(&mut Ctx<'c, 'a, C>) + Send + 'static,
    ) -> Self {
        self.on_handshake = Some(Box::new(hook));
        self
    }

    /// Called once per client when its connection closed, with the reason.
    pub fn on_close(
        mut self,
        hook: impl FnMut(ClientId, &CloseReason, Initiator) + Send + 'static,
    ) -> Self {
        self.on_close = Some(Box::new(hook));
        self
    }

    /// Binds the listening socket.
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server<C>> {
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no address to bind"))?;
        let mut listener = listen(addr)?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let local_addr = listener.local_addr()?;
        Ok(Server {
            listener,
            poll,
            handle: ServerHandle {
                commands: tx,
                waker,
                codec: self.codec.clone(),
            },
            commands: rx,
            local_addr,
            parts: self,
        })
    }
}

/// A bound server, ready to run.
pub struct Server<C: Codec = Postcard> {
    listener: TcpListener,
    poll: Poll,
    handle: ServerHandle<C>,
    commands: mpsc::Receiver<Command>,
    local_addr: SocketAddr,
    parts: ServerBuilder<C>,
}

impl Server<Postcard> {
    /// A builder for a server of the packets in `registry`, with the native
    /// codec (postcard) and default options.
    pub fn builder(registry: StdRegistry) -> ServerBuilder<Postcard> {
        ServerBuilder {
            registry,
            codec: Postcard,
            options: ServerOptions::default(),
            handlers: HashMap::new(),
            on_connect: None,
            on_handshake: None,
            on_close: None,
        }
    }
}

/// What a finished server did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted into the table.
    pub accepted: u64,
    /// Connections refused because the table was full.
    pub refused: u64,
    /// Connections that completed a handshake.
    pub handshakes: u64,
    /// Most clients at once.
    pub peak_clients: usize,
}

/// Answer to [`ServerHandle::status`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStatus {
    /// Clients in the table now.
    pub clients: usize,
    /// Of those, connected (handshake complete).
    pub connected: usize,
    /// Bytes of connection buffers held now.
    pub buffer_bytes: usize,
    /// Counters so far.
    pub stats: ServerStats,
}

enum Command {
    Send {
        id: ClientId,
        name: &'static str,
        body: Vec<u8>,
    },
    Broadcast {
        name: &'static str,
        body: Vec<u8>,
        except: Vec<ClientId>,
    },
    Close {
        id: ClientId,
        reason: CloseReason,
    },
    Status(mpsc::Sender<ServerStatus>),
    Shutdown,
}

/// Why a [`ServerHandle`] call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleError {
    /// The server has stopped.
    Stopped,
    /// The message could not be encoded.
    Encode(peng3dnet_core::codec::CodecError),
}

impl std::fmt::Display for HandleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandleError::Stopped => f.write_str("the server has stopped"),
            HandleError::Encode(e) => write!(f, "encoding failed: {e}"),
        }
    }
}

impl std::error::Error for HandleError {}

/// Commands a running server from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle<C: Codec = Postcard> {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
    codec: C,
}

impl<C: Codec> ServerHandle<C> {
    fn command(&self, c: Command) -> Result<(), HandleError> {
        self.commands.send(c).map_err(|_| HandleError::Stopped)?;
        self.waker.wake().map_err(|_| HandleError::Stopped)
    }

    fn encode<M: serde::Serialize + ?Sized>(&self, msg: &M) -> Result<Vec<u8>, HandleError> {
        let len = self.codec.encoded_len(msg).map_err(HandleError::Encode)?;
        let mut body = vec![0u8; len];
        self.codec
            .encode(msg, &mut body)
            .map_err(HandleError::Encode)?;
        Ok(body)
    }

    /// Sends a `P` to one client (its rules are checked there; a refused or
    /// unknown client is skipped).
    pub fn send<P: Packet>(&self, id: ClientId, msg: &P::Message<'_>) -> Result<(), HandleError> {
        let body = self.encode(msg)?;
        self.command(Command::Send {
            id,
            name: P::NAME,
            body,
        })
    }

    /// Sends a `P` to every connected client but those in `except`.
    pub fn broadcast<P: Packet>(
        &self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<(), HandleError> {
        let body = self.encode(msg)?;
        self.command(Command::Broadcast {
            name: P::NAME,
            body,
            except: except.to_vec(),
        })
    }

    /// Closes one client with `reason`.
    pub fn close(&self, id: ClientId, reason: CloseReason) -> Result<(), HandleError> {
        self.command(Command::Close { id, reason })
    }

    /// The server's clients and counters now.
    pub fn status(&self) -> Result<ServerStatus, HandleError> {
        let (tx, rx) = mpsc::channel();
        self.command(Command::Status(tx))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| HandleError::Stopped)
    }

    /// Stops accepting, sends `servershutdown` to every client, drains what is
    /// queued (up to [`ServerOptions::shutdown_grace`]) and stops the loop.
    /// Returns at once; join the server's thread to wait.
    pub fn shutdown(&self) {
        let _ = self.command(Command::Shutdown);
    }
}

/// A server running on its own thread.
pub struct RunningServer<C: Codec = Postcard> {
    handle: ServerHandle<C>,
    thread: thread::JoinHandle<io::Result<ServerStats>>,
}

impl<C: Codec> RunningServer<C> {
    /// A handle to command it.
    pub fn handle(&self) -> &ServerHandle<C> {
        &self.handle
    }

    /// Waits for the server to stop (after [`ServerHandle::shutdown`]).
    pub fn join(self) -> io::Result<ServerStats> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))?
    }
}

impl<C: Codec + Clone + Send + 'static> Server<C> {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to command the server once it runs.
    pub fn handle(&self) -> ServerHandle<C> {
        self.handle.clone()
    }

    /// Runs the server on a new thread.
    pub fn spawn(self) -> io::Result<RunningServer<C>> {
        let handle = self.handle();
        let thread = thread::Builder::new()
            .name("peng3dnet-server".into())
            .spawn(move || self.run())?;
        Ok(RunningServer { handle, thread })
    }

    /// Runs the event loop on this thread until shut down.
    pub fn run(self) -> io::Result<ServerStats> {
        let Server {
            listener,
            poll,
            commands,
            parts,
            ..
        } = self;
        let ServerBuilder {
            registry,
            codec,
            options,
            handlers,
            on_connect,
            on_handshake,
            on_close,
        } = parts;
        let ping_entries: Vec<(&str, &str)> = options
            .ping
            .iter()
            .flat_map(|p| p.entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect();
        let config = Config {
            version: &options.version,
            handshake_timeout: peng3dnet_core::time::Duration::from_micros(
                options.handshake_timeout.as_micros() as u64,
            ),
            ping: options.ping.as_ref().map(|p| PingServerConfig {
                release: &p.release,
                data: &ping_entries,
            }),
            compressor: options
                .compression
                .as_ref()
                .map(|z| z as &(dyn Compressor + Sync)),
            ..Config::new()
        };
        let mut handlers_by_id = HashMap::new();
        for (name, h) in handlers {
            if let Some(e) = registry.by_name(name) {
                handlers_by_id.insert(e.id, h);
            }
        }
        let clock = Clock::new();
        let mut lp = Loop {
            config: &config,
            registry: &registry,
            codec,
            options: &options,
            listener,
            poll,
            commands,
            conns: Slab::new(),
            generation: 0,
            timers: BinaryHeap::new(),
            handlers: handlers_by_id,
            on_connect,
            on_handshake,
            on_close,
            clock,
            stats: ServerStats::default(),
            shutdown_at: None,
            actions: Vec::new(),
            scratch: Vec::new(),
            ready: VecDeque::new(),
        };
        lp.run()
    }
}

struct Client<'a, C: Codec> {
    id: ClientId,
    transport: Transport,
    conn: ServerConn<'a, C>,
    /// The deadline a timer is armed for.
    armed: Option<peng3dnet_core::time::Instant>,
    /// Reading stopped until the transmit queue drains.
    paused: bool,
    /// Interest registered with the poller.
    writable: bool,
    /// `on_close` was called.
    reported: bool,
    /// When the client is dropped if its socket takes no byte until then.
    stall: Option<peng3dnet_core::time::Instant>,
    /// The transport is given up: remove without flushing.
    dropped: bool,
    /// On the ready list: bytes may wait to be read.
    queued: bool,
}

struct Loop<'a, C: Codec> {
    config: &'a Config<'a>,
    registry: &'a StdRegistry,
    codec: C,
    options: &'a ServerOptions,
    listener: TcpListener,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    conns: Slab<Client<'a, C>>,
    generation: u32,
    timers: BinaryHeap<Reverse<(peng3dnet_core::time::Instant, usize, u64)>>,
    handlers: HashMap<u32, Handler<C>>,
    on_connect: Option<Hook<C>>,
    on_handshake: Option<Hook<C>>,
    on_close: Option<CloseHook>,
    clock: Clock,
    stats: ServerStats,
    shutdown_at: Option<Instant>,
    actions: Vec<Action>,
    scratch: Vec<u8>,
    /// Clients that may have bytes left to read (see `service`).
    ready: VecDeque<usize>,
}

impl<'a, C: Codec + Clone> Loop<'a, C> {
    fn now(&self) -> peng3dnet_core::time::Instant {
        self.clock.now()
    }

    fn run(&mut self) -> io::Result<ServerStats> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.ready.is_empty() {
                self.next_timeout()
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => self.commands()?,
                    Token(key) => self.service(key, event.is_readable() || event.is_read_closed()),
                }
            }
            for key in std::mem::take(&mut self.ready) {
                if let Some(c) = self.conns.get_mut(key) {
                    c.queued = false;
                    self.service(key, true);
                }
            }
            self.fire_timers();
            if let Some(at) = self.shutdown_at {
                if self.conns.is_empty() || Instant::now() >= at {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.remove(key);
                    }
                    return Ok(self.stats);
                }
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let now = self.now();
        let timer = self.timers.peek().map(|Reverse((at, _, _))| {
            Duration::from_micros(at.saturating_duration_since(now).as_micros())
        });
        let shutdown = self
            .shutdown_at
            .map(|at| at.saturating_duration_since(Instant::now()));
        match (timer, shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if is_transient_accept_error(&e) => continue,
                // Out of file descriptors or the like: stop accepting for
                // this round rather than stopping the server.
                Err(_) => return Ok(()),
            };
            if self.shutdown_at.is_some() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            if self.conns.len() >= self.options.max_clients {
                self.stats.refused += 1;
                refuse(&mut stream, &self.codec);
                continue;
            }
            let transport = match &self.options.tls {
                Some(tls) => match Transport::tls_server(stream, tls) {
                    Ok(t) => t,
                    Err(_) => continue,
                },
                None => Transport::plain(stream),
            };
            let now = self.now();
            let conn = match Connection::server(
                self.config,
                self.registry,
                self.codec.clone(),
                HeapBuffer::new(self.options.max_frame, self.options.idle_buffer),
                // The transmit queue always holds an answer as large as the
                // largest frame a client may send (an echo of it).
                HeapBuffer::new(
                    self.options
                        .max_write_queue
                        .max(self.options.max_frame + MIN_TX_BUFFER),
                    self.options.idle_buffer,
                ),
                now,
            ) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            self.generation = self.generation.wrapping_add(1);
            let id = ClientId::new(key, self.generation);
            let mut client = Client {
                id,
                transport,
                conn,
                armed: None,
                paused: false,
                writable: true,
                reported: false,
                stall: None,
                dropped: false,
                queued: false,
            };
            if let Some(level) = client.transport.security_level() {
                client.conn.set_security_level(level);
            }
            if self
                .poll
                .registry()
                .register(
                    client.transport.socket_mut(),
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            entry.insert(client);
            self.stats.accepted += 1;
            self.stats.peak_clients = self.stats.peak_clients.max(self.conns.len());
            if let Some(hook) = self.on_connect.as_mut() {
                let c = &mut self.conns[key];
                let mut ctx = Ctx {
                    id: c.id,
                    conn: &mut c.conn,
                    actions: &mut self.actions,
                };
                hook(&mut ctx);
            }
            self.service(key, true);
        }
    }

    fn commands(&mut self) -> io::Result<()> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Send { id, name, body } => {
                    let registry = self.registry;
                    if let (Some(e), Some(c)) = (registry.by_name(name), self.client_mut(id)) {
                        let id_on_wire = e.id;
                        if let Err(SendError::WouldBlock { .. }) =
                            c.conn.send_encoded(id_on_wire, &body)
                        {
                            c.conn.close(CloseReason::WriteQueueFull);
                        }
                        self.service(id.key(), false);
                    }
                }
                Command::Broadcast { name, body, except } => {
                    if let Some(e) = self.registry.by_name(name) {
                        self.broadcast(e.id, &body, &except);
                    }
                }
                Command::Close { id, reason } => {
                    if let Some(c) = self.client_mut(id) {
                        c.conn.close(reason);
                        self.service(id.key(), false);
                    }
                }
                Command::Status(reply) => {
                    let status = ServerStatus {
                        clients: self.conns.len(),
                        connected: self
                            .conns
                            .iter()
                            .filter(|(_, c)| c.conn.is_connected())
                            .count(),
                        buffer_bytes: self
                            .conns
                            .iter()
                            .map(|(_, c)| {
                                let (rx, tx) = c.conn.buffers();
                                rx.allocated() + tx.allocated()
                            })
                            .sum(),
                        stats: self.stats,
                    };
                    let _ = reply.send(status);
                }
                Command::Shutdown => {
                    if self.shutdown_at.is_none() {
                        self.shutdown_at = Some(Instant::now() + self.options.shutdown_grace);
                        let _ = self.poll.registry().deregister(&mut self.listener);
                        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                        for key in keys {
                            self.conns[key].conn.close(CloseReason::ServerShutdown);
                            self.service(key, false);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn client_mut(&mut self, id: ClientId) -> Option<&mut Client<'a, C>> {
        self.conns.get_mut(id.key()).filter(|c| c.id == id)
    }

    fn broadcast(&mut self, packet_id: u32, body: &[u8], except: &[ClientId]) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.conn.is_connected() && !except.contains(&c.id))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let c = &mut self.conns[key];
            if let Err(SendError::WouldBlock { .. }) = c.conn.send_encoded(packet_id, body) {
                c.conn.close(CloseReason::WriteQueueFull);
            }
            self.service(key, false);
        }
    }

    /// Moves bytes for one client: read (if allowed), handle events, write,
    /// re-arm; removes it once finished.
    fn service(&mut self, key: usize, readable: bool) {
        if !self.conns.contains(key) {
            return;
        }
        let now = self.now();
        let high_water = self.options.max_write_queue / 2;
        let mut read_more = readable || self.conns[key].paused;
        // Bounded, for fairness: a client with more to read after 64 reads
        // goes on the ready list and is read again after the others.
        for _ in 0..64 {
            self.handle_events(key, now, high_water);
            self.flush(key);
            let c = &mut self.conns[key];
            if c.conn.is_closed() || !read_more {
                break;
            }
            if c.conn.poll_transmit().len() > high_water {
                c.paused = true;
                break;
            }
            c.paused = false;
            let buf = c.conn.receive_buffer();
            if buf.is_empty() {
                // Events are waiting for transmit room.
                c.paused = true;
                break;
            }
            match c.transport.read(buf) {
                Ok(0) => {
                    c.conn.handle_transport_closed();
                    c.dropped = true;
                }
                Ok(n) => c.conn.commit_received(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => read_more = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    c.conn.handle_transport_closed();
                    c.dropped = true;
                }
            }
            if let Some(level) = c.transport.security_level() {
                if c.conn.security_level() != level {
                    c.conn.set_security_level(level);
                }
            }
        }
        self.handle_events(key, now, high_water);
        self.flush(key);
        let c = &mut self.conns[key];
        if c.conn.is_finished() && (c.dropped || !c.transport.wants_write()) {
            self.remove(key);
            return;
        }
        if read_more && !c.paused && !c.conn.is_closed() && !c.queued {
            // Edge-triggered readiness will not fire again for bytes that
            // are already there.
            c.queued = true;
            self.ready.push_back(key);
        }
        match c.conn.poll_timeout() {
            Some(at) if c.armed != Some(at) => {
                c.armed = Some(at);
                self.timers.push(Reverse((at, key, c.id.0)));
            }
            Some(_) => {}
            // The handshake completed: the armed timer is stale, let it lapse.
            None => c.armed = None,
        }
        let want_write = !c.conn.poll_transmit().is_empty() || c.transport.wants_write();
        if want_write != c.writable {
            c.writable = want_write;
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = self
                .poll
                .registry()
                .reregister(c.transport.socket_mut(), Token(key), interest);
        }
    }

    fn handle_events(&mut self, key: usize, now: peng3dnet_core::time::Instant, high_water: usize) {
        loop {
            let c = &mut self.conns[key];
            if c.conn.poll_transmit().len() > high_water && !c.conn.is_closed() {
                c.paused = true;
                return;
            }
            let Some(event) = c.conn.poll(now) else {
                return;
            };
            match event {
                Event::Packet(p) => {
                    let packet_id = p.packet_id;
                    self.scratch.clear();
                    self.scratch.extend_from_slice(p.body);
                    if let Some(handler) = self.handlers.get_mut(&packet_id) {
                        let mut ctx = Ctx {
                            id: c.id,
                            conn: &mut c.conn,
                            actions: &mut self.actions,
                        };
                        if let Err(reason) = handler(&mut ctx, &self.scratch) {
                            c.conn.close(reason);
                        }
                    }
                }
                Event::Connected => {
                    self.stats.handshakes += 1;
                    if let Some(hook) = self.on_handshake.as_mut() {
                        let mut ctx = Ctx {
                            id: c.id,
                            conn: &mut c.conn,
                            actions: &mut self.actions,
                        };
                        hook(&mut ctx);
                    }
                }
                Event::Closed { reason, initiator } => {
                    c.reported = true;
                    if let Some(hook) = self.on_close.as_mut() {
                        hook(c.id, &reason, initiator);
                    }
                }
                Event::ConnTypePacket(_)
                | Event::Pong { .. }
                | Event::PingAnswered
                | Event::Ignored { .. } => {}
            }
            self.run_actions();
        }
    }

    fn run_actions(&mut self) {
        while let Some(action) = self.actions.pop() {
            match action {
                Action::Broadcast {
                    packet_id,
                    body,
                    except,
                } => {
                    // Queue only; each client is serviced on its own turn.
                    for (_, c) in self.conns.iter_mut() {
                        if c.conn.is_connected() && !except.contains(&c.id) {
                            if let Err(SendError::WouldBlock { .. }) =
                                c.conn.send_encoded(packet_id, &body)
                            {
                                c.conn.close(CloseReason::WriteQueueFull);
                            }
                        }
                    }
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        let c = &mut self.conns[key];
                        if !c.conn.poll_transmit().is_empty() {
                            flush_one(c);
                        }
                    }
                }
            }
        }
    }

    /// Writes what the client's connection queued, and watches for a client
    /// that takes nothing: after [`ServerOptions::write_stall_timeout`]
    /// without progress it is dropped (see [`Loop::fire_timers`]).
    fn flush(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let progress = flush_one(c);
        let pending = !c.conn.poll_transmit().is_empty() || c.transport.wants_write();
        if !pending || progress {
            c.stall = None;
        } else if c.stall.is_none() {
            let at = self.clock.now()
                + peng3dnet_core::time::Duration::from_micros(
                    self.options.write_stall_timeout.as_micros() as u64,
                );
            c.stall = Some(at);
            self.timers.push(Reverse((at, key, c.id.0)));
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now();
        while let Some(Reverse((at, key, id))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            if let Some(c) = self.conns.get_mut(key) {
                if c.id.0 != id {
                    continue;
                }
                if c.armed == Some(at) {
                    c.armed = None;
                    c.conn.handle_timeout(now);
                    self.service(key, false);
                } else if c.stall == Some(at) {
                    // The client took no byte for the whole timeout: it is
                    // not told (it does not read), it is dropped.
                    c.conn.close(CloseReason::WriteQueueFull);
                    c.conn.handle_transport_closed();
                    c.dropped = true;
                    self.service(key, false);
                }
            }
        }
    }

    fn remove(&mut self, key: usize) {
        let mut c = self.conns.remove(key);
        let _ = self.poll.registry().deregister(c.transport.socket_mut());
        if !c.reported {
            // Closed without the state machine seeing it (shutdown grace ran
            // out): report what the connection knows.
            if !c.conn.is_closed() {
                c.conn.handle_transport_closed();
            }
            if let (Some(hook), Some((reason, initiator))) =
                (self.on_close.as_mut(), c.conn.close_reason())
            {
                hook(c.id, reason, initiator);
            }
        }
        c.transport.shutdown();
    }
}

/// Writes what the connection queued until the socket would block; whether
/// any byte was taken.
fn flush_one<C: Codec>(c: &mut Client<'_, C>) -> bool {
    let mut progress = false;
    for _ in 0..1024 {
        let data = c.conn.poll_transmit();
        if data.is_empty() {
            let _ = c.transport.flush();
            return progress;
        }
        match c.transport.write(data) {
            Ok(0) => return progress,
            Ok(n) => {
                c.conn.transmitted(n);
                progress = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return progress,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                c.conn.handle_transport_closed();
                c.dropped = true;
                return progress;
            }
        }
    }
    progress
}

/// The listening socket, with a backlog for bursts of connections (the
/// default of 128 makes a burst's clients wait for SYN retries).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Tells a client the server is full, best effort, without a connection.
fn refuse<C: Codec>(stream: &mut mio::net::TcpStream, codec: &C) {
    use std::io::Write;
    let mut frame = [0u8; 128];
    if let Ok(n) = encode_refusal(codec, &CloseReason::ServerFull, &mut frame) {
        let _ = stream.write(&frame[..n]);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}
