//! The server on tokio (feature `tokio`, on by default): the same server as
//! [`crate::server`] (the same builder, handlers, hooks, options,
//! [`ServerHandle`] and decisions), served by tokio tasks on every worker of
//! a multi-thread runtime instead of one mio event loop, with async
//! handlers beside the synchronous ones.
//!
//! ```
//! use peng3dnet_core::registry::Packet;
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::CloseReason;
//! use peng3dnet_std::client::{ClientEvent, ClientOptions};
//! use peng3dnet_std::server::Server;
//! use peng3dnet_std::tokio_client::Client;
//! use peng3dnet_std::StdRegistry;
//!
//! struct Echo;
//! impl Packet for Echo {
//!     const NAME: &'static str = "echo:echo";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut registry = StdRegistry::new();
//!     registry.register::<Echo>()?;
//!     let server = Server::builder(registry.clone())
//!         .bind_tokio("127.0.0.1:0")?
//!         // An async handler: it may wait (here for room in the client's
//!         // queue) without holding up other clients.
//!         .on_async::<Echo, _, _>(|ctx, packet| async move {
//!             if let Ok(text) = packet.decode::<Echo>() {
//!                 let _ = ctx.send::<Echo>(&text).await;
//!             }
//!         });
//!     let addr = server.local_addr();
//!     let handle = server.handle();
//!     let serving = tokio::spawn(server.run());
//!
//!     let client = Client::connect(addr, registry, ClientOptions::default()).await?;
//!     client.wait_connected().await?;
//!     client.send::<Echo>(&"hello").await?;
//!     loop {
//!         if let ClientEvent::Packet(p) = client.recv().await? {
//!             assert_eq!(p.decode::<Echo>()?, "hello");
//!             break;
//!         }
//!     }
//!     client.close(CloseReason::UserRequest).await?;
//!     handle.shutdown();
//!     let stats = serving.await??;
//!     assert_eq!(stats.handshakes, 1);
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//! The core's sans-IO server ([`peng3dnet_core::server`]) makes every
//! decision, as for the mio server: admission, the client table, what a
//! send that does not fit does, the timers, the shutdown grace, the
//! counters. It sits behind one mutex, held only for non-blocking work on
//! bytes already in memory (never across an `.await`, never around a system
//! call). Each client has a task that reads its socket into a per-thread
//! scratch buffer, hands the bytes to the core under the lock, runs the
//! synchronous handlers there, copies out up to 64 KiB of what is queued,
//! and writes it after the lock is released; so the system calls and TLS of
//! different clients run on different workers at once. One more task sleeps
//! until the core's earliest timer.
//!
//! # Fair service
//! As on the mio server, each client's work in a round is bounded (the
//! core's `round_quantum` and `round_work`: one large packet does not hold
//! up the others). A client held back waits for the next round, which the
//! timer task starts once the tasks ready to run had their turn (it yields
//! to them first): a round is one pass of the runtime's run queue, as it is
//! one pass of the event loop on the mio server. (Rounds of a fixed 1 ms
//! were tried: they capped a pipelining client at its credit per
//! millisecond, 0.2x the mio server's throughput.)
//!
//! # Async handlers
//! [`TokioServer::on_async`] runs a future per packet. A client's packets
//! are handled one at a time, in order: while its handler runs, the
//! client's task keeps writing (so that [`AsyncCtx::send`], which waits for
//! room in the client's queue, cannot wait on itself) but takes no more of
//! its packets. A handler still running when its client's connection closes
//! is dropped. Handlers that finish without waiting run one after another
//! (up to 64) before the task turns to its socket again, so a burst of
//! small packets costs one read and one write, not one of each per packet.
//!
//! Synchronous handlers run under the core's lock, so the clients' other
//! tasks wait while one runs: give work that takes a while (parsing,
//! hashing, a database call) to an async handler, which runs outside it, on
//! any worker. With about 10 us of work a message in an async handler, 200
//! clients are served 1.9-2.1x faster on 2 workers than on 1 (the
//! benchmark `tokio`, part 3, on 2 cores).
//!
//! # Other byte streams
//! Besides its TCP listener, the server serves any connected
//! `AsyncRead + AsyncWrite` stream given to its [`StreamAcceptor`]
//! ([`TokioServer::acceptor`]): a Unix socket, a `tokio::io::duplex` end
//! ([`StreamAcceptor::connect_memory`] makes the pair and the client), a
//! transport of your own. [`ServerBuilder::build_tokio`] makes a server with
//! no listener at all. Each stream is a client as a TCP one is: the same
//! admission, rules, handlers, TLS and timers (a stream without an address
//! is not counted by the per-address limit). Every client's task polls its
//! stream (`poll_read`, `poll_write`, `poll_flush`, `poll_shutdown` at the
//! end) rather than waiting for TCP readiness, as the tokio client does.
//!
//! # Memory
//! The server's settings and registry are kept for the life of the process
//! (a few KiB per server started: the core borrows them from every task).
//! An idle client holds no buffer; a busy one its frames, bounded as on the
//! mio server.

use crate::client::{ClientError, ClientOptions};
use crate::poll_stream::{ByteStream, PollStream};
use crate::server::{
    apply, check_handshake_fits, handlers_by_id, is_transient_accept_error, listen, Applied,
    BroadcastReport, ClientId, CloseHook, Command, CoreServer, Ctx, HandleError, Handler, Hook,
    IgnoredHook, RunningServer, ServerBuilder, ServerHandle, ServerOptions, ServerStats, Slots,
};
use crate::tokio_client::{Client as TokioClient, SHUTDOWN_GRACE};
use crate::transport::Transport;
use crate::{Clock, StdRegistry};
use peng3dnet_core::buffer::Buffer;
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::connection::{Config, Incoming, SendError};
use peng3dnet_core::registry::Packet;
use peng3dnet_core::server::Refused;
use peng3dnet_core::wire::FRAME_OVERHEAD;
use peng3dnet_core::{CloseReason, Event, Mode, SecurityLevel, State};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

