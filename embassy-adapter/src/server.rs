//! A server for up to `N` clients at once on `embassy-net`: [`Server`].
//!
//! Every decision is the core's sans-IO server ([`peng3dnet_core::server`]):
//! the client table and its ids, the `serverfull` refusal, what a send that
//! does not fit does, every client's handshake and write-stall timers, the
//! shutdown grace and the counters. This module moves bytes between it and
//! `embassy-net` sockets and wakes the futures that wait on it.
//!
//! Every client slot is given by the user at compile time in a
//! [`ServerResources`] (TCP socket buffers, the connection's two buffers and
//! a copy buffer for received packets), the embassy-net pattern: put it in a
//! `static` (its [`new`](ServerResources::new) is a `const fn`, so a
//! `static_cell::ConstStaticCell` holds it without a copy on the stack) or
//! on a task's stack. [`Server::run`] serves all slots in one future of
//! `N + 1` lanes (TCP sockets) and one that fires the core's timers. Each
//! lane listens on the port; a lane that accepts a client takes a free
//! connection (the core's slot and its two buffers, and a copy buffer) and
//! serves it: moves its bytes between the TCP socket's buffers and the
//! connection's in place (the same poll function as
//! [`Session::run_io`](crate::Session::run_io)) beside a future that hands
//! its packets to the user's [`Handler`]. When no connection is free, the
//! lane tells the client `serverfull`
//! ([`peng3dnet_core::server::Server::refusal`]) and closes. Once a client is
//! done, its connection is free at once; its lane then closes the TCP
//! socket, which may take up to [`ServerOptions::linger`] (a peer that does
//! not close its side), and listens again (sooner when a free slot needs
//! it, see below).
//!
//! Why one lane more than slots: a lane that lingers on a close is busy.
//! With `N` lanes the slot it freed could serve nobody until the linger
//! ended, and a small refusal socket told the next client `serverfull`
//! although the core had room (issue 13, point 5). With a spare lane of full
//! size, a client that arrives after a slot's client finished is served
//! whatever the linger, and one that arrives while all `N` clients are there
//! is still refused with `serverfull`. It costs one more TCP socket's
//! buffers (`SRX + STX`; the refusal socket had 192 bytes).
//!
//! When several slots are freed at once, the spare lane serves the first
//! client and the next would find every other lane lingering: then a
//! lingering lane whose peer acknowledged everything (its `closeconn` and
//! our FIN) resets its socket and listens again. The peer has lost nothing:
//! what it acknowledged is in its receive buffer (smoltcp and Linux keep it
//! readable after a reset). A close is cut short only so, for a client the
//! server has room for.
//!
//! Alternatives weighed: a refusal socket that waits instead of refusing
//! cannot hand its TCP connection to a slot's socket; a close that always
//! resets once its `closeconn` is acknowledged cuts every close short and
//! still leaves a window of a round trip (of the linger, for a peer that
//! acknowledges nothing), so it is only the second step above.
//!
//! Not covered: a client that arrives while every lane is busy and no
//! closing lane has its peer's acknowledgment yet (a round trip after the
//! close; the linger, for a peer that acknowledges nothing) finds no lane
//! listening, and the TCP stack resets its connection; so does one that
//! arrives while all `N` clients are there and the spare lane still closes a
//! refusal. [`ServerStatus::closing`] counts the lanes closing.
//!
//! The hooks are those of `peng3dnet-std`'s server: [`Handler::on_connect`],
//! [`Handler::on_handshake`], [`Handler::on_packet`] and
//! [`Handler::on_close`]; a handler answers through its [`Ctx`]. A packet is
//! first offered to [`Handler::on_packet_in_place`], where it lies in the
//! client's receive buffer, with the client's outbox: a handler that answers
//! there needs no copy of the packet (give [`ServerResources`] a `BODY` of
//! 0). One that returns [`Flow::Defer`] (the default) gets the packet in the
//! async [`Handler::on_packet`], copied into the slot's `BODY` bytes.
//! [`Server::broadcast`] (and [`Ctx::broadcast`]) encode a message once and
//! queue it on every connected client but those excepted;
//! [`Server::send_to`], [`Server::close`], [`Server::status`] and
//! [`Server::shutdown`] work from any future that can borrow the server.
//!
//! ```no_run
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::registry::{Packet, Registry};
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::Config;
//! use peng3dnet_embassy::server::{Ctx, Handler, Server, ServerResources};
//! use peng3dnet_core::connection::Incoming;
//!
//! struct Echo;
//! impl Packet for Echo {
//!     const NAME: &'static str = "echo:echo";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! struct EchoHandler;
//! impl Handler<NoopRawMutex, Postcard, 8> for EchoHandler {
//!     async fn on_packet(&self, ctx: &Ctx<'_, '_, NoopRawMutex, Postcard, 8>, p: Incoming<&[u8], Postcard>) {
//!         if let Ok(text) = p.decode::<Echo>() {
//!             let _ = ctx.send::<Echo>(&text).await;
//!         }
//!     }
//! }
//!
//! async fn serve(stack: embassy_net::Stack<'_>, resources: &mut ServerResources<2, 1024, 1024>) {
//!     let config = Config::new();
//!     let mut registry = Registry::<8>::new();
//!     registry.register::<Echo>().unwrap();
//!     let server: Server<NoopRawMutex, _, 8, 2> = Server::new(&config, &registry, Postcard);
//!     // Err only when a slot's transmit buffer cannot hold the handshake.
//!     let _stats = server.run(stack, 4242, resources, &EchoHandler).await;
//! }
//! ```

