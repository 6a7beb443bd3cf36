//! An async client on tokio (feature `tokio`, on by default): an owned,
//! `Send + 'static` handle over a `tokio::net::TcpStream`
//! ([`Client::connect`]) or over any other async byte stream
//! ([`Client::over`]: a `tokio::net::UnixStream`, a serial port's async
//! wrapper, a `tokio::io::duplex` end, a user's own transport), whose
//! connection a task of its own drives.
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
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = StdRegistry::new();
//! registry.register::<Echo>()?;
//! // A server that echoes (the mio one, on a thread of its own).
//! let server = Server::builder(registry.clone())
//!     .on::<Echo>(|ctx, text| {
//!         let _ = ctx.send::<Echo>(&text);
//!     })
//!     .bind("127.0.0.1:0")?;
//! let addr = server.local_addr();
//! let running = server.spawn()?;
//!
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let client = Client::connect(addr, registry, ClientOptions::default()).await?;
//!     client.wait_connected().await?;
//!     client.send::<Echo>(&"hello").await?;
//!     loop {
//!         if let ClientEvent::Packet(p) = client.recv().await? {
//!             assert_eq!(p.decode::<Echo>()?, "hello");
//!             break;
//!         }
//!     }
//!     let closed = client.close(CloseReason::UserRequest).await?;
//!     assert_eq!(closed.reason, CloseReason::UserRequest);
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! running.handle().shutdown();
//! running.join()?;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//! [`Client::connect`] and [`Client::over`] spawn a task (on the current
//! tokio runtime) that owns the stream and moves bytes between it and the
//! core's connection: it reads what arrived (until the stream says it has
//! nothing more), hands the connection's events to a queue, writes what is
//! queued, and fires the core's timers at
//! [`poll_timeout`](peng3dnet_core::Connection::poll_timeout). TCP and
//! every other stream take the same path: the stream is polled without
//! blocking (`poll_read`, `poll_write`, `poll_flush`), and the task sleeps
//! until the stream, a handle or the timer wakes it. The connection itself sits
//! behind a mutex shared with the handles, which is held only for
//! non-blocking work (never across an `.await`), so a send encodes and
//! queues its frame in the caller's task, checked by the connection's rules
//! there and then.
//!
//! Latency: each answer wakes the task waiting in [`Client::recv`] from the
//! client's task. A spawned task is woken through the runtime's queue; the
//! future given to `block_on` (the body of `#[tokio::main]`) is woken
//! through the runtime's I/O driver instead, one more system call each way.
//! A request/answer loop on one CPU measured 1.09-1.13x the round trip of
//! a bare tokio echo from a spawned task, 1.14-1.16x from `block_on`'s
//! future (the benchmark `tokio`): run latency-bound loops in a task.
//!
//! # Back-pressure and cancellation
//! - [`Client::send`] queues a frame only if it fits the transmit queue
//!   ([`ClientOptions::max_write_queue`]); otherwise it waits until the task
//!   wrote some out. Nothing is queued without bound, and a `send` future
//!   dropped before it returned queued nothing.
//! - [`Client::recv`] takes an event off the queue in one step: a `recv`
//!   future dropped while it waits (in a `select!` or a timeout, say) loses
//!   nothing; the event is there for the next call. At most
//!   [`EVENT_QUEUE`] events wait to be taken: then the task stops reading,
//!   so a server that sends faster than the application takes fills the
//!   connection's receive buffer ([`ClientOptions::max_frame`]) and then
//!   the TCP window, and memory stays bounded.
//! - [`Client::split`] gives a cloneable [`ClientSender`] and a
//!   [`ClientReceiver`], so that one task sends while another receives.
//! - Dropping every handle closes the connection with `userrequest` (what
//!   is queued is still written, then the socket is shut down).
//!
//! # Your own transport
//! Anything that is `AsyncRead + AsyncWrite + Send + Unpin + 'static` carries
//! a connection; [`Client::over`] takes it as it is, already connected (the
//! server's `hello` is the first thing read from it):
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use peng3dnet_std::client::ClientOptions;
//! use peng3dnet_std::tokio_client::Client;
//! let stream = tokio::net::UnixStream::connect("/run/peng3dnet.sock").await?;
//! let client = Client::over(stream, peng3dnet_std::echo::registry(), ClientOptions::default())?;
//! client.wait_connected().await?;
//! # Ok(())
//! # }
//! ```
//!
//! When the connection ends the task shuts the stream down (`poll_shutdown`,
//! waiting at most [`SHUTDOWN_GRACE`]); the stream itself is dropped with the
//! last handle.
//!
//! # TLS
//! With [`ClientOptions::tls`] the task speaks TLS (rustls) over the stream
//! (TCP or any other),
//! through the same TLS session as the blocking client and the mio server
//! ([`crate::tls`]): the security level follows from what was verified
//! (`serverauth` with a verified server, `bothauth` with a client
//! certificate too, `encrypted` without verification), so SmartPacket rules
//! with `min_sslsec_level` hold the same way.