/// The most bytes a client's task moves per read or write (and holds in
/// its thread's scratch buffer).
const CHUNK: usize = 64 * 1024;

/// Rounds of a client's task without waiting before it yields to the
/// runtime's other tasks.
const ROUNDS_PER_TURN: usize = 16;

/// The most async handlers a client's task runs one after another when each
/// finishes at once, before it turns to its socket again.
const HANDLERS_PER_STEP: usize = 64;

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An async handler: validates the packet's body and makes its future.
type AsyncHandler<C> =
    Box<dyn Fn(AsyncCtx<C>, Incoming<Vec<u8>, C>) -> Result<BoxFuture, CloseReason> + Send + Sync>;

thread_local! {
    /// This thread runs a synchronous handler or hook of a tokio server (it
    /// holds the server's lock).
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    /// Bytes read from a socket, on their way to the core.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Bytes copied out of the core, on their way to a socket.
    static WRITE_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread runs a tokio server's synchronous handler or hook.
pub(crate) fn in_handler() -> bool {
    IN_HANDLER.with(Cell::get)
}

/// Runs `f` marked as a handler (see [`in_handler`]).
fn as_handler<R>(f: impl FnOnce() -> R) -> R {
    IN_HANDLER.with(|h| h.set(true));
    let r = f();
    IN_HANDLER.with(|h| h.set(false));
    r
}

impl<C: Codec + Send + 'static> ServerBuilder<C> {
    /// Binds the listening socket for the [tokio server](crate::tokio_server)
    /// (a bind needs no runtime; [`TokioServer::run`] does). Fails like
    /// [`bind`](ServerBuilder::bind) when a client's transmit queue cannot
    /// hold the `handshake`.
    pub fn bind_tokio(self, addr: impl ToSocketAddrs) -> io::Result<TokioServer<C>> {
        let mut server = self.build_tokio()?;
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no address to bind"))?;
        let listener: std::net::TcpListener = listen(addr)?.into();
        server.local_addr = listener.local_addr()?;
        server.listener = Some(listener);
        Ok(server)
    }

    /// The [tokio server](crate::tokio_server) without a listening socket:
    /// it serves the byte streams given to its
    /// [`StreamAcceptor`](TokioServer::acceptor) (in-memory pairs, Unix
    /// sockets, a transport of your own). Fails like
    /// [`bind_tokio`](Self::bind_tokio) when a client's transmit queue
    /// cannot hold the `handshake`.
    pub fn build_tokio(self) -> io::Result<TokioServer<C>> {
        check_handshake_fits(&self.registry, &self.codec, &self.options)?;
        let ServerBuilder {
            registry,
            codec,
            options,
            handlers,
            on_connect,
            on_handshake,
            on_close,
            on_ignored,
        } = self;
        // The core borrows these from every task for as long as any runs.
        let options: &'static ServerOptions = Box::leak(Box::new(options));
        let ping_entries: &'static [(&'static str, &'static str)] =
            Box::leak(options.ping_entries().into_boxed_slice());
        let config: &'static Config<'static> =
            Box::leak(Box::new(options.core_config(ping_entries)));
        let registry: &'static StdRegistry = Box::leak(Box::new(registry));
        let handlers = handlers_by_id(registry, handlers);
        let mut server = CoreServer::new(
            config,
            registry,
            codec.clone(),
            options.core_options(),
            Slots(Vec::new()),
        );
        // Rounds of fair service from the start (the timer task starts the
        // next ones).
        server.begin_round();
        let shared = Arc::new(Shared {
            state: Mutex::new(Inner {
                server,
                peers: Vec::new(),
                per_address: HashMap::new(),
                hooks: Hooks {
                    handlers,
                    on_connect,
                    on_handshake,
                    on_close,
                    on_ignored,
                },
                scratch: Vec::new(),
                armed: None,
                round_waiters: Vec::new(),
            }),
            options,
            clock: Clock::new(),
            timer: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            done: Notify::new(),
        });
        let (streams_tx, streams) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        Ok(TokioServer {
            listener: None,
            local_addr: UNBOUND,
            handle: ServerHandle::tokio(Arc::clone(&shared), codec),
            shared,
            async_handlers: HashMap::new(),
            streams,
            acceptor: StreamAcceptor {
                streams: streams_tx,
            },
        })
    }
}

/// A server bound for tokio, ready to [`run`](Self::run); see the
/// [module docs](self).
pub struct TokioServer<C: Codec = Postcard> {
    /// None: built without one ([`ServerBuilder::build_tokio`]).
    listener: Option<std::net::TcpListener>,
    local_addr: SocketAddr,
    shared: Arc<Shared<C>>,
    handle: ServerHandle<C>,
    async_handlers: HashMap<u32, AsyncHandler<C>>,
    /// The streams given to the acceptor, for the run loop.
    streams: tokio::sync::mpsc::Receiver<GivenStream>,
    acceptor: StreamAcceptor,
}

/// The address a server without a listener reports
/// ([`TokioServer::local_addr`], [`RunningServer::local_addr`]): `0.0.0.0:0`,
/// which no client can connect to.
pub const UNBOUND: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// How many streams given to a [`StreamAcceptor`] wait for the run loop
/// before [`StreamAcceptor::serve`] waits for room.
pub const STREAM_QUEUE: usize = 16;

