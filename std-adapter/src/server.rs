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
//! Every decision is the core's sans-IO server ([`peng3dnet_core::server`]):
//! admission and the `serverfull` refusal, the client table and its ids, what
//! a send that does not fit does (the client is closed with
//! `writequeuefull`), the handshake and write-stall timers, the shutdown
//! grace, the counters. This module only moves bytes, readiness and time
//! between it and the sockets (mio, optionally TLS). Buffers grow per frame
//! up to [`ServerOptions::max_frame`] (receive) and
//! [`ServerOptions::max_write_queue`] (transmit) and shrink back when idle;
//! while a client's queue is more than half full, the server stops reading
//! from it.

use crate::buffer::HeapBuffer;
use crate::codec::Zlib;
use crate::tls::TlsServerConfig;
use crate::transport::Transport;
use crate::{core_duration, core_timeout, Clock, StdRegistry, REGISTRY_CAPACITY};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::connection::{
    server_tx_required, Compressor, Config, IgnoreCause, NewConnectionError, PingServerConfig,
    SendError, MIN_TX_BUFFER,
};
use peng3dnet_core::registry::Packet;
pub use peng3dnet_core::server::BroadcastReport;
use peng3dnet_core::server::{
    Refused, ServerConnection, ServerOptions as CoreOptions, ServerSlot, Storage,
};
use peng3dnet_core::{CloseReason, Closed, Event, Mode, SecurityLevel, State};
use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

pub use peng3dnet_core::server::{ClientId, ServerStats};

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
    /// The core's server holds at most
    /// [`MAX_SLOTS`](peng3dnet_core::server::MAX_SLOTS) (65,535) clients,
    /// whatever this says.
    pub max_clients: usize,
    /// Time from accept to a completed handshake before `handshaketimeout`.
    pub handshake_timeout: Duration,
    /// Time from a frame's first byte to its last before `frametimeout`
    /// (30 s).
    pub frame_timeout: Duration,
    /// Time a client may send nothing before it is closed with
    /// `idletimeout`, freeing its slot; `None` (the default) never. Clients of
    /// this crate send keepalives (every 15 s by default), so an idle
    /// timeout above that drops only silent or half-open clients.
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive when nothing was sent to a client for this long
    /// (15 s; `None`: never), so that a client with an idle timeout of its
    /// own stays connected.
    pub keepalive_interval: Option<Duration>,
    /// The largest frame a client may send (length prefix included).
    pub max_frame: usize,
    /// The most bytes queued for one client before it is closed with
    /// `writequeuefull` (at least `max_frame` plus [`MIN_TX_BUFFER`] are
    /// allowed). The server's `handshake`, which carries the whole
    /// registry, must fit: [`ServerBuilder::bind`] checks.
    pub max_write_queue: usize,
    /// Bytes of buffer an idle connection keeps per direction (0, the
    /// default: an idle connection holds no buffer; each read and each
    /// answer takes one from the allocator and gives it back).
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
    /// all), or keep more than half of its write queue unread however much
    /// it reads now and then, before it is dropped with `writequeuefull`.
    pub write_stall_timeout: Duration,
    /// How long a shutdown waits for clients to take their `servershutdown`.
    pub shutdown_grace: Duration,
    /// The most clients from one IP address at once; the next is refused
    /// with `toomanyconnections`. `None` (the default): no bound.
    pub max_per_address: Option<usize>,
    /// The most new clients accepted a second, on average, with bursts of
    /// up to as many at once; more are refused with `serverbusy`. It bounds
    /// the handshakes (plain and TLS) started a second. `None` (the
    /// default): no bound.
    pub max_accepts_per_second: Option<u32>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_clients: 10_000,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            max_frame: 1 << 20,
            max_write_queue: 1 << 20,
            idle_buffer: 0,
            ping: Some(PingData {
                release: env!("CARGO_PKG_VERSION").into(),
                entries: Vec::new(),
            }),
            version: env!("CARGO_PKG_VERSION").into(),
            tls: None,
            compression: Some(Zlib::default()),
            write_stall_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            max_per_address: None,
            max_accepts_per_second: None,
        }
    }
}

