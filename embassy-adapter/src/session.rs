//! One connection driven by async I/O: [`Session`].
//!
//! A session owns a core [`Connection`] behind a blocking mutex. Its
//! [`run`](Session::run) future moves bytes between the connection and any
//! `embedded_io_async` reader and writer (an `embassy-net` socket's halves, a
//! TLS session, a UART, a test pipe) and fires its timer; other tasks
//! [`send`](Session::send), [`receive`](Session::receive),
//! [`wait_connected`](Session::wait_connected) and [`close`](Session::close)
//! at the same time. No lock is held across an `.await`.
//!
//! Every future of a session is cancel-safe: dropping `send` before it
//! returns queues nothing, dropping `receive` before it returns consumes no
//! packet, and the connection stays usable. Dropping `run` stops the
//! connection's I/O; it may be run again, but bytes it had read and not yet
//! fit into a full receive buffer are lost then, so drop it only between
//! packets (as `tests/tests/embassy_session.rs` does) or to end the
//! connection.

use crate::fmt::debug;
use core::cell::RefCell;
use core::future::poll_fn;
use core::task::Poll;
use embassy_futures::select::{select, select3, Either, Either3};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::waitqueue::MultiWakerRegistration;
use embedded_io_async::{Read, Write};
use peng3dnet_core::codec::Codec;
use peng3dnet_core::connection::{Config, NewConnectionError, SendError};
use peng3dnet_core::registry::{Packet, Registry, RegistryAccess};
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::{CloseReason, Connection, Event, Initiator, SecurityLevel, State};

/// Bytes moved per socket read or write.
pub const CHUNK: usize = 256;

/// Tasks that can wait on one session at once before they are woken early
/// (which is harmless: each re-checks its condition).
const WAITERS: usize = 4;

/// The receive and transmit buffers of one connection, sized at compile time.
/// Place it in a `static` (with `static_cell`) or on a task's stack.
pub struct Resources<const RX: usize, const TX: usize> {
    rx: [u8; RX],
    tx: [u8; TX],
}

impl<const RX: usize, const TX: usize> Resources<RX, TX> {
    /// Zeroed buffers: `RX` bounds the largest frame received, `TX` the bytes
    /// queued for sending (it must hold the server's handshake on a server).
    pub const fn new() -> Self {
        Resources {
            rx: [0; RX],
            tx: [0; TX],
        }
    }
}

impl<const RX: usize, const TX: usize> Default for Resources<RX, TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// The core connection of a session.
pub type SessionConnection<'a, C, const N: usize, G> =
    Connection<'a, C, &'a mut [u8], &'a mut [u8], N, G>;

struct Inner<'a, C, const N: usize, G> {
    conn: SessionConnection<'a, C, N, G>,
    closed: Option<(CloseReason, Initiator)>,
    pong: Option<Duration>,
    generation: u32,
    wakers: MultiWakerRegistration<WAITERS>,
}

impl<C: Codec, const N: usize, G: RegistryAccess<N>> Inner<'_, C, N, G> {
    /// Runs the protocol on what was received and records what happened.
    fn absorb(&mut self, now: Instant) {
        let Inner {
            conn, closed, pong, ..
        } = self;
        while let Some(event) = conn.poll_protocol(now) {
            match event {
                Event::Closed { reason, initiator } => {
                    debug!("session closed");
                    *closed = Some((reason, initiator));
                }
                Event::Pong { delay, .. } => *pong = Some(delay),
                _ => {}
            }
        }
    }

    /// Wakes every waiting task to re-check its condition.
    fn notify(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.wakers.wake();
    }
}

/// Why [`Session::run`] ended other than by a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RunError<R, W> {
    /// Reading failed.
    Read(R),
    /// Writing failed.
    Write(W),
}

/// The connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Why.
    pub reason: CloseReason,
    /// By whom.
    pub initiator: Initiator,
}

