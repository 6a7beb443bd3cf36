//! A server for up to `N` clients at once on `embassy-net`: [`Server`].
//!
//! Every client slot is given by the user at compile time in a
//! [`ServerResources`] (TCP socket buffers, the connection's [`Resources`]
//! and a copy buffer for received packets), the embassy-net pattern: put it
//! in a `static` (its [`new`](ServerResources::new) is a `const fn`, so a
//! `static_cell::ConstStaticCell` holds it without a copy on the stack) or
//! on a task's stack. [`Server::run`] serves all slots in one future: each
//! slot listens on the port, accepts one client, runs its [`Session`] beside
//! a future that hands its packets to the user's [`Handler`], closes the
//! socket and listens again. While every slot is busy, one small extra socket
//! accepts the next client only to tell it `serverfull` (a lone `closeconn`,
//! [`peng3dnet_core::table::encode_refusal`]) and close.
//!
//! The hooks are those of `peng3dnet-std`'s server: [`Handler::on_connect`],
//! [`Handler::on_handshake`], [`Handler::on_packet`] and
//! [`Handler::on_close`]; a handler answers through its [`Ctx`]. A packet is
//! first offered to [`Handler::on_packet_in_place`], where it lies in the
//! client's receive buffer, with the client's outbox: a handler that answers
//! there needs no copy of the packet (give [`ServerResources`] a `BODY` of
//! 0). One that returns [`Flow::Defer`] (the default) gets the packet in the
//! async [`Handler::on_packet`], copied into the slot's `BODY` bytes.
//! The session of each slot reads and writes the TCP socket's buffers in
//! place ([`Session::run_io`]).
//! [`Server::broadcast`] (and [`Ctx::broadcast`]) encode a message once and
//! queue it on every connected client but those excepted;
//! [`Server::send_to`], [`Server::close`], [`Server::status`] and
//! [`Server::shutdown`] work from any future that can borrow the server.
//! Handshake timeouts are the core's ([`Config::handshake_timeout`]), fired by
//! each session's timer.
//!
//! ```no_run
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::registry::{Packet, Registry};
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::Config;
//! use peng3dnet_embassy::server::{Ctx, Handler, Server, ServerResources};
//! use peng3dnet_embassy::Received;
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
//!     async fn on_packet(&self, ctx: &Ctx<'_, '_, NoopRawMutex, Postcard, 8>, p: Received<'_, Postcard>) {
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
//!     server.run(stack, 4242, resources, &EchoHandler).await;
//! }
//! ```

use crate::fmt::debug;
use crate::session::{Received, Resources, Session, SessionOutbox};
use core::cell::RefCell;
use core::convert::Infallible;
use core::future::{pending, poll_fn, Future};
use core::task::{Context, Poll};
use embassy_futures::join::{join, join_array};
use embassy_futures::select::{select, select3, Either, Either3};
use embassy_net::tcp::TcpSocket;
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::waitqueue::{MultiWakerRegistration, WakerRegistration};
use embassy_time::{with_timeout, Duration, Timer};
use embedded_io_async::Write;
use peng3dnet_core::codec::{Codec, CodecError};
use peng3dnet_core::connection::{SendError, Take, MIN_TX_BUFFER};
use peng3dnet_core::registry::{Packet, Registry};
use peng3dnet_core::table::{encode_refusal, ClientTable};
use peng3dnet_core::{CloseReason, Config, Initiator, CONNTYPE_PING};

pub use peng3dnet_core::table::{BroadcastReport, ClientId};

/// Receive buffer of the socket that refuses clients while the server is full.
pub const REFUSAL_RX: usize = 64;
/// Transmit buffer of the socket that refuses clients (it holds the
/// `closeconn`).
pub const REFUSAL_TX: usize = 128;

/// The memory of one client slot.
pub struct SlotResources<
    const RX: usize,
    const TX: usize,
    const SRX: usize,
    const STX: usize,
    const BODY: usize,
> {
    socket_rx: [u8; SRX],
    socket_tx: [u8; STX],
    session: Resources<RX, TX>,
    body: [u8; BODY],
}