use crate::client::{
    client_event, expect_error, expected, new_connection, setup_failure, tls_failure_of,
    ClientConn, ClientError, ClientEvent, ClientOptions,
};
use crate::poll_stream::{ByteStream, PollStream};
use crate::transport::Transport;
use crate::{Clock, StdRegistry};
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::connection::{Incoming, SendError};
use peng3dnet_core::registry::Packet;
use peng3dnet_core::{CloseReason, Closed, Mode, SecurityLevel, State};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::Notify;

/// The most events that wait in a client's queue; the task reads no more
/// until the application took some.
pub const EVENT_QUEUE: usize = 256;

/// Reads per turn of the driver before it writes and yields (fairness
/// towards the other tasks of the runtime).
const READS_PER_TURN: usize = 16;

/// How long the task waits for the stream's shutdown (`poll_shutdown`: a
/// buffered stream's flush, TCP's end of stream) once the connection ended.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What the driver task and the handles share.
struct Shared<C> {
    state: Mutex<Inner<C>>,
    /// The driver changed something: handles waiting for an event, the
    /// connection's state or its close look again.
    changed: Notify,
    /// The driver wrote queued bytes out (or the connection ended): senders
    /// waiting for room look again.
    room: Notify,
    /// A handle queued something or closed: the driver writes.
    wake_driver: Notify,
    clock: Clock,
}

struct Inner<C> {
    conn: ClientConn<C>,
    /// The stream, plain or inside TLS (polled without blocking).
    transport: Transport<PollStream>,
    /// Bytes were written that the stream has not flushed yet.
    unflushed: bool,
    /// The connection's `tracing` span (the server's address).
    span: tracing::Span,
    events: VecDeque<ClientEvent<C>>,
    /// How the connection ended, once it did.
    closed: Option<Closed>,
    /// The driver task ended (the socket is gone).
    done: bool,
    /// Why TLS failed, if it did (for [`ClientError::Tls`]).
    tls_failure: Option<rustls::Error>,
    /// Any byte came from the server (else a failed set-up over plain TCP
    /// is [`ClientError::NoHello`]).
    received: bool,
    /// The stream ended or failed: nothing more is read or written.
    eof: bool,
}

