//! Helpers for testing your own handlers and clients (feature `test-util`,
//! off by default; enable it in your `[dev-dependencies]`).
//!
//! - [`spawn_server`]: the mio [`Server`](crate::server::Server) you built,
//!   bound to `127.0.0.1:0` and running on a thread of its own. The
//!   [`RunningServer`] it returns is the guard: its
//!   [`local_addr`](RunningServer::local_addr) is where to connect, and
//!   dropping it shuts the server down and waits for its thread.
//! - [`spawn_tokio_server`]: the same for the
//!   [tokio server](crate::tokio_server), on a runtime of its own.
//! - [`MemoryServer::start`] (feature `tokio`): the tokio server on your
//!   test's runtime with no socket at all; [`MemoryServer::client`] gives
//!   tokio clients connected to it through memory, and dropping it shuts
//!   the server down. See its example.
//! - [`stream_pair`]: a client and a server connection over a
//!   [`MemoryStream`] pair, no socket and no port: the server side is a
//!   core server connection you drive yourself (answer, refuse, close, stay
//!   silent), for testing a client against a scripted peer.
//! - The clients' `expect::<P>(timeout)`
//!   ([blocking](crate::client::Client::expect),
//!   [tokio](crate::tokio_client::ClientReceiver::expect)) waits for one
//!   packet type and names what came instead.
//!
//! ```
//! use peng3dnet_core::registry::Packet;
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_std::client::{Client, ClientOptions};
//! use peng3dnet_std::server::Server;
//! use peng3dnet_std::test_util::spawn_server;
//! use peng3dnet_std::StdRegistry;
//! use std::time::Duration;
//!
//! /// The packet under test: the server answers it with the text reversed.
//! struct Reverse;
//! impl Packet for Reverse {
//!     const NAME: &'static str = "test:reverse";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! let mut registry = StdRegistry::new();
//! registry.register::<Reverse>()?;
//! let server = spawn_server(Server::builder(registry.clone()).on::<Reverse>(|ctx, text| {
//!     let reversed: String = text.chars().rev().collect();
//!     let _ = ctx.send::<Reverse>(&reversed.as_str());
//! }))?;
//!
//! let t = Duration::from_secs(5);
//! let mut client = Client::connect(server.local_addr(), registry, ClientOptions::default())?;
//! client.wait_connected(t)?;
//! client.send::<Reverse>(&"abc")?;
//! assert_eq!(client.expect::<Reverse>(t)?.decode::<Reverse>()?, "cba");
//! // Dropping `server` shuts it down.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::client::ClientError;
use crate::server::{RunningServer, ServerBuilder};
use crate::stream::{ReadTimeout, StreamConnection, StreamOptions};
use crate::StdRegistry;
use peng3dnet_core::codec::{Codec, Postcard};
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Binds the server `builder` describes to `127.0.0.1:0` (a port the
/// system chooses) and runs it on a thread of its own; see the
/// [module docs](self).
///
/// # Errors
/// What binding or starting the thread gave.
pub fn spawn_server<C: Codec + Send + 'static>(
    builder: ServerBuilder<C>,
) -> io::Result<RunningServer<C>> {
    builder.bind("127.0.0.1:0")?.spawn()
}

/// Binds the tokio server `builder` describes to `127.0.0.1:0` and runs it
/// on a thread of its own with a multi-thread runtime of its own (one
/// worker per core); the [`RunningServer`] it returns is the guard, as
/// [`spawn_server`]'s is.
///
/// # Errors
/// What binding, building the runtime or starting the thread gave.
#[cfg(feature = "tokio")]
pub fn spawn_tokio_server<C: Codec + Send + Sync + 'static>(
    builder: ServerBuilder<C>,
) -> io::Result<RunningServer<C>> {
    builder.bind_tokio("127.0.0.1:0")?.spawn()
}