impl ServerOptions {
    /// The entries of the ping answer, borrowed for the core's [`Config`].
    pub(crate) fn ping_entries(&self) -> Vec<(&str, &str)> {
        self.ping
            .iter()
            .flat_map(|p| p.entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect()
    }

    /// The core connection settings these options give (`ping_entries`
    /// from [`ping_entries`](Self::ping_entries)).
    pub(crate) fn core_config<'a>(&'a self, ping_entries: &'a [(&'a str, &'a str)]) -> Config<'a> {
        Config {
            version: &self.version,
            handshake_timeout: core_duration(self.handshake_timeout),
            frame_timeout: core_duration(self.frame_timeout),
            idle_timeout: core_timeout(self.idle_timeout),
            keepalive_interval: core_timeout(self.keepalive_interval),
            ping: self.ping.as_ref().map(|p| PingServerConfig {
                release: &p.release,
                data: ping_entries,
            }),
            compressor: self
                .compression
                .as_ref()
                .map(|z| z as &(dyn Compressor + Sync)),
            ..Config::new()
        }
    }

    /// The core server's settings these options give.
    pub(crate) fn core_options(&self) -> CoreOptions {
        CoreOptions {
            max_clients: self.max_clients,
            write_stall_timeout: core_duration(self.write_stall_timeout),
            max_per_address: self.max_per_address.unwrap_or(usize::MAX),
            accept_rate: self.max_accepts_per_second.unwrap_or(0),
            accept_burst: self.max_accepts_per_second.unwrap_or(0),
            shutdown_grace: core_duration(self.shutdown_grace),
            ..CoreOptions::new()
        }
    }

    /// A new client's receive and transmit buffers. The transmit queue
    /// always holds an answer as large as the largest frame a client may
    /// send (an echo of it).
    pub(crate) fn client_buffers(&self) -> (HeapBuffer, HeapBuffer) {
        (
            HeapBuffer::new(self.max_frame, self.idle_buffer),
            HeapBuffer::new(self.client_tx_capacity(), self.idle_buffer),
        )
    }

    /// The transmit capacity of each client's queue: it always holds an
    /// answer as large as the largest frame a client may send (an echo of
    /// it).
    fn client_tx_capacity(&self) -> usize {
        self.max_write_queue.max(self.max_frame + MIN_TX_BUFFER)
    }
}

/// The handlers by packet id (those of packets not in `registry` are
/// dropped: `on` checked that they are there).
pub(crate) fn handlers_by_id<C: Codec>(
    registry: &StdRegistry,
    handlers: HashMap<&'static str, Handler<C>>,
) -> HashMap<u32, Handler<C>> {
    handlers
        .into_iter()
        .filter_map(|(name, h)| registry.by_name(name).map(|e| (e.id, h)))
        .collect()
}

/// What a [`Command`] changed, for the adapter to act on.
pub(crate) enum Applied {
    /// Nothing to write.
    Nothing,
    /// This client may have bytes to write.
    Client(ClientId),
    /// Any client may have bytes to write.
    Broadcast,
    /// The server began its shutdown: stop accepting, service every client.
    ShutDown,
}

/// Carries out a [`ServerHandle`] command on the core server at `now` and
/// answers it; the adapter then services what it says.
pub(crate) fn apply<C: Codec>(
    server: &mut CoreServer<'_, C>,
    cmd: Command,
    now: peng3dnet_core::time::Instant,
) -> Applied {
    match cmd {
        Command::Send {
            id,
            name,
            body,
            reply,
        } => {
            let (res, applied) = match server.registry().by_name(name) {
                Some(e) => {
                    let res = server.send_encoded(id, e.id, &body);
                    (res.map_err(HandleError::Send), Applied::Client(id))
                }
                None => (Err(HandleError::NotRegistered(name)), Applied::Nothing),
            };
            let _ = reply.send(res);
            applied
        }
        Command::Broadcast {
            name,
            body,
            except,
            reply,
        } => {
            let (res, applied) = match server.registry().by_name(name) {
                Some(e) => (
                    Ok(server.broadcast_encoded(e.id, &body, &except)),
                    Applied::Broadcast,
                ),
                None => (Err(HandleError::NotRegistered(name)), Applied::Nothing),
            };
            let _ = reply.send(res);
            applied
        }
        Command::Close { id, reason } => match server.close(id, reason) {
            true => Applied::Client(id),
            false => Applied::Nothing,
        },
        Command::Status(reply) => {
            let _ = reply.send(status_of(server));
            Applied::Nothing
        }
        Command::Shutdown => match server.is_shutting_down() {
            true => Applied::Nothing,
            false => {
                server.shutdown(now);
                Applied::ShutDown
            }
        },
    }
}

/// What [`ServerHandle::status`] reports of `server`.
pub(crate) fn status_of<C: Codec>(server: &CoreServer<'_, C>) -> ServerStatus {
    ServerStatus {
        clients: server.len(),
        connected: server.connected(),
        buffer_bytes: server
            .clients()
            .filter_map(|id| server.connection(id))
            .map(|c| {
                let (rx, tx) = c.buffers();
                rx.allocated() + tx.allocated()
            })
            .sum(),
        stats: server.stats(),
    }
}

/// The core server as this adapter instantiates it: growable buffers per
/// client, slots in a growable vector.
pub(crate) type CoreServer<'a, C> =
    peng3dnet_core::server::Server<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY, Slots<'a, C>>;

/// The connection type of one client on the server.
pub type ServerConn<'a, C> = ServerConnection<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY>;

/// The core server's client slots on the heap: they grow as clients come
/// (up to [`ServerOptions::max_clients`], which the core enforces).
pub(crate) struct Slots<'a, C>(
    pub(crate) Vec<ServerSlot<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY>>,
);

impl<'a, C> Storage<ServerSlot<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY>> for Slots<'a, C> {
    fn slots(&self) -> &[ServerSlot<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY>] {
        &self.0
    }