impl<C> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, Inner<C>> {
        // A panic while the lock was held leaves the state as it was: no
        // invariant spans more than one call into the core.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the connection when the last handle is dropped.
struct Owner<C: Codec> {
    shared: Arc<Shared<C>>,
}

impl<C: Codec> Drop for Owner<C> {
    fn drop(&mut self) {
        {
            let mut inner = self.shared.lock();
            inner.conn.close(CloseReason::UserRequest);
        }
        self.shared.wake_driver.notify_one();
    }
}

/// An async peng3dnet client on tokio; see the [module docs](self).
pub struct Client<C: Codec = Postcard> {
    sender: ClientSender<C>,
    receiver: ClientReceiver<C>,
}

/// The sending half of a [`Client`] ([`Client::split`]): cloneable.
pub struct ClientSender<C: Codec = Postcard> {
    owner: Arc<Owner<C>>,
}

impl<C: Codec> Clone for ClientSender<C> {
    fn clone(&self) -> Self {
        ClientSender {
            owner: Arc::clone(&self.owner),
        }
    }
}

/// The receiving half of a [`Client`] ([`Client::split`]).
pub struct ClientReceiver<C: Codec = Postcard> {
    owner: Arc<Owner<C>>,
}

impl Client<Postcard> {
    /// Connects to `addr` over TCP with the native codec
    /// (`TCP_NODELAY` on) and starts the task that drives the connection,
    /// on the current tokio runtime. The handshake runs in that task;
    /// [`wait_connected`](Self::wait_connected) waits for it.
    ///
    /// # Errors
    /// [`ClientError::Connect`] (the last address tried and why) when no
    /// address connects, [`ClientError::Timeout`] when none did within
    /// [`ClientOptions::connect_timeout`];
    /// [`ClientError::Setup`] for options the connection refuses; a TLS
    /// configuration rustls refuses as [`ClientError::Io`]. (A failed TLS
    /// handshake ends the connection: [`wait_connected`](Self::wait_connected)
    /// reports it.)
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        registry: StdRegistry,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Self::connect_with(addr, registry, Postcard, options).await
    }

    /// A client over any byte stream that is already connected to a
    /// server (a `tokio::net::UnixStream`, a `tokio::io::duplex` end, a
    /// serial port's async wrapper), with the native codec, and starts the
    /// task that drives it, on the current tokio runtime; everything else
    /// is as with [`connect`](Self::connect): the same handshake, rules,
    /// back-pressure, cancel-safety and [`split`](Self::split), and TLS
    /// over the stream with [`ClientOptions::tls`]
    /// ([`ClientOptions::connect_timeout`] does not apply).
    ///
    /// # Errors
    /// [`ClientError::Setup`] for options the connection refuses; a TLS
    /// configuration rustls refuses as [`ClientError::Io`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn over<S>(
        stream: S,
        registry: StdRegistry,
        options: ClientOptions,
    ) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::over_with(stream, registry, Postcard, options)
    }
}

impl<C: Codec + Send + 'static> Client<C> {
    /// Connects with the given codec; see [`connect`](Client::connect).
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        registry: StdRegistry,
        codec: C,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let connect = async {
            let mut last = None;
            for a in tokio::net::lookup_host(addr).await? {
                match TcpStream::connect(a).await {
                    Ok(s) => return Ok(s),
                    Err(error) => last = Some(ClientError::Connect { addr: a, error }),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(ErrorKind::InvalidInput, "no address to connect to").into()
            }))
        };
        let stream = tokio::time::timeout(options.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout)??;
        stream.set_nodelay(true)?;
        let span = tracing::info_span!("peng3dnet_client", server = ?stream.peer_addr().ok());
        tracing::debug!(parent: &span, "connected (TCP)");
        Self::start(Box::new(stream), span, registry, codec, options)
    }

    /// A client over a byte stream that is already connected, with the
    /// given codec; see [`over`](Client::over).
    pub fn over_with<S>(
        stream: S,
        registry: StdRegistry,
        codec: C,
        options: ClientOptions,
    ) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let span = tracing::info_span!("peng3dnet_client", server = "byte stream");
        Self::start(Box::new(stream), span, registry, codec, options)
    }

    /// Starts the task that drives the connection over `stream`.
    fn start(
        stream: Box<dyn ByteStream>,
        span: tracing::Span,
        registry: StdRegistry,
        codec: C,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let socket = PollStream::new(stream);
        let transport = match &options.tls {
            Some(tls) => Transport::tls_client(socket, tls).map_err(io::Error::from)?,
            None => Transport::plain(socket),
        };
        let clock = Clock::new();
        let conn = new_connection(&options, registry, codec, &clock)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(Inner {
                conn,
                transport,
                unflushed: false,
                span,
                events: VecDeque::new(),
                closed: None,
                done: false,
                tls_failure: None,
                received: false,
                eof: false,
            }),
            changed: Notify::new(),
            room: Notify::new(),
            wake_driver: Notify::new(),
            clock,
        });
        tokio::spawn(drive(Arc::clone(&shared)));
        let owner = Arc::new(Owner { shared });
        Ok(Client {
            sender: ClientSender {
                owner: Arc::clone(&owner),
            },
            receiver: ClientReceiver { owner },
        })
    }
}