use crate::fmt::debug;
use crate::session::{now, poll_io, sent_since, to_embassy, IoState, Link, Look};
use core::cell::RefCell;
use core::future::{pending, poll_fn};
use core::task::{Context, Poll};
use embassy_futures::join::{join3, join_array};
use embassy_futures::select::{select, Either};
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::waitqueue::WakerRegistration;
use embassy_time::{with_deadline, with_timeout, Duration, Timer};
use peng3dnet_core::codec::{Codec, CodecError};
use peng3dnet_core::connection::{
    Incoming, NewConnectionError, Outbox, SendError, Take, MIN_TX_BUFFER,
};
use peng3dnet_core::registry::{Packet, Registry};
use peng3dnet_core::server::{self as core_server, ServerConnection, ServerSlot, Slot};
use peng3dnet_core::time::Instant;
use peng3dnet_core::wire::FRAME_OVERHEAD;
use peng3dnet_core::{CloseReason, Closed, Config, Event};

pub use peng3dnet_core::server::{BroadcastReport, ClientId, ServerStats};

/// The memory of one client slot: a lane's TCP socket buffers and one
/// connection's buffers (which move between lanes, see [`ServerResources`]).
pub struct SlotResources<
    const RX: usize,
    const TX: usize,
    const SRX: usize,
    const STX: usize,
    const BODY: usize,
> {
    socket_rx: [u8; SRX],
    socket_tx: [u8; STX],
    rx: [u8; RX],
    tx: [u8; TX],
    body: [u8; BODY],
}

impl<const RX: usize, const TX: usize, const SRX: usize, const STX: usize, const BODY: usize>
    SlotResources<RX, TX, SRX, STX, BODY>
{
    const NEW: Self = SlotResources {
        socket_rx: [0; SRX],
        socket_tx: [0; STX],
        rx: [0; RX],
        tx: [0; TX],
        body: [0; BODY],
    };
}

/// The memory of a server with `N` client slots, all sized at compile time:
/// per slot a TCP socket with `SRX`/`STX` bytes of buffer, a connection with
/// `RX` bytes of receive buffer (the largest frame a client may send) and
/// `TX` of transmit buffer (at least [`MIN_TX_BUFFER`]; it must hold the
/// handshake with the server's registry), and `BODY` bytes (`RX` unless given)
/// where the body of a packet is copied for the async
/// [`Handler::on_packet`]; plus the buffers of one more TCP socket
/// (`SRX + STX` bytes), the spare lane. A handler that answers every packet
/// in place ([`Handler::on_packet_in_place`]) needs no copy: give
/// `BODY = 0`.
///
/// The `N + 1` TCP sockets are lanes and the `N` connections' buffers a pool
/// (see the [module docs](self)): a lane that accepts a client takes a
/// connection from the pool, or refuses the client with `serverfull` when
/// none is left; a connection goes back to the pool as soon as its client
/// is done, while its lane may still linger on the TCP close. The spare
/// lane is what lets a freed slot serve the next client at once; it costs
/// one socket's buffers (the small refusal socket it replaces had 192
/// bytes).
pub struct ServerResources<
    const N: usize,
    const RX: usize,
    const TX: usize,
    const SRX: usize = 1024,
    const STX: usize = 1024,
    const BODY: usize = RX,
> {
    slots: [SlotResources<RX, TX, SRX, STX, BODY>; N],
    /// The spare lane's TCP socket buffers.
    spare_rx: [u8; SRX],
    spare_tx: [u8; STX],
}

impl<
        const N: usize,
        const RX: usize,
        const TX: usize,
        const SRX: usize,
        const STX: usize,
        const BODY: usize,
    > ServerResources<N, RX, TX, SRX, STX, BODY>
{
    const CHECK: () = {
        assert!(N > 0, "a server needs at least one slot");
        assert!(N <= u16::MAX as usize, "at most 65535 slots");
        assert!(
            TX >= MIN_TX_BUFFER,
            "TX must hold at least MIN_TX_BUFFER bytes"
        );
    };

    /// Zeroed memory for `N` slots (a `const fn`: it can initialize a
    /// `static`).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::CHECK;
        ServerResources {
            slots: [SlotResources::NEW; N],
            spare_rx: [0; SRX],
            spare_tx: [0; STX],
        }
    }

    /// How many clients it serves at once.
    pub const fn slots(&self) -> usize {
        N
    }
}

impl<
        const N: usize,
        const RX: usize,
        const TX: usize,
        const SRX: usize,
        const STX: usize,
        const BODY: usize,
    > Default for ServerResources<N, RX, TX, SRX, STX, BODY>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Settings of a [`Server`] beyond the protocol's [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// How long a closed client's socket waits for the client to close its
    /// side (and for our last bytes to be acknowledged) before it is reset,
    /// and how long a lane gives a refused client. The client's slot is
    /// free before: only the lane lingers, and it gives up early (a reset)
    /// once the peer acknowledged everything if the server needs the lane
    /// to serve a client (see the [module docs](self)).
    pub linger: Duration,
    /// How long a client may take none of its queued bytes before it is
    /// closed with `writequeuefull` (the core's write-stall timer; it bounds
    /// [`Ctx::send`]'s wait for room and a [`Flow::Retry`]).
    pub write_stall_timeout: Duration,
    /// TCP keep-alive interval of client sockets (`None`: off).
    pub keep_alive: Option<Duration>,
    /// A client socket that receives nothing (not even keep-alive answers)
    /// for this long is closed (`None`: never).
    pub tcp_timeout: Option<Duration>,
}