/// The tokio server running on the caller's runtime with no listening
/// socket: its clients come through memory ([`client`](Self::client)).
/// Dropping it shuts the server down (its task ends once its clients are
/// gone; the runtime's end aborts it).
///
/// ```
/// use peng3dnet_core::registry::Packet;
/// use peng3dnet_core::rules::Rules;
/// use peng3dnet_std::client::ClientOptions;
/// use peng3dnet_std::server::Server;
/// use peng3dnet_std::test_util::MemoryServer;
/// use peng3dnet_std::StdRegistry;
/// use std::time::Duration;
///
/// struct Double;
/// impl Packet for Double {
///     const NAME: &'static str = "test:double";
///     const RULES: Rules = Rules::SMART;
///     type Message<'a> = u32;
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // In a #[tokio::test]:
/// let mut registry = StdRegistry::new();
/// registry.register::<Double>()?;
/// let server = MemoryServer::start(
///     Server::builder(registry.clone()).on::<Double>(|ctx, n| {
///         let _ = ctx.send::<Double>(&(n * 2));
///     }),
/// )?;
/// let client = server.client(registry, ClientOptions::default()).await?;
/// client.send::<Double>(&21).await?;
/// let answer = client.expect::<Double>(Duration::from_secs(5)).await?;
/// assert_eq!(answer.decode::<Double>()?, 42);
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "tokio")]
pub struct MemoryServer<C: Codec = Postcard> {
    acceptor: crate::tokio_server::StreamAcceptor,
    handle: crate::server::ServerHandle<C>,
    task: tokio::task::JoinHandle<io::Result<crate::server::ServerStats>>,
}

#[cfg(feature = "tokio")]
impl<C: Codec + Send + Sync + 'static> MemoryServer<C> {
    /// Builds the tokio server `builder` describes (no listener) and runs
    /// it in a task of the current runtime.
    ///
    /// # Errors
    /// What [`ServerBuilder::build_tokio`] gave, or `NotFound` when not
    /// called on a tokio runtime.
    pub fn start(builder: ServerBuilder<C>) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::new(ErrorKind::NotFound, e))?;
        let server = builder.build_tokio()?;
        let (acceptor, handle) = (server.acceptor(), server.handle());
        let task = runtime.spawn(server.run());
        Ok(MemoryServer {
            acceptor,
            handle,
            task,
        })
    }

    /// A tokio client connected to the server through memory (Postcard),
    /// its handshake done.
    ///
    /// # Errors
    /// What [`StreamAcceptor::connect_memory`](crate::tokio_server::StreamAcceptor::connect_memory)
    /// or the client's `wait_connected` gave (a refusal, a registry
    /// mismatch, the handshake timeout).
    pub async fn client(
        &self,
        registry: StdRegistry,
        options: crate::client::ClientOptions,
    ) -> Result<crate::tokio_client::Client, ClientError> {
        let client = self.acceptor.connect_memory(registry, options).await?;
        client.wait_connected().await?;
        Ok(client)
    }

    /// The acceptor, to serve streams of your own.
    pub fn acceptor(&self) -> crate::tokio_server::StreamAcceptor {
        self.acceptor.clone()
    }

    /// A handle to command the server (send, broadcast, close a client).
    pub fn handle(&self) -> crate::server::ServerHandle<C> {
        self.handle.clone()
    }

    /// Shuts the server down and waits until its run ended; its counters.
    ///
    /// # Errors
    /// What the run ended with (or `Other` if its task failed).
    pub async fn shutdown(mut self) -> io::Result<crate::server::ServerStats> {
        self.handle.shutdown();
        (&mut self.task).await.map_err(io::Error::other)?
    }
}