/// A stream given to the server, and its peer's address if it has one.
type GivenStream = (Box<dyn ByteStream>, Option<SocketAddr>);

/// Gives a [`TokioServer`] connections over byte streams other than its
/// TCP listener's: any `AsyncRead + AsyncWrite` that is already connected
/// (a `tokio::io::duplex` end, a Unix socket, a user's transport). Each is
/// served as a TCP client is: the same admission, rules, handlers, TLS if
/// the server has it, timers. Cheap to clone; usable from any task.
#[derive(Clone)]
pub struct StreamAcceptor {
    streams: tokio::sync::mpsc::Sender<GivenStream>,
}

impl std::fmt::Debug for StreamAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamAcceptor").finish_non_exhaustive()
    }
}

impl StreamAcceptor {
    /// Hands `stream` to the server, which serves it as a client (once it
    /// runs). `peer` is the peer's address if it has one: the server's
    /// per-address limit counts it ([`ServerOptions::max_per_address`]);
    /// streams without one are not counted by address. Waits while
    /// [`STREAM_QUEUE`] streams wait for the server; fails with
    /// [`HandleError::Stopped`] once the server's run ended (or it was
    /// dropped).
    pub async fn serve<S>(&self, stream: S, peer: Option<SocketAddr>) -> Result<(), HandleError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        self.streams
            .send((Box::new(stream), peer))
            .await
            .map_err(|_| HandleError::Stopped)
    }

    /// A [tokio client](crate::tokio_client::Client) connected to the
    /// server through memory (a `tokio::io::duplex` pair of
    /// [`MEMORY_PIPE`] bytes each way): no socket, no port. The client
    /// speaks TLS if `options` say so (and the server must then too).
    pub async fn connect_memory(
        &self,
        registry: StdRegistry,
        options: ClientOptions,
    ) -> Result<TokioClient, ClientError> {
        self.connect_memory_with(registry, Postcard, options).await
    }

    /// [`connect_memory`](Self::connect_memory) with the client's codec.
    pub async fn connect_memory_with<D: Codec + Send + 'static>(
        &self,
        registry: StdRegistry,
        codec: D,
        options: ClientOptions,
    ) -> Result<TokioClient<D>, ClientError> {
        let (ours, theirs) = tokio::io::duplex(MEMORY_PIPE);
        self.serve(theirs, None)
            .await
            .map_err(|e| ClientError::Io(io::Error::new(ErrorKind::NotConnected, e)))?;
        TokioClient::over_with(ours, registry, codec, options)
    }
}

/// The bytes each direction of a [`StreamAcceptor::connect_memory`] pipe
/// holds before a write waits for the reader (64 KiB, about what a
/// loopback socket buffers).
pub const MEMORY_PIPE: usize = 64 * 1024;

impl<C: Codec + Send + Sync + 'static> TokioServer<C> {
    /// The bound address. A server built without a listener
    /// ([`ServerBuilder::build_tokio`]) has none: it reports [`UNBOUND`].
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Gives the server connections over other byte streams than TCP;
    /// see [`StreamAcceptor`].
    pub fn acceptor(&self) -> StreamAcceptor {
        self.acceptor.clone()
    }

    /// A handle to command the server once it runs.
    pub fn handle(&self) -> ServerHandle<C> {
        self.handle.clone()
    }

    /// Runs `handler` with every `P` a client sends that passed its rules,
    /// as a future of its own (see [Async handlers](self#async-handlers)).
    /// The packet's body was checked to decode as `P` (one that does not
    /// closes the client with `malformedpacket`): `packet.decode::<P>()`
    /// gives the message. It replaces a synchronous handler of `P`.
    ///
    /// # Panics
    /// If `P` is not registered in the server's registry.
    pub fn on_async<P, F, Fut>(mut self, handler: F) -> Self
    where
        P: Packet + 'static,
        F: Fn(AsyncCtx<C>, Incoming<Vec<u8>, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut inner = self.shared.lock();
        let id = match inner.server.registry().by_name(P::NAME) {
            Some(e) => e.id,
            None => panic!("register {} before adding its handler", P::NAME),
        };
        inner.hooks.handlers.remove(&id);
        drop(inner);
        self.async_handlers.insert(
            id,
            Box::new(move |ctx, packet| {
                if packet.decode::<P>().is_err() {
                    return Err(CloseReason::MalformedPacket);
                }
                Ok(Box::pin(handler(ctx, packet)))
            }),
        );
        self
    }

    /// Runs the server on the current tokio runtime until it is shut down
    /// ([`ServerHandle::shutdown`]) and every client is gone; returns the
    /// counters. Clients are served by tasks of their own (on every worker
    /// of a multi-thread runtime). Dropping the future stops the server at
    /// once: its tasks are aborted and the clients' sockets closed.
    pub async fn run(self) -> io::Result<ServerStats> {
        let TokioServer {
            listener,
            shared,
            async_handlers,
            mut streams,
            acceptor,
            ..
        } = self;
        // The server's own copy: the channel stays open while it runs.
        let _acceptor = acceptor;
        // However the run ends (its future dropped too), handles say so.
        struct Stopped<'a>(&'a AtomicBool);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _stopped = Stopped(&shared.stopped);
        let listener = match listener {
            Some(l) => {
                l.set_nonblocking(true)?;
                Some(tokio::net::TcpListener::from_std(l)?)
            }
            None => None,
        };
        let async_handlers = Arc::new(async_handlers);
        let mut tasks = JoinSet::new();
        tasks.spawn(timers(Arc::clone(&shared)));
        loop {
            if shared.stopping.load(Ordering::Acquire) {
                break;
            }
            tokio::select! {
                accepted = accept_tcp(listener.as_ref()) => match accepted {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        let stream = Box::new(stream);
                        if let Some((task, span)) = accept(&shared, &async_handlers, stream, Some(addr)) {
                            tasks.spawn(task.instrument(span));
                        }
                    }
                    Err(e) if is_transient_accept_error(&e) => {}
                    // Out of file descriptors or the like: stop accepting
                    // for a moment rather than stopping the server.
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                },
                Some((stream, addr)) = streams.recv() => {
                    if let Some((task, span)) = accept(&shared, &async_handlers, stream, addr) {
                        tasks.spawn(task.instrument(span));
                    }
                }
                () = shared.stop.notified() => {}
                Some(_) = tasks.join_next(), if tasks.len() > 1 => {}
            }
        }
        // Shut down: no more accepts; wait until every client is gone.
        drop(listener);
        streams.close();
        loop {
            let done = shared.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if shared.lock().server.is_done() {
                break;
            }
            tokio::select! {
                () = done => {}
                Some(_) = tasks.join_next(), if tasks.len() > 1 => {}
            }
        }
        tasks.shutdown().await;
        let stats = shared.lock().server.stats();
        Ok(stats)
    }

    /// Runs the server on a new thread with a multi-thread runtime of its
    /// own (as many workers as the machine has cores), like the mio
    /// server's [`spawn`](crate::server::Server::spawn).
    pub fn spawn(self) -> io::Result<RunningServer<C>> {
        self.spawn_with_workers(0)
    }

    /// [`spawn`](Self::spawn) with `workers` worker threads (0: one per
    /// core).
    pub fn spawn_with_workers(self, workers: usize) -> io::Result<RunningServer<C>> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            builder.worker_threads(workers);
        }
        let runtime = builder
            .thread_name("peng3dnet-tokio")
            .enable_all()
            .build()?;
        let handle = self.handle();
        let local_addr = self.local_addr;
        let thread = std::thread::Builder::new()
            .name("peng3dnet-server".into())
            .spawn(move || runtime.block_on(self.run()))?;
        Ok(RunningServer {
            handle,
            local_addr,
            thread: Some(thread),
        })
    }
}