impl<const RX: usize, const TX: usize, const SRX: usize, const STX: usize, const BODY: usize>
    SlotResources<RX, TX, SRX, STX, BODY>
{
    const NEW: Self = SlotResources {
        socket_rx: [0; SRX],
        socket_tx: [0; STX],
        session: Resources::new(),
        body: [0; BODY],
    };
}

/// The memory of a server with `N` client slots, all sized at compile time:
/// per slot a TCP socket with `SRX`/`STX` bytes of buffer, a connection with
/// `RX` bytes of receive buffer (the largest frame a client may send) and
/// `TX` of transmit buffer (at least [`MIN_TX_BUFFER`]; it must hold the
/// handshake with the server's registry), and `BODY` bytes (`RX` unless given)
/// where the body of a packet is copied for the async
/// [`Handler::on_packet`]; plus one small socket that refuses a client while
/// all slots are busy. A handler that answers every packet in place
/// ([`Handler::on_packet_in_place`]) needs no copy: give `BODY = 0`.
pub struct ServerResources<
    const N: usize,
    const RX: usize,
    const TX: usize,
    const SRX: usize = 1024,
    const STX: usize = 1024,
    const BODY: usize = RX,
> {
    slots: [SlotResources<RX, TX, SRX, STX, BODY>; N],
    refusal_rx: [u8; REFUSAL_RX],
    refusal_tx: [u8; REFUSAL_TX],
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
            refusal_rx: [0; REFUSAL_RX],
            refusal_tx: [0; REFUSAL_TX],
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
    /// and how long the refusal socket gives a refused client.
    pub linger: Duration,
    /// How long [`Ctx::send`] waits for room in a client's transmit buffer
    /// before the client is closed with `writequeuefull`.
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

/// What a server did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerStats {
    /// Clients accepted into a slot.
    pub accepted: u32,
    /// Clients refused with `serverfull`.
    pub refused: u32,
    /// Clients that completed the classic handshake (or a custom connection
    /// type's).
    pub handshakes: u32,
    /// Most clients at once.
    pub peak_clients: usize,
    /// Packets [`Handler::on_packet_in_place`] deferred whose body did not
    /// fit the slot's copy buffer (`BODY` of [`ServerResources`]): dropped.
    pub dropped: u32,
}

/// Answer of [`Server::status`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerStatus {
    /// Clients in a slot now.
    pub clients: usize,
    /// Of those, connected (handshake complete, not a ping).
    pub connected: usize,
    /// Slots listening for a client now (free slots).
    pub listening: usize,
    /// Counters so far.
    pub stats: ServerStats,
}

/// Futures that wait on a client's session: its `run_io` and its handler.
pub const SERVER_WAITERS: usize = 2;