/// Why [`Session::receive`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveError {
    /// The connection closed.
    Closed(Closed),
    /// The packet's body did not fit the caller's buffer; the packet was
    /// consumed and dropped.
    BufferTooSmall {
        /// Its id.
        packet_id: u32,
        /// Its body's length.
        required: usize,
    },
}

/// A received packet, copied into the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'b, C> {
    /// Its id.
    pub packet_id: u32,
    /// Its registry name, if registered.
    pub name: Option<&'static str>,
    /// Its body.
    pub body: &'b [u8],
    codec: C,
}

impl<'b, C: Codec> Received<'b, C> {
    /// Whether it is a `P`.
    pub fn is<P: Packet>(&self) -> bool {
        self.name == Some(P::NAME)
    }

    /// Decodes it as a `P`.
    pub fn decode<P: Packet>(
        &self,
    ) -> Result<P::Message<'b>, peng3dnet_core::connection::DecodeError> {
        if !self.is::<P>() {
            return Err(peng3dnet_core::connection::DecodeError::WrongPacket);
        }
        self.codec
            .decode(self.body)
            .map_err(peng3dnet_core::connection::DecodeError::Codec)
    }
}

/// One peng3dnet connection for async tasks. `M` is the mutex kind
/// (`NoopRawMutex` when every task runs on one executor,
/// `CriticalSectionRawMutex` otherwise).
pub struct Session<'a, M: RawMutex, C, const N: usize, G> {
    state: Mutex<M, RefCell<Inner<'a, C, N, G>>>,
}

/// The core's time now, from `embassy-time`.
pub fn now() -> Instant {
    Instant::from_micros(embassy_time::Instant::now().as_micros())
}

fn to_embassy(at: Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_micros(at.as_micros())
}