/// The synchronous handlers and hooks, run under the server's lock.
struct Hooks<C: Codec> {
    handlers: HashMap<u32, Handler<C>>,
    on_connect: Option<Hook<C>>,
    on_handshake: Option<Hook<C>>,
    on_close: Option<CloseHook>,
    on_ignored: Option<IgnoredHook>,
}

/// What the tasks of one server share.
pub(crate) struct Shared<C: Codec> {
    state: Mutex<Inner<C>>,
    options: &'static ServerOptions,
    clock: Clock,
    /// The earliest timer moved earlier than the timer task sleeps.
    timer: Notify,
    /// A shutdown was asked for: the accept loop stops.
    stop: Notify,
    stopping: AtomicBool,
    /// The server's run ended: handles say [`HandleError::Stopped`].
    stopped: AtomicBool,
    /// A client left: the run loop looks whether all are gone.
    done: Notify,
}

struct Inner<C: Codec> {
    server: CoreServer<'static, C>,
    /// By slot of the client's id.
    peers: Vec<Option<Arc<Peer>>>,
    /// Clients by address, kept only when
    /// [`ServerOptions::max_per_address`] bounds them.
    per_address: HashMap<IpAddr, usize>,
    hooks: Hooks<C>,
    /// A packet's body, copied out for its handler.
    scratch: Vec<u8>,
    /// The deadline the timer task sleeps until.
    armed: Option<peng3dnet_core::time::Instant>,
    /// Clients the round's budget held back: their tasks are woken when the
    /// timer task starts the next round.
    round_waiters: Vec<ClientId>,
}

/// What the server keeps of a client beside the core's state: how to wake
/// its task.
struct Peer {
    id: ClientId,
    /// Its address, if its stream has one.
    ip: Option<IpAddr>,
    span: tracing::Span,
    /// Something for the task to do: bytes queued by another task, a timer
    /// fired, a close.
    wake: Notify,
    /// The task wrote, or the client closed: senders waiting for room look
    /// again.
    room: Notify,
    /// It is on [`Inner::round_waiters`] (under the lock).
    waits_for_round: AtomicBool,
}

/// The server's state, locked; dropping it tells the timer task when the
/// earliest deadline moved earlier.
struct Locked<'a, C: Codec> {
    guard: MutexGuard<'a, Inner<C>>,
    shared: &'a Shared<C>,
}

impl<C: Codec> std::ops::Deref for Locked<'_, C> {
    type Target = Inner<C>;
    fn deref(&self) -> &Inner<C> {
        &self.guard
    }
}

impl<C: Codec> std::ops::DerefMut for Locked<'_, C> {
    fn deref_mut(&mut self) -> &mut Inner<C> {
        &mut self.guard
    }
}

impl<C: Codec> Drop for Locked<'_, C> {
    fn drop(&mut self) {
        let next = self.guard.server.poll_timeout();
        if let Some(at) = next {
            if self.guard.armed.is_none_or(|armed| at < armed) {
                self.guard.armed = Some(at);
                self.shared.timer.notify_one();
            }
        }
    }
}

