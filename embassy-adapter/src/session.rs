//! One connection driven by async I/O: [`Session`].
//!
//! A session owns a core [`Connection`] behind a blocking mutex. Its
//! [`run_io`](Session::run_io) future moves bytes between the connection and
//! an `embassy-net` socket's halves in place (see [`crate::io`]), and its
//! [`run`](Session::run) future between the connection and any
//! `embedded_io_async` reader and writer (a TLS session, a UART, a test pipe)
//! through two small copy buffers; both fire its timer. Other tasks
//! [`send`](Session::send), [`receive`](Session::receive) (or
//! [`receive_with`](Session::receive_with), in place),
//! [`wait_connected`](Session::wait_connected) and [`close`](Session::close)
//! at the same time. No lock is held across an `.await`. A session polls its
//! connection with its side's protocol code only
//! ([`Role`]), so a firmware that only
//! makes client sessions links none of the server's.
//!
//! Every future of a session is cancel-safe: dropping `send` before it
//! returns queues nothing, dropping `receive` or `receive_with` before it
//! returns consumes no packet, and the connection stays usable. Dropping
//! `run_io` stops the connection's I/O and loses nothing (bytes stay in the
//! socket until taken); it may be run again. Dropping `run` does the same,
//! but bytes it had read and not yet fit into a full receive buffer are lost
//! then, so drop it only between packets (as `tests/tests/embassy_session.rs`
//! does) or to end the connection.
//!
//! **A deadline per request.** Because a dropped `receive` loses nothing,
//! one deadline bounds the whole wait for an answer, whatever else arrives
//! before it: take the deadline once and wrap each `receive` in
//! `embassy_time::with_deadline(deadline, ...)` inside the loop that skips
//! the other packets (as `peng3dnet-std`'s `Client::recv_until` does). A
//! `with_timeout` per `receive` would restart with every other packet.

use crate::fmt::debug;
use crate::io::{Input, Output};
use core::cell::RefCell;
use core::future::{poll_fn, Future};
use core::task::{Context, Poll};
use embassy_futures::select::{select, select3, Either, Either3};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::waitqueue::MultiWakerRegistration;
use embedded_io_async::{Read, Write};
use peng3dnet_core::codec::Codec;
use peng3dnet_core::connection::{
    Config, Incoming, NewConnectionError, Outbox, ProtocolStep, Role, SendError, Take,
};
use peng3dnet_core::registry::{Packet, Registry, RegistryAccess};
use peng3dnet_core::time::{Duration, Instant};
use peng3dnet_core::{CloseReason, Closed, Connection, SecurityLevel, State};

/// Bytes moved per socket read or write.
pub const CHUNK: usize = 256;

/// What [`Session::run_io`]'s poll ends with.
pub(crate) type IoResult<I, O> = Result<(), RunError<<I as Input>::Error, <O as Output>::Error>>;

/// Rounds of [`Session::run_io`]'s poll before it yields to other tasks.
const IO_ROUNDS: usize = 16;

/// What [`Session::run_io`] (and a server's client) keeps between polls.
#[derive(Default)]
pub(crate) struct IoState {
    /// The stream ended.
    ended: bool,
    /// Bytes were written since the last flush.
    dirty: bool,
}

/// Tasks that can wait on one session at once, by default (see
/// [`Session`]'s `WAIT`).
pub const WAITERS: usize = 4;

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

/// The sending side of a session's connection, lent by
/// [`Session::receive_with`].
pub type SessionOutbox<'c, 'a, C, const N: usize, G> = Outbox<'c, 'a, C, &'a mut [u8], N, G>;

struct Inner<'a, C, const N: usize, G, const WAIT: usize> {
    conn: SessionConnection<'a, C, N, G>,
    /// The connection's side's protocol code only (a client image links
    /// none of the server's; see [`Role`]).
    role: Role<'a, C, &'a mut [u8], N, G>,
    /// The ping's round trip in microseconds, `u64::MAX` until it came.
    pong: u64,
    generation: u32,
    wakers: MultiWakerRegistration<WAIT>,
}