impl<C: Codec> Client<C> {
    /// Splits into a cloneable sender and a receiver. The connection closes
    /// once both (and every clone of the sender) are dropped.
    pub fn split(self) -> (ClientSender<C>, ClientReceiver<C>) {
        (self.sender, self.receiver)
    }

    /// Waits until the handshake completed; see
    /// [`ClientSender::wait_connected`].
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        self.sender.wait_connected().await
    }

    /// Sends a typed packet; see [`ClientSender::send`].
    pub async fn send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), ClientError> {
        self.sender.send::<P>(msg).await
    }

    /// The next event; see [`ClientReceiver::recv`].
    pub async fn recv(&self) -> Result<ClientEvent<C>, ClientError> {
        self.receiver.recv().await
    }

    /// Waits up to `timeout` for a packet of type `P`; see
    /// [`ClientReceiver::expect`].
    pub async fn expect<P: Packet>(
        &self,
        timeout: Duration,
    ) -> Result<Incoming<Vec<u8>, C>, ClientError> {
        self.receiver.expect::<P>(timeout).await
    }

    /// Closes with `reason` and waits until the `closeconn` is written and
    /// the socket shut down; returns how the connection ended (`reason`, by
    /// us, unless it had ended before).
    pub async fn close(&self, reason: CloseReason) -> Result<Closed, ClientError> {
        self.sender.close(reason).await
    }

    /// Waits until the connection ended (by the server, the transport or a
    /// [`close`](Self::close)) and returns how.
    pub async fn wait_closed(&self) -> Closed {
        self.sender.wait_closed().await
    }

    /// The connection's protocol state.
    pub fn state(&self) -> State {
        self.sender.with(|c| c.state())
    }

    /// Whether the handshake completed and the connection is open.
    pub fn is_connected(&self) -> bool {
        self.sender.with(|c| c.is_connected())
    }

    /// The transport's security level.
    pub fn security_level(&self) -> SecurityLevel {
        self.sender.with(|c| c.security_level())
    }

    /// Sets the connection's mode (SmartPacket rules may require one).
    pub fn set_mode(&self, mode: Mode) {
        self.sender.with(|c| c.set_mode(mode))
    }

    /// Sets an application state once connected (for example `LOGGEDIN`).
    pub fn set_state(&self, state: State) {
        self.sender.with(|c| c.set_state(state))
    }

    /// Bytes queued and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.sender.queued_bytes()
    }

    /// The connection's codec (with `AnyCodec`, the one the server's hello
    /// chose).
    pub fn codec(&self) -> C {
        self.sender.with(|c| c.codec().clone())
    }
}

/// Waits on `notify` until `check` (run under the lock) says done. No
/// wake-up is lost: the waiter is registered before the state is looked at.
async fn wait_until<C, R>(
    shared: &Shared<C>,
    notify: &Notify,
    mut check: impl FnMut(&mut Inner<C>) -> Option<R>,
) -> R {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(r) = check(&mut shared.lock()) {
            return r;
        }
        notified.await;
    }
}

/// How the connection ended, as an error (what ended it, or a transport end
/// when the driver stopped without a recorded close).
fn closed_error<C>(inner: &Inner<C>) -> ClientError {
    ClientError::Closed(closed_of(inner))
}

/// How the connection ended (a transport end when the driver stopped
/// without a recorded close).
fn closed_of<C>(inner: &Inner<C>) -> Closed {
    inner.closed.clone().unwrap_or(Closed::SOCKET_CLOSED)
}

impl<C: Codec> ClientSender<C> {
    fn shared(&self) -> &Shared<C> {
        &self.owner.shared
    }