impl<C: Codec> Shared<C> {
    fn lock(&self) -> Locked<'_, C> {
        // A panic while the lock was held (in a handler) leaves the core
        // as it was between two calls.
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Locked {
            guard,
            shared: self,
        }
    }

    /// Carries out a [`ServerHandle`] command at once, under the lock.
    pub(crate) fn command(&self, c: Command) -> Result<(), HandleError> {
        if in_handler() {
            return Err(HandleError::OnServerThread);
        }
        if self.stopped.load(Ordering::Acquire) {
            return Err(HandleError::Stopped);
        }
        let mut inner = self.lock();
        let now = self.clock.now();
        match apply(&mut inner.server, c, now) {
            Applied::Nothing => {}
            Applied::Client(id) => {
                // Its write-stall timer starts now (a send carries no time).
                inner.server.transmitted(id, 0, now);
                inner.wake(id);
            }
            Applied::Broadcast => inner.after_broadcast(now),
            Applied::ShutDown => {
                for p in inner.peers.iter().flatten() {
                    p.wake.notify_one();
                }
                self.stopping.store(true, Ordering::Release);
                self.stop.notify_one();
                self.done.notify_one();
            }
        }
        Ok(())
    }
}

impl<C: Codec> Inner<C> {
    fn peer(&self, id: ClientId) -> Option<&Arc<Peer>> {
        self.peers
            .get(id.slot())
            .and_then(Option::as_ref)
            .filter(|p| p.id == id)
    }

    /// Wakes the task of client `id`.
    fn wake(&self, id: ClientId) {
        if let Some(p) = self.peer(id) {
            p.wake.notify_one();
        }
    }

    /// A broadcast queued bytes on many clients: their write-stall timers
    /// start now, and their tasks write.
    fn after_broadcast(&mut self, now: peng3dnet_core::time::Instant) {
        let ids: Vec<ClientId> = self.server.clients().collect();
        for id in ids {
            if !self.server.poll_transmit(id).is_empty() {
                self.server.transmitted(id, 0, now);
                self.wake(id);
            }
        }
    }

    /// Runs `hook` (a synchronous hook of `self.hooks`) for client `id`.
    fn run_hook(
        &mut self,
        id: ClientId,
        now: peng3dnet_core::time::Instant,
        pick: impl FnOnce(&mut Hooks<C>) -> Option<&mut Hook<C>>,
    ) {
        let mut broadcast = false;
        if let Some(hook) = pick(&mut self.hooks) {
            let mut ctx = Ctx {
                id,
                server: &mut self.server,
                broadcast: &mut broadcast,
            };
            as_handler(|| hook(&mut ctx));
        }
        if broadcast {
            self.after_broadcast(now);
        }
    }

    /// Hands client `id`'s events to the handlers and hooks until there are
    /// none (or the client's queue asks to write first); stops at a packet
    /// that has an async handler and returns it.
    fn dispatch(
        &mut self,
        id: ClientId,
        now: peng3dnet_core::time::Instant,
        span: &tracing::Span,
        is_async: impl Fn(u32) -> bool,
    ) -> Option<Incoming<Vec<u8>, C>> {
        loop {
            let event = self.server.poll(id, now)?;
            match event {
                Event::Packet(p) => {
                    let packet_id = p.packet_id;
                    if is_async(packet_id) {
                        let body = p.body.to_vec();
                        return Some(p.with_body(body));
                    }
                    self.scratch.clear();
                    self.scratch.extend_from_slice(p.body);
                    let mut broadcast = false;
                    if let Some(handler) = self.hooks.handlers.get_mut(&packet_id) {
                        let mut ctx = Ctx {
                            id,
                            server: &mut self.server,
                            broadcast: &mut broadcast,
                        };
                        if let Err(reason) = as_handler(|| handler(&mut ctx, &self.scratch)) {
                            self.server.close(id, reason);
                        }
                    }
                    if broadcast {
                        self.after_broadcast(now);
                    }
                }
                Event::Connected => {
                    tracing::debug!(parent: span, "handshake complete");
                    self.run_hook(id, now, |h| h.on_handshake.as_mut());
                }
                Event::Closed(closed) => {
                    tracing::info!(
                        parent: span,
                        reason = %closed.reason,
                        initiator = ?closed.initiator,
                        "connection closed"
                    );
                    if let Some(hook) = self.hooks.on_close.as_mut() {
                        as_handler(|| hook(id, &closed));
                    }
                }
                Event::Ignored { packet_id, cause } => {
                    tracing::debug!(parent: span, packet_id, %cause, "packet ignored");
                    if let Some(hook) = self.hooks.on_ignored.as_mut() {
                        as_handler(|| hook(id, packet_id, cause));
                    }
                }
                Event::ConnTypePacket(_) | Event::Pong { .. } | Event::PingAnswered => {}
            }
        }
    }

    /// Removes client `id`'s peer (its task ends).
    fn remove(&mut self, id: ClientId) {
        if let Some(p) = self.peers.get_mut(id.slot()).and_then(Option::take) {
            if let Some(ip) = p.ip {
                if let Some(n) = self.per_address.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.per_address.remove(&ip);
                    }
                }
            }
            p.room.notify_waiters();
        }
    }
}