#[cfg(feature = "tokio")]
impl<C: Codec> Drop for MemoryServer<C> {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Bytes one direction of a [`MemoryStream`] holds before a write waits for
/// the reader (64 KiB, about what a socket pair buffers).
pub const MEMORY_STREAM_CAPACITY: usize = 64 * 1024;

/// One direction of a [`MemoryStream`] pair.
#[derive(Default)]
struct Direction {
    state: Mutex<DirectionState>,
    changed: Condvar,
}

#[derive(Default)]
struct DirectionState {
    bytes: VecDeque<u8>,
    /// One of the two ends was dropped.
    closed: bool,
}

impl Direction {
    fn lock(&self) -> MutexGuard<'_, DirectionState> {
        // A panic while the lock was held left a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// One end of an in-memory byte stream: [`MemoryStream::pair`] makes two
/// connected ends, no socket and no file descriptor. Blocking, like a
/// socket: a read waits for bytes (no longer than its read timeout, then
/// [`ErrorKind::WouldBlock`]) and returns `Ok(0)` once the other end is
/// dropped; a write waits while [`MEMORY_STREAM_CAPACITY`] bytes are
/// unread and fails with [`ErrorKind::BrokenPipe`] once the other end is
/// dropped. A [`StreamConnection`] runs over it ([`ReadTimeout`]).
pub struct MemoryStream {
    rx: Arc<Direction>,
    tx: Arc<Direction>,
    read_timeout: Option<Duration>,
}

impl MemoryStream {
    /// Two connected ends: what one writes the other reads.
    pub fn pair() -> (MemoryStream, MemoryStream) {
        let (ab, ba) = (
            Arc::new(Direction::default()),
            Arc::new(Direction::default()),
        );
        let a = MemoryStream {
            rx: Arc::clone(&ba),
            tx: Arc::clone(&ab),
            read_timeout: None,
        };
        let b = MemoryStream {
            rx: ab,
            tx: ba,
            read_timeout: None,
        };
        (a, b)
    }
}

impl Read for MemoryStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        let mut state = self.rx.lock();
        loop {
            if !state.bytes.is_empty() {
                let n = buf.len().min(state.bytes.len());
                for (dst, src) in buf.iter_mut().zip(state.bytes.drain(..n)) {
                    *dst = src;
                }
                self.rx.changed.notify_all();
                return Ok(n);
            }
            if state.closed {
                return Ok(0);
            }
            state = match deadline {
                None => self
                    .rx
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ErrorKind::WouldBlock.into());
                    }
                    self.rx
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

impl Write for MemoryStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.tx.lock();
        loop {
            if state.closed {
                return Err(ErrorKind::BrokenPipe.into());
            }
            let room = MEMORY_STREAM_CAPACITY - state.bytes.len();
            if room > 0 {
                let n = buf.len().min(room);
                state.bytes.extend(&buf[..n]);
                self.tx.changed.notify_all();
                return Ok(n);
            }
            state = self
                .tx
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ReadTimeout for MemoryStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        Ok(())
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        self.rx.close();
        self.tx.close();
    }
}

impl std::fmt::Debug for MemoryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStream")
            .field("unread", &self.rx.lock().bytes.len())
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

/// A client and a server connection (in that order), with the native
/// codec, over the two ends of a [`MemoryStream::pair`]: in memory, no
/// socket, no port. The server has queued `hello`; the handshake runs as the
/// two are driven, each in its own thread (every call of a
/// [`StreamConnection`] blocks until its peer answers). Both get `registry`
/// and `options`.
///
/// ```
/// use peng3dnet_core::CloseReason;
/// use peng3dnet_std::client::ClientEvent;
/// use peng3dnet_std::echo::{self, Echo};
/// use peng3dnet_std::stream::StreamOptions;
/// use peng3dnet_std::test_util::stream_pair;
/// use std::time::Duration;
///
/// let t = Duration::from_secs(5);
/// let (mut client, mut server) = stream_pair(echo::registry(), StreamOptions::default())?;
/// // A scripted server: answer the first echo with a close.
/// let server = std::thread::spawn(move || -> Result<(), peng3dnet_std::client::ClientError> {
///     server.expect::<Echo>(t)?;
///     server.close(CloseReason::ServerFull)
/// });
/// client.wait_connected(t)?;
/// client.send::<Echo>(&"hello")?;
/// loop {
///     if let ClientEvent::Closed(closed) = client.recv(t)? {
///         assert_eq!(closed.reason, CloseReason::ServerFull);
///         break;
///     }
/// }
/// server.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`ClientError::Setup`] for options a connection refuses.
#[allow(clippy::type_complexity)]
pub fn stream_pair(
    registry: StdRegistry,
    options: StreamOptions,
) -> Result<
    (
        StreamConnection<MemoryStream, Postcard>,
        StreamConnection<MemoryStream, Postcard>,
    ),
    ClientError,
> {
    let (a, b) = MemoryStream::pair();
    let server = StreamConnection::server(b, registry.clone(), Postcard, options.clone())?;
    let client = StreamConnection::client(a, registry, Postcard, options)?;
    Ok((client, server))
}