impl<'a, M: RawMutex, C: Codec + Clone, const N: usize, G: RegistryAccess<N>>
    Session<'a, M, C, N, G>
{
    fn from_connection(conn: SessionConnection<'a, C, N, G>) -> Self {
        Session {
            state: Mutex::new(RefCell::new(Inner {
                conn,
                closed: None,
                pong: None,
                generation: 0,
                wakers: MultiWakerRegistration::new(),
            })),
        }
    }

    /// A client session that asks for `conntype` (`"classic"`, `"ping"`, or
    /// one of the config's custom types). `registry` is usually
    /// `&mut Registry` (it adopts the server's ids).
    pub fn client<const RX: usize, const TX: usize>(
        config: &Config<'a>,
        registry: G,
        codec: C,
        resources: &'a mut Resources<RX, TX>,
        conntype: &str,
    ) -> Result<Self, NewConnectionError> {
        let Resources { rx, tx } = resources;
        let conn = Connection::client(
            config,
            registry,
            codec,
            &mut rx[..],
            &mut tx[..],
            conntype,
            now(),
        )?;
        Ok(Self::from_connection(conn))
    }

    /// The server's session with a client that just connected (queues
    /// `hello`). `registry` is usually the server's `&Registry`.
    pub fn server<const RX: usize, const TX: usize>(
        config: &Config<'a>,
        registry: G,
        codec: C,
        resources: &'a mut Resources<RX, TX>,
    ) -> Result<Self, NewConnectionError> {
        let Resources { rx, tx } = resources;
        let conn = Connection::server(config, registry, codec, &mut rx[..], &mut tx[..], now())?;
        Ok(Self::from_connection(conn))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<'a, C, N, G>) -> R) -> R {
        self.state.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// Waits until the session changed after generation `seen`.
    async fn changed(&self, seen: u32) {
        poll_fn(|cx| {
            self.with(|s| {
                if s.generation != seen {
                    Poll::Ready(())
                } else {
                    s.wakers.register(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }

    fn generation(&self) -> u32 {
        self.with(|s| s.generation)
    }

    /// Sets the transport's security level (after a TLS handshake, say).
    pub fn set_security_level(&self, level: SecurityLevel) {
        self.with(|s| s.conn.set_security_level(level));
    }

    /// The connection's protocol state.
    pub fn state(&self) -> State {
        self.with(|s| s.conn.state())
    }

    /// Whether the handshake completed and the connection is open.
    pub fn is_connected(&self) -> bool {
        self.with(|s| s.conn.is_connected())
    }

    /// Why the connection closed, once it has.
    pub fn closed(&self) -> Option<Closed> {
        self.with(|s| {
            s.closed
                .clone()
                .map(|(reason, initiator)| Closed { reason, initiator })
        })
    }

    /// Runs the connection over `reader` and `writer` until it closed and
    /// its last bytes (the `closeconn`) were written, or the transport
    /// failed. Returns why it closed.
    pub async fn run<R: Read, W: Write>(
        &self,
        mut reader: R,
        mut writer: W,
    ) -> Result<Closed, RunError<R::Error, W::Error>> {
        let read_loop = async {
            let mut buf = [0u8; CHUNK];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) => {
                        self.transport_closed();
                        // Frames received before the end are still handed
                        // out (the peer's last packets, its closeconn).
                        self.wait_closed().await;
                        return Ok(());
                    }
                    Ok(n) => n,
                    Err(e) => {
                        self.transport_closed();
                        return Err(RunError::Read(e));
                    }
                };
                let mut taken = 0;
                while taken < n {
                    let seen = self.generation();
                    let t = self.with(|s| {
                        let t = s.conn.handle_input(&buf[taken..n]);
                        s.absorb(now());
                        s.notify();
                        t
                    });
                    taken += t;
                    if t == 0 {
                        // The receive buffer is full of packets nobody took
                        // yet: wait for the receiver.
                        self.changed(seen.wrapping_add(1)).await;
                    }
                }
            }
        };
        let write_loop = async {
            let mut buf = [0u8; CHUNK];
            // Bytes written since the last flush (a TLS writer buffers them).
            let mut dirty = false;
            loop {
                let seen = self.generation();
                let (k, finished) = self.with(|s| {
                    let pending = s.conn.poll_transmit();
                    let k = pending.len().min(CHUNK);
                    buf[..k].copy_from_slice(&pending[..k]);
                    (k, s.conn.is_finished())
                });
                if k == 0 {
                    if dirty {
                        dirty = false;
                        if let Err(e) = writer.flush().await {
                            self.transport_closed();
                            return Err(RunError::Write(e));
                        }
                        // The flush took time: look for new bytes first.
                        continue;
                    }
                    if finished {
                        return Ok(());
                    }
                    self.changed(seen).await;
                    continue;
                }
                match writer.write(&buf[..k]).await {
                    Ok(0) => {
                        self.transport_closed();
                        return Ok(());
                    }
                    Ok(n) => {
                        dirty = true;
                        self.with(|s| {
                            s.conn.transmitted(n);
                            s.notify();
                        })
                    }
                    Err(e) => {
                        self.transport_closed();
                        return Err(RunError::Write(e));
                    }
                }
            }
        };
        let timer_loop = async {
            loop {
                let seen = self.generation();
                match self.with(|s| s.conn.poll_timeout()) {
                    Some(at) => {
                        if let Either::First(()) =
                            select(embassy_time::Timer::at(to_embassy(at)), self.changed(seen))
                                .await
                        {
                            self.with(|s| {
                                s.conn.handle_timeout(now());
                                s.absorb(now());
                                s.notify();
                            });
                        }
                    }
                    None => self.changed(seen).await,
                }
            }
        };
        let result = match select3(read_loop, write_loop, timer_loop).await {
            Either3::First(r) => r,
            Either3::Second(r) => r,
            Either3::Third(r) => r,
        };
        result?;
        Ok(self.closed().unwrap_or(Closed {
            reason: CloseReason::SocketClose,
            initiator: Initiator::Transport,
        }))
    }

    fn transport_closed(&self) {
        self.with(|s| {
            s.conn.handle_transport_closed();
            s.absorb(now());
            s.notify();
        });
    }

    /// Waits until the handshake completed.
    pub async fn wait_connected(&self) -> Result<(), Closed> {
        loop {
            let seen = self.generation();
            if self.is_connected() {
                return Ok(());
            }
            if let Some(c) = self.closed() {
                return Err(c);
            }
            self.changed(seen).await;
        }
    }

    /// Sends a typed packet, waiting while the transmit buffer is full. Fails
    /// at once on a rule, size or closed connection; nothing is queued then.
    pub async fn send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), SendError> {
        loop {
            let seen = self.generation();
            match self.with(|s| {
                let r = s.conn.send::<P>(msg);
                if r.is_ok() {
                    s.notify();
                }
                r
            }) {
                Err(SendError::WouldBlock { .. }) => self.changed(seen).await,
                other => return other,
            }
        }
    }

    /// Receives the next application packet into `buf`.
    pub async fn receive<'b>(&self, buf: &'b mut [u8]) -> Result<Received<'b, C>, ReceiveError> {
        loop {
            let seen = self.generation();
            let got = self.with(|s| {
                let now = now();
                let Inner {
                    conn, closed, pong, ..
                } = &mut *s;
                let mut out = None;
                while let Some(event) = conn.poll(now) {
                    match event {
                        Event::Packet(p) | Event::ConnTypePacket(p) => {
                            let codec = conn_codec_of(&p);
                            out = Some(if p.body.len() > buf.len() {
                                Err(ReceiveError::BufferTooSmall {
                                    packet_id: p.packet_id,
                                    required: p.body.len(),
                                })
                            } else {
                                buf[..p.body.len()].copy_from_slice(p.body);
                                Ok((p.packet_id, p.name, p.body.len(), codec))
                            });
                            break;
                        }
                        Event::Closed { reason, initiator } => *closed = Some((reason, initiator)),
                        Event::Pong { delay, .. } => *pong = Some(delay),
                        _ => {}
                    }
                }
                s.notify();
                out
            });
            match got {
                Some(Ok((packet_id, name, len, codec))) => {
                    return Ok(Received {
                        packet_id,
                        name,
                        body: &buf[..len],
                        codec,
                    })
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
            if let Some(c) = self.closed() {
                return Err(ReceiveError::Closed(c));
            }
            self.changed(seen.wrapping_add(1)).await;
        }
    }

    /// (Ping client) waits for the server's answer and returns the round
    /// trip; the connection then closes with `pingcomplete`.
    pub async fn wait_pong(&self) -> Result<Duration, Closed> {
        loop {
            let seen = self.generation();
            if let Some(d) = self.with(|s| s.pong) {
                return Ok(d);
            }
            if let Some(c) = self.closed() {
                return Err(c);
            }
            self.changed(seen).await;
        }
    }

    /// Closes with `reason` (the `closeconn` leaves through `run`).
    pub fn close(&self, reason: CloseReason) {
        self.with(|s| {
            s.conn.close(reason);
            s.absorb(now());
            s.notify();
        });
    }

    /// Waits until the connection is closed.
    pub async fn wait_closed(&self) -> Closed {
        loop {
            let seen = self.generation();
            if let Some(c) = self.closed() {
                return c;
            }
            self.changed(seen).await;
        }
    }

    /// Runs `f` on the core connection (to read its registry, set its
    /// mode...). `f` must not call back into the session.
    pub fn with_connection<R>(
        &self,
        f: impl FnOnce(&mut SessionConnection<'a, C, N, G>) -> R,
    ) -> R {
        self.with(|s| {
            let r = f(&mut s.conn);
            s.notify();
            r
        })
    }
}

fn conn_codec_of<C: Codec + Clone>(p: &peng3dnet_core::connection::Incoming<'_, C>) -> C {
    p.codec().clone()
}

/// A server's registry shared by its sessions.
pub type SharedRegistry<'a, const N: usize> = &'a Registry<N>;