impl ServerOptions {
    /// Defaults: 1 s linger, 10 s write stall, 15 s keep-alive, 45 s TCP
    /// timeout.
    pub const fn new() -> Self {
        ServerOptions {
            linger: Duration::from_secs(1),
            write_stall_timeout: Duration::from_secs(10),
            keep_alive: Some(Duration::from_secs(15)),
            tcp_timeout: Some(Duration::from_secs(45)),
        }
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerOptions {
    /// The core server's part of them.
    fn core(&self) -> core_server::ServerOptions {
        core_server::ServerOptions {
            write_stall_timeout: peng3dnet_core::time::Duration::from_micros(
                self.write_stall_timeout.as_micros(),
            ),
            // In-place handlers retry and `Ctx::send` waits for room: the
            // input is not paused for a full transmit queue.
            read_pause_percent: 100,
            ..core_server::ServerOptions::new()
        }
    }
}

/// Answer of [`Server::status`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerStatus {
    /// Clients in a slot now.
    pub clients: usize,
    /// Of those, connected (handshake complete, not a ping).
    pub connected: usize,
    /// Clients the server would serve now: free slots with a lane
    /// listening for them (the lesser of the two).
    pub listening: usize,
    /// Lanes (TCP sockets) closing a finished or refused connection now:
    /// each listens again once the peer closed its side, after
    /// [`ServerOptions::linger`], or earlier when a free slot needs it.
    pub closing: usize,
    /// Counters so far.
    pub stats: ServerStats,
}

/// What a server does with its clients. Every method has a default that does
/// nothing. The server calls the methods of one client in order, but those
/// of different clients run at the same time (the `async` ones interleave),
/// hence `&self`: keep state in a `Cell`, `RefCell` or blocking mutex.
///
/// `M`, `C` and `NR` are the server's mutex kind, codec and registry
/// capacity.
#[allow(async_fn_in_trait)]
pub trait Handler<M: RawMutex, C: Codec, const NR: usize> {
    /// A client's TCP connection was accepted (its `hello` is queued, the
    /// handshake has not started).
    fn on_connect(&self, ctx: &Ctx<'_, '_, M, C, NR>) {
        let _ = ctx;
    }

    /// A client completed the handshake (not called for `ping` connections,
    /// which the core answers by itself). The client's packets wait until
    /// this returns.
    async fn on_handshake(&self, ctx: &Ctx<'_, '_, M, C, NR>) {
        let _ = ctx;
    }

    /// A client sent an application packet that passed its SmartPacket
    /// rules: first offered here, in place. The packet still lies in the
    /// client's receive buffer (nothing is copied) and `outbox` queues
    /// answers to the client at once. Return [`Flow::Handled`] when done,
    /// [`Flow::Retry`] to be offered the same packet again once some of the
    /// client's queued bytes left (an answer did not fit: `SendError::WouldBlock`;
    /// after [`ServerOptions::write_stall_timeout`] the client is closed with
    /// `writequeuefull`), or [`Flow::Defer`] (the default) to have its body
    /// copied into the slot's copy buffer and handed to
    /// [`on_packet`](Self::on_packet). It runs with the client's session
    /// locked: it must not wait, and must not reach the session through a
    /// [`Ctx`].
    fn on_packet_in_place(
        &self,
        client: ClientId,
        outbox: &mut ServerOutbox<'_, '_, C, NR>,
        packet: Incoming<&[u8], C>,
    ) -> Flow {
        let _ = (client, outbox, packet);
        Flow::Defer
    }

    /// A packet [`on_packet_in_place`](Self::on_packet_in_place) deferred,
    /// with its body copied. The client's next packet waits until this
    /// returns (that is the back-pressure: the connection's receive buffer
    /// and then the TCP window fill up). Once the connection is done, a
    /// handler still running is dropped and the slot freed.
    async fn on_packet(&self, ctx: &Ctx<'_, '_, M, C, NR>, packet: Incoming<&[u8], C>) {
        let _ = (ctx, packet);
    }

    /// A client's connection closed: why, and who closed it. Called once
    /// per client that [`on_connect`](Self::on_connect) saw.
    fn on_close(&self, client: ClientId, closed: &Closed) {
        let _ = (client, closed);
    }
}

/// What [`Handler::on_packet_in_place`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Flow {
    /// Handled: the packet's bytes are freed.
    Handled,
    /// Offer the same packet again once the client's transmit buffer made
    /// room.
    Retry,
    /// Copy the body and call [`Handler::on_packet`].
    Defer,
}

/// The connection of one client on a [`Server`].
pub type ClientConnection<'a, C, const NR: usize> =
    ServerConnection<'a, C, &'a mut [u8], &'a mut [u8], NR>;

/// The sending side of a client's connection, lent to
/// [`Handler::on_packet_in_place`].
pub type ServerOutbox<'c, 'a, C, const NR: usize> =
    Outbox<'c, 'a, C, &'a mut [u8], NR, &'a Registry<NR>>;