impl<C: Codec, const N: usize, G: RegistryAccess<N>, const WAIT: usize> Inner<'_, C, N, G, WAIT> {
    /// Runs the protocol on what was received and records what happened.
    fn absorb(&mut self, now: Instant) {
        let Inner {
            conn, pong, role, ..
        } = self;
        while let Some(step) = conn.step_protocol_role(now, *role) {
            match step {
                ProtocolStep::Closed => debug!("session closed"),
                ProtocolStep::Pong(delay) => *pong = delay.as_micros(),
                _ => {}
            }
        }
    }

    /// Wakes every waiting task to re-check its condition. Out of line:
    /// every command and I/O step ends with it, and each inlined copy of
    /// the wakers' loop cost flash.
    #[inline(never)]
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

/// One peng3dnet connection for async tasks. `M` is the mutex kind
/// (`NoopRawMutex` when every task runs on one executor,
/// `CriticalSectionRawMutex` otherwise). `WAIT` is how many futures can wait
/// on the session at once before they are all woken whenever one more waits
/// (harmless, each re-checks its condition; it costs a word per waiter):
/// `run` or `run_io` is one, a receiver another, a sender a third.
pub struct Session<'a, M: RawMutex, C, const N: usize, G, const WAIT: usize = WAITERS> {
    state: Mutex<M, RefCell<Inner<'a, C, N, G, WAIT>>>,
}

/// The core's time now, from `embassy-time`.
// Out of line: a session asks for the time in many places, and each inlined
// copy of the driver's clock read and tick conversion cost flash.
#[inline(never)]
pub fn now() -> Instant {
    Instant::from_micros(embassy_time::Instant::now().as_micros())
}

pub(crate) fn to_embassy(at: Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_micros(at.as_micros())
}

