//! A blocking driver for one connection over any byte stream: a
//! [`UnixStream`](std::os::unix::net::UnixStream), a
//! [`TcpStream`](std::net::TcpStream), a serial port (the `serial` feature:
//! `Box<dyn serialport::SerialPort>`), or a user's own [`Read`] + [`Write`]
//! with a read timeout ([`ReadTimeout`]).
//!
//! [`StreamConnection`] runs a core [`Connection`]
//! in either role: [`client`](StreamConnection::client) (as the TCP
//! [`Client`](crate::client::Client) does) or
//! [`server`](StreamConnection::server) for the single peer at the other end
//! of the stream. It follows the core's driving order with the stream's own
//! blocking calls: it writes everything queued first (a server connection
//! queues `hello` when it is created), then reads with the core's
//! [`poll_timeout`](peng3dnet_core::Connection::poll_timeout) (or the
//! caller's deadline, whichever is sooner) as the read timeout, and fires
//! the core's timers when it passes. Events are the TCP client's
//! [`ClientEvent`]s.
//!
//! Writes block until the stream took the bytes: a peer that never reads
//! while it writes to us fills both directions and stalls both ends (a
//! serial link or a socket pair has buffers of its own; the TCP
//! [`Client`](crate::client::Client), with its poller, reads while it waits
//! to write).
//!
//! ```
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::CloseReason;
//! use peng3dnet_std::client::ClientEvent;
//! use peng3dnet_std::echo::{self, Echo};
//! use peng3dnet_std::stream::{StreamConnection, StreamOptions};
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//!
//! let (a, b) = UnixStream::pair()?;
//! let t = Duration::from_secs(5);
//! // The server side: the echo service for the one peer on the stream.
//! let server = std::thread::spawn(move || {
//!     let mut conn =
//!         StreamConnection::server(b, echo::registry(), Postcard, StreamOptions::default())?;
//!     loop {
//!         match conn.recv(t)? {
//!             ClientEvent::Packet(p) if p.is::<Echo>() => conn.send_encoded(p.packet_id, &p.body)?,
//!             ClientEvent::Closed(closed) => return Ok(closed.reason),
//!             _ => {}
//!         }
//!     }
//! });
//! let mut client =
//!     StreamConnection::client(a, echo::registry(), Postcard, StreamOptions::default())?;
//! client.wait_connected(t)?;
//! client.send::<Echo>(&"over a socket pair")?;
//! loop {
//!     if let ClientEvent::Packet(p) = client.recv(t)? {
//!         assert_eq!(p.decode::<Echo>()?, "over a socket pair");
//!         break;
//!     }
//! }
//! client.close(CloseReason::UserRequest)?;
//! let reason: Result<CloseReason, peng3dnet_std::client::ClientError> = server.join().unwrap();
//! assert_eq!(reason?, CloseReason::UserRequest);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::buffer::HeapBuffer;
use crate::client::{
    client_event, connection_config, expect_blocking, new_connection, ClientConn, ClientError,
    ClientEvent, ClientOptions,
};
use crate::{Clock, StdRegistry};
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::connection::{Config, Incoming, PingServerConfig, SendError};
use peng3dnet_core::registry::{Packet, SyncPolicy};
use peng3dnet_core::{CloseReason, Closed, Connection, Initiator, Side};
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// A byte stream whose reads can time out: the driver waits in `read` no
/// longer than the core's next timer.
pub trait ReadTimeout {
    /// Makes the next reads return (with [`ErrorKind::WouldBlock`] or
    /// [`ErrorKind::TimedOut`]) after `timeout` without data; `None` waits
    /// without end.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl ReadTimeout for std::net::TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, timeout)
    }
}

#[cfg(unix)]
impl ReadTimeout for std::os::unix::net::UnixStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

#[cfg(feature = "serial")]
impl ReadTimeout for Box<dyn serialport::SerialPort> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        // A serial port has no "forever": a day is as long.
        self.set_timeout(timeout.unwrap_or(Duration::from_secs(86_400)))
            .map_err(io::Error::from)
    }
}