/// The session of one client on a server.
pub type ServerSession<'a, M, C, const NR: usize> =
    Session<'a, M, C, NR, &'a Registry<NR>, SERVER_WAITERS>;

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
        packet: Received<'_, C>,
    ) -> Flow {
        let _ = (client, outbox, packet);
        Flow::Defer
    }

    /// A packet [`on_packet_in_place`](Self::on_packet_in_place) deferred,
    /// with its body copied. The client's next packet waits until this
    /// returns (that is the back-pressure: the connection's receive buffer
    /// and then the TCP window fill up). Once the connection is done, a
    /// handler still running is dropped and the slot freed.
    async fn on_packet(&self, ctx: &Ctx<'_, '_, M, C, NR>, packet: Received<'_, C>) {
        let _ = (ctx, packet);
    }

    /// A client's connection closed, with the reason and who closed it.
    /// Called once per client that [`on_connect`](Self::on_connect) saw.
    fn on_close(&self, client: ClientId, reason: &CloseReason, initiator: Initiator) {
        let _ = (client, reason, initiator);
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

/// The sending side of a client's connection, lent to
/// [`Handler::on_packet_in_place`].
pub type ServerOutbox<'c, 'a, C, const NR: usize> = SessionOutbox<'c, 'a, C, NR, &'a Registry<NR>>;

/// A handler that does nothing: a server that only answers pings and runs
/// handshakes, and whose clients are reached by [`Server::broadcast`].
impl<M: RawMutex, C: Codec, const NR: usize> Handler<M, C, NR> for () {}

/// What a handler may do with the client it was called for.
pub struct Ctx<'c, 'a, M: RawMutex, C, const NR: usize> {
    id: ClientId,
    session: &'c ServerSession<'a, M, C, NR>,
    server: &'c dyn Backend<C, NR>,
}

impl<'a, M: RawMutex, C: Codec + Clone, const NR: usize> Ctx<'_, 'a, M, C, NR> {
    /// The client's id (its slot is [`ClientId::slot`]).
    pub fn client_id(&self) -> ClientId {
        self.id
    }

    /// The client's session: its state, mode, connection type and the core
    /// connection ([`Session::with_connection`]).
    pub fn session(&self) -> &ServerSession<'a, M, C, NR> {
        self.session
    }

    /// Sends a typed packet to this client, waiting while its transmit
    /// buffer is full; after [`ServerOptions::write_stall_timeout`] the client
    /// is closed with `writequeuefull` (and `SendError::Closed` returned).
    pub async fn send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), SendError> {
        match with_timeout(self.server.stall(), self.session.send::<P>(msg)).await {
            Ok(r) => r,
            Err(_) => {
                self.session.close(CloseReason::WriteQueueFull);
                Err(SendError::Closed)
            }
        }
    }

    /// Sends a typed packet to this client if its transmit buffer has room
    /// now (`SendError::WouldBlock` otherwise; nothing is queued then).
    pub fn try_send<P: Packet>(&self, msg: &P::Message<'_>) -> Result<(), SendError> {
        self.session.with_connection(|c| c.send::<P>(msg))
    }

    /// Sends an already encoded body as a `P` to this client (to echo or
    /// relay a body without decoding it), if its transmit buffer has room
    /// now.
    pub fn try_send_body<P: Packet>(&self, body: &[u8]) -> Result<(), SendError> {
        let id = self
            .server
            .registry()
            .id_of::<P>()
            .ok_or(SendError::NotRegistered)?;
        self.session.with_connection(|c| c.send_encoded(id, body))
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
        post(
            server.hub(),
            packet_id,
            &mut encode,
            Targets::AllExcept(except),
        )
        .await
    }

    /// Closes this client with `reason` (the `closeconn` is sent, then the
    /// socket closed).
    pub fn close(&self, reason: CloseReason) {
        self.session.close(reason);
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
            required: codec.encoded_len(msg).unwrap_or(usize::MAX),
            capacity: out.len(),
        }),
        Err(e) => Err(SendError::Encode(e)),
    }
}

/// What became of a packet offered to a handler in place.
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
    packet: Received<'_, C>,
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

/// Which clients a posted message is for.
#[derive(Clone, Copy)]
enum Targets<'x> {
    AllExcept(&'x [ClientId]),
    One(ClientId),
    /// Not a packet: close this client (connected or not) with the reason.
    Close(ClientId, &'x CloseReason),
}

/// The result of posting a message.
enum Posted {
    /// Nobody to deliver to.
    Done(BroadcastReport),
    /// Delivery under way; collect the report with this ticket.
    Ticket(u32),
}

/// What a [`Ctx`] needs of its server, without the server's sizes.
trait Backend<C, const NR: usize> {
    fn registry(&self) -> &Registry<NR>;
    fn codec(&self) -> &C;
    fn stall(&self) -> Duration;
    fn hub(&self) -> &dyn Hub;
}

/// The server's mailbox without its sizes (so [`Ctx`] needs neither `N` nor
/// the mailbox size).
trait Hub {
    fn poll_post(
        &self,
        cx: &mut Context<'_>,
        packet_id: u32,
        encode: &mut dyn FnMut(&mut [u8]) -> Result<usize, SendError>,
        targets: Targets<'_>,
    ) -> Poll<Result<Posted, SendError>>;

    fn poll_collect(&self, cx: &mut Context<'_>, ticket: u32) -> Poll<BroadcastReport>;

    fn abandon(&self, ticket: u32);
}

/// Posts a message and waits until every target took it.
async fn post(
    hub: &dyn Hub,
    packet_id: u32,
    encode: &mut dyn FnMut(&mut [u8]) -> Result<usize, SendError>,
    targets: Targets<'_>,
) -> Result<BroadcastReport, SendError> {
    match poll_fn(|cx| hub.poll_post(cx, packet_id, encode, targets)).await? {
        Posted::Done(report) => Ok(report),
        Posted::Ticket(ticket) => {
            // Dropped before the report came: let the last delivery free the
            // mailbox.
            struct Abandon<'h> {
                hub: &'h dyn Hub,
                ticket: u32,
                done: bool,
            }
            impl Drop for Abandon<'_> {
                fn drop(&mut self) {
                    if !self.done {
                        self.hub.abandon(self.ticket);
                    }
                }
            }
            let mut guard = Abandon {
                hub,
                ticket,
                done: false,
            };
            let report = poll_fn(|cx| hub.poll_collect(cx, ticket)).await;
            guard.done = true;
            Ok(report)
        }
    }
}