    fn slots_mut(&mut self) -> &mut [ServerSlot<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY>] {
        &mut self.0
    }

    fn push(
        &mut self,
        slot: ServerSlot<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY>,
    ) -> Result<(), ServerSlot<'a, C, HeapBuffer, HeapBuffer, REGISTRY_CAPACITY>> {
        self.0.push(slot);
        Ok(())
    }
}

/// What a handler may do with the client whose packet it handles. Sends go
/// through the core server's rule
/// ([`peng3dnet_core::server`], "The rules the server applies"): a send that
/// does not fit the client's queue closes it with `writequeuefull`.
pub struct Ctx<'c, 'a, C: Codec> {
    pub(crate) id: ClientId,
    pub(crate) server: &'c mut CoreServer<'a, C>,
    /// A broadcast queued bytes on other clients: they need writing.
    pub(crate) broadcast: &'c mut bool,
}

impl<C: Codec> Ctx<'_, '_, C> {
    fn conn(&self) -> &ServerConn<'_, C> {
        self.server
            .connection(self.id)
            .expect("a handler runs for a client that is in the table")
    }

    /// The client's id.
    pub fn client_id(&self) -> ClientId {
        self.id
    }

    /// Sends a typed packet to this client. A transmit queue without room
    /// for it closes the client with `writequeuefull` (rather than leave it
    /// waiting for an answer); a message larger than the whole queue is
    /// refused with `SendError::TooLarge`.
    pub fn send<P: Packet>(&mut self, msg: &P::Message<'_>) -> Result<(), SendError> {
        self.server.send::<P>(self.id, msg)
    }

    /// Sends a typed packet to every connected client but those in `except`,
    /// encoded once.
    pub fn broadcast<P: Packet>(
        &mut self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<(), SendError> {
        let len = self
            .server
            .codec()
            .encoded_len(msg)
            .map_err(SendError::Encode)?;
        let mut scratch = vec![0u8; len];
        self.server.broadcast::<P>(msg, &mut scratch, except)?;
        *self.broadcast = true;
        Ok(())
    }

    /// Sends an already encoded body as a `P` to this client (to echo or
    /// relay a body without decoding it), under the rule of
    /// [`send`](Self::send).
    pub fn send_body<P: Packet>(&mut self, body: &[u8]) -> Result<(), SendError> {
        let id = self
            .server
            .registry()
            .id_of::<P>()
            .ok_or(SendError::NotRegistered)?;
        self.server.send_encoded(self.id, id, body)
    }

    /// The connection's codec.
    pub fn codec(&self) -> &C {
        self.server.codec()
    }

    /// Closes this client with `reason`.
    pub fn close(&mut self, reason: CloseReason) {
        self.server.close(self.id, reason);
    }

    /// The client's connection state.
    pub fn state(&self) -> State {
        self.conn().state()
    }

    /// Sets an application state (for example `LOGGEDIN`).
    pub fn set_state(&mut self, state: State) {
        self.server.set_state(self.id, state);
    }

    /// The client's mode.
    pub fn mode(&self) -> Mode {
        self.conn().mode()
    }

    /// Sets the client's mode.
    pub fn set_mode(&mut self, mode: Mode) {
        self.server.set_mode(self.id, mode);
    }

    /// The security level of the client's transport.
    pub fn security_level(&self) -> SecurityLevel {
        self.conn().security_level()
    }

    /// The client's connection type.
    pub fn conntype(&self) -> &str {
        self.conn().conntype()
    }
}

pub(crate) type Handler<C> =
    Box<dyn for<'c, 'a> FnMut(&mut Ctx<'c, 'a, C>, &[u8]) -> Result<(), CloseReason> + Send>;
pub(crate) type Hook<C> = Box<dyn for<'c, 'a> FnMut(&mut Ctx<'c, 'a, C>) + Send>;
pub(crate) type CloseHook = Box<dyn FnMut(ClientId, &Closed) + Send>;
pub(crate) type IgnoredHook = Box<dyn FnMut(ClientId, u32, IgnoreCause) + Send>;

/// Builds a [`Server`].
pub struct ServerBuilder<C: Codec = Postcard> {
    pub(crate) registry: StdRegistry,
    pub(crate) codec: C,
    pub(crate) options: ServerOptions,
    pub(crate) handlers: HashMap<&'static str, Handler<C>>,
    pub(crate) on_connect: Option<Hook<C>>,
    pub(crate) on_handshake: Option<Hook<C>>,
    pub(crate) on_close: Option<CloseHook>,
    pub(crate) on_ignored: Option<IgnoredHook>,
}