    fn with<R>(&self, f: impl FnOnce(&mut ClientConn<C>) -> R) -> R {
        f(&mut self.shared().lock().conn)
    }

    /// Sends a typed packet, checked against its SmartPacket rules. Waits
    /// while the transmit queue has no room for it (the driver task writes
    /// it out); fails at once on a rule, an unregistered packet, a message
    /// larger than the whole queue, or a closed connection. Cancel-safe: a
    /// future dropped before it returned queued nothing.
    pub async fn send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), ClientError> {
        let shared = self.shared();
        wait_until(shared, &shared.room, |inner| {
            match inner.conn.send::<P>(msg) {
                Ok(()) => {
                    shared.wake_driver.notify_one();
                    Some(Ok(()))
                }
                // The driver wakes us once it wrote some.
                Err(SendError::WouldBlock { .. }) if !inner.done => None,
                Err(SendError::WouldBlock { .. } | SendError::Closed) => {
                    Some(Err(closed_error(inner)))
                }
                Err(e) => Some(Err(ClientError::Send(e))),
            }
        })
        .await
    }

    /// Waits until the handshake completed. A connection that closed first
    /// fails with what the client can tell of why, as the blocking
    /// [`Client::wait_connected`](crate::client::Client::wait_connected)
    /// does: [`ClientError::RegistryMismatch`], [`ClientError::Tls`],
    /// [`ClientError::NoHello`], else [`ClientError::Closed`]. (It does not
    /// time out by itself: the core's handshake timeout closes the
    /// connection; wrap it in `tokio::time::timeout` for a shorter wait.)
    pub async fn wait_connected(&self) -> Result<(), ClientError> {
        let shared = self.shared();
        wait_until(shared, &shared.changed, |inner| {
            if inner.conn.is_connected() {
                Some(Ok(()))
            } else if inner.conn.is_closed() || inner.done {
                Some(Err(setup_failure(
                    inner.conn.registry_mismatch(),
                    inner.tls_failure.as_ref(),
                    inner.transport.is_plain() && !inner.received,
                    Some(closed_of(inner)),
                )))
            } else {
                None
            }
        })
        .await
    }

    /// Closes with `reason` and waits until the `closeconn` is written and
    /// the socket shut down; returns how the connection ended.
    pub async fn close(&self, reason: CloseReason) -> Result<Closed, ClientError> {
        self.with(|c| c.close(reason));
        self.shared().wake_driver.notify_one();
        Ok(self.wait_closed().await)
    }

    /// Waits until the connection ended and its task stopped, and returns
    /// how it ended.
    pub async fn wait_closed(&self) -> Closed {
        let shared = self.shared();
        wait_until(shared, &shared.changed, |inner| {
            inner
                .done
                .then(|| inner.closed.clone().unwrap_or(Closed::SOCKET_CLOSED))
        })
        .await
    }

    /// Bytes queued and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.with(|c| c.poll_transmit().len())
    }
}

impl<C: Codec> ClientReceiver<C> {
    /// The next event: the handshake's completion, a packet, a ping answer,
    /// an ignored packet, and last the close. After the close event every
    /// call fails with [`ClientError::Closed`]. Cancel-safe: a future
    /// dropped while it waits took no event.
    pub async fn recv(&self) -> Result<ClientEvent<C>, ClientError> {
        let shared = &*self.owner.shared;
        wait_until(shared, &shared.changed, |inner| {
            if let Some(event) = pop_event(shared, inner) {
                return Some(Ok(event));
            }
            (inner.closed.is_some() || inner.done).then(|| Err(closed_error(inner)))
        })
        .await
    }