struct ClientState {
    /// Handshake complete, not a ping: a broadcast target.
    connected: bool,
    /// The mailbox's message (or close) waits for this client.
    pending: bool,
    /// The client's control future.
    waker: WakerRegistration,
}

struct Mail<const B: usize> {
    /// A close from [`Server::close`] instead of a packet.
    close: Option<CloseReason>,
    body: [u8; B],
    len: usize,
    packet_id: u32,
    busy: bool,
    pending: usize,
    ticket: u32,
    orphaned: bool,
    report: BroadcastReport,
}

struct Shared<const N: usize, const B: usize> {
    clients: ClientTable<ClientState, N>,
    listening: usize,
    shutdown: bool,
    stats: ServerStats,
    accept_wakers: [WakerRegistration; N],
    refuser: WakerRegistration,
    mail: Mail<B>,
    mail_wakers: MultiWakerRegistration<4>,
}

impl<const N: usize, const B: usize> Shared<N, B> {
    /// One delivery is done (or its client is gone).
    fn ack(&mut self) {
        let mail = &mut self.mail;
        mail.pending = mail.pending.saturating_sub(1);
        if mail.pending == 0 {
            if mail.orphaned {
                mail.orphaned = false;
                mail.busy = false;
            }
            self.mail_wakers.wake();
        }
    }
}

/// A peng3dnet server for up to `N` clients at once on an `embassy-net`
/// stack (see the [module docs](self)). `M` is the mutex kind of its state
/// and sessions (`NoopRawMutex` when everything runs on one executor), `C`
/// the codec, `NR` the registry's capacity, `B` the largest encoded body
/// [`broadcast`](Self::broadcast) and [`send_to`](Self::send_to) take.
pub struct Server<'d, M: RawMutex, C, const NR: usize, const N: usize, const B: usize = 256> {
    config: &'d Config<'d>,
    registry: &'d Registry<NR>,
    codec: C,
    options: ServerOptions,
    shared: Mutex<M, RefCell<Shared<N, B>>>,
}