impl<C: Codec + Send + 'static> ServerBuilder<C> {
    /// With another codec.
    pub fn codec<D: Codec + Send + 'static>(self, codec: D) -> ServerBuilder<D> {
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
            on_ignored: self.on_ignored,
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

    /// Called once per client when its connection closed: why, and who
    /// closed it.
    pub fn on_close(mut self, hook: impl FnMut(ClientId, &Closed) + Send + 'static) -> Self {
        self.on_close = Some(Box::new(hook));
        self
    }

    /// Called for every packet a client sent that was dropped without
    /// closing the connection: its id and why (no packet of that id is
    /// registered, or it broke its SmartPacket rules and their invalid
    /// action is `ignore`). Without this hook such packets leave no trace.
    pub fn on_ignored(
        mut self,
        hook: impl FnMut(ClientId, u32, IgnoreCause) + Send + 'static,
    ) -> Self {
        self.on_ignored = Some(Box::new(hook));
        self
    }

    /// Binds the listening socket. Fails with [`ErrorKind::InvalidInput`]
    /// when a client's transmit queue
    /// ([`ServerOptions::max_write_queue`]) cannot hold the `handshake`,
    /// which carries the whole registry: the error wraps a
    /// [`NewConnectionError::HandshakeTooLarge`] with both sizes (rather
    /// than every client being closed with `writequeuefull`).
    pub fn bind(self, addr: impl ToSocketAddrs) -> io::Result<Server<C>> {
        check_handshake_fits(&self.registry, &self.codec, &self.options)?;
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
                backend: Backend::Mio {
                    commands: tx,
                    waker,
                    loop_thread: Arc::new(std::sync::OnceLock::new()),
                    codec: std::marker::PhantomData,
                },
                codec: self.codec.clone(),
            },
            commands: rx,
            local_addr,
            parts: self,
        })
    }
}

/// Which server runs a [`ServerBuilder`] in [`ServerBuilder::spawn_on`]:
/// the same handlers, hooks, options and decisions on either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Runtime {
    /// One mio event loop on a thread of its own ([`Server`]).
    #[default]
    Mio,
    /// Tasks on a multi-thread tokio runtime of its own
    /// ([`TokioServer`](crate::tokio_server::TokioServer)) with `workers`
    /// worker threads (0: one per core).
    #[cfg(feature = "tokio")]
    Tokio {
        /// Worker threads (0: one per core).
        workers: usize,
    },
}

impl std::str::FromStr for Runtime {
    type Err = String;

    /// `mio` or `tokio` (one worker per core).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mio" => Ok(Runtime::Mio),
            #[cfg(feature = "tokio")]
            "tokio" => Ok(Runtime::Tokio { workers: 0 }),
            _ => Err(format!("unknown runtime {s:?} (mio or tokio)")),
        }
    }
}

impl<C: Codec + Send + Sync + 'static> ServerBuilder<C> {
    /// Binds `addr` and runs the server on a thread of its own, on
    /// `runtime`.
    pub fn spawn_on(
        self,
        addr: impl ToSocketAddrs,
        runtime: Runtime,
    ) -> io::Result<RunningServer<C>> {
        match runtime {
            Runtime::Mio => self.bind(addr)?.spawn(),
            #[cfg(feature = "tokio")]
            Runtime::Tokio { workers } => self.bind_tokio(addr)?.spawn_with_workers(workers),
        }
    }
}

/// Refuses options whose transmit queue cannot hold the `handshake`.
pub(crate) fn check_handshake_fits<C: Codec>(
    registry: &StdRegistry,
    codec: &C,
    options: &ServerOptions,
) -> io::Result<()> {
    let config = Config {
        version: &options.version,
        ..Config::new()
    };
    let required = server_tx_required(&config, registry, codec).map_err(|e| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("the handshake does not encode: {e}"),
        )
    })?;
    let capacity = options.client_tx_capacity();
    if capacity < required {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            NewConnectionError::HandshakeTooLarge { required, capacity },
        ));
    }
    Ok(())
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
            on_ignored: None,
        }
    }
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

pub(crate) enum Command {
    Send {
        id: ClientId,
        name: &'static str,
        body: Vec<u8>,
        reply: mpsc::Sender<Result<(), HandleError>>,
    },
    Broadcast {
        name: &'static str,
        body: Vec<u8>,
        except: Vec<ClientId>,
        reply: mpsc::Sender<Result<BroadcastReport, HandleError>>,
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
#[non_exhaustive]
pub enum HandleError {
    /// The server has stopped.
    Stopped,
    /// The message could not be encoded.
    Encode(peng3dnet_core::codec::CodecError),
    /// The packet is not in the server's registry.
    NotRegistered(&'static str),
    /// The client refused the packet: its rules, its connection type, a
    /// closed or unknown client, a message larger than its queue (one that
    /// did not fit now closed it with `writequeuefull`:
    /// [`SendError::WouldBlock`]).
    Send(SendError),
    /// Called on the server's own thread (from a handler or hook), where
    /// waiting for the event loop would wait forever: use the handler's
    /// [`Ctx`] there.
    OnServerThread,
}

impl std::fmt::Display for HandleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandleError::Stopped => f.write_str("the server has stopped"),
            HandleError::Encode(e) => write!(f, "encoding failed: {e}"),
            HandleError::NotRegistered(name) => {
                write!(f, "packet {name} is not in the server's registry")
            }
            HandleError::Send(e) => write!(f, "the client refused the packet: {e}"),
            HandleError::OnServerThread => f.write_str(
                "a ServerHandle call that waits for the server, made on the server's own thread \
                 (use the handler's Ctx)",
            ),
        }
    }
}