    /// Waits up to `timeout` for a packet of type `P` and returns it (its
    /// [`decode::<P>`](Incoming::decode) gives the message, borrowed from
    /// it). `Connected` is skipped; anything else that comes first (another
    /// packet, an ignored one, a ping answer, the close) or nothing within
    /// `timeout` is [`ClientError::Unexpected`], naming what came (and
    /// taking it off the queue). Cancel-safe as [`recv`](Self::recv): a
    /// future dropped while it waits took no event but a skipped
    /// `Connected`.
    ///
    /// ```no_run
    /// # async fn f(client: peng3dnet_std::tokio_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use peng3dnet_std::echo::Echo;
    /// use std::time::Duration;
    /// client.send::<Echo>(&"hello").await?;
    /// let p = client.expect::<Echo>(Duration::from_secs(5)).await?;
    /// assert_eq!(p.decode::<Echo>()?, "hello");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn expect<P: Packet>(
        &self,
        timeout: Duration,
    ) -> Result<Incoming<Vec<u8>, C>, ClientError> {
        let wait = async {
            loop {
                let event = self
                    .recv()
                    .await
                    .map_err(|e| expect_error::<P>(e, timeout))?;
                if let Some(r) = expected::<P, C>(event) {
                    return r;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or_else(|_| Err(expect_error::<P>(ClientError::Timeout, timeout)))
    }

    /// How many events wait to be taken (at most [`EVENT_QUEUE`]).
    pub fn queued_events(&self) -> usize {
        self.owner.shared.lock().events.len()
    }

    /// The next event if one is queued, without waiting.
    pub fn try_recv(&self) -> Option<ClientEvent<C>> {
        let shared = &*self.owner.shared;
        pop_event(shared, &mut shared.lock())
    }
}

/// Takes the next queued event; wakes the driver if the queue was full
/// (it stopped reading until there is room).
fn pop_event<C>(shared: &Shared<C>, inner: &mut Inner<C>) -> Option<ClientEvent<C>> {
    let full = inner.events.len() >= EVENT_QUEUE;
    let event = inner.events.pop_front();
    if full && event.is_some() {
        shared.wake_driver.notify_one();
    }
    event
}

/// The task that owns the stream: one turn of non-blocking work each time
/// the stream, a handle or the timer wakes it.
async fn drive<C: Codec>(shared: Arc<Shared<C>>) {
    let clock = shared.clock;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    // The core's deadline the sleep is set to.
    let mut armed = None;
    let notified = shared.wake_driver.notified();
    tokio::pin!(notified);
    // A timer fired since the handles were last woken.
    let mut timed_out = false;
    poll_fn(|cx| loop {
        // Registered for the handles' wake-ups before the state is looked
        // at, so that none is lost.
        while notified.as_mut().poll(cx).is_ready() {
            notified.set(shared.wake_driver.notified());
        }
        let (deadline, finished, more, changed, room) = {
            let mut inner = shared.lock();
            inner.transport.socket_mut().set_waker(cx.waker());
            let before = Snapshot::of(&inner);
            let more = turn(&mut inner, &clock);
            let finished = inner.conn.is_finished() || inner.eof && inner.conn.is_closed();
            let after = Snapshot::of(&inner);
            let timer = std::mem::take(&mut timed_out);
            let changed = timer || finished || after.state() != before.state();
            let room = changed || after.queued < before.queued;
            (inner.conn.poll_timeout(), finished, more, changed, room)
        };
        // Handles wait for an event, the state or room: wake them only when
        // what they wait for changed (not on every turn).
        if changed {
            shared.changed.notify_waiters();
        }
        if room {
            shared.room.notify_waiters();
        }
        if finished {
            return Poll::Ready(());
        }
        if let Some(at) = deadline {
            if armed != Some(at) {
                let wait = at.saturating_duration_since(clock.now()).as_micros();
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_micros(wait));
                armed = Some(at);
            }
            if sleep.as_mut().poll(cx).is_ready() {
                armed = None;
                let now = clock.now();
                shared.lock().conn.handle_timeout(now);
                timed_out = true;
                continue;
            }
        }
        if more {
            // The stream had more to read: yield, and come back.
            cx.waker().wake_by_ref();
        }
        return Poll::Pending;
    })
    .await;
    // The peer sees TLS's close_notify (what the stream takes) and our end
    // of stream; the stream is dropped with the last handle.
    shared.lock().transport.close_notify();
    let shutdown = poll_fn(|cx| {
        let mut inner = shared.lock();
        inner.transport.socket_mut().poll_shutdown(cx)
    });
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, shutdown).await;
    let mut inner = shared.lock();
    inner.done = true;
    inner.closed = inner.conn.closed().or(inner.closed.take());
    drop(inner);
    shared.changed.notify_waiters();
    shared.room.notify_waiters();
}