impl<'d, M: RawMutex, C: Codec + Clone, const NR: usize, const N: usize, const B: usize>
    Server<'d, M, C, NR, N, B>
{
    /// A server of the packets in `registry` speaking `codec`, with default
    /// [`ServerOptions`].
    pub fn new(config: &'d Config<'d>, registry: &'d Registry<NR>, codec: C) -> Self {
        Server {
            config,
            registry,
            codec,
            options: ServerOptions::new(),
            shared: Mutex::new(RefCell::new(Shared {
                clients: ClientTable::new(),
                listening: 0,
                shutdown: false,
                stats: ServerStats::default(),
                accept_wakers: [const { WakerRegistration::new() }; N],
                refuser: WakerRegistration::new(),
                mail: Mail {
                    close: None,
                    body: [0; B],
                    len: 0,
                    packet_id: 0,
                    busy: false,
                    pending: 0,
                    ticket: 0,
                    orphaned: false,
                    report: BroadcastReport::default(),
                },
                mail_wakers: MultiWakerRegistration::new(),
            })),
        }
    }

    /// With these options.
    pub fn with_options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    fn with<R>(&self, f: impl FnOnce(&mut Shared<N, B>) -> R) -> R {
        self.shared.lock(|cell| f(&mut cell.borrow_mut()))
    }

    /// The clients and counters now.
    pub fn status(&self) -> ServerStatus {
        self.with(|s| ServerStatus {
            clients: s.clients.len(),
            connected: s.clients.iter().filter(|(_, c)| c.connected).count(),
            listening: s.listening,
            stats: s.stats,
        })
    }

    /// Sends a `P` to every connected client but those in `except`: encodes
    /// it once (at most `B` bytes) and queues it on each client's connection,
    /// whose own rules are checked. Waits while an earlier broadcast is
    /// still being delivered, then until every client took this one (each
    /// client's session does that at once). A client whose transmit buffer
    /// has no room is closed with `writequeuefull`, as on the std server.
    pub async fn broadcast<P: Packet>(
        &self,
        msg: &P::Message<'_>,
        except: &[ClientId],
    ) -> Result<BroadcastReport, SendError> {
        let packet_id = self.registry.id_of::<P>().ok_or(SendError::NotRegistered)?;
        let codec = &self.codec;
        let mut encode = |out: &mut [u8]| encode_into::<C, P>(codec, msg, out);
        post(self, packet_id, &mut encode, Targets::AllExcept(except)).await
    }

    /// Sends a `P` to one connected client, as [`broadcast`](Self::broadcast)
    /// does (`SendError::Closed` if it is not connected).
    pub async fn send_to<P: Packet>(
        &self,
        client: ClientId,
        msg: &P::Message<'_>,
    ) -> Result<(), SendError> {
        let packet_id = self.registry.id_of::<P>().ok_or(SendError::NotRegistered)?;
        let codec = &self.codec;
        let mut encode = |out: &mut [u8]| encode_into::<C, P>(codec, msg, out);
        let report = post(self, packet_id, &mut encode, Targets::One(client)).await?;
        match report.first_error {
            Some(e) => Err(e),
            None if report.sent == 1 => Ok(()),
            None => Err(SendError::Closed),
        }
    }

    /// Closes one client with `reason`; whether it was there. Goes through
    /// the mailbox as [`send_to`](Self::send_to) does (waits while an
    /// earlier message is being delivered), so that a slot keeps no room
    /// for a close reason.
    pub async fn close(&self, client: ClientId, reason: CloseReason) -> bool {
        let mut nothing = |_: &mut [u8]| Ok(0);
        match post(self, 0, &mut nothing, Targets::Close(client, &reason)).await {
            Ok(report) => report.sent == 1,
            Err(_) => false,
        }
    }

    /// Stops accepting, closes every client with `servershutdown`; [`run`]
    /// returns once their connections are done.
    ///
    /// [`run`]: Self::run
    pub fn shutdown(&self) {
        self.with(|s| {
            s.shutdown = true;
            for w in s.accept_wakers.iter_mut() {
                w.wake();
            }
            s.refuser.wake();
            for (_, c) in s.clients.iter_mut() {
                c.waker.wake();
            }
            s.mail_wakers.wake();
        });
    }

    /// Serves clients on `port` of `stack` with the `N` slots of
    /// `resources`, calling `handler`, until [`shutdown`](Self::shutdown);
    /// returns the counters then. Run it again to serve again. `port` must
    /// not be 0 (the slots would retry their listen every 100 ms).
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
        resources: &mut ServerResources<N, RX, TX, SRX, STX, BODY>,
        handler: &H,
    ) -> ServerStats {
        self.with(|s| s.shutdown = false);
        let ServerResources {
            slots,
            refusal_rx,
            refusal_tx,
        } = resources;
        let mut index = 0;
        let slots = slots.each_mut().map(|res| {
            let i = index;
            index += 1;
            self.serve_slot(i, stack, port, res, handler)
        });
        join(
            join_array(slots),
            self.refuse(stack, port, refusal_rx, refusal_tx),
        )
        .await;
        self.status().stats
    }

    fn set_listening(&self, delta: isize) {
        self.with(|s| {
            s.listening = s.listening.saturating_add_signed(delta);
            s.refuser.wake();
        });
    }

    async fn wait_shutdown(&self, slot: usize) {
        poll_fn(|cx| {
            self.with(|s| {
                if s.shutdown {
                    Poll::Ready(())
                } else {
                    s.accept_wakers[slot].register(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }

    async fn serve_slot<
        H: Handler<M, C, NR>,
        const RX: usize,
        const TX: usize,
        const SRX: usize,
        const STX: usize,
        const BODY: usize,
    >(
        &self,
        slot: usize,
        stack: Stack<'_>,
        port: u16,
        res: &mut SlotResources<RX, TX, SRX, STX, BODY>,
        handler: &H,
    ) {
        'serve: loop {
            if self.with(|s| s.shutdown) {
                return;
            }
            let SlotResources {
                socket_rx,
                socket_tx,
                session: session_res,
                body,
            } = &mut *res;
            let mut socket = TcpSocket::new(stack, socket_rx, socket_tx);
            self.set_listening(1);
            let accepted = select(socket.accept(port), self.wait_shutdown(slot)).await;
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
            // The session lives in this block only, so that it takes no room
            // while the socket closes below.
            {
                // Not a `match`: its `Result` would be kept across the
                // `.await` of the refusal.
                let session = 'made: {
                    if let Ok(session) = ServerSession::<M, C, NR>::server(
                        self.config,
                        self.registry,
                        self.codec.clone(),
                        session_res,
                    ) {
                        break 'made session;
                    }
                    debug!("server: connection refused by the core");
                    socket.abort();
                    let _ = with_timeout(self.options.linger, socket.flush()).await;
                    continue 'serve;
                };
                let session = &session;
                'client: {
                    let id = self.with(|s| {
                        let id = s.clients.try_insert(ClientState {
                            connected: false,
                            pending: false,
                            waker: WakerRegistration::new(),
                        });
                        s.stats.accepted += 1;
                        s.stats.peak_clients = s.stats.peak_clients.max(s.clients.len());
                        id.ok()
                    });
                    let Some(id) = id else {
                        // Cannot happen: at most N clients are in the table.
                        socket.abort();
                        break 'client;
                    };
                    debug!("server: client accepted");
                    let ctx = Ctx {
                        id,
                        session,
                        server: self as &dyn Backend<C, NR>,
                    };
                    handler.on_connect(&ctx);
                    let (reader, writer) = socket.split();
                    // Ends only with the connection (`run_io` below).
                    let app = async {
                        'app: {
                            if session.wait_connected().await.is_err() {
                                break 'app;
                            }
                            if session.with_connection(|c| c.conntype() == CONNTYPE_PING) {
                                break 'app;
                            }
                            self.with(|s| {
                                s.stats.handshakes += 1;
                                if let Some(c) = s.clients.get_mut(id) {
                                    c.connected = true;
                                }
                            });
                            handler.on_handshake(&ctx).await;
                            loop {
                                let step = session.receive_with(|packet, outbox| {
                                    offer(handler, id, outbox, packet, body)
                                });
                                // Only the small `Step` is kept across the awaits below.
                                let Ok(step) = step.await else {
                                    break 'app;
                                };
                                match step {
                                    Step::Handled => {}
                                    Step::Retry => {
                                        let stall = self.options.write_stall_timeout;
                                        if with_timeout(stall, session.wait_sent()).await.is_err() {
                                            session.close(CloseReason::WriteQueueFull);
                                        }
                                    }
                                    Step::Deferred(packet_id, name, len) => {
                                        let packet = Received {
                                            packet_id,
                                            name,
                                            body: &body[..len],
                                            codec: self.codec.clone(),
                                        };
                                        handler.on_packet(&ctx, packet).await;
                                    }
                                    Step::Dropped => {
                                        debug!(
                                            "server: deferred packet larger than the copy buffer"
                                        );
                                        self.with(|s| s.stats.dropped += 1);
                                    }
                                }
                            }
                        }
                        pending::<Infallible>().await
                    };
                    // The connection ends `run_io`; a handler still running then is
                    // dropped with the app.
                    let outcome = match select3(
                        session.run_io(reader, writer),
                        app,
                        self.control(id, session),
                    )
                    .await
                    {
                        Either3::First(outcome) => outcome,
                        Either3::Second(never) | Either3::Third(never) => match never {},
                    };
                    let closed = outcome.unwrap_or_else(|_| session.end());
                    debug!("server: client closed");
                    handler.on_close(id, &closed.reason, closed.initiator);
                    self.with(|s| {
                        if s.clients.get(id).is_some_and(|c| c.pending) {
                            s.ack();
                        }
                        s.clients.remove(id);
                    });
                }
            }
            close_socket(&mut socket, self.options.linger).await;
        }
    }

    /// Carries out, for one client, what other futures asked: deliveries
    /// from the mailbox, [`Server::close`], [`Server::shutdown`].
    fn control<'s, 'x>(
        &'s self,
        id: ClientId,
        session: &'s ServerSession<'x, M, C, NR>,
    ) -> impl Future<Output = Infallible> + use<'s, 'x, 'd, M, C, NR, N, B> {
        let mut shut = false;
        poll_fn(move |cx| {
            self.with(|s| {
                if s.shutdown && !shut {
                    shut = true;
                    session.close(CloseReason::ServerShutdown);
                }
                let Some(c) = s.clients.get_mut(id) else {
                    return Poll::Pending;
                };
                let deliver = c.pending;
                c.pending = false;
                c.waker.register(cx.waker());
                if deliver {
                    let mail = &mut s.mail;
                    let res = match &mail.close {
                        Some(reason) => {
                            session.close(reason.clone());
                            Ok(())
                        }
                        None => {
                            let body = &mail.body[..mail.len];
                            let packet_id = mail.packet_id;
                            session.with_connection(|conn| {
                                let r = conn.send_encoded(packet_id, body);
                                if let Err(SendError::WouldBlock { .. }) = r {
                                    conn.close(CloseReason::WriteQueueFull);
                                }
                                r
                            })
                        }
                    };
                    match res {
                        Ok(()) => mail.report.sent += 1,
                        Err(e) => {
                            mail.report.failed += 1;
                            mail.report.first_error.get_or_insert(e);
                        }
                    }
                    s.ack();
                }
                Poll::Pending
            })
        })
    }

    /// While no slot listens, accepts the next client on a small socket of
    /// its own, tells it `serverfull` and closes.
    async fn refuse(
        &self,
        stack: Stack<'_>,
        port: u16,
        rx: &mut [u8; REFUSAL_RX],
        tx: &mut [u8; REFUSAL_TX],
    ) {
        let mut frame = [0u8; REFUSAL_TX];
        let len = encode_refusal(&self.codec, &CloseReason::ServerFull, &mut frame).unwrap_or(0);
        loop {
            // Wait until every slot is busy (or shutdown).
            let go = poll_fn(|cx| {
                self.with(|s| {
                    if s.shutdown {
                        Poll::Ready(false)
                    } else if s.listening == 0 {
                        Poll::Ready(true)
                    } else {
                        s.refuser.register(cx.waker());
                        Poll::Pending
                    }
                })
            })
            .await;
            if !go {
                return;
            }
            let mut socket = TcpSocket::new(stack, &mut rx[..], &mut tx[..]);
            let slot_free = poll_fn(|cx| {
                self.with(|s| {
                    if s.shutdown || s.listening > 0 {
                        Poll::Ready(())
                    } else {
                        s.refuser.register(cx.waker());
                        Poll::Pending
                    }
                })
            });
            match select(socket.accept(port), slot_free).await {
                Either::First(Ok(())) => {
                    debug!("server: full, client refused");
                    self.with(|s| s.stats.refused += 1);
                    let linger = self.options.linger;
                    let _ = with_timeout(linger, async {
                        socket.write_all(&frame[..len]).await?;
                        socket.flush().await
                    })
                    .await;
                    close_socket(&mut socket, linger).await;
                }
                Either::First(Err(_)) => Timer::after_millis(100).await,
                // A slot listens again: stop listening here, so that the
                // next client goes to the slot.
                Either::Second(()) => {}
            }
        }
    }
}