/// Admits a client and makes its task (with its span), or refuses it.
fn accept<C: Codec + Send + Sync + 'static>(
    shared: &Arc<Shared<C>>,
    async_handlers: &Arc<HashMap<u32, AsyncHandler<C>>>,
    stream: Box<dyn ByteStream>,
    addr: Option<SocketAddr>,
) -> Option<(impl Future<Output = ()> + Send + 'static, tracing::Span)> {
    let options = shared.options;
    let mut inner = shared.lock();
    let now = shared.clock.now();
    let ip = addr.map(|a| a.ip());
    let peer_name = PeerName(addr);
    let from_address = ip
        .and_then(|ip| inner.per_address.get(&ip).copied())
        .unwrap_or(0);
    // Refused: the reason, written without waiting (what the stream takes
    // now)
    // (below TLS, as the mio server does), and the stream dropped.
    let refused = |inner: &Inner<C>, stream: &mut PollStream, refused: Refused| {
        tracing::info!(peer = %peer_name, reason = %refused.reason(), "client refused");
        let mut frame = [0u8; 128];
        if let Ok(n) = inner.server.refusal(refused, &mut frame) {
            let _ = io::Write::write(stream, &frame[..n]);
        }
        None
    };
    let mut socket = PollStream::new(stream);
    if let Err(r) = inner.server.admit(now, from_address) {
        return refused(&inner, &mut socket, r);
    }
    let mut transport = match &options.tls {
        Some(tls) => match Transport::tls_server(socket, tls) {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(peer = %peer_name, error = %e, "TLS setup failed");
                return None;
            }
        },
        None => Transport::plain(socket),
    };
    let (rx, tx) = options.client_buffers();
    let id = match inner.server.accept(rx, tx, now) {
        Ok(id) => id,
        Err(r) => return refused(&inner, transport.socket_mut(), r),
    };
    if let Some(level) = transport.security_level() {
        inner.server.set_security_level(id, level);
    }
    let span = tracing::info_span!("peng3dnet_client", client = ?id, peer = %peer_name);
    tracing::debug!(parent: &span, "client accepted");
    let peer = Arc::new(Peer {
        id,
        ip,
        span: span.clone(),
        wake: Notify::new(),
        room: Notify::new(),
        waits_for_round: AtomicBool::new(false),
    });
    let key = id.slot();
    if inner.peers.len() <= key {
        inner.peers.resize_with(key + 1, || None);
    }
    inner.peers[key] = Some(Arc::clone(&peer));
    if let (Some(_), Some(ip)) = (options.max_per_address, ip) {
        *inner.per_address.entry(ip).or_insert(0) += 1;
    }
    inner.run_hook(id, now, |h| h.on_connect.as_mut());
    inner.server.transmitted(id, 0, now);
    drop(inner);
    let task = client_task(
        Arc::clone(shared),
        Arc::clone(async_handlers),
        peer,
        transport,
    );
    Some((task, span))
}

/// Awaits the handler future in `task` and clears it once done (dropped
/// before it is done, the future stays for the next call).
async fn finish_handler(task: &mut Option<BoxFuture>) {
    if let Some(f) = task.as_mut() {
        f.await;
    }
    *task = None;
}

/// A peer's address for the logs ("byte stream" for one without).
struct PeerName(Option<SocketAddr>);

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("byte stream"),
        }
    }
}

/// The listener's next client (never, without a listener).
async fn accept_tcp(
    listener: Option<&tokio::net::TcpListener>,
) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// What a client's task does after a step.
enum Step {
    /// The client is gone: end the task.
    Finished,
    /// Work was done: step again at once.
    Progress,
    /// Nothing to do until the socket is ready (for reading, for writing)
    /// or the task is woken.
    Wait { read: bool, write: bool },
}

/// A client's task's own state: its transport and what is in flight.
struct ClientIo {
    id: ClientId,
    transport: Transport<PollStream>,
    /// The async handler running, if any.
    handler: Option<BoxFuture>,
    /// Bytes the last write took, to report under the next lock.
    written: usize,
    /// Bytes read that the core did not take yet (it had no room).
    carry: Vec<u8>,
    /// The transport ended or failed; `told`: the core knows.
    eof: bool,
    told: bool,
    /// The core takes input (it says so after each step).
    may_read: bool,
}

impl ClientIo {
    /// Reads what there is room for (outside the lock), hands it to the
    /// core with the events it makes (under the lock), and writes what is
    /// queued (outside it again).
    fn step<C: Codec + Send + Sync + 'static>(
        &mut self,
        shared: &Arc<Shared<C>>,
        async_handlers: &HashMap<u32, AsyncHandler<C>>,
        peer: &Arc<Peer>,
    ) -> Step {
        let id = self.id;
        let mut progress = false;
        let mut inner = READ_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read = 0;
            if !self.eof && self.may_read && self.carry.is_empty() {
                scratch.resize(CHUNK, 0);
                match self.transport.read(&mut scratch) {
                    Ok(0) => self.eof = true,
                    Ok(n) => read = n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "transport failed");
                        self.eof = true;
                    }
                }
            }
            let mut inner = shared.lock();
            if read > 0 {
                let n = inner.server.handle_input(id, &scratch[..read]);
                self.carry.extend_from_slice(&scratch[n..read]);
                progress = true;
            } else if !self.carry.is_empty() {
                let n = inner.server.handle_input(id, &self.carry);
                self.carry.drain(..n);
                progress |= n > 0;
            }
            inner
        });
        let now = shared.clock.now();
        inner.server.transmitted(id, self.written, now);
        self.written = 0;
        if self.eof && !self.told {
            self.told = true;
            inner.server.handle_transport_closed(id);
        }
        if let Some(level) = self.transport.security_level() {
            inner.server.set_security_level(id, level);
        }
        if inner.server.connection(id).is_none_or(|c| c.is_closed()) {
            // Its handler has no client left to serve.
            self.handler = None;
        }
        if self.handler.is_none() {
            progress |= self.start_handler(&mut inner, now, shared, async_handlers, peer);
        }
        if inner.server.is_deferred(id) && !peer.waits_for_round.swap(true, Ordering::Relaxed) {
            // Held back by the round's budget: the next round wakes it.
            if inner.round_waiters.is_empty() {
                shared.timer.notify_one();
            }
            inner.round_waiters.push(id);
        }
        // Finished: everything written (or given up).
        if (inner.server.is_abandoned(id) || !self.transport.wants_write())
            && inner.server.take_finished(id).is_some()
        {
            inner.remove(id);
            let done = inner.server.is_done();
            drop(inner);
            if done {
                shared.done.notify_one();
            }
            return Step::Finished;
        }
        self.may_read = inner.server.wants_input(id);
        // Copy out what is queued and write it outside the lock.
        let mut blocked = false;
        WRITE_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            let mut more = false;
            if !self.eof {
                let data = inner.server.poll_transmit(id);
                let n = data.len().min(CHUNK);
                scratch.extend_from_slice(&data[..n]);
                more = data.len() > n;
            }
            drop(inner);
            if scratch.is_empty() {
                if self.transport.wants_write() && self.transport.flush().is_err() {
                    self.eof = true;
                }
                return;
            }
            match self.transport.write(&scratch) {
                Ok(n) => {
                    self.written = n;
                    blocked = n < scratch.len();
                    progress |= n > 0 && !blocked && more;
                    if n > 0 {
                        peer.room.notify_waiters();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => blocked = true,
                Err(e) if e.kind() == ErrorKind::Interrupted => progress = true,
                Err(e) => {
                    tracing::debug!(error = %e, "transport failed");
                    self.eof = true;
                }
            }
            if scratch.capacity() > 2 * CHUNK {
                *scratch = Vec::new();
            }
        });
        if self.eof && !self.told || self.written > 0 && !blocked {
            // Report it (and look for more) at once.
            progress = true;
        }
        if progress {
            return Step::Progress;
        }
        Step::Wait {
            read: !self.eof && self.may_read && self.carry.is_empty(),
            write: !self.eof && (blocked || self.transport.wants_write()),
        }
    }
}