impl std::error::Error for HandleError {}

/// Commands a running server (the mio one or the
/// [tokio one](crate::tokio_server)) from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle<C: Codec = Postcard> {
    backend: Backend<C>,
    codec: C,
}

/// How a [`ServerHandle`] reaches its server.
#[derive(Clone)]
enum Backend<C: Codec> {
    /// Commands to the mio event loop.
    Mio {
        commands: mpsc::Sender<Command>,
        waker: Arc<Waker>,
        /// The event loop's thread, once it runs.
        loop_thread: Arc<std::sync::OnceLock<thread::ThreadId>>,
        /// The codec is the tokio variant's alone; without it `C` is unused.
        codec: std::marker::PhantomData<fn() -> C>,
    },
    /// The tokio server's shared state, locked by the call itself.
    #[cfg(feature = "tokio")]
    Tokio(Arc<crate::tokio_server::Shared<C>>),
}

impl<C: Codec> ServerHandle<C> {
    /// A handle to a tokio server.
    #[cfg(feature = "tokio")]
    pub(crate) fn tokio(shared: Arc<crate::tokio_server::Shared<C>>, codec: C) -> Self {
        ServerHandle {
            backend: Backend::Tokio(shared),
            codec,
        }
    }

    fn command(&self, c: Command) -> Result<(), HandleError> {
        match &self.backend {
            Backend::Mio {
                commands, waker, ..
            } => {
                commands.send(c).map_err(|_| HandleError::Stopped)?;
                waker.wake().map_err(|_| HandleError::Stopped)
            }
            #[cfg(feature = "tokio")]
            Backend::Tokio(shared) => shared.command(c),
        }
    }

    /// Whether this call runs where waiting for the server would wait
    /// forever: on the mio loop's thread, or inside a tokio server's handler
    /// or hook (which holds the server's lock).
    fn on_server_thread(&self) -> bool {
        match &self.backend {
            Backend::Mio { loop_thread, .. } => loop_thread.get() == Some(&thread::current().id()),
            #[cfg(feature = "tokio")]
            Backend::Tokio(_) => crate::tokio_server::in_handler(),
        }
    }

    /// Sends `make(reply)` and waits for the event loop's answer (bounded:
    /// the loop answers every command of a round; a stopped server drops
    /// the reply channel).
    fn ask<R>(
        &self,
        make: impl FnOnce(mpsc::Sender<Result<R, HandleError>>) -> Command,
    ) -> Result<R, HandleError> {
        if self.on_server_thread() {
            return Err(HandleError::OnServerThread);
        }
        let (tx, rx) = mpsc::channel();
        self.command(make(tx))?;
        rx.recv().map_err(|_| HandleError::Stopped)?
    }

    fn encode<M: serde::Serialize + ?Sized>(&self, msg: &M) -> Result<Vec<u8>, HandleError> {
        let len = self.codec.encoded_len(msg).map_err(HandleError::Encode)?;
        let mut body = vec![0u8; len];
        self.codec
            .encode(msg, &mut body)
            .map_err(HandleError::Encode)?;
        Ok(body)
    }

    /// Sends a `P` to one client and waits until the event loop queued it
    /// (a round trip through the loop, so from another thread only:
    /// [`HandleError::OnServerThread`] otherwise). The client's rules are
    /// checked there: a refusal is [`HandleError::Send`], as on every path
    /// of the core's server (a send that does not fit closes the client with
    /// `writequeuefull`).
    pub fn send<P: Packet>(&self, id: ClientId, msg: &P::Message<'_>) -> Result<(), HandleError> {
        let body = self.encode(msg)?;
        self.ask(|reply| Command::Send {
            id,
            name: P::NAME,
            body,
            reply,
        })
    }

    /// Sends a `P` to every connected client but those in `except` (encoded
    /// once) and waits for the report: how many it reached, how many refused
    /// it and the first refusal (see [`send`](Self::send)).
    pub fn broadcast<P: Packet>(
        &self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<BroadcastReport, HandleError> {
        let body = self.encode(msg)?;
        self.ask(|reply| Command::Broadcast {
            name: P::NAME,
            body,
            except: except.to_vec(),
            reply,
        })
    }

    /// Closes one client with `reason`.
    pub fn close(&self, id: ClientId, reason: CloseReason) -> Result<(), HandleError> {
        self.command(Command::Close { id, reason })
    }

    /// The server's clients and counters now.
    pub fn status(&self) -> Result<ServerStatus, HandleError> {
        if self.on_server_thread() {
            return Err(HandleError::OnServerThread);
        }
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

/// A server running on its own thread. Dropping it shuts the server down
/// and waits for its thread (at most about [`ServerOptions::shutdown_grace`]);
/// [`join`](Self::join) waits without shutting down.
pub struct RunningServer<C: Codec = Postcard> {
    pub(crate) handle: ServerHandle<C>,
    pub(crate) local_addr: SocketAddr,
    /// `None` once joined.
    pub(crate) thread: Option<thread::JoinHandle<io::Result<ServerStats>>>,
}

impl<C: Codec> RunningServer<C> {
    /// A handle to command it.
    pub fn handle(&self) -> &ServerHandle<C> {
        &self.handle
    }

    /// The address it listens on (with the port the system chose for a
    /// bind to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the server to stop (after [`ServerHandle::shutdown`]).
    pub fn join(mut self) -> io::Result<ServerStats> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("server thread panicked"))?,
            None => Err(io::Error::other("server thread already joined")),
        }
    }
}