/// Closes our side, waits up to `linger` for the peer's side and for our
/// last bytes to be acknowledged, and resets the connection otherwise.
async fn close_socket(socket: &mut TcpSocket<'_>, linger: Duration) {
    socket.close();
    let graceful = with_timeout(linger, async {
        // Whatever still arrives is dropped where it lies; the stream's end
        // (or a reset) ends the wait.
        while socket.read_with(|bytes| (bytes.len(), ())).await.is_ok() {}
        socket.flush().await
    })
    .await;
    if !matches!(graceful, Ok(Ok(()))) {
        socket.abort();
        let _ = with_timeout(Duration::from_millis(100), socket.flush()).await;
    }
}

impl<M: RawMutex, C: Codec + Clone, const NR: usize, const N: usize, const B: usize> Backend<C, NR>
    for Server<'_, M, C, NR, N, B>
{
    fn registry(&self) -> &Registry<NR> {
        self.registry
    }

    fn codec(&self) -> &C {
        &self.codec
    }

    fn stall(&self) -> Duration {
        self.options.write_stall_timeout
    }

    fn hub(&self) -> &dyn Hub {
        self
    }
}

impl<M: RawMutex, C: Codec + Clone, const NR: usize, const N: usize, const B: usize> Hub
    for Server<'_, M, C, NR, N, B>
{
    fn poll_post(
        &self,
        cx: &mut Context<'_>,
        packet_id: u32,
        encode: &mut dyn FnMut(&mut [u8]) -> Result<usize, SendError>,
        targets: Targets<'_>,
    ) -> Poll<Result<Posted, SendError>> {
        self.with(|s| {
            if s.mail.busy {
                s.mail_wakers.register(cx.waker());
                return Poll::Pending;
            }
            let len = match encode(&mut s.mail.body) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let mut report = BroadcastReport::default();
            let mut count = 0;
            for (cid, c) in s.clients.iter_mut() {
                match targets {
                    // A close reaches a client before its handshake too.
                    Targets::Close(target, _) if target != cid => continue,
                    Targets::Close(..) => {}
                    _ if !c.connected => continue,
                    Targets::AllExcept(except) if except.contains(&cid) => {
                        report.excepted += 1;
                        continue;
                    }
                    Targets::One(target) if target != cid => continue,
                    _ => {}
                }
                c.pending = true;
                c.waker.wake();
                count += 1;
            }
            if count == 0 {
                return Poll::Ready(Ok(Posted::Done(report)));
            }
            let mail = &mut s.mail;
            mail.close = match targets {
                Targets::Close(_, reason) => Some(reason.clone()),
                _ => None,
            };
            mail.len = len;
            mail.packet_id = packet_id;
            mail.busy = true;
            mail.pending = count;
            mail.orphaned = false;
            mail.report = report;
            mail.ticket = mail.ticket.wrapping_add(1);
            Poll::Ready(Ok(Posted::Ticket(mail.ticket)))
        })
    }

    fn poll_collect(&self, cx: &mut Context<'_>, ticket: u32) -> Poll<BroadcastReport> {
        self.with(|s| {
            let mail = &mut s.mail;
            if mail.ticket != ticket || !mail.busy {
                return Poll::Ready(BroadcastReport::default());
            }
            if mail.pending == 0 {
                mail.busy = false;
                let report = mail.report;
                s.mail_wakers.wake();
                return Poll::Ready(report);
            }
            s.mail_wakers.register(cx.waker());
            Poll::Pending
        })
    }

    fn abandon(&self, ticket: u32) {
        self.with(|s| {
            let mail = &mut s.mail;
            if mail.ticket == ticket && mail.busy {
                if mail.pending == 0 {
                    mail.busy = false;
                    s.mail_wakers.wake();
                } else {
                    mail.orphaned = true;
                }
            }
        });
    }
}