impl ClientIo {
    /// Runs the client's events through the handlers (under the lock held
    /// by `inner`) up to the next packet with an async handler, whose
    /// future it keeps; whether it started one.
    fn start_handler<C: Codec + Send + Sync + 'static>(
        &mut self,
        inner: &mut Locked<'_, C>,
        now: peng3dnet_core::time::Instant,
        shared: &Arc<Shared<C>>,
        async_handlers: &HashMap<u32, AsyncHandler<C>>,
        peer: &Arc<Peer>,
    ) -> bool {
        let id = self.id;
        let started = match inner.dispatch(id, now, &peer.span, |p| async_handlers.contains_key(&p))
        {
            Some(packet) => {
                let ctx = AsyncCtx {
                    id,
                    shared: Arc::clone(shared),
                    peer: Arc::clone(peer),
                };
                match async_handlers[&packet.packet_id](ctx, packet) {
                    Ok(f) => self.handler = Some(f),
                    Err(reason) => {
                        inner.server.close(id, reason);
                        while inner.dispatch(id, now, &peer.span, |_| false).is_some() {}
                    }
                }
                true
            }
            None => false,
        };
        inner.server.transmitted(id, 0, now);
        started
    }

    /// Polls the async handler running, and while each one finishes at
    /// once, starts the next (at most [`HANDLERS_PER_STEP`]): a client's
    /// packets that its handlers answer without waiting are handled in one
    /// go, not one per pass over its socket.
    fn run_ready_handlers<C: Codec + Send + Sync + 'static>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        shared: &Arc<Shared<C>>,
        async_handlers: &HashMap<u32, AsyncHandler<C>>,
        peer: &Arc<Peer>,
    ) {
        for _ in 0..HANDLERS_PER_STEP {
            let Some(handler) = self.handler.as_mut() else {
                return;
            };
            if handler.as_mut().poll(cx).is_pending() {
                return;
            }
            self.handler = None;
            let mut inner = shared.lock();
            if inner
                .server
                .connection(self.id)
                .is_none_or(|c| c.is_closed())
            {
                return;
            }
            let now = shared.clock.now();
            if !self.start_handler(&mut inner, now, shared, async_handlers, peer) {
                return;
            }
        }
    }
}