impl<C: Codec> Drop for RunningServer<C> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            // Its result (or panic) has no one to go to.
            let _ = thread.join();
        }
    }
}

impl<C: Codec + Send + 'static> Server<C> {
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
        let local_addr = self.local_addr;
        let thread = thread::Builder::new()
            .name("peng3dnet-server".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            handle,
            local_addr,
            thread: Some(thread),
        })
    }

    /// Runs the event loop on this thread until shut down.
    pub fn run(self) -> io::Result<ServerStats> {
        // Irrefutable when the tokio feature is off.
        #[allow(irrefutable_let_patterns)]
        if let Backend::Mio { loop_thread, .. } = &self.handle.backend {
            let _ = loop_thread.set(thread::current().id());
        }
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
            on_ignored,
        } = parts;
        let ping_entries = options.ping_entries();
        let config = options.core_config(&ping_entries);
        let handlers_by_id = handlers_by_id(&registry, handlers);
        let server = CoreServer::new(
            &config,
            &registry,
            codec,
            options.core_options(),
            Slots(Vec::new()),
        );
        let mut lp = Loop {
            options: &options,
            server,
            listener,
            poll,
            commands,
            peers: Vec::new(),
            handlers: handlers_by_id,
            on_connect,
            on_handshake,
            on_close,
            on_ignored,
            clock: Clock::new(),
            scratch: Vec::new(),
            ready: VecDeque::new(),
            per_address: HashMap::new(),
        };
        lp.run()
    }
}

/// What the event loop keeps beside a client of the core server: its
/// transport and readiness.
struct Peer {
    id: ClientId,
    /// Its address, counted in `Loop::per_address` while it is here (when
    /// [`ServerOptions::max_per_address`] bounds them).
    ip: std::net::IpAddr,
    /// The client's `tracing` span (its id and address).
    span: tracing::Span,
    transport: Transport,
    /// A read is owed: reading stopped while the transmit queue drained.
    paused: bool,
    /// On the ready list: bytes may wait to be read.
    queued: bool,
}

struct Loop<'a, C: Codec> {
    options: &'a ServerOptions,
    server: CoreServer<'a, C>,
    listener: TcpListener,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    /// By slot of the client's id (the poller's token).
    peers: Vec<Option<Peer>>,
    handlers: HashMap<u32, Handler<C>>,
    on_connect: Option<Hook<C>>,
    on_handshake: Option<Hook<C>>,
    on_close: Option<CloseHook>,
    on_ignored: Option<IgnoredHook>,
    clock: Clock,
    scratch: Vec<u8>,
    /// Clients that may have bytes left to read (see `service`).
    ready: VecDeque<usize>,
    /// Clients by address, kept only when [`ServerOptions::max_per_address`]
    /// bounds them (the core decides; this counts).
    per_address: HashMap<std::net::IpAddr, usize>,
}

impl<'a, C: Codec> Loop<'a, C> {
    fn now(&self) -> peng3dnet_core::time::Instant {
        self.clock.now()
    }