impl<T: ReadTimeout + ?Sized> ReadTimeout for &mut T {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }
}

/// Settings of a [`StreamConnection`].
#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// A client's connection type: `classic` (default), `ping`.
    pub conntype: &'static str,
    /// The core's handshake timer (the connection closes with
    /// `handshaketimeout` after it).
    pub handshake_timeout: Duration,
    /// Time from a frame's first byte to its last before `frametimeout`
    /// (30 s): a length prefix changed on a noisy line, or bytes lost,
    /// leave a frame that never completes; this ends the wait.
    pub frame_timeout: Duration,
    /// Time the peer may send nothing before `idletimeout`; `None` (the
    /// default) never.
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive when nothing was sent for this long (15 s; `None`:
    /// never), while one of the driver's calls waits.
    pub keepalive_interval: Option<Duration>,
    /// What a client does when the server's registry holds other names.
    pub sync_policy: SyncPolicy,
    /// The largest frame accepted from the peer: a longer length prefix
    /// closes with `packettoolarge`.
    pub max_frame: usize,
    /// The most bytes queued for sending.
    pub max_write_queue: usize,
    /// Compress bodies above 8,192 bytes (zlib level 6), as the reference
    /// does. Compressed frames from the peer are always accepted.
    pub compression: bool,
    /// A server answers `ping` connections (with this crate's version as
    /// its release); `false` refuses them with `unknownconntype`.
    pub answer_pings: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            conntype: peng3dnet_core::CONNTYPE_CLASSIC,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: None,
            keepalive_interval: Some(Duration::from_secs(15)),
            sync_policy: SyncPolicy::CloseConnection,
            max_frame: 1 << 20,
            max_write_queue: 1 << 20,
            compression: true,
            answer_pings: true,
        }
    }
}

impl StreamOptions {
    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            conntype: self.conntype,
            handshake_timeout: self.handshake_timeout,
            frame_timeout: self.frame_timeout,
            idle_timeout: self.idle_timeout,
            keepalive_interval: self.keepalive_interval,
            sync_policy: self.sync_policy,
            max_frame: self.max_frame,
            max_write_queue: self.max_write_queue,
            compression: self.compression,
            ..ClientOptions::default()
        }
    }
}

/// One connection, client or server, over a blocking byte stream `S`; see
/// the [module docs](self).
pub struct StreamConnection<S, C: Codec = Postcard> {
    stream: S,
    conn: Box<ClientConn<C>>,
    clock: Clock,
    queue: VecDeque<ClientEvent<C>>,
    closed: Option<Closed>,
    eof: bool,
    span: tracing::Span,
}

impl<S: Read + Write + ReadTimeout, C: Codec> StreamConnection<S, C> {
    /// A client over `stream`: it waits for the server's `hello` (the
    /// handshake runs while the connection is used;
    /// [`wait_connected`](Self::wait_connected) waits for it).
    pub fn client(
        stream: S,
        registry: StdRegistry,
        codec: C,
        options: StreamOptions,
    ) -> Result<Self, ClientError> {
        let clock = Clock::new();
        let conn = new_connection(&options.client_options(), registry, codec, &clock)?;
        Ok(Self::new(stream, conn, clock, Side::Client))
    }

    /// The server of the one peer at the other end of `stream`: `hello` is
    /// queued now and written by the first call that waits.
    pub fn server(
        stream: S,
        registry: StdRegistry,
        codec: C,
        options: StreamOptions,
    ) -> Result<Self, ClientError> {
        let clock = Clock::new();
        let release = env!("CARGO_PKG_VERSION");
        // The client's settings (timers, compression), and pings answered.
        let config = Config {
            ping: options
                .answer_pings
                .then_some(PingServerConfig { release, data: &[] }),
            ..connection_config(&options.client_options())
        };
        let conn = Connection::server(
            &config,
            registry,
            codec,
            HeapBuffer::new(options.max_frame, 1024),
            HeapBuffer::new(options.max_write_queue, 1024),
            clock.now(),
        )
        .map_err(ClientError::Setup)?;
        Ok(Self::new(stream, conn, clock, Side::Server))
    }