/// What the handles wait on ([`wait_until`]): the events queued, the bytes
/// waiting to be written (room for a send), the connection's state.
struct Snapshot {
    events: usize,
    queued: usize,
    connected: bool,
    closed: bool,
}

impl Snapshot {
    /// What the handles other than senders wait on.
    fn state(&self) -> (usize, bool, bool) {
        (self.events, self.connected, self.closed)
    }

    fn of<C: Codec>(inner: &Inner<C>) -> Self {
        Snapshot {
            events: inner.events.len(),
            queued: inner.conn.poll_transmit().len(),
            connected: inner.conn.is_connected(),
            closed: inner.conn.is_closed() || inner.closed.is_some(),
        }
    }
}

/// One round of non-blocking work: read what is there (a bounded number of
/// times), hand the events out, write what is queued and flush it. Returns
/// whether reading stopped at the bound with more perhaps to read (else
/// the stream said "not ready", and wakes the task when it is).
fn turn<C: Codec>(inner: &mut Inner<C>, clock: &Clock) -> bool {
    let mut reads = 0;
    let more = loop {
        if reads == READS_PER_TURN {
            break true;
        }
        reads += 1;
        if inner.eof || inner.conn.is_closed() || inner.events.len() >= EVENT_QUEUE {
            break false;
        }
        if inner.conn.receive_buffer().is_empty() {
            drain(inner, clock);
            if inner.conn.receive_buffer().is_empty() {
                break false;
            }
        }
        let res = inner.transport.read(inner.conn.receive_buffer());
        if let Some(level) = inner.transport.security_level() {
            if level != inner.conn.security_level() {
                inner.conn.set_security_level(level);
            }
        }
        match res {
            Ok(0) => {
                inner.eof = true;
                inner.conn.handle_transport_closed();
            }
            Ok(n) => {
                inner.received = true;
                inner.conn.commit_received(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::info!(parent: &inner.span, error = %e, "transport failed");
                inner.tls_failure = tls_failure_of(&e).cloned();
                inner.eof = true;
                inner.conn.handle_transport_closed();
            }
        }
        drain(inner, clock);
    };
    drain(inner, clock);
    while !inner.eof {
        let data = inner.conn.poll_transmit();
        if data.is_empty() {
            if inner.transport.wants_write() {
                let _ = inner.transport.flush();
            }
            break;
        }
        match inner.transport.write(data) {
            Ok(0) => break,
            Ok(n) => {
                inner.conn.transmitted(n);
                inner.unflushed = true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::info!(parent: &inner.span, error = %e, "transport failed");
                inner.eof = true;
                inner.conn.handle_transport_closed();
                drain(inner, clock);
            }
        }
    }
    if inner.unflushed && !inner.eof {
        match inner.transport.socket_mut().flush_stream() {
            Ok(()) => inner.unflushed = false,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::info!(parent: &inner.span, error = %e, "transport failed");
                inner.eof = true;
                inner.conn.handle_transport_closed();
                drain(inner, clock);
            }
        }
    }
    more
}

/// Moves the connection's events to the queue.
fn drain<C: Codec>(inner: &mut Inner<C>, clock: &Clock) {
    let now = clock.now();
    while inner.events.len() < EVENT_QUEUE {
        let Some(event) = inner.conn.poll(now) else {
            break;
        };
        if let Some(event) = client_event(event, &inner.span) {
            if let ClientEvent::Closed(closed) = &event {
                inner.closed = Some(closed.clone());
            }
            inner.events.push_back(event);
        }
    }
}

impl<C: Codec> std::fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.sender.owner.shared.lock();
        f.debug_struct("Client")
            .field("state", &inner.conn.state())
            .field("queued_events", &inner.events.len())
            .field("closed", &inner.closed)
            .finish()
    }
}