/// The task of one client: moves bytes between its socket and the core,
/// and runs its async handlers one at a time.
async fn client_task<C: Codec + Send + Sync + 'static>(
    shared: Arc<Shared<C>>,
    async_handlers: Arc<HashMap<u32, AsyncHandler<C>>>,
    peer: Arc<Peer>,
    transport: Transport<PollStream>,
) {
    let mut io = ClientIo {
        id: peer.id,
        transport,
        handler: None,
        written: 0,
        carry: Vec::new(),
        eof: false,
        told: false,
        may_read: true,
    };
    let mut rounds = 0usize;
    loop {
        // The stream wakes this task (what `step` polled it with).
        poll_fn(|cx| {
            io.transport.socket_mut().set_waker(cx.waker());
            Poll::Ready(())
        })
        .await;
        if io.handler.is_some() {
            poll_fn(|cx| {
                io.run_ready_handlers(cx, &shared, &async_handlers, &peer);
                Poll::Ready(())
            })
            .await;
        }
        let (read, write) = match io.step(&shared, &async_handlers, &peer) {
            Step::Finished => break,
            Step::Progress => {
                rounds += 1;
                if rounds.is_multiple_of(ROUNDS_PER_TURN) {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            Step::Wait { read, write } => (read, write),
        };
        // The stream wakes the task when what `step` found not ready
        // (a read, a write) is; `woken` ends at the first wake-up.
        let mut polled = false;
        let woken = poll_fn(|_| match std::mem::replace(&mut polled, true) {
            false => Poll::Pending,
            true => Poll::Ready(()),
        });
        tokio::select! {
            () = woken, if read || write => {}
            () = peer.wake.notified() => {}
            () = finish_handler(&mut io.handler), if io.handler.is_some() => {}
        }
    }
    // The peer sees TLS's close_notify (what the stream takes) and our end
    // of stream.
    io.transport.close_notify();
    let shutdown = poll_fn(|cx| io.transport.socket_mut().poll_shutdown(cx));
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, shutdown).await;
}

/// The timer task: sleeps until the core's earliest deadline and fires it.
async fn timers<C: Codec>(shared: Arc<Shared<C>>) {
    loop {
        let (next, round_due) = {
            let mut inner = shared.lock();
            if inner.server.is_done() {
                return;
            }
            let next = inner.server.poll_timeout();
            inner.armed = next;
            (next, !inner.round_waiters.is_empty())
        };
        let sleep = next.map(|at| {
            let now = shared.clock.now();
            tokio::time::Instant::now()
                + std::time::Duration::from_micros(at.saturating_duration_since(now).as_micros())
        });
        tokio::select! {
            // Once the tasks ready to run now had their turn.
            () = tokio::task::yield_now(), if round_due => {
                // The next round: the clients held back go on.
                let mut inner = shared.lock();
                inner.server.begin_round();
                for id in std::mem::take(&mut inner.round_waiters) {
                    if let Some(p) = inner.peer(id) {
                        p.waits_for_round.store(false, Ordering::Relaxed);
                        p.wake.notify_one();
                    }
                }
            }
            () = tokio::time::sleep_until(sleep.unwrap_or_else(tokio::time::Instant::now)),
                if sleep.is_some() =>
            {
                let mut inner = shared.lock();
                let now = shared.clock.now();
                while let Some(id) = inner.server.handle_timeout(now) {
                    inner.wake(id);
                }
                inner.armed = None;
            }
            () = shared.timer.notified() => {}
        }
    }
}

/// What an async handler may do with the client whose packet it handles,
/// from any task, for as long as it likes. Sends go through the core
/// server's rules, as [`Ctx`]'s do.
pub struct AsyncCtx<C: Codec = Postcard> {
    id: ClientId,
    shared: Arc<Shared<C>>,
    peer: Arc<Peer>,
}

impl<C: Codec> Clone for AsyncCtx<C> {
    fn clone(&self) -> Self {
        AsyncCtx {
            id: self.id,
            shared: Arc::clone(&self.shared),
            peer: Arc::clone(&self.peer),
        }
    }
}

impl<C: Codec> AsyncCtx<C> {
    /// The client's id.
    pub fn client_id(&self) -> ClientId {
        self.id
    }

    /// A handle to the whole server (send to other clients, broadcast,
    /// shut down).
    pub fn server(&self) -> ServerHandle<C> {
        ServerHandle::tokio(Arc::clone(&self.shared), self.codec())
    }

    fn codec(&self) -> C {
        self.shared.lock().server.codec().clone()
    }

    /// Sends a `P` to this client once its transmit queue has room for it
    /// (back-pressure: it waits while the client reads slowly; a client that
    /// reads nothing is dropped by the write-stall timer, and then this
    /// returns [`SendError::Closed`]). The client's rules are checked when
    /// it is queued. Cancel-safe: a `send` dropped before it returned queued
    /// nothing.
    pub async fn send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), SendError> {
        let codec = self.codec();
        let len = codec.encoded_len(msg).map_err(SendError::Encode)?;
        let mut body = vec![0u8; len];
        codec.encode(msg, &mut body).map_err(SendError::Encode)?;
        let needed = body.len() + FRAME_OVERHEAD + 8;
        loop {
            let room = self.peer.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut inner = self.shared.lock();
                let open = inner
                    .server
                    .connection(self.id)
                    .is_some_and(|c| !c.is_closed());
                if !open {
                    return Err(SendError::Closed);
                }
                let id = inner
                    .server
                    .registry()
                    .id_of::<P>()
                    .ok_or(SendError::NotRegistered)?;
                let capacity = inner
                    .server
                    .connection(self.id)
                    .map_or(0, |c| c.buffers().1.max_capacity());
                if inner.server.has_room(self.id, needed) || needed > capacity {
                    let res = inner.server.send_encoded(self.id, id, &body);
                    let now = self.shared.clock.now();
                    inner.server.transmitted(self.id, 0, now);
                    self.peer.wake.notify_one();
                    return res;
                }
            }
            room.await;
        }
    }

    /// Sends a `P` to every connected client but those in `except`, encoded
    /// once; see [`ServerHandle::broadcast`].
    pub fn broadcast<P: Packet>(
        &self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<BroadcastReport, HandleError> {
        self.server().broadcast::<P>(msg, except)
    }

    /// Closes this client with `reason`.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.shared.lock();
        if inner.server.close(self.id, reason) {
            self.peer.wake.notify_one();
        }
    }

    fn with_conn<R>(&self, f: impl FnOnce(&crate::server::ServerConn<'_, C>) -> R) -> Option<R> {
        let inner = self.shared.lock();
        inner.server.connection(self.id).map(f)
    }

    /// The client's connection state (`None` once it is gone).
    pub fn state(&self) -> Option<State> {
        self.with_conn(|c| c.state())
    }

    /// Sets an application state (for example `LOGGEDIN`).
    pub fn set_state(&self, state: State) {
        self.shared.lock().server.set_state(self.id, state);
    }

    /// The client's mode (`None` once it is gone).
    pub fn mode(&self) -> Option<Mode> {
        self.with_conn(|c| c.mode())
    }

    /// Sets the client's mode.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().server.set_mode(self.id, mode);
    }

    /// The security level of the client's transport (`None` once it is
    /// gone).
    pub fn security_level(&self) -> Option<SecurityLevel> {
        self.with_conn(|c| c.security_level())
    }
}

impl<C: Codec> std::fmt::Debug for TokioServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioServer")
            .field("local_addr", &self.local_addr)
            .field("async_handlers", &self.async_handlers.len())
            .finish()
    }
}