    fn run(&mut self) -> io::Result<ServerStats> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.ready.is_empty() {
                self.server.poll_timeout().map(|at| {
                    Duration::from_micros(at.saturating_duration_since(self.now()).as_micros())
                })
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // One pass is one round of fair service: each client's work in
            // it is bounded (the core's `round_quantum`, `round_work`).
            self.server.begin_round();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => self.commands()?,
                    Token(key) => self.service(key, event.is_readable() || event.is_read_closed()),
                }
            }
            for key in std::mem::take(&mut self.ready) {
                if let Some(p) = self.peer_mut(key) {
                    p.queued = false;
                    self.service(key, true);
                }
            }
            let now = self.now();
            while let Some(id) = self.server.handle_timeout(now) {
                self.service(id.slot(), false);
            }
            if self.server.is_done() {
                return Ok(self.server.stats());
            }
        }
    }

    fn peer_mut(&mut self, key: usize) -> Option<&mut Peer> {
        self.peers.get_mut(key).and_then(Option::as_mut)
    }

    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if is_transient_accept_error(&e) => continue,
                // Out of file descriptors or the like: stop accepting for
                // this round rather than stopping the server.
                Err(_) => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let now = self.now();
            let from_address = self.per_address.get(&addr.ip()).copied().unwrap_or(0);
            if let Err(refused) = self.server.admit(now, from_address) {
                tracing::info!(peer = %addr, reason = %refused.reason(), "client refused");
                refuse(&mut stream, &self.server, refused);
                continue;
            }
            let mut transport = match &self.options.tls {
                Some(tls) => match Transport::tls_server(stream, tls) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::info!(peer = %addr, error = %e, "TLS setup failed");
                        continue;
                    }
                },
                None => Transport::plain(stream),
            };
            let now = self.now();
            let (rx, tx) = self.options.client_buffers();
            let id = match self.server.accept(rx, tx, now) {
                Ok(id) => id,
                Err(refused) => {
                    tracing::info!(peer = %addr, reason = %refused.reason(), "client refused");
                    refuse(transport.socket_mut(), &self.server, refused);
                    continue;
                }
            };
            let span = tracing::info_span!("peng3dnet_client", client = ?id, peer = %addr);
            tracing::debug!(parent: &span, "client accepted");
            let key = id.slot();
            if let Some(level) = transport.security_level() {
                self.server.set_security_level(id, level);
            }
            if self
                .poll
                .registry()
                .register(
                    transport.socket_mut(),
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                // No readiness for it: it cannot be served.
                self.server.handle_transport_closed(id);
                while self.server.poll(id, now).is_some() {}
                let _ = self.server.take_finished(id);
                continue;
            }
            if self.peers.len() <= key {
                self.peers.resize_with(key + 1, || None);
            }
            if self.options.max_per_address.is_some() {
                *self.per_address.entry(addr.ip()).or_insert(0) += 1;
            }
            self.peers[key] = Some(Peer {
                id,
                ip: addr.ip(),
                span,
                transport,
                paused: false,
                queued: false,
            });
            if let Some(hook) = self.on_connect.as_mut() {
                let mut broadcast = false;
                let mut ctx = Ctx {
                    id,
                    server: &mut self.server,
                    broadcast: &mut broadcast,
                };
                hook(&mut ctx);
                if broadcast {
                    self.after_broadcast();
                }
            }
            self.service(key, true);
        }
    }

    fn commands(&mut self) -> io::Result<()> {
        while let Ok(cmd) = self.commands.try_recv() {
            let now = self.now();
            match apply(&mut self.server, cmd, now) {
                Applied::Nothing => {}
                Applied::Client(id) => self.service(id.slot(), false),
                Applied::Broadcast => self.after_broadcast(),
                Applied::ShutDown => {
                    let _ = self.poll.registry().deregister(&mut self.listener);
                    let keys: Vec<usize> = self.server.clients().map(|id| id.slot()).collect();
                    for key in keys {
                        self.service(key, false);
                    }
                }
            }
        }
        Ok(())
    }

    /// A broadcast queued bytes on many clients: each is serviced on the
    /// ready list (not from inside the handler that may have asked).
    fn after_broadcast(&mut self) {
        for id in self.server.clients() {
            let key = id.slot();
            if let Some(Some(p)) = self.peers.get_mut(key) {
                if !p.queued && !self.server.poll_transmit(id).is_empty() {
                    p.queued = true;
                    self.ready.push_back(key);
                }
            }
        }
    }

    /// Moves bytes for one client: read (if allowed), handle events, write,
    /// re-arm; removes it once finished.
    fn service(&mut self, key: usize, readable: bool) {
        let Some(p) = self.peers.get(key).and_then(Option::as_ref) else {
            return;
        };
        let id = p.id;
        let now = self.now();
        let mut read_more = readable || p.paused;
        // Bounded, for fairness: a client with more to read after 64 reads,
        // or after the round's share of input and work (the core's fair
        // service), goes on the ready list and is serviced again after the
        // others.
        for _ in 0..64 {
            self.handle_events(id, now);
            self.flush(key);
            let closed = self.server.connection(id).is_none_or(|c| c.is_closed());
            if closed || !read_more {
                break;
            }
            let Some(Some(p)) = self.peers.get_mut(key) else {
                return;
            };
            if !self.server.wants_input(id) {
                p.paused = true;
                break;
            }
            let buf = self.server.receive_buffer(id);
            if buf.is_empty() {
                // This round's input share is read (then the client goes on
                // the ready list below), or events are waiting for
                // transmit room.
                p.paused = !self.server.is_deferred(id);
                break;
            }
            p.paused = false;
            match p.transport.read(buf) {
                Ok(0) => self.server.handle_transport_closed(id),
                Ok(n) => self.server.commit_received(id, n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Nothing arrived: an empty receive buffer goes back
                    // to the allocator while the client is idle.
                    self.server.commit_received(id, 0);
                    read_more = false;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.server.handle_transport_closed(id),
            }
            if let Some(level) = p.transport.security_level() {
                self.server.set_security_level(id, level);
            }
        }
        self.handle_events(id, now);
        self.flush(key);
        let Some(Some(p)) = self.peers.get_mut(key) else {
            return;
        };
        if (self.server.is_abandoned(id) || !p.transport.wants_write())
            && self.server.take_finished(id).is_some()
        {
            self.remove(key);
            return;
        }
        let closed = self.server.connection(id).is_none_or(|c| c.is_closed());
        // Edge-triggered readiness will not fire again for bytes that are
        // already there. (A paused client is read again on its next
        // writable or readable event.)
        // A client the round's budget held back is serviced again next
        // round, readiness or not.
        let deferred = self.server.is_deferred(id);
        if (deferred || (read_more && !p.paused)) && !closed && !p.queued {
            p.queued = true;
            self.ready.push_back(key);
        }
        // Interest stays readable and writable: mio's readiness is edge-
        // triggered, so a writable event comes only once the socket's send
        // buffer had filled and then drained (no system call to change the
        // interest each time the queue empties or fills).
    }

    /// The client's span (none for a client without a peer entry).
    fn span_of(&self, id: ClientId) -> Option<tracing::Id> {
        self.peers
            .get(id.slot())
            .and_then(Option::as_ref)
            .and_then(|p| p.span.id())
    }

    fn handle_events(&mut self, id: ClientId, now: peng3dnet_core::time::Instant) {
        loop {
            let Some(event) = self.server.poll(id, now) else {
                // Stopped with frames left while the transmit queue is over
                // its high water: read (and poll) again once it drained.
                let open = self.server.connection(id).is_some_and(|c| !c.is_closed());
                if open && !self.server.wants_input(id) {
                    if let Some(p) = self.peer_mut(id.slot()) {
                        p.paused = true;
                    }
                }
                return;
            };
            let mut broadcast = false;
            match event {
                Event::Packet(p) => {
                    let packet_id = p.packet_id;
                    self.scratch.clear();
                    self.scratch.extend_from_slice(p.body);
                    if let Some(handler) = self.handlers.get_mut(&packet_id) {
                        let mut ctx = Ctx {
                            id,
                            server: &mut self.server,
                            broadcast: &mut broadcast,
                        };
                        if let Err(reason) = handler(&mut ctx, &self.scratch) {
                            self.server.close(id, reason);
                        }
                    }
                }
                Event::Connected => {
                    tracing::debug!(parent: self.span_of(id), "handshake complete");
                    if let Some(hook) = self.on_handshake.as_mut() {
                        let mut ctx = Ctx {
                            id,
                            server: &mut self.server,
                            broadcast: &mut broadcast,
                        };
                        hook(&mut ctx);
                    }
                }
                Event::Closed(closed) => {
                    tracing::info!(
                        parent: self.span_of(id),
                        reason = %closed.reason,
                        initiator = ?closed.initiator,
                        "connection closed"
                    );
                    if let Some(hook) = self.on_close.as_mut() {
                        hook(id, &closed);
                    }
                }
                Event::Ignored { packet_id, cause } => {
                    tracing::debug!(parent: self.span_of(id), packet_id, %cause, "packet ignored");
                    if let Some(hook) = self.on_ignored.as_mut() {
                        hook(id, packet_id, cause);
                    }
                }
                Event::ConnTypePacket(_) | Event::Pong { .. } | Event::PingAnswered => {}
            }
            if broadcast {
                self.after_broadcast();
            }
        }
    }

    /// Writes what the client's connection queued until the socket would
    /// block, and tells the core what was taken (its write-stall timer
    /// drops a client that takes nothing).
    fn flush(&mut self, key: usize) {
        let Some(Some(p)) = self.peers.get_mut(key) else {
            return;
        };
        let id = p.id;
        let now = self.clock.now();
        let mut wrote = false;
        for _ in 0..1024 {
            let data = self.server.poll_transmit(id);
            if data.is_empty() {
                let _ = p.transport.flush();
                break;
            }
            match p.transport.write(data) {
                Ok(0) => break,
                Ok(n) => {
                    self.server.transmitted(id, n, now);
                    wrote = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.server.handle_transport_closed(id);
                    break;
                }
            }
        }
        if !wrote {
            // Nothing taken: the write-stall timer starts (if bytes wait).
            self.server.transmitted(id, 0, now);
        }
    }

    fn remove(&mut self, key: usize) {
        if let Some(mut p) = self.peers.get_mut(key).and_then(Option::take) {
            if let Some(n) = self.per_address.get_mut(&p.ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&p.ip);
                }
            }
            let _ = self.poll.registry().deregister(p.transport.socket_mut());
            p.transport.shutdown();
        }
    }
}

/// The listening socket, with a backlog for bursts of connections (the
/// default of 128 makes a burst's clients wait for SYN retries).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
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

/// Tells a refused client why, best effort, without a connection.
fn refuse<C: Codec>(
    stream: &mut mio::net::TcpStream,
    server: &CoreServer<'_, C>,
    refused: Refused,
) {
    use std::io::Write;
    let mut frame = [0u8; 128];
    if let Ok(n) = server.refusal(refused, &mut frame) {
        let _ = stream.write(&frame[..n]);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

pub(crate) fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    )
}