impl<'a, M: RawMutex, C: Codec, const N: usize, G: RegistryAccess<N>, const WAIT: usize>
    Session<'a, M, C, N, G, WAIT>
{
    fn from_connection(
        conn: SessionConnection<'a, C, N, G>,
        role: Role<'a, C, &'a mut [u8], N, G>,
    ) -> Self {
        Session {
            state: Mutex::new(RefCell::new(Inner {
                conn,
                role,
                pong: u64::MAX,
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
        Ok(Self::from_connection(conn, Role::client()))
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
        Ok(Self::from_connection(conn, Role::server()))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<'a, C, N, G, WAIT>) -> R) -> R {
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
        self.with(|s| s.conn.closed())
    }

    /// Runs the connection over `reader` and `writer` until it closed and
    /// its last bytes (the `closeconn`) were written, or the transport
    /// failed. Returns why it closed.
    ///
    /// Any `embedded_io_async` reader and writer work (a TLS session, a UART,
    /// a pipe): bytes pass through two [`CHUNK`]-byte copy buffers in this
    /// future. An `embassy-net` socket's halves are better served by
    /// [`run_io`](Self::run_io), which needs neither.
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
                    let (t, seen) = self.input(&buf[taken..n]);
                    taken += t;
                    if t == 0 {
                        // The receive buffer is full of packets nobody took
                        // yet: wait for the receiver.
                        self.changed(seen).await;
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
                            self.fire_timer();
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
        Ok(self.end())
    }

    /// Like [`run`](Self::run), over an [`Input`] and an [`Output`] that lend
    /// their own buffers: `embassy_net::tcp::TcpReader` and `TcpWriter` move
    /// bytes straight between the socket's buffers and the connection's. One
    /// poll function drives reading, writing and the timer, so the future
    /// holds only a few words.
    pub fn run_io<'s, I: Input, O: Output>(
        &'s self,
        mut input: I,
        mut output: O,
    ) -> impl Future<Output = Result<Closed, RunError<I::Error, O::Error>>>
           + use<'s, 'a, I, O, M, C, N, G, WAIT> {
        // A plain poll function, not an `async` body: the future is just
        // these few words.
        let mut io = IoState::default();
        poll_fn(move |cx| {
            poll_io(self, cx, &mut input, &mut output, &mut io).map(|r| r.map(|()| self.end()))
        })
    }

    /// Copies received bytes into the connection and runs the protocol on
    /// them. Returns how many were taken and the generation after.
    fn input(&self, bytes: &[u8]) -> (usize, u32) {
        self.with(|s| {
            let taken = s.conn.handle_input(bytes);
            s.absorb(now());
            s.notify();
            (taken, s.generation)
        })
    }

    /// Copies queued bytes into `room` and marks them sent.
    fn output(&self, room: &mut [u8]) -> usize {
        self.with(|s| {
            let bytes = s.conn.poll_transmit();
            let n = bytes.len().min(room.len());
            room[..n].copy_from_slice(&bytes[..n]);
            s.conn.transmitted(n);
            s.notify();
            n
        })
    }

    fn fire_timer(&self) {
        self.with(|s| {
            s.conn.handle_timeout(now());
            s.absorb(now());
            s.notify();
        });
    }

    /// Why the connection ended, once `run` or `run_io` is done (also when
    /// it ended by a transport error).
    pub(crate) fn end(&self) -> Closed {
        self.closed().unwrap_or(Closed::SOCKET_CLOSED)
    }

    fn transport_closed(&self) {
        self.with(|s| {
            s.conn.handle_transport_closed();
            s.absorb(now());
            s.notify();
        });
    }

    /// Waits until the handshake completed.
    pub fn wait_connected(
        &self,
    ) -> impl Future<Output = Result<(), Closed>> + use<'_, 'a, M, C, N, G, WAIT> {
        self.wait_for(|s| {
            if s.conn.is_connected() {
                Some(Ok(()))
            } else {
                s.conn.closed().map(Err)
            }
        })
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
    pub async fn receive<'b>(
        &self,
        buf: &'b mut [u8],
    ) -> Result<Incoming<&'b [u8], C>, ReceiveError> {
        let got = self
            .receive_with(|p, _| {
                let len = p.body.len();
                let copied = match buf.get_mut(..len) {
                    Some(dst) => {
                        dst.copy_from_slice(p.body);
                        Ok(len)
                    }
                    None => Err(len),
                };
                (Take::Consume, (p.with_body(()), copied))
            })
            .await
            .map_err(ReceiveError::Closed)?;
        match got {
            (packet, Ok(len)) => Ok(packet.with_body(&buf[..len])),
            (packet, Err(required)) => Err(ReceiveError::BufferTooSmall {
                packet_id: packet.packet_id,
                required,
            }),
        }
    }

    /// Waits for the next application packet and hands it to `f` where it
    /// lies, in the connection's receive buffer (no copy), together with
    /// the connection's [`Outbox`] to answer through. `f` returns
    /// [`Take::Consume`] when done with the packet, or [`Take::Keep`] to
    /// leave it buffered: the next `receive_with` (or `receive`) hands it
    /// out again, say after [`wait_sent`](Self::wait_sent) when a reply did
    /// not fit. `f` runs with the session locked: it must not call back into
    /// the session.
    ///
    /// ```
    /// # use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// # use peng3dnet_core::codec::Postcard;
    /// # use peng3dnet_core::connection::{SendError, Take};
    /// # use peng3dnet_core::registry::Registry;
    /// # use peng3dnet_core::Closed;
    /// # use peng3dnet_embassy::Session;
    /// // Echo every packet back without copying it.
    /// async fn echo(session: &Session<'_, NoopRawMutex, Postcard, 8, &Registry<8>>) -> Closed {
    ///     loop {
    ///         let sent = session.receive_with(|packet, outbox| {
    ///             match outbox.send_encoded(packet.packet_id, packet.body) {
    ///                 Err(SendError::WouldBlock { .. }) => (Take::Keep, false),
    ///                 _ => (Take::Consume, true),
    ///             }
    ///         });
    ///         match sent.await {
    ///             Ok(true) => {}
    ///             Ok(false) => session.wait_sent().await,
    ///             Err(closed) => return closed,
    ///         }
    ///     }
    /// }
    /// ```
    pub fn receive_with<'s, X, F>(
        &'s self,
        mut f: F,
    ) -> impl Future<Output = Result<X, Closed>> + use<'s, 'a, X, F, M, C, N, G, WAIT>
    where
        F: FnMut(Incoming<&[u8], C>, &mut SessionOutbox<'_, 'a, C, N, G>) -> (Take, X),
    {
        self.wait_for(move |s| {
            let now = now();
            let Inner {
                conn, pong, role, ..
            } = &mut *s;
            let mut polled = false;
            let got = loop {
                // Packets go to `f`; of the other steps, only the ping's
                // round trip is kept (no event is built for them).
                match conn.poll_packet_role(now, *role, &mut f) {
                    None => break None,
                    Some(Ok(x)) => break Some(Ok(x)),
                    Some(Err(step)) => {
                        if let ProtocolStep::Pong(delay) = step {
                            *pong = delay.as_micros();
                        }
                        polled = true;
                    }
                }
            };
            if polled || got.is_some() {
                // Buffer space was freed or bytes were queued.
                s.notify();
            }
            got.or_else(|| s.conn.closed().map(Err))
        })
    }

    /// Waits until some of the bytes queued for sending left (room was made
    /// in the transmit buffer) or the connection closed.
    pub fn wait_sent(&self) -> impl Future<Output = ()> + use<'_, 'a, M, C, N, G, WAIT> {
        let mut before = None;
        self.wait_for(move |s| {
            sent_since(
                &mut before,
                s.conn.poll_transmit().len(),
                s.conn.is_closed(),
            )
            .then_some(())
        })
    }

    /// (Ping client) waits for the server's answer and returns the round
    /// trip; the connection then closes with `pingcomplete`.
    pub fn wait_pong(
        &self,
    ) -> impl Future<Output = Result<Duration, Closed>> + use<'_, 'a, M, C, N, G, WAIT> {
        self.wait_for(|s| match s.pong {
            u64::MAX => s.conn.closed().map(Err),
            micros => Some(Ok(Duration::from_micros(micros))),
        })
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
    pub fn wait_closed(&self) -> impl Future<Output = Closed> + use<'_, 'a, M, C, N, G, WAIT> {
        self.wait_for(|s| s.conn.closed())
    }

    /// Waits until `check` returns something, checking again whenever the
    /// session changed. A poll function, so the future is only `check`.
    fn wait_for<'s, T, K>(
        &'s self,
        mut check: K,
    ) -> impl Future<Output = T> + use<'s, 'a, T, K, M, C, N, G, WAIT>
    where
        K: FnMut(&mut Inner<'a, C, N, G, WAIT>) -> Option<T>,
    {
        poll_fn(move |cx| {
            self.with(|s| match check(s) {
                Some(t) => Poll::Ready(t),
                None => {
                    s.wakers.register(cx.waker());
                    Poll::Pending
                }
            })
        })
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

/// One connection as [`poll_io`] drives it: a [`Session`]'s, or a client's
/// on the [server](crate::server).
pub(crate) trait Link {
    /// One look at the connection, registering `cx` to be woken by a change.
    fn look(&self, cx: &mut Context<'_>) -> Look;
    /// Received bytes in; how many were taken.
    fn input(&self, bytes: &[u8]) -> usize;
    /// Queued bytes out into `room`; how many.
    fn output(&self, room: &mut [u8]) -> usize;
    /// The transport ended or failed.
    fn transport_closed(&self);
    /// The deadline of [`Look`] passed.
    fn fire_timer(&self);
}

/// What [`Link::look`] saw.
pub(crate) struct Look {
    /// The connection is closed.
    pub(crate) closed: bool,
    /// Bytes wait to be written.
    pub(crate) pending: bool,
    /// Closed and everything written (or given up): the I/O is done.
    pub(crate) finished: bool,
    /// When [`Link::fire_timer`] is due (none: a timer elsewhere).
    pub(crate) deadline: Option<Instant>,
}

/// One step of `run_io`: moves what can move now between `link` and the
/// transport, and arranges to be woken by the transport, the timer or the
/// connection.
pub(crate) fn poll_io<L: Link, I: Input, O: Output>(
    link: &L,
    cx: &mut Context<'_>,
    input: &mut I,
    output: &mut O,
    io: &mut IoState,
) -> Poll<IoResult<I, O>> {
    // A failed transport ends the connection.
    let fail = |e| {
        link.transport_closed();
        Poll::Ready(Err(e))
    };
    // Bounded, so that a busy connection lets other tasks run.
    for _ in 0..IO_ROUNDS {
        // One look per round, registered first: a change made after it
        // wakes the task. What reading changes is seen in the next round
        // (reading is progress).
        let look = link.look(cx);
        let mut progress = false;
        if !io.ended {
            let mut taken = 0;
            match input.poll_read_into(cx, |bytes| {
                taken = link.input(bytes);
                taken
            }) {
                Poll::Ready(Ok(true)) => progress |= taken > 0,
                Poll::Ready(Ok(false)) => {
                    link.transport_closed();
                    io.ended = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return fail(RunError::Read(e)),
                Poll::Pending => {}
            }
        } else if look.closed {
            // The stream ended and every frame before the end was taken.
            return Poll::Ready(Ok(()));
        }
        if look.pending {
            match output.poll_write_from(cx, |room| link.output(room)) {
                Poll::Ready(Ok(())) => {
                    io.dirty = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return fail(RunError::Write(e)),
                Poll::Pending => {}
            }
        } else if io.dirty {
            match output.poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    io.dirty = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return fail(RunError::Write(e)),
                Poll::Pending => {}
            }
        } else if look.finished {
            return Poll::Ready(Ok(()));
        }
        if let Some(at) = look.deadline {
            if now() >= at {
                link.fire_timer();
                progress = true;
            } else {
                // The wake-up a timer's first poll registers, without the
                // timer (its clock read and second path: flash).
                embassy_time_driver::schedule_wake(to_embassy(at).as_ticks(), cx.waker());
            }
        }
        if !progress {
            return Poll::Pending;
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl<C: Codec, const N: usize, G: RegistryAccess<N>, M: RawMutex, const WAIT: usize> Link
    for Session<'_, M, C, N, G, WAIT>
{
    fn look(&self, cx: &mut Context<'_>) -> Look {
        self.with(|s| {
            s.wakers.register(cx.waker());
            Look {
                closed: s.conn.is_closed(),
                pending: !s.conn.poll_transmit().is_empty(),
                finished: s.conn.is_finished(),
                deadline: s.conn.poll_timeout(),
            }
        })
    }

    fn input(&self, bytes: &[u8]) -> usize {
        Session::input(self, bytes).0
    }

    fn output(&self, room: &mut [u8]) -> usize {
        Session::output(self, room)
    }

    fn transport_closed(&self) {
        Session::transport_closed(self)
    }

    fn fire_timer(&self) {
        Session::fire_timer(self)
    }
}

/// Whether some queued bytes left (or the connection closed) since the first
/// look, whose queue length `before` keeps: what `wait_sent` waits for.
pub(crate) fn sent_since(before: &mut Option<usize>, pending: usize, closed: bool) -> bool {
    let before = *before.get_or_insert(pending);
    pending < before || closed
}

/// A server's registry shared by its sessions.
pub type SharedRegistry<'a, const N: usize> = &'a Registry<N>;