    fn new(stream: S, conn: ClientConn<C>, clock: Clock, side: Side) -> Self {
        let span = tracing::info_span!("peng3dnet_stream", ?side);
        tracing::debug!(parent: &span, "connection over a byte stream");
        StreamConnection {
            stream,
            conn: Box::new(conn),
            clock,
            queue: VecDeque::new(),
            closed: None,
            eof: false,
            span,
        }
    }

    /// The core connection (state, registry, codec, security level...).
    pub fn connection(&self) -> &ClientConn<C> {
        &self.conn
    }

    /// The core connection, to issue its commands directly
    /// ([`set_mode`](Connection::set_mode), [`set_state`](Connection::set_state)...).
    pub fn connection_mut(&mut self) -> &mut ClientConn<C> {
        &mut self.conn
    }

    /// Whether the handshake completed and the connection is open.
    pub fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    /// Whether the stream ended (read end of stream or an error): the next
    /// connection cannot use it.
    pub fn stream_ended(&self) -> bool {
        self.eof
    }

    /// The stream back, for the next connection over it once this one is
    /// finished (a serial link carries one connection after another).
    /// Bytes the peer sent after this connection's last frame, read in the
    /// same `read`, are lost.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Waits until the handshake completed. A client whose handshake closed
    /// with `packetregmismatch` fails with [`ClientError::RegistryMismatch`]
    /// (which names differ), else a close is [`ClientError::Closed`].
    pub fn wait_connected(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.conn.is_connected() {
                return Ok(());
            }
            if let Some(c) = &self.closed {
                if let Some(m) = self.conn.registry_mismatch() {
                    return Err(ClientError::RegistryMismatch(m));
                }
                return Err(ClientError::Closed(c.clone()));
            }
            self.pump(deadline)?;
        }
    }

    /// Sends a typed packet; fails on a rule, size or closed connection.
    /// Waits (reading meanwhile, up to 30 s) while the transmit queue is
    /// full.
    pub fn send<P: Packet>(&mut self, msg: &P::Message<'_>) -> Result<(), ClientError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.conn.send::<P>(msg) {
                Err(SendError::WouldBlock { .. }) => self.pump(deadline)?,
                other => return self.sent(other),
            }
        }
    }

    /// Sends an already encoded body as the packet with this id (an echo
    /// sends a received body back unchanged).
    pub fn send_encoded(&mut self, packet_id: u32, body: &[u8]) -> Result<(), ClientError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.conn.send_encoded(packet_id, body) {
                Err(SendError::WouldBlock { .. }) => self.pump(deadline)?,
                other => return self.sent(other),
            }
        }
    }

    fn sent(&mut self, result: Result<(), SendError>) -> Result<(), ClientError> {
        match result {
            Ok(()) => self.flush(),
            Err(SendError::Closed) => {
                Err(ClientError::Closed(self.conn.closed().unwrap_or(Closed {
                    reason: CloseReason::Unspecified,
                    initiator: Initiator::Local,
                })))
            }
            Err(e) => Err(ClientError::Send(e)),
        }
    }

    /// The next event, waiting up to `timeout`. After the close event,
    /// every call fails with [`ClientError::Closed`].
    pub fn recv(&mut self, timeout: Duration) -> Result<ClientEvent<C>, ClientError> {
        self.recv_until(Instant::now() + timeout)
    }

    /// The next event, waiting until `deadline` (a bound over several
    /// calls, as the TCP client's
    /// [`recv_until`](crate::client::Client::recv_until)).
    pub fn recv_until(&mut self, deadline: Instant) -> Result<ClientEvent<C>, ClientError> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(e);
            }
            if let Some(c) = &self.closed {
                return Err(ClientError::Closed(c.clone()));
            }
            self.pump_until(deadline, true)?;
        }
    }

    /// Waits up to `timeout` for a packet of type `P`; anything else first
    /// (but `Connected`) is [`ClientError::Unexpected`], as the TCP
    /// client's [`expect`](crate::client::Client::expect).
    pub fn expect<P: Packet>(
        &mut self,
        timeout: Duration,
    ) -> Result<Incoming<Vec<u8>, C>, ClientError> {
        expect_blocking::<P, C>(timeout, |deadline| self.recv_until(deadline))
    }

    /// Closes with `reason` and waits (up to 10 s) until the `closeconn` is
    /// written. The stream stays open ([`into_stream`](Self::into_stream)).
    pub fn close(&mut self, reason: CloseReason) -> Result<(), ClientError> {
        self.conn.close(reason);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.conn.is_finished() {
            match self.pump(deadline) {
                Ok(()) => {}
                Err(ClientError::Closed(..)) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until the connection closed (by the peer, a timer or the
    /// stream) and returns why and by whom.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Closed, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = &self.closed {
                return Ok(c.clone());
            }
            match self.pump(deadline) {
                Ok(()) | Err(ClientError::Closed(..)) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes every queued byte (blocking). A failed write ends the
    /// connection (`socketclose`).
    fn flush(&mut self) -> Result<(), ClientError> {
        let mut wrote = false;
        loop {
            let data = self.conn.poll_transmit();
            if data.is_empty() {
                break;
            }
            match self.stream.write(data) {
                Ok(0) => {
                    self.end_of_stream();
                    return Ok(());
                }
                Ok(n) => {
                    self.conn.transmitted(n);
                    wrote = true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.end_of_stream();
                    return Ok(());
                }
            }
        }
        if wrote && self.stream.flush().is_err() {
            self.end_of_stream();
        }
        Ok(())
    }

    fn end_of_stream(&mut self) {
        self.eof = true;
        self.conn.handle_transport_closed();
        self.drain_events();
    }

    /// One round in the core's order: write what is queued, read with the
    /// next timer (or `deadline`) as the read timeout, fire due timers,
    /// hand out events, write again. Fails with `Timeout` at `deadline`,
    /// with `Closed` once the connection is closed and finished.
    fn pump(&mut self, deadline: Instant) -> Result<(), ClientError> {
        self.pump_until(deadline, false)
    }

    /// [`pump`](Self::pump); with `until_event`, returns at once while an
    /// event is queued.
    fn pump_until(&mut self, deadline: Instant, until_event: bool) -> Result<(), ClientError> {
        self.flush()?;
        self.drain_events();
        if until_event && !self.queue.is_empty() {
            return Ok(());
        }
        if let Some(c) = &self.closed {
            if self.conn.is_finished() || self.eof {
                return Err(ClientError::Closed(c.clone()));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::Timeout);
        }
        let core_now = self.clock.now();
        let timer = self
            .conn
            .poll_timeout()
            .map(|t| Duration::from_micros(t.saturating_duration_since(core_now).as_micros()));
        let wait = deadline.saturating_duration_since(now);
        let wait = timer.map_or(wait, |t| t.min(wait));
        if !wait.is_zero() && !self.eof && !self.conn.is_closed() {
            self.read_once(wait)?;
        }
        let core_now = self.clock.now();
        if self.conn.poll_timeout().is_some_and(|t| core_now >= t) {
            self.conn.handle_timeout(core_now);
        }
        self.drain_events();
        self.flush()
    }

    /// One read of at most `wait`.
    fn read_once(&mut self, wait: Duration) -> Result<(), ClientError> {
        if self.conn.receive_buffer().is_empty() {
            // Events free the space.
            self.drain_events();
            if self.conn.receive_buffer().is_empty() {
                return Ok(());
            }
        }
        // Zero would mean "no timeout" to the standard streams.
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let buf = self.conn.receive_buffer();
        match self.stream.read(buf) {
            Ok(0) => self.end_of_stream(),
            Ok(n) => {
                self.conn.commit_received(n);
                self.drain_events();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => self.end_of_stream(),
        }
        Ok(())
    }

    fn drain_events(&mut self) {
        let now = self.clock.now();
        while let Some(event) = self.conn.poll(now) {
            let Some(out) = client_event(event, &self.span) else {
                continue;
            };
            if let ClientEvent::Closed(closed) = &out {
                self.closed = Some(closed.clone());
            }
            self.queue.push_back(out);
        }
    }
}