/// The core's server as this adapter keeps it: `N` fixed slots, the
/// connections over the slots' buffers.
type CoreServer<'a, C, const NR: usize, const N: usize> = core_server::Server<
    'a,
    C,
    &'a mut [u8],
    &'a mut [u8],
    NR,
    [ServerSlot<'a, C, &'a mut [u8], &'a mut [u8], NR>; N],
>;

/// A handler that does nothing: a server that only answers pings and runs
/// handshakes, and whose clients are reached by [`Server::broadcast`].
impl<M: RawMutex, C: Codec, const NR: usize> Handler<M, C, NR> for () {}

/// What a handler may do with the client it was called for.
pub struct Ctx<'c, 'a, M: RawMutex, C, const NR: usize> {
    id: ClientId,
    server: &'c dyn Backend<'a, C, NR>,
    _mutex: core::marker::PhantomData<M>,
}

impl<'a, M: RawMutex, C: Codec, const NR: usize> Ctx<'_, 'a, M, C, NR> {
    /// The client's id (its slot is [`ClientId::slot`]).
    pub fn client_id(&self) -> ClientId {
        self.id
    }

    /// Runs `f` on the client's connection, to look at its state, mode,
    /// connection type or security level (`None` once it is gone).
    pub fn with_connection<R>(
        &self,
        f: impl FnOnce(&ClientConnection<'a, C, NR>) -> R,
    ) -> Option<R> {
        let mut f = Some(f);
        let mut out = None;
        self.server.look(self.id, None, &mut |conn| {
            if let (Some(f), Some(conn)) = (f.take(), conn) {
                out = Some(f(conn));
            }
            true
        });
        out
    }

    /// Sends a typed packet to this client, waiting while its transmit
    /// buffer has no room for it. A client that takes none of its queued
    /// bytes for [`ServerOptions::write_stall_timeout`] is closed with
    /// `writequeuefull` (the core's write-stall timer; `SendError::Closed`
    /// is returned then).
    pub async fn send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), SendError> {
        let len = self
            .server
            .codec()
            .encoded_len(msg)
            .map_err(SendError::Encode)?;
        let bytes = FRAME_OVERHEAD + len;
        poll_fn(|cx| {
            let ready = self.server.look(self.id, Some(cx), &mut |conn| {
                conn.is_none_or(|c| c.is_closed() || bytes <= c.transmit_room())
            });
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        self.try_send::<P>(msg)
    }

    /// Sends a typed packet to this client if its transmit buffer has room
    /// now; without room the client is closed with `writequeuefull` (the
    /// core's rule: [`peng3dnet_core::server`]).
    pub fn try_send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), SendError> {
        self.server.send_with(self.id, &mut |c| c.send::<P>(msg))
    }

    /// Sends an already encoded body as a `P` to this client (to echo or
    /// relay a body without decoding it), under the rule of
    /// [`try_send`](Self::try_send).
    pub fn try_send_body<P: Packet>(&self, body: &[u8]) -> Result<(), SendError> {
        let id = self
            .server
            .registry()
            .id_of::<P>()
            .ok_or(SendError::NotRegistered)?;
        self.server
            .send_with(self.id, &mut |c| c.send_encoded(id, body))
    }

    /// Sends a `P` to every connected client but those in `except` (this
    /// client included, unless excepted); see [`Server::broadcast`].
    pub async fn broadcast<P: Packet>(
        &self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<BroadcastReport, SendError> {
        let server = self.server;
        let packet_id = server
            .registry()
            .id_of::<P>()
            .ok_or(SendError::NotRegistered)?;
        let mut encode = |out: &mut [u8]| encode_into::<C, P>(server.codec(), msg, out);
        server.broadcast(packet_id, &mut encode, except)
    }

    /// Closes this client with `reason` (the `closeconn` is sent, then the
    /// socket closed).
    pub fn close(&self, reason: CloseReason) {
        // Through `send_with`, under the core's rules, like every other
        // change a handler makes to its client.
        let mut reason = Some(reason);
        let _ = self.server.send_with(self.id, &mut |c| {
            if let Some(reason) = reason.take() {
                c.close(reason);
            }
            Ok(())
        });
    }
}

fn encode_into<C: Codec, P: Packet>(
    codec: &C,
    msg: &P::Message<'_>,
    out: &mut [u8],
) -> Result<usize, SendError> {
    match codec.encode(msg, out) {
        Ok(n) => Ok(n),
        Err(CodecError::BufferTooSmall) => Err(SendError::TooLarge {
            required: FRAME_OVERHEAD + codec.encoded_len(msg).unwrap_or(usize::MAX),
            capacity: FRAME_OVERHEAD + out.len(),
        }),
        Err(e) => Err(SendError::Encode(e)),
    }
}

/// What a [`Ctx`] needs of its server, without the server's sizes.
trait Backend<'a, C, const NR: usize> {
    fn registry(&self) -> &Registry<NR>;
    fn codec(&self) -> &C;
    /// Runs `f` on the client's connection (`None` once it is gone) and
    /// returns what it said; when that is `false` (not yet) and `cx` is
    /// given, the client's next change wakes `cx`.
    fn look(
        &self,
        id: ClientId,
        cx: Option<&mut Context<'_>>,
        f: &mut dyn FnMut(Option<&ClientConnection<'a, C, NR>>) -> bool,
    ) -> bool;
    /// A send on one client, under the core's send rule.
    fn send_with(
        &self,
        id: ClientId,
        send: &mut dyn FnMut(&mut ClientConnection<'a, C, NR>) -> Result<(), SendError>,
    ) -> Result<(), SendError>;
    fn broadcast(
        &self,
        packet_id: u32,
        encode: &mut dyn FnMut(&mut [u8]) -> Result<usize, SendError>,
        except: &[ClientId],
    ) -> Result<BroadcastReport, SendError>;
}

/// The buffers of one client connection: the core's two while a client is
/// there, and the copy buffer of the lane that serves it.
struct ConnBuffers<'a> {
    rx: &'a mut [u8],
    tx: &'a mut [u8],
    body: &'a mut [u8],
}

/// The state every future of a server shares.
struct Shared<'a, C, const NR: usize, const N: usize, const B: usize> {
    core: CoreServer<'a, C, NR, N>,
    /// By the core's slot of a client: its I/O and handler.
    wakers: [WakerRegistration; N],
    /// The connections no client has now (a lane takes one to serve a
    /// client; it is back once the client is done).
    pool: [Option<ConnBuffers<'a>>; N],
    /// Lanes listening, closing a connection, and giving up a close to
    /// listen again (see [`Server::lane_needed`]).
    listening: usize,
    closing: usize,
    reclaiming: usize,
    /// The lanes that linger on a close, for when one must listen again.
    needed: WakerRegistration,
    shutdown: bool,
    /// The lanes that listen (all run in `run`'s one task: one waker).
    accept_waker: WakerRegistration,
    /// The timer future, and the deadline it sleeps until.
    timer: WakerRegistration,
    timer_at: Option<Instant>,
    /// Where a broadcast is encoded, once for every client.
    scratch: [u8; B],
}

impl<'a, C: Codec, const NR: usize, const N: usize, const B: usize> Shared<'a, C, NR, N, B> {
    /// After a change: wakes the client's futures, and the timer future if
    /// a deadline came before the one it sleeps until.
    fn changed(&mut self, id: ClientId) {
        if let Some(w) = self.wakers.get_mut(id.slot()) {
            w.wake();
        }
        self.check_timer();
    }

    fn check_timer(&mut self) {
        let next = self.core.poll_timeout();
        if next.is_some() && (self.timer_at.is_none() || next < self.timer_at) {
            self.timer.wake();
        }
    }

    fn wake_all(&mut self) {
        for w in self.wakers.iter_mut() {
            w.wake();
        }
        self.check_timer();
    }

    /// How many connections no client has now.
    fn free(&self) -> usize {
        self.pool.iter().filter(|c| c.is_some()).count()
    }

    /// Gives a connection's buffers back to the pool.
    fn give_back(&mut self, buffers: ConnBuffers<'a>) {
        // The pool has room for every connection of the resources.
        if let Some(free) = self.pool.iter_mut().find(|c| c.is_none()) {
            *free = Some(buffers);
        }
        self.needed.wake();
    }
}

/// What a lane does with the client it accepted.
enum Admission<'a> {
    /// Serve it with these buffers (the copy buffer; the core has the others).
    Serve(ClientId, &'a mut [u8]),
    /// Tell it why not and close: `serverfull` (no connection is free) or
    /// `servershutdown`.
    Refuse(core_server::Refused),
}

/// A peng3dnet server for up to `N` clients at once on an `embassy-net`
/// stack (see the [module docs](self)). `M` is the mutex kind of its state
/// (`NoopRawMutex` when everything runs on one executor), `C` the codec,
/// `NR` the registry's capacity, `B` the largest encoded body
/// [`broadcast`](Self::broadcast) and [`send_to`](Self::send_to) take.
pub struct Server<'d, M: RawMutex, C, const NR: usize, const N: usize, const B: usize = 256> {
    registry: &'d Registry<NR>,
    codec: C,
    options: ServerOptions,
    shared: Mutex<M, RefCell<Shared<'d, C, NR, N, B>>>,
}

impl<'d, M: RawMutex, C: Codec, const NR: usize, const N: usize, const B: usize>
    Server<'d, M, C, NR, N, B>
{
    /// A server of the packets in `registry` speaking `codec`, with default
    /// [`ServerOptions`].
    pub fn new(config: &'d Config<'d>, registry: &'d Registry<NR>, codec: C) -> Self {
        let options = ServerOptions::new();
        Server {
            registry,
            codec: codec.clone(),
            options,
            shared: Mutex::new(RefCell::new(Shared {
                core: core_server::Server::new(
                    config,
                    registry,
                    codec,
                    options.core(),
                    [const { Slot::EMPTY }; N],
                ),
                wakers: [const { WakerRegistration::new() }; N],
                pool: [const { None }; N],
                listening: 0,
                closing: 0,
                reclaiming: 0,
                needed: WakerRegistration::new(),
                shutdown: false,
                accept_waker: WakerRegistration::new(),
                timer: WakerRegistration::new(),
                timer_at: None,
                scratch: [0; B],
            })),
        }
    }

    /// With these options.
    pub fn with_options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        let Shared { core, .. } = self.shared.get_mut().get_mut();
        let (config, registry, codec) = (core.config(), core.registry(), core.codec().clone());
        *core = core_server::Server::new(
            config,
            registry,
            codec,
            options.core(),
            [const { Slot::EMPTY }; N],
        );
        self
    }

    fn with<R>(&self, f: impl FnOnce(&mut Shared<'d, C, NR, N, B>) -> R) -> R {
        self.shared.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// The clients and counters now.
    pub fn status(&self) -> ServerStatus {
        self.with(|s| ServerStatus {
            clients: s.core.len(),
            connected: s.core.connected(),
            listening: s.listening.min(s.free()),
            closing: s.closing,
            stats: s.core.stats(),
        })
    }

    /// Sends a `P` to every connected client but those in `except`: encodes
    /// it once (at most `B` bytes) and queues it on each client's
    /// connection, whose own rules are checked. A client whose transmit
    /// buffer has no room is closed with `writequeuefull` (the core's rule,
    /// as on the std server).
    pub async fn broadcast<P: Packet>(
        &self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<BroadcastReport, SendError> {
        let packet_id = self.registry.id_of::<P>().ok_or(SendError::NotRegistered)?;
        let codec = &self.codec;
        let mut encode = |out: &mut [u8]| encode_into::<C, P>(codec, msg, out);
        Backend::broadcast(self, packet_id, &mut encode, except)
    }

    /// Sends a `P` to one connected client, under the rule of
    /// [`broadcast`](Self::broadcast) (`SendError::Closed` if it is not
    /// connected).
    pub async fn send_to<P: Packet>(
        &self,
        client: ClientId,
        msg: &P::Message<'_>,
    ) -> Result<(), SendError> {
        self.with(|s| {
            if !s.core.is_connected(client) {
                return Err(SendError::Closed);
            }
            let r = s.core.send::<P>(client, msg);
            s.changed(client);
            r
        })
    }

    /// Closes one client with `reason`; whether it was there and open.
    pub async fn close(&self, client: ClientId, reason: CloseReason) -> bool {
        self.with(|s| {
            let open = s.core.close(client, reason);
            s.changed(client);
            open
        })
    }

    /// Stops accepting, closes every client with `servershutdown`; [`run`]
    /// returns once their connections are done (those that take nothing are
    /// dropped after the core's shutdown grace).
    ///
    /// [`run`]: Self::run
    pub fn shutdown(&self) {
        self.with(|s| {
            s.shutdown = true;
            s.core.shutdown(now());
            s.accept_waker.wake();
            s.timer.wake();
            s.wake_all();
        });
    }

    /// Serves clients on `port` of `stack` with the `N` slots of
    /// `resources`, calling `handler`, until [`shutdown`](Self::shutdown);
    /// returns the counters then. `resources` stays lent to the server for
    /// its whole life (its connections live in the server). `port` must not
    /// be 0 (the slots would retry their listen every 100 ms).
    ///
    /// Fails at once, before listening, with
    /// [`NewConnectionError::HandshakeTooLarge`] (both sizes) when a slot's
    /// transmit buffer `TX` can never hold the `handshake`, which carries
    /// the whole registry: every client would be refused
    /// ([`check_tx_capacity`](Self::check_tx_capacity)). Or with
    /// [`NewConnectionError::TxBufferTooSmall`] for a `TX` below
    /// [`MIN_TX_BUFFER`].
    pub async fn run<
        H: Handler<M, C, NR>,
        const RX: usize,
        const TX: usize,
        const SRX: usize,
        const STX: usize,
        const BODY: usize,
    >(
        &self,
        stack: Stack<'_>,
        port: u16,
        resources: &'d mut ServerResources<N, RX, TX, SRX, STX, BODY>,
        handler: &H,
    ) -> Result<ServerStats, NewConnectionError> {
        self.check_tx_capacity(TX)?;
        let ServerResources {
            slots,
            spare_rx,
            spare_tx,
        } = resources;
        self.with(|s| {
            s.shutdown = false;
            s.reclaiming = 0;
            s.pool = [const { None }; N];
        });
        let lanes = slots.each_mut().map(|res| {
            let SlotResources {
                socket_rx,
                socket_tx,
                rx,
                tx,
                body,
            } = res;
            self.with(|s| {
                s.give_back(ConnBuffers {
                    rx: &mut rx[..],
                    tx: &mut tx[..],
                    body: &mut body[..],
                })
            });
            self.lane(stack, port, socket_rx, socket_tx, handler)
        });
        join3(
            join_array(lanes),
            self.lane(stack, port, spare_rx, spare_tx, handler),
            self.timers(),
        )
        .await;
        Ok(self.status().stats)
    }

    /// Whether a slot's transmit buffer of `capacity` bytes can hold this
    /// server's `handshake` (its whole registry) beside the close reserve;
    /// [`run`](Self::run) checks its `TX` with it.
    pub fn check_tx_capacity(&self, capacity: usize) -> Result<(), NewConnectionError> {
        self.with(|s| s.core.check_tx_capacity(capacity))
    }

    /// Fires the core's timers (every client's handshake and write stall,
    /// the shutdown grace) and wakes the clients they closed, until the
    /// server shut down and every client is gone.
    async fn timers(&self) {
        loop {
            let Some(at) = self.with(|s| {
                s.timer_at = s.core.poll_timeout();
                (!s.core.is_done()).then_some(s.timer_at)
            }) else {
                return;
            };
            let changed = poll_fn(|cx| {
                self.with(|s| {
                    let next = s.core.poll_timeout();
                    if s.core.is_done()
                        || next.is_some() && (s.timer_at.is_none() || next < s.timer_at)
                    {
                        Poll::Ready(())
                    } else {
                        s.timer.register(cx.waker());
                        Poll::Pending
                    }
                })
            });
            match at {
                Some(at) => {
                    if let Either::First(()) = select(Timer::at(to_embassy(at)), changed).await {
                        self.with(|s| {
                            while let Some(id) = s.core.handle_timeout(now()) {
                                debug!("server: a timer closed a client");
                                if let Some(w) = s.wakers.get_mut(id.slot()) {
                                    w.wake();
                                }
                            }
                        });
                    }
                }
                None => changed.await,
            }
        }
    }

    fn set_listening(&self, delta: isize) {
        self.with(|s| {
            s.listening = s.listening.saturating_add_signed(delta);
            s.needed.wake();
        });
    }

    /// Ready when the server needs this lane to listen again: a connection
    /// is free but no lane listens (or is about to) for the client it could
    /// serve. Counts the lane as about to listen
    /// ([`Shared::reclaiming`]) until its next [`listen`](Self::listen).
    async fn lane_needed(&self) {
        poll_fn(|cx| {
            self.with(|s| {
                if !s.shutdown && s.listening + s.reclaiming == 0 && s.free() > 0 {
                    s.reclaiming += 1;
                    Poll::Ready(())
                } else {
                    s.needed.register(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Closes a lane's socket: our side first, then waits (up to the linger
    /// in all) until our last bytes and our FIN are acknowledged, and then
    /// for the peer's side, unless the server needs the lane to serve a
    /// client before ([`lane_needed`](Self::lane_needed)). A socket not
    /// closed by then is reset. Whether the lane was reclaimed.
    async fn close_lane(&self, socket: &mut TcpSocket<'_>) -> bool {
        let linger = self.options.linger;
        let end = embassy_time::Instant::now() + linger;
        socket.close();
        let mut reclaimed = false;
        let graceful = match with_timeout(linger, socket.flush()).await {
            // Everything we sent is acknowledged: the peer has its
            // `closeconn`, and a reset now loses it nothing it was sent.
            Ok(Ok(())) => {
                // Whatever still arrives is dropped where it lies; the
                // stream's end (or a reset) ends the wait.
                let peer_closed = with_deadline(end, async {
                    while socket.read_with(|bytes| (bytes.len(), ())).await.is_ok() {}
                });
                match select(peer_closed, self.lane_needed()).await {
                    Either::First(r) => r.is_ok(),
                    Either::Second(()) => {
                        debug!("server: a lingering close reset to serve a client");
                        reclaimed = true;
                        false
                    }
                }
            }
            _ => false,
        };
        if !graceful {
            socket.abort();
            let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
        }
        reclaimed
    }

    /// Counts a lane as listening (and no longer as about to, if it was
    /// reclaimed).
    fn listen(&self, reclaimed: bool) {
        self.with(|s| {
            s.listening += 1;
            if reclaimed {
                s.reclaiming = s.reclaiming.saturating_sub(1);
            }
        });
    }

    fn set_closing(&self, delta: isize) {
        self.with(|s| s.closing = s.closing.saturating_add_signed(delta));
    }

    async fn wait_shutdown(&self) {
        poll_fn(|cx| {
            self.with(|s| {
                if s.shutdown {
                    Poll::Ready(())
                } else {
                    s.accept_waker.register(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// One lane's life: listen, take a connection from the pool and serve
    /// the client (or refuse it when none is free), give the connection
    /// back as soon as the client is done, close the socket, listen again.
    async fn lane<H: Handler<M, C, NR>, const SRX: usize, const STX: usize>(
        &self,
        stack: Stack<'_>,
        port: u16,
        socket_rx: &mut [u8; SRX],
        socket_tx: &mut [u8; STX],
        handler: &H,
    ) {
        let mut reclaimed = false;
        loop {
            if self.with(|s| s.shutdown) {
                return;
            }
            let mut socket = TcpSocket::new(stack, &mut socket_rx[..], &mut socket_tx[..]);
            self.listen(core::mem::take(&mut reclaimed));
            let accepted = select(socket.accept(port), self.wait_shutdown()).await;
            self.set_listening(-1);
            match accepted {
                Either::First(Ok(())) => {}
                Either::First(Err(_)) => {
                    // An invalid port or state: do not spin.
                    drop(socket);
                    Timer::after_millis(100).await;
                    continue;
                }
                Either::Second(()) => return,
            }
            socket.set_nagle_enabled(false);
            socket.set_keep_alive(self.options.keep_alive);
            socket.set_timeout(self.options.tcp_timeout);
            let admission = self.with(|s| {
                let free = if s.core.is_shutting_down() {
                    None
                } else {
                    s.pool.iter_mut().find_map(Option::take)
                };
                let Some(ConnBuffers { rx, tx, body }) = free else {
                    // Counted; `servershutdown` or `serverfull`.
                    return Some(Admission::Refuse(s.core.refuse()));
                };
                let r = s.core.accept(rx, tx, now());
                s.check_timer();
                match r {
                    Ok(id) => Some(Admission::Serve(id, body)),
                    // Buffers too small for a connection (`run` checked
                    // them): they are gone for good, and so is the copy
                    // buffer.
                    Err(_) => None,
                }
            });
            match admission {
                // Served here, not in a function of its own: a nested future
                // would keep copies of its arguments in every lane (40 bytes a
                // lane on the QEMU image).
                Some(Admission::Serve(id, body)) => {
                    debug!("server: client accepted");
                    let ctx = Ctx {
                        id,
                        server: self as &dyn Backend<'d, C, NR>,
                        _mutex: core::marker::PhantomData,
                    };
                    handler.on_connect(&ctx);
                    {
                        // What lives only while the client is there, scoped
                        // so that the socket's close keeps none of it.
                        let (mut reader, mut writer) = socket.split();
                        let mut io = IoState::default();
                        let run_io = poll_fn(|cx| {
                            let link = ClientLink {
                                server: self,
                                id: ctx.id,
                            };
                            poll_io(&link, cx, &mut reader, &mut writer, &mut io)
                        });
                        // Ends only with the connection (`run_io` above).
                        let app = async {
                            if self.wait_connected(ctx.id).await {
                                handler.on_handshake(&ctx).await;
                                self.serve_packets(&ctx, handler, &mut *body).await;
                            }
                            pending::<core::convert::Infallible>().await
                        };
                        // The connection ends `run_io`; a handler still
                        // running then is dropped with the app.
                        match select(run_io, app).await {
                            Either::First(_) => {}
                            Either::Second(never) => match never {},
                        }
                    }
                    let closed = self.with(|s| {
                        if !s.core.is_abandoned(ctx.id) {
                            s.core.handle_transport_closed(ctx.id);
                        }
                        let done = s.core.take_finished(ctx.id);
                        // The timer future ends once the last one is gone.
                        s.timer.wake();
                        // Given up above, so finished: `None` would leave the
                        // client's buffers with the core, and the pool one
                        // connection short.
                        done.map(|(closed, (rx, tx))| {
                            s.give_back(ConnBuffers { rx, tx, body });
                            closed
                        })
                    });
                    if let Some(closed) = closed {
                        debug!("server: client closed");
                        handler.on_close(ctx.id, &closed);
                    }
                }
                Some(Admission::Refuse(refused)) => {
                    debug!("server: no free slot, client refused");
                    // Encoded straight into the fresh socket's empty transmit
                    // buffer: the lane's future keeps no frame across the
                    // wait. A buffer too small for it sends nothing.
                    let _ = with_timeout(self.options.linger, async {
                        socket
                            .write_with(|room| {
                                let len = self.with(|s| s.core.refusal(refused, room));
                                (len.unwrap_or(0), ())
                            })
                            .await?;
                        socket.flush().await
                    })
                    .await;
                }
                None => {
                    debug!("server: connection refused by the core");
                    socket.abort();
                }
            }
            // The connection (if any) is back in the pool: another lane may
            // serve the next client while this one lingers.
            self.set_closing(1);
            reclaimed = self.close_lane(&mut socket).await;
            self.set_closing(-1);
        }
    }

    /// Waits until the client completed its handshake (`true`) or is closed
    /// or gone (`false`; a `ping` connection never completes one).
    async fn wait_connected(&self, id: ClientId) -> bool {
        poll_fn(|cx| {
            self.with(|s| match s.core.connection(id) {
                Some(c) if c.is_connected() => Poll::Ready(true),
                Some(c) if !c.is_closed() => {
                    s.wakers[id.slot()].register(cx.waker());
                    Poll::Pending
                }
                _ => Poll::Ready(false),
            })
        })
        .await
    }

    /// Hands the client's packets to the handler, one at a time, until its
    /// connection is closed.
    async fn serve_packets<H: Handler<M, C, NR>>(
        &self,
        ctx: &Ctx<'_, 'd, M, C, NR>,
        handler: &H,
        body: &mut [u8],
    ) {
        loop {
            let step = poll_fn(|cx| {
                self.with(|s| {
                    let now = now();
                    let got = loop {
                        let step = s.core.poll_with(ctx.id, now, |event, outbox| match event {
                            Event::Packet(p) | Event::ConnTypePacket(p) => {
                                let (take, step) = offer(handler, ctx.id, outbox, p, body);
                                (take, Some(step))
                            }
                            _ => (Take::Consume, None),
                        });
                        match step {
                            Some(Some(step)) => break Some(step),
                            Some(None) => {}
                            None => break None,
                        }
                    };
                    s.changed(ctx.id);
                    match got {
                        Some(step) => Poll::Ready(Some(step)),
                        None if s.core.connection(ctx.id).is_none_or(|c| c.is_closed()) => {
                            Poll::Ready(None)
                        }
                        None => {
                            s.wakers[ctx.id.slot()].register(cx.waker());
                            Poll::Pending
                        }
                    }
                })
            });
            let Some(step) = step.await else {
                return;
            };
            match step {
                Step::Handled => {}
                Step::Retry => self.wait_sent(ctx.id).await,
                Step::Deferred(packet_id, name, len) => {
                    let packet = Incoming::new(packet_id, name, &body[..len], self.codec.clone());
                    handler.on_packet(ctx, packet).await;
                }
                Step::Dropped => {
                    debug!("server: deferred packet larger than the copy buffer");
                    self.with(|s| s.core.count_dropped());
                }
            }
        }
    }

    /// Waits until some of the client's queued bytes left or it is closed
    /// (the core's write-stall timer closes a client that takes nothing).
    async fn wait_sent(&self, id: ClientId) {
        let mut before = None;
        poll_fn(|cx| {
            self.with(|s| {
                let Some(c) = s.core.connection(id) else {
                    return Poll::Ready(());
                };
                if sent_since(&mut before, c.poll_transmit().len(), c.is_closed()) {
                    Poll::Ready(())
                } else {
                    s.wakers[id.slot()].register(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }
}

/// One client of a [`Server`] as [`poll_io`] drives it.
struct ClientLink<'s, 'd, M: RawMutex, C, const NR: usize, const N: usize, const B: usize> {
    server: &'s Server<'d, M, C, NR, N, B>,
    id: ClientId,
}

impl<M: RawMutex, C: Codec, const NR: usize, const N: usize, const B: usize> Link
    for ClientLink<'_, '_, M, C, NR, N, B>
{
    fn look(&self, cx: &mut Context<'_>) -> Look {
        let id = self.id;
        self.server.with(|s| {
            s.wakers[id.slot()].register(cx.waker());
            let closed = s.core.connection(id).is_none_or(|c| c.is_closed());
            let finished =
                s.core.is_abandoned(id) || s.core.connection(id).is_none_or(|c| c.is_finished());
            Look {
                closed,
                pending: !s.core.poll_transmit(id).is_empty(),
                finished,
                // The server's one timer future fires every client's timers.
                deadline: None,
            }
        })
    }

    fn input(&self, bytes: &[u8]) -> usize {
        let id = self.id;
        self.server.with(|s| {
            let taken = s.core.handle_input(id, bytes);
            // The handshake, pings and closes; packets wait for the handler.
            let now = now();
            s.core.drive_protocol(id, now);
            s.changed(id);
            taken
        })
    }

    fn output(&self, room: &mut [u8]) -> usize {
        let id = self.id;
        self.server.with(|s| {
            let bytes = s.core.poll_transmit(id);
            let n = bytes.len().min(room.len());
            room[..n].copy_from_slice(&bytes[..n]);
            s.core.transmitted(id, n, now());
            s.changed(id);
            n
        })
    }

    fn transport_closed(&self) {
        let id = self.id;
        self.server.with(|s| {
            s.core.handle_transport_closed(id);
            let now = now();
            s.core.drive_protocol(id, now);
            s.changed(id);
        });
    }

    fn fire_timer(&self) {}
}

impl<'d, M: RawMutex, C: Codec, const NR: usize, const N: usize, const B: usize> Backend<'d, C, NR>
    for Server<'d, M, C, NR, N, B>
{
    fn registry(&self) -> &Registry<NR> {
        self.registry
    }

    fn codec(&self) -> &C {
        &self.codec
    }

    fn look(
        &self,
        id: ClientId,
        cx: Option<&mut Context<'_>>,
        f: &mut dyn FnMut(Option<&ClientConnection<'d, C, NR>>) -> bool,
    ) -> bool {
        self.with(|s| {
            let ready = f(s.core.connection(id));
            if let (false, Some(cx), Some(w)) = (ready, cx, s.wakers.get_mut(id.slot())) {
                w.register(cx.waker());
            }
            ready
        })
    }

    fn send_with(
        &self,
        id: ClientId,
        send: &mut dyn FnMut(&mut ClientConnection<'d, C, NR>) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        self.with(|s| {
            let r = s.core.send_with(id, send);
            s.changed(id);
            r
        })
    }

    fn broadcast(
        &self,
        packet_id: u32,
        encode: &mut dyn FnMut(&mut [u8]) -> Result<usize, SendError>,
        except: &[ClientId],
    ) -> Result<BroadcastReport, SendError> {
        self.with(|s| {
            let n = encode(&mut s.scratch)?;
            let report = s.core.broadcast_encoded(packet_id, &s.scratch[..n], except);
            s.wake_all();
            Ok(report)
        })
    }
}

/// What became of a packet offered to a handler in place.
///
/// Every field is `Copy`: a step that owned the packet's codec would be kept
/// in the slot's future across the handler's await (16 bytes a slot).
enum Step {
    Handled,
    Retry,
    /// Copied into the slot's copy buffer: id, name, length.
    Deferred(u32, Option<&'static str>, usize),
    Dropped,
}

/// Offers `packet` to the handler where it lies, and copies it into `body`
/// if the handler defers it.
fn offer<M: RawMutex, C: Codec, const NR: usize, H: Handler<M, C, NR>>(
    handler: &H,
    id: ClientId,
    outbox: &mut ServerOutbox<'_, '_, C, NR>,
    packet: Incoming<&[u8], C>,
    body: &mut [u8],
) -> (Take, Step) {
    let (packet_id, name, bytes) = (packet.packet_id, packet.name, packet.body);
    match handler.on_packet_in_place(id, outbox, packet) {
        Flow::Handled => (Take::Consume, Step::Handled),
        Flow::Retry => (Take::Keep, Step::Retry),
        Flow::Defer => match body.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                (Take::Consume, Step::Deferred(packet_id, name, bytes.len()))
            }
            None => (Take::Consume, Step::Dropped),
        },
    }
}
