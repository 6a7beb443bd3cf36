//! The server's view of all its clients, sans-IO like a [`Connection`]:
//! admission and the `serverfull` refusal, the client table with
//! generational [`ClientId`]s, one rule for a send that does not fit, broadcast
//! that encodes once, one timer table for every client, statistics and close
//! reports. An adapter owns the sockets and the wake-ups and nothing else; it
//! hands the server bytes and time and writes out what the server queued
//! (quinn-proto's `Endpoint` split, `shared/DESIGN.md`).
//!
//! # Driving a server
//! An adapter keeps, beside each [`ClientId`], only its transport (a socket,
//! a TLS session) and repeats:
//! 1. **Accept.** For a new transport call [`Server::accept`] with the
//!    client's two buffers. On [`Refused`], write [`Server::refusal`] (a lone
//!    `closeconn` with `serverfull`, or `servershutdown`) if it can, and close
//!    the transport.
//! 2. **Read**, while [`Server::wants_input`] says so: into
//!    [`Server::receive_buffer`] then [`Server::commit_received`] (or copy
//!    with [`Server::handle_input`]). On end of stream or a transport error,
//!    [`Server::handle_transport_closed`]. A TLS adapter reports the level
//!    it established with [`Server::set_security_level`].
//! 3. **Events.** Call [`Server::poll`] for that client until it returns
//!    `None` and act on each [`Event`]: hand packets to the application,
//!    which answers through [`Server::send`], [`Server::broadcast`],
//!    [`Server::close`]. `poll` returns `None` early while the client's
//!    transmit queue is fuller than [`ServerOptions::read_pause_percent`]
//!    (see [`Server::wants_input`]): write first. An adapter that hands
//!    packets to handlers elsewhere (the embassy server's handler futures)
//!    runs the handshake, pings and closes with [`Server::drive_protocol`]
//!    after each input and takes the packets with [`Server::poll_with`].
//! 4. **Write** [`Server::poll_transmit`] to the transport and report what
//!    was taken with [`Server::transmitted`]; every client a send or
//!    broadcast reached may have bytes to write.
//! 5. **Finish.** Once [`Server::take_finished`] returns the client's
//!    [`Closed`] report, close the transport (an adapter whose transport
//!    has bytes of its own to flush, such as a TLS `close_notify`, may do
//!    that first unless [`Server::is_abandoned`]).
//! 6. **Timers.** Sleep until input arrives or until
//!    [`Server::poll_timeout`]; then call [`Server::handle_timeout`] until it
//!    returns `None`, servicing (steps 3 to 5) each client it returns.
//!
//! [`Server::shutdown`] closes every client with `servershutdown`, refuses
//! new ones, and after [`ServerOptions::shutdown_grace`] drops those that
//! did not take their `closeconn`; [`Server::is_done`] then says the adapter
//! may stop.
//!
//! # The rules the server applies
//! - **Admission:** at most [`ServerOptions::max_clients`] clients, and no
//!   more than the storage holds; the next is [`Refused::Full`]
//!   (`serverfull`, counted in [`ServerStats::refused`]). At most
//!   [`ServerOptions::max_per_address`] from one address
//!   ([`Refused::TooManyFromAddress`], `toomanyconnections`; the adapter
//!   counts them) and [`ServerOptions::accept_rate`] new clients a second
//!   ([`Refused::Busy`], `serverbusy`).
//! - **A send that does not fit** ([`SendError::WouldBlock`]: the client's
//!   transmit queue has no room for it now) closes the client with
//!   `writequeuefull`, on every path: [`Server::send`],
//!   [`Server::send_encoded`] and each client of a [`Server::broadcast`]. A
//!   client that does not read is not waited for. (An async adapter may wait
//!   for room before it sends, with [`Server::has_room`]; the write-stall
//!   timer bounds that wait.)
//! - **A message that can never fit** ([`SendError::TooLarge`]: larger than
//!   the client's whole transmit queue) is refused and nothing else happens:
//!   it is the sender's mistake, not the client's, and every client of a
//!   server has the same queue size.
//! - **Write stall:** a client with bytes queued is dropped (closed with
//!   `writequeuefull` and abandoned: it does not read, so it is not told)
//!   when, for [`ServerOptions::write_stall_timeout`], it either takes none
//!   of them or its queue stays above the read-pause mark
//!   ([`ServerOptions::read_pause_percent`] of it) whatever it takes: the
//!   timer restarts only when what it took leaves the queue at or below
//!   the mark. A client that reads a little now and then is dropped like
//!   one that reads nothing; one that drains its queue below the mark
//!   within the time is not. (With a mark of 100 any byte taken counts.)
//! - **Fair service:** an adapter that serves every client on one thread
//!   calls [`Server::begin_round`] once a pass; each client then gets at
//!   most [`ServerOptions::round_quantum`] bytes of input a round and
//!   packets while its credit lasts (frame length, inflated body, and the
//!   bodies its answers encoded, counted before compression), and once
//!   the clients together cost [`ServerOptions::round_work`] in a round,
//!   only packets known to be small are handed out. A client held back is
//!   [`Server::is_deferred`]: the adapter services it again next round.
//!   (Feature `fair-service`; without it `begin_round` does nothing.)
//! - **The connection's timers**, fired through the same timer table:
//!   handshake ([`Config::handshake_timeout`](crate::connection::Config::handshake_timeout),
//!   `handshaketimeout`), frame ([`Config::frame_timeout`](crate::connection::Config::frame_timeout),
//!   `frametimeout`: a frame started must complete), idle
//!   ([`Config::idle_timeout`](crate::connection::Config::idle_timeout),
//!   `idletimeout`: it frees the slot of a client that sends nothing, off by
//!   default) and keepalive ([`Config::keepalive_interval`](crate::connection::Config::keepalive_interval)).
//!   The clients they close are counted in [`ServerStats::timed_out`].
//!
//! # Example
//! A server with room for two clients (a fixed array, as on a
//! microcontroller) and two core client connections, joined by in-memory
//! byte pipes:
//!
//! ```
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::connection::{Config, Connection, Event};
//! use peng3dnet_core::registry::{Packet, Registry};
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::server::{Refused, Server, ServerOptions, Slot};
//! use peng3dnet_core::time::Instant;
//! use peng3dnet_core::CloseReason;
//!
//! struct Say;
//! impl Packet for Say {
//!     const NAME: &'static str = "chat:say";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! let config = Config::new();
//! let mut registry = Registry::<8>::new();
//! registry.register::<Say>().unwrap();
//! let now = Instant::ZERO;
//! let slots = [const { Slot::EMPTY }; 2];
//! let mut server = Server::new(&config, &registry, Postcard, ServerOptions::new(), slots);
//!
//! // Two clients connect; a third is refused with `serverfull`.
//! let mut regs = [registry.clone(), registry.clone()];
//! let mut clients = regs.each_mut().map(|reg| {
//!     Connection::client(&config, reg, Postcard, [0u8; 1024], [0u8; 1024], "classic", now).unwrap()
//! });
//! let ids = [(); 2].map(|_| server.accept([0u8; 1024], [0u8; 1024], now).unwrap());
//! assert_eq!(server.accept([0u8; 1024], [0u8; 1024], now), Err(Refused::Full));
//! let mut frame = [0u8; 64];
//! assert!(server.refusal(Refused::Full, &mut frame).is_ok());
//!
//! // The transport: move bytes both ways, then let each side poll.
//! let mut heard = 0;
//! for _ in 0..6 {
//!     for (client, &id) in clients.iter_mut().zip(&ids) {
//!         let n = client.handle_input(server.poll_transmit(id));
//!         server.transmitted(id, n, now);
//!         while let Some(event) = client.poll(now) {
//!             match event {
//!                 Event::Connected => client.send::<Say>(&"hi").unwrap(),
//!                 Event::Packet(p) => heard += p.decode::<Say>().is_ok() as u32,
//!                 _ => {}
//!             }
//!         }
//!         let n = server.handle_input(id, client.poll_transmit());
//!         client.transmitted(n);
//!         while let Some(event) = server.poll(id, now) {
//!             if let Event::Packet(p) = event {
//!                 let text = p.decode::<Say>().unwrap();
//!                 assert_eq!(text, "hi");
//!                 // One encoding for every client.
//!                 let mut scratch = [0u8; 32];
//!                 server.broadcast::<Say>(&"someone said hi", &mut scratch, &[]).unwrap();
//!             }
//!         }
//!     }
//! }
//! // The first broadcast went out before the second client's handshake was
//! // done: it reached the first client only.
//! assert_eq!(heard, 3);
//! assert_eq!(server.stats().handshakes, 2);
//!
//! // A close from the server, reported once the client took its closeconn.
//! server.close(ids[0], CloseReason::UserRequest);
//! while server.poll(ids[0], now).is_some() {}
//! let n = clients[0].handle_input(server.poll_transmit(ids[0]));
//! server.transmitted(ids[0], n, now);
//! let (done, _buffers) = server.take_finished(ids[0]).unwrap();
//! assert_eq!(done.reason, CloseReason::UserRequest);
//! assert_eq!(server.len(), 1);
//! ```

mod admission;
mod slots;

pub use slots::{ClientId, Slot, Storage, MAX_SLOTS};

use crate::buffer::Buffer;
use crate::codec::{Codec, CodecError};
use crate::connection::{Config, Connection, Event, Outbox, ProtocolStep, SendError, Take};
use crate::messages::CloseConn;
use crate::registry::{internal, Packet, Registry};
use crate::time::{Duration, Instant, MaybeInstant};
use crate::types::{CloseReason, Closed, Mode, SecurityLevel, State};
use crate::wire::{encode_frame, BufferTooSmall, Flags, FRAME_OVERHEAD};
use admission::AcceptBucket;
use core::fmt;
use core::marker::PhantomData;
use slots::Table;

/// The connection of one client on a [`Server`]: every client shares the
/// server's registry.
pub type ServerConnection<'a, C, R, T, const N: usize> =
    Connection<'a, C, R, T, N, &'a Registry<N>>;

/// One slot of a server's storage (see [`Storage`]).
pub type ServerSlot<'a, C, R, T, const N: usize> = Slot<ClientState<'a, C, R, T, N>>;

/// The settings of a [`Server`] beyond the protocol's
/// [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ServerOptions {
    /// The most clients at once; the next is refused with `serverfull`. The
    /// storage's size is a bound too, and so is [`MAX_SLOTS`].
    pub max_clients: usize,
    /// How long a client may leave queued bytes untaken (no write progress
    /// at all), or keep its queue above the read-pause mark
    /// ([`read_pause_percent`](Self::read_pause_percent)) whatever it
    /// takes, before it is dropped with `writequeuefull`.
    pub write_stall_timeout: Duration,
    /// How long [`Server::shutdown`] waits for clients to take their
    /// `servershutdown` before it drops them.
    pub shutdown_grace: Duration,
    /// While more than this share (in percent) of a client's transmit queue
    /// is taken, the server takes no more of its input: [`Server::poll`]
    /// returns `None` and [`Server::wants_input`] is false until the client
    /// read its answers (back-pressure). 100 never pauses: handlers then
    /// wait for room themselves.
    pub read_pause_percent: u8,
    /// The most clients from one address at once; the next is refused with
    /// `toomanyconnections`. The adapter counts them and says how many it
    /// holds in [`Server::admit`] (an adapter that cannot tell passes 0).
    pub max_per_address: usize,
    /// The most clients accepted a second, on average (0: no bound): each
    /// accept takes a token from a bucket of [`accept_burst`](Self::accept_burst)
    /// tokens refilled at this rate; with none left the client is refused
    /// with `serverbusy`. It bounds the handshakes (and TLS handshakes)
    /// started a second.
    pub accept_rate: u32,
    /// The tokens of the accept bucket: how many clients may arrive at once
    /// above [`accept_rate`](Self::accept_rate).
    pub accept_burst: u32,
    /// Fair service: the bytes one client may cost in one round of an
    /// adapter that calls [`Server::begin_round`]. [`Server::receive_buffer`]
    /// offers at most this much input a round, and [`Server::poll`] hands
    /// out packets while the client's credit lasts: each round adds this
    /// much (up to this much), and each packet takes its frame's length,
    /// its inflated body if it was compressed, and the bodies its answers
    /// encoded (before compression). A packet larger than what is left of
    /// the credit takes the shared budget ([`round_work`](Self::round_work));
    /// a debt it leaves is paid off in the next rounds before the client
    /// gets another packet. 0 turns fair service off.
    pub round_quantum: usize,
    /// Fair service: the bytes all clients together may cost in one round
    /// before only packets known to be small are handed out (a frame that
    /// its client's credit covers, a compressed one counted at 4 times its
    /// length). A larger packet is handed out only while this budget lasts
    /// (at least one a round), to the client that waited longest first;
    /// the others wait for the next round.
    pub round_work: usize,
}

impl ServerOptions {
    /// The defaults: as many clients as the storage holds, a 30 s write
    /// stall, a 5 s shutdown grace, input paused above half a transmit
    /// queue, no bound per address or on the accept rate, and rounds of
    /// 64 KiB a client and 1 MiB in all (when the adapter counts rounds).
    pub const fn new() -> Self {
        ServerOptions {
            max_clients: usize::MAX,
            write_stall_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            read_pause_percent: 50,
            max_per_address: usize::MAX,
            accept_rate: 0,
            accept_burst: 0,
            round_quantum: 64 * 1024,
            round_work: 1024 * 1024,
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
    /// Clients accepted.
    pub accepted: u64,
    /// Clients refused: the server was full or shutting down.
    pub refused: u64,
    /// Clients that completed the classic handshake (or entered a custom
    /// connection type's active state).
    pub handshakes: u64,
    /// Clients dropped by the write-stall rule: they took no byte, or left
    /// their queue over the read-pause mark, for the write-stall timeout.
    pub write_stalls: u64,
    /// Clients closed by a timer of their connection: handshake, frame or
    /// idle timeout.
    pub timed_out: u64,
    /// Packets an adapter had to drop without closing their client (see
    /// [`Server::count_dropped`]).
    pub dropped: u64,
    /// Most clients at once.
    pub peak_clients: usize,
}

/// Why [`Server::accept`] turned a client away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refused {
    /// The server holds [`ServerOptions::max_clients`] clients, or its
    /// storage is full: tell it `serverfull`.
    Full,
    /// The server is shutting down: tell it `servershutdown`.
    ShuttingDown,
    /// The connection could not be made with these buffers (a transmit
    /// buffer below the minimum, or one too small for `hello`).
    Connection(crate::connection::NewConnectionError),
    /// The address already holds [`ServerOptions::max_per_address`]
    /// clients: tell it `toomanyconnections`.
    TooManyFromAddress,
    /// More clients arrived than [`ServerOptions::accept_rate`] allows: tell
    /// it `serverbusy` (it may try again later).
    Busy,
}

impl Refused {
    /// The close reason the client is told.
    pub fn reason(self) -> CloseReason {
        match self {
            Refused::Full => CloseReason::ServerFull,
            Refused::ShuttingDown => CloseReason::ServerShutdown,
            Refused::Connection(_) => CloseReason::WriteQueueFull,
            Refused::TooManyFromAddress => CloseReason::TooManyConnections,
            Refused::Busy => CloseReason::ServerBusy,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Full => f.write_str("server full"),
            Refused::ShuttingDown => f.write_str("server shutting down"),
            Refused::Connection(e) => write!(f, "connection refused: {e}"),
            Refused::TooManyFromAddress => f.write_str("too many connections from this address"),
            Refused::Busy => f.write_str("server busy: too many new connections a second"),
        }
    }
}

impl core::error::Error for Refused {}

/// What a broadcast did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BroadcastReport {
    /// Clients the packet was queued for.
    pub sent: usize,
    /// Connected clients skipped because they were in the exception list.
    pub excepted: usize,
    /// Connected clients that refused it (rules, connection type, a full
    /// queue: that client is closed with `writequeuefull`).
    pub failed: usize,
    /// The error of the first failure.
    pub first_error: Option<SendError>,
}

/// A client as the server keeps it: its connection and the server's
/// bookkeeping of it.
pub struct ClientState<'a, C, R, T, const N: usize> {
    conn: ServerConnection<'a, C, R, T, N>,
    /// Since when queued bytes wait without any taken (none: nothing queued,
    /// or progress since).
    stall_since: MaybeInstant,
    /// Bytes were queued by a call that carries no time (a send): the
    /// write-stall timer starts at the next call that does.
    stall_unstarted: bool,
    /// The transport is given up: no byte is read or written any more.
    abandoned: bool,
    /// [`Event::Closed`] was handed out.
    reported: bool,
    /// Fair service: the bytes of work left to this client (negative: a
    /// debt from a packet larger than it).
    credit: i32,
    /// Input bytes it may still be offered this round.
    input_left: usize,
    /// The round its credit was last topped up in (the round's low 16
    /// bits: a client not seen for 65,536 rounds misses one top-up).
    round: u16,
    /// [`Connection::encoded_bytes`] when its work was last counted (its
    /// low 32 bits: what was encoded since is the wrapping difference).
    encoded_seen: u32,
    /// The round's budget held a packet back: service it next round.
    deferred: bool,
    /// The round's input share is read: service it next round.
    input_deferred: bool,
    /// Since which round its next packet waits for the rounds' shared
    /// budget ([`ServerOptions::round_work`]).
    /// (The round's low 16 bits: waits are counted modulo 65,536 rounds.)
    waiting_since: Option<u16>,
}

/// The timers of one client, in the server's one table.
#[derive(Clone, Copy)]
enum Timer {
    /// The connection's own: handshake, frame, idle and keepalive.
    Connection,
    /// Queued bytes that none of is taken.
    WriteStall,
}

impl Timer {
    const ALL: [Timer; 2] = [Timer::Connection, Timer::WriteStall];
}

/// What [`Server::pollable`] found: the client, the counters, the round's
/// work left and the cost of the packet it may hand out.
struct Pollable<'s, 'a, C, R, T, const N: usize> {
    c: &'s mut ClientState<'a, C, R, T, N>,
    stats: &'s mut ServerStats,
    round_left: &'s mut usize,
    charge: Charge,
}

/// The cost of the frame a poll may hand out, known before it is.
#[derive(Clone, Copy, Default)]
struct Charge {
    /// Its length on the wire (0: no application packet).
    frame: usize,
    /// Whether its body is inflated too.
    compressed: bool,
}

impl Charge {
    /// What the packet cost once handed out with a body of `body` bytes.
    fn cost(self, body: usize) -> usize {
        match self.compressed {
            true => self.frame.saturating_add(body),
            false => self.frame,
        }
    }
}

impl<C, R, T, const N: usize> ClientState<'_, C, R, T, N> {
    /// Tops the credit up once a round (at most to one quantum) and gives
    /// back the round's input share.
    fn enter_round(&mut self, round: u32, quantum: usize) {
        let round = round as u16;
        if self.round != round {
            self.round = round;
            let quantum = clamp_i32(quantum);
            self.credit = self.credit.saturating_add(quantum).min(quantum);
            self.input_left = quantum as usize;
            self.input_deferred = false;
        }
    }

    /// Takes `cost` bytes of work off the client's credit and the round's.
    fn charge(&mut self, cost: usize, round_left: &mut usize) {
        self.credit = self.credit.saturating_sub(clamp_i32(cost));
        *round_left = round_left.saturating_sub(cost);
    }
}

impl<C: Codec, R: Buffer, T: Buffer, const N: usize> ClientState<'_, C, R, T, N> {
    /// When `timer` fires for this client, if it runs.
    fn deadline(&self, timer: Timer, write_stall: Duration) -> MaybeInstant {
        match timer {
            Timer::Connection => MaybeInstant::from_option(self.conn.poll_timeout()),
            Timer::WriteStall => match self.stall_since.get() {
                Some(since) => MaybeInstant::new(since + write_stall),
                None => MaybeInstant::NONE,
            },
        }
    }
}

/// The server's view of all its clients; see the [module docs](self) for the
/// calling order. `C` is the codec, `R`/`T` the clients' receive and
/// transmit buffers, `N` the registry's capacity, `S` the storage of client
/// slots ([`Storage`]).
pub struct Server<'a, C, R, T, const N: usize, S> {
    config: &'a Config<'a>,
    registry: &'a Registry<N>,
    codec: C,
    options: ServerOptions,
    table: Table<ClientState<'a, C, R, T, N>, S>,
    stats: ServerStats,
    /// The latest time an input gave.
    now: Instant,
    /// Once shut down: when the clients left are dropped.
    grace: MaybeInstant,
    shutting_down: bool,
    /// After the grace: the next slot to drop.
    grace_cursor: usize,
    /// The accepts left this second ([`ServerOptions::accept_rate`]).
    bucket: AcceptBucket,
    /// The round of fair service, counted by [`Server::begin_round`].
    round: u32,
    /// Whether the adapter counts rounds (called `begin_round` once).
    rounds: bool,
    /// The work all clients may still cost this round.
    round_left: usize,
    /// The longest any client waited for the shared budget, as of the
    /// last round: a client that waited less is not served before it.
    oldest_wait: u32,
    /// The longest wait seen this round.
    longest_wait: u32,
    _buffers: PhantomData<fn(R, T)>,
}

impl<'a, C, R, T, const N: usize, S> Server<'a, C, R, T, N, S>
where
    C: Codec,
    R: Buffer,
    T: Buffer,
    S: Storage<ServerSlot<'a, C, R, T, N>>,
{
    /// A server of the packets in `registry` speaking `codec`, keeping its
    /// clients in `storage` (whatever the slots held is dropped).
    pub fn new(
        config: &'a Config<'a>,
        registry: &'a Registry<N>,
        codec: C,
        options: ServerOptions,
        storage: S,
    ) -> Self {
        Server {
            config,
            registry,
            codec,
            options,
            table: Table::new(storage),
            stats: ServerStats::default(),
            now: Instant::ZERO,
            grace: MaybeInstant::NONE,
            shutting_down: false,
            grace_cursor: 0,
            bucket: AcceptBucket::full(options.accept_burst),
            round: 0,
            rounds: false,
            round_left: options.round_work,
            oldest_wait: 0,
            longest_wait: 0,
            _buffers: PhantomData,
        }
    }

    // ---- getters ----

    /// The counters so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The options.
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// The protocol configuration every client's connection uses.
    pub fn config(&self) -> &'a Config<'a> {
        self.config
    }

    /// The registry every client's connection uses.
    pub fn registry(&self) -> &'a Registry<N> {
        self.registry
    }

    /// The server's codec (each client's connection has a copy).
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// Clients now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no client is there.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Whether [`accept`](Self::accept) would refuse a client now.
    pub fn is_full(&self) -> bool {
        self.table.len() >= self.options.max_clients
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Whether the server shut down and every client is gone: the adapter
    /// may stop.
    pub fn is_done(&self) -> bool {
        self.shutting_down && self.is_empty()
    }

    /// Every client's id, in slot order.
    pub fn clients(&self) -> impl Iterator<Item = ClientId> + use<'_, 'a, C, R, T, N, S> {
        (0..self.table.slot_count()).filter_map(|i| self.table.id_at(i))
    }

    /// A client's connection, to look at (state, mode, connection type,
    /// buffers...). Changes go through the server.
    pub fn connection(&self, id: ClientId) -> Option<&ServerConnection<'a, C, R, T, N>> {
        self.table.get(id).map(|c| &c.conn)
    }

    /// Whether the client completed its handshake and is not closed: a
    /// broadcast reaches it.
    pub fn is_connected(&self, id: ClientId) -> bool {
        self.connection(id).is_some_and(|c| c.is_connected())
    }

    /// How many clients are connected.
    pub fn connected(&self) -> usize {
        self.clients().filter(|&id| self.is_connected(id)).count()
    }

    // ---- admission ----

    /// Whether a new client would be accepted at `now`, before the adapter
    /// sets up its transport (a TLS session, say): not shutting down, not
    /// full, fewer than [`ServerOptions::max_per_address`] clients from its
    /// address (`from_address`: how many the adapter holds from it; 0 if it
    /// cannot tell), and a token left in the accept bucket
    /// ([`ServerOptions::accept_rate`]). A refusal is counted; write
    /// [`refusal`](Self::refusal) to the client then.
    pub fn admit(&mut self, now: Instant, from_address: usize) -> Result<(), Refused> {
        self.now = now;
        let options = &self.options;
        let refused = if self.shutting_down {
            Refused::ShuttingDown
        } else if self.is_full() {
            Refused::Full
        } else if from_address >= options.max_per_address {
            Refused::TooManyFromAddress
        } else if !self
            .bucket
            .allows(now, options.accept_rate, options.accept_burst)
        {
            Refused::Busy
        } else {
            return Ok(());
        };
        self.stats.refused += 1;
        Err(refused)
    }

    /// The adapter cannot take a client now (every transport it has is
    /// busy, while the table may already have room): counts the refusal and
    /// says what to tell the client (`servershutdown` while shutting down,
    /// `serverfull` otherwise).
    pub fn refuse(&mut self) -> Refused {
        self.stats.refused += 1;
        if self.shutting_down {
            Refused::ShuttingDown
        } else {
            Refused::Full
        }
    }

    /// Takes a new client with its receive and transmit buffers (the
    /// receive buffer bounds the largest frame it may send); queues its
    /// `hello`. Refused as [`admit`](Self::admit) refuses (with no count of
    /// its address: an adapter that counts calls `admit` first); write
    /// [`refusal`](Self::refusal) to its transport then.
    pub fn accept(&mut self, rx: R, tx: T, now: Instant) -> Result<ClientId, Refused> {
        self.admit(now, 0)?;
        let conn = Connection::server(self.config, self.registry, self.codec.clone(), rx, tx, now)
            .map_err(Refused::Connection)?;
        let encoded_seen = conn.encoded_bytes() as u32;
        let client = ClientState {
            conn,
            stall_since: MaybeInstant::NONE,
            stall_unstarted: false,
            abandoned: false,
            reported: false,
            credit: clamp_i32(self.options.round_quantum),
            input_left: self.options.round_quantum,
            round: self.round as u16,
            encoded_seen,
            deferred: false,
            input_deferred: false,
            waiting_since: None,
        };
        let id = match self.table.insert(client, self.options.max_clients) {
            Ok(id) => id,
            Err(_) => {
                self.stats.refused += 1;
                return Err(Refused::Full);
            }
        };
        self.bucket.take(self.options.accept_rate);
        self.stats.accepted += 1;
        self.stats.peak_clients = self.stats.peak_clients.max(self.table.len());
        self.refresh(id.slot(), true);
        Ok(id)
    }

    /// Whether a client's transmit buffer of `capacity` bytes
    /// ([`Buffer::max_capacity`]) can
    /// hold this server's `handshake` (the whole registry):
    /// [`accept`](Self::accept) refuses smaller ones with
    /// [`NewConnectionError::HandshakeTooLarge`](crate::connection::NewConnectionError::HandshakeTooLarge).
    /// For an adapter to check its buffer sizes before anyone connects.
    pub fn check_tx_capacity(
        &self,
        capacity: usize,
    ) -> Result<(), crate::connection::NewConnectionError> {
        use crate::connection::{server_tx_required, NewConnectionError, MIN_TX_BUFFER};
        if capacity < MIN_TX_BUFFER {
            return Err(NewConnectionError::TxBufferTooSmall {
                required: MIN_TX_BUFFER,
            });
        }
        // What the codec cannot measure, accept does not refuse either.
        let required =
            server_tx_required(self.config, self.registry, &self.codec).unwrap_or(MIN_TX_BUFFER);
        if capacity < required {
            return Err(NewConnectionError::HandshakeTooLarge { required, capacity });
        }
        Ok(())
    }

    /// Encodes the lone `closeconn` that tells a refused client why, into
    /// `out`; returns its length.
    pub fn refusal(&self, refused: Refused, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        encode_refusal(&self.codec, &refused.reason(), out)
    }

    // ---- input ----

    /// Whether the adapter should read from this client now: it is alive
    /// and not closed, and its transmit queue is at most
    /// [`ServerOptions::read_pause_percent`] full (a client that sends
    /// faster than it reads is not read from until it took its answers:
    /// that is the server's back-pressure).
    pub fn wants_input(&self, id: ClientId) -> bool {
        let percent = self.options.read_pause_percent;
        self.table.get(id).is_some_and(|c| {
            !c.abandoned && !c.conn.is_closed() && !over_high_water(&c.conn, percent)
        })
    }

    /// Free space of the client's receive buffer to read into; then call
    /// [`commit_received`](Self::commit_received). Empty for an unknown id,
    /// while the buffer is full ([`poll`](Self::poll) first) and after the
    /// connection closed.
    ///
    /// Once the adapter counts rounds ([`begin_round`](Self::begin_round)),
    /// it offers at most [`ServerOptions::round_quantum`] bytes a round:
    /// empty when the round's share is read, and
    /// [`is_deferred`](Self::is_deferred) then says so.
    pub fn receive_buffer(&mut self, id: ClientId) -> &mut [u8] {
        let (rounds, round, quantum) = (self.rounds, self.round, self.options.round_quantum);
        match self.table.get_mut(id) {
            Some(c) if !c.abandoned => {
                let mut limit = usize::MAX;
                if FAIR && rounds {
                    c.enter_round(round, quantum);
                    if c.input_left == 0 {
                        c.input_deferred = true;
                    }
                    limit = c.input_left;
                }
                let buf = c.conn.receive_buffer();
                let n = buf.len().min(limit);
                &mut buf[..n]
            }
            _ => &mut [],
        }
    }

    /// Marks `n` bytes written into [`receive_buffer`](Self::receive_buffer)
    /// as received.
    pub fn commit_received(&mut self, id: ClientId, n: usize) {
        if let Some(c) = self.table.get_mut(id) {
            c.input_left = c.input_left.saturating_sub(n);
            c.conn.commit_received(n);
        }
    }

    // ---- fair service ----

    /// Starts a round of fair service: an adapter that serves its clients
    /// in turns on one thread calls it once a turn (each pass of its event
    /// loop). From the first call on, each client's work a round is bounded
    /// by [`ServerOptions::round_quantum`] and all clients' together by
    /// [`ServerOptions::round_work`]; a client that had more to do is
    /// [`is_deferred`](Self::is_deferred) and must be serviced again in the
    /// next round (read and polled), even without readiness. An adapter
    /// that never calls it gets no bound (each client's task is its own
    /// turn).
    ///
    /// Fair service is compiled in with the feature `fair-service` only
    /// (`peng3dnet-std` turns it on): without it this does nothing, and a
    /// board's server, which serves each slot in a task of its own, carries
    /// none of its code.
    pub fn begin_round(&mut self) {
        self.rounds = FAIR && self.options.round_quantum > 0;
        self.round = self.round.wrapping_add(1);
        // At least one large packet a round.
        self.round_left = self.options.round_work.max(1);
        self.oldest_wait = core::mem::take(&mut self.longest_wait);
    }

    /// Whether this round's budget held back work of this client (input not
    /// offered, or a packet not handed out) since it was last polled: service it
    /// again in the next round.
    ///
    /// A client whose transmit queue is over the read pause is not: its
    /// write progress brings it back (serviced every round meanwhile, it
    /// would only keep the adapter busy).
    pub fn is_deferred(&self, id: ClientId) -> bool {
        let percent = self.options.read_pause_percent;
        self.table.get(id).is_some_and(|c| {
            FAIR && (c.deferred || c.input_deferred)
                && !c.abandoned
                && !c.reported
                && !over_high_water(&c.conn, percent)
        })
    }

    /// Copies received bytes in; returns how many were taken (feed the rest
    /// after [`poll`](Self::poll) returned `None`).
    pub fn handle_input(&mut self, id: ClientId, bytes: &[u8]) -> usize {
        match self.table.get_mut(id) {
            Some(c) if !c.abandoned => c.conn.handle_input(bytes),
            Some(_) => bytes.len(),
            None => 0,
        }
    }

    /// The client's transport ended (end of stream or an error): nothing is
    /// read or written any more. Frames received before are still handed
    /// out by [`poll`](Self::poll), then its close (`socketclose` unless it
    /// was closed already).
    pub fn handle_transport_closed(&mut self, id: ClientId) {
        if let Some(i) = self.table.index(id) {
            self.abandon(i);
            self.refresh(i, false);
        }
    }

    /// Records the security level the client's transport established (after
    /// a TLS handshake, say).
    pub fn set_security_level(&mut self, id: ClientId, level: SecurityLevel) {
        if let Some(c) = self.table.get_mut(id) {
            if c.conn.security_level() != level {
                c.conn.set_security_level(level);
            }
        }
    }

    // ---- events ----

    /// The client's next event, or `None` when every received frame is
    /// processed, or while its transmit queue is more than half full (write
    /// it out, then poll again). The server counts handshakes and notes the
    /// close it hands out; everything else is the application's.
    pub fn poll(&mut self, id: ClientId, now: Instant) -> Option<Event<'_, C>> {
        self.poll_by(id, now, false)
    }

    /// Like [`poll`](Self::poll), but stops before an application packet,
    /// which stays buffered for `poll` or [`poll_with`](Self::poll_with)
    /// (see [`Connection::poll_protocol`]): a driver task runs the
    /// handshake, pings and closes while the application takes packets when
    /// it is ready.
    pub fn poll_protocol(&mut self, id: ClientId, now: Instant) -> Option<Event<'_, C>> {
        self.poll_by(id, now, true)
    }

    /// Runs the client's handshake, pings and closes as calling
    /// [`poll_protocol`](Self::poll_protocol) until `None` does, handing
    /// nothing out: for an adapter whose handlers take the packets through
    /// [`poll_with`](Self::poll_with) and that reports closes from
    /// [`take_finished`](Self::take_finished). Handshakes are counted and
    /// the close noted as `poll_protocol` does.
    pub fn drive_protocol(&mut self, id: ClientId, now: Instant) {
        while let Some(Pollable { c, stats, .. }) = self.pollable(id, now, false) {
            match c.conn.step_protocol(now) {
                None => return,
                Some(ProtocolStep::Connected) => stats.handshakes += 1,
                Some(ProtocolStep::Closed) => c.reported = true,
                Some(ProtocolStep::Pong(_) | ProtocolStep::Other) => {}
            }
        }
    }

    /// Like [`poll`](Self::poll), but hands the event to `f` with the
    /// client's [`Outbox`], to answer a packet while it lies in the receive
    /// buffer (see [`Connection::poll_with`]; [`Take::Keep`] leaves it
    /// buffered). The outbox is the connection's own: a send that does not
    /// fit returns [`SendError::WouldBlock`] and closes nothing, so that
    /// the handler can keep the packet and retry once the queue drained
    /// (the write-stall timer bounds that wait).
    pub fn poll_with<X>(
        &mut self,
        id: ClientId,
        now: Instant,
        f: impl FnOnce(Event<'_, C>, &mut Outbox<'_, 'a, C, T, N, &'a Registry<N>>) -> (Take, X),
    ) -> Option<X> {
        let Pollable {
            c,
            stats,
            round_left,
            charge,
        } = self.pollable(id, now, true)?;
        let (mut connected, mut closed, mut body) = (false, false, None);
        let x = c.conn.poll_with(now, |event, outbox| {
            match &event {
                Event::Connected => connected = true,
                Event::Closed(_) => closed = true,
                Event::Packet(p) => body = Some(p.body.len()),
                _ => {}
            }
            f(event, outbox)
        })?;
        stats.handshakes += connected as u64;
        c.reported |= closed;
        if let Some(body) = body {
            c.charge(charge.cost(body), round_left);
        }
        Some(x)
    }

    /// The client, if it may be polled now: it is there, its close was not
    /// handed out yet, and its transmit queue is not over the read pause
    /// (a closed one is polled whatever its queue, to hand out the close).
    ///
    /// `packets`: the caller may hand out an application packet, which the
    /// round's budget may hold back (see [`begin_round`](Self::begin_round));
    /// the cost of what it hands out is the [`Charge`] returned.
    fn pollable(
        &mut self,
        id: ClientId,
        now: Instant,
        packets: bool,
    ) -> Option<Pollable<'_, 'a, C, R, T, N>> {
        self.now = now;
        let i = self.table.index(id)?;
        // What the previous event queued starts the write-stall timer.
        self.refresh(i, true);
        let percent = self.options.read_pause_percent;
        let (rounds, round, quantum) = (self.rounds, self.round, self.options.round_quantum);
        let c = self.table.storage.slots_mut()[i].client.as_mut()?;
        let paused = over_high_water(&c.conn, percent) && !c.conn.is_closed();
        if c.reported || paused {
            return None;
        }
        let mut charge = Charge::default();
        if FAIR && rounds {
            c.enter_round(round, quantum);
            // The answers the last packets queued.
            let encoded = c.conn.encoded_bytes() as u32;
            let answers = encoded.wrapping_sub(c.encoded_seen);
            c.encoded_seen = encoded;
            c.charge(answers as usize, &mut self.round_left);
            if let Some((packet_id, len, compressed)) = c.conn.peek_frame() {
                if packets && packet_id >= crate::registry::FIRST_AUTO_ID {
                    if c.credit <= 0 {
                        // A debt to pay off first.
                        c.deferred = true;
                        return None;
                    }
                    // Small: within the credit, a compressed body taken to
                    // inflate to at most `INFLATE_GUESS` times its size
                    // (charged what it did cost once handed out).
                    let guess = match compressed {
                        true => len.saturating_mul(INFLATE_GUESS),
                        false => len,
                    };
                    if guess > c.credit as usize {
                        // Large: it takes the shared budget, longest
                        // waiting first.
                        let since = *c.waiting_since.get_or_insert(round as u16);
                        let waited = u32::from((round as u16).wrapping_sub(since));
                        if self.round_left == 0 || waited < self.oldest_wait {
                            // Next round it will have waited one more.
                            self.longest_wait = self.longest_wait.max(waited.saturating_add(1));
                            c.deferred = true;
                            return None;
                        }
                    }
                    c.waiting_since = None;
                    charge = Charge {
                        frame: len,
                        compressed,
                    };
                }
            }
            c.deferred = false;
        } else {
            c.encoded_seen = c.conn.encoded_bytes() as u32;
        }
        Some(Pollable {
            c,
            stats: &mut self.stats,
            round_left: &mut self.round_left,
            charge,
        })
    }

    fn poll_by(&mut self, id: ClientId, now: Instant, protocol: bool) -> Option<Event<'_, C>> {
        let Pollable {
            c,
            stats,
            round_left,
            charge,
        } = self.pollable(id, now, !protocol)?;
        let event = if protocol {
            c.conn.poll_protocol(now)?
        } else {
            c.conn.poll(now)?
        };
        match &event {
            Event::Connected => stats.handshakes += 1,
            Event::Closed(_) => c.reported = true,
            Event::Packet(p) => {
                // Field by field: the event borrows the connection.
                let cost = charge.cost(p.body.len());
                c.credit = c.credit.saturating_sub(clamp_i32(cost));
                *round_left = round_left.saturating_sub(cost);
            }
            _ => {}
        }
        Some(event)
    }

    // ---- output ----

    /// Bytes queued for the client, to write to its transport.
    pub fn poll_transmit(&self, id: ClientId) -> &[u8] {
        match self.table.get(id) {
            Some(c) if !c.abandoned => c.conn.poll_transmit(),
            _ => &[],
        }
    }

    /// Marks the first `n` bytes of [`poll_transmit`](Self::poll_transmit)
    /// as written at `now`. Progress that leaves at most
    /// [`ServerOptions::read_pause_percent`] of the queue restarts the
    /// write-stall timer; progress that leaves the queue above that mark
    /// does not (see the [rules](self#the-rules-the-server-applies)).
    /// Call it after every write attempt, with 0 when nothing was taken:
    /// that files what the last events queued in the timer table.
    pub fn transmitted(&mut self, id: ClientId, n: usize, now: Instant) {
        self.now = now;
        let Some(i) = self.table.index(id) else {
            return;
        };
        let percent = self.options.read_pause_percent;
        if let Some(c) = self.table.storage.slots_mut()[i].client.as_mut() {
            if n > 0 {
                c.conn.transmitted(n);
                if !over_high_water(&c.conn, percent) {
                    c.stall_since = MaybeInstant::NONE;
                }
            }
        }
        self.refresh(i, true);
    }

    // ---- commands ----

    /// Whether `bytes` more would fit the client's transmit queue now (for
    /// an adapter that waits for room before it sends).
    pub fn has_room(&self, id: ClientId, bytes: usize) -> bool {
        self.table
            .get(id)
            .is_some_and(|c| bytes <= c.conn.transmit_room())
    }

    /// Sends a typed packet to one client, checked against its rules; a
    /// queue without room for it closes the client with `writequeuefull`
    /// (see the [module docs](self#the-rules-the-server-applies)).
    pub fn send<P: Packet>(&mut self, id: ClientId, msg: &P::Message<'_>) -> Result<(), SendError> {
        self.send_with(id, |conn| conn.send::<P>(msg))
    }

    /// Sends an already encoded body as the registered packet `packet_id`
    /// to one client, under the same rule as [`send`](Self::send).
    pub fn send_encoded(
        &mut self,
        id: ClientId,
        packet_id: u32,
        body: &[u8],
    ) -> Result<(), SendError> {
        self.send_with(id, |conn| conn.send_encoded(packet_id, body))
    }

    /// Sends a `P` to every connected client not in `except`, encoding it
    /// once into `scratch` with the server's codec. Each client's rules are
    /// checked on their own; a client without room is closed with
    /// `writequeuefull`.
    pub fn broadcast<P: Packet>(
        &mut self,
        msg: &P::Message<'_>,
        scratch: &mut [u8],
        except: &[ClientId],
    ) -> Result<BroadcastReport, SendError> {
        let packet_id = self.registry.id_of::<P>().ok_or(SendError::NotRegistered)?;
        let n = match self.codec.encode(msg, scratch) {
            Ok(n) => n,
            Err(CodecError::BufferTooSmall) => {
                return Err(SendError::TooLarge {
                    required: FRAME_OVERHEAD + self.codec.encoded_len(msg).unwrap_or(usize::MAX),
                    capacity: FRAME_OVERHEAD + scratch.len(),
                })
            }
            Err(e) => return Err(SendError::Encode(e)),
        };
        Ok(self.broadcast_encoded(packet_id, &scratch[..n], except))
    }

    /// Sends an encoded body as packet `packet_id` to every connected client
    /// not in `except`, under the rule of [`broadcast`](Self::broadcast).
    pub fn broadcast_encoded(
        &mut self,
        packet_id: u32,
        body: &[u8],
        except: &[ClientId],
    ) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for i in 0..self.table.slot_count() {
            let Some(id) = self.table.id_at(i) else {
                continue;
            };
            if !self.table.storage.slots()[i]
                .client
                .as_ref()
                .is_some_and(|c| c.conn.is_connected())
            {
                continue;
            }
            if except.contains(&id) {
                report.excepted += 1;
                continue;
            }
            match self.send_at(i, |conn| conn.send_encoded(packet_id, body)) {
                Ok(()) => report.sent += 1,
                Err(e) => {
                    report.failed += 1;
                    report.first_error.get_or_insert(e);
                }
            }
        }
        report
    }

    /// Closes a client: queues `closeconn` with `reason` for it; its
    /// [`Event::Closed`] comes from the next [`poll`](Self::poll). Whether
    /// the client was there and open.
    pub fn close(&mut self, id: ClientId, reason: CloseReason) -> bool {
        let Some(i) = self.table.index(id) else {
            return false;
        };
        let Some(c) = self.table.storage.slots_mut()[i].client.as_mut() else {
            return false;
        };
        let open = !c.conn.is_closed();
        c.conn.close(reason);
        self.refresh(i, false);
        open
    }

    /// Sets a client's application mode.
    pub fn set_mode(&mut self, id: ClientId, mode: Mode) {
        if let Some(c) = self.table.get_mut(id) {
            c.conn.set_mode(mode);
        }
    }

    /// Sets a client's application state once it is connected (see
    /// [`Connection::set_state`]).
    pub fn set_state(&mut self, id: ClientId, state: State) {
        if let Some(c) = self.table.get_mut(id) {
            c.conn.set_state(state);
        }
    }

    /// Counts a packet the adapter had to drop without closing its client
    /// (it did not fit where the adapter copies packets for a handler):
    /// [`ServerStats::dropped`].
    pub fn count_dropped(&mut self) {
        self.stats.dropped += 1;
    }

    /// Stops admitting clients and closes every client with
    /// `servershutdown`; after [`ServerOptions::shutdown_grace`] those left
    /// are dropped (through [`handle_timeout`](Self::handle_timeout)).
    /// Service every client afterwards (their `closeconn` is queued).
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.grace = MaybeInstant::new(now + self.options.shutdown_grace);
        for i in 0..self.table.slot_count() {
            if let Some(id) = self.table.id_at(i) {
                self.close(id, CloseReason::ServerShutdown);
            }
        }
    }

    // ---- finishing ----

    /// Whether the client's transport is given up (its end was reported,
    /// or it was dropped): close it without flushing anything.
    pub fn is_abandoned(&self, id: ClientId) -> bool {
        self.table.get(id).is_some_and(|c| c.abandoned)
    }

    /// Removes the client once its connection is over (closed and
    /// everything queued written, or its transport abandoned) and reports
    /// how it ended, with its two buffers back; `None` while it is not. Its
    /// id is dead afterwards: close its transport. An adapter that reports
    /// closes from [`Event::Closed`] has seen it by then, if it polled until
    /// `None` first; one that reports from here needs not poll at all.
    pub fn take_finished(&mut self, id: ClientId) -> Option<(Closed, (R, T))> {
        let c = self.table.get(id)?;
        if !(c.abandoned || c.conn.is_finished()) {
            return None;
        }
        let c = self.table.remove(id)?;
        // Given up with frames still buffered and not handed out: the
        // transport ended it.
        let closed = c.conn.closed().unwrap_or(Closed::SOCKET_CLOSED);
        Some((closed, c.conn.into_buffers()))
    }

    // ---- timers ----

    /// When [`handle_timeout`](Self::handle_timeout) must be called next,
    /// if any timer runs: the earliest of every client's connection timers
    /// (handshake, frame, idle, keepalive) and write-stall timer and the
    /// shutdown grace.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let client = MaybeInstant::from_option(self.table.earliest().map(|(_, at)| at));
        let grace = if self.grace_cursor < self.table.slot_count() {
            self.grace
        } else {
            MaybeInstant::NONE
        };
        client.min(grace).get()
    }

    /// Fires what is due at `now`, one client at a time: returns the client
    /// a timer closed or dropped (service it: poll, write, finish), or
    /// `None` when nothing more is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<ClientId> {
        self.now = now;
        if self.grace.get().is_some_and(|at| now >= at) {
            while self.grace_cursor < self.table.slot_count() {
                let i = self.grace_cursor;
                self.grace_cursor += 1;
                let Some(id) = self.table.id_at(i) else {
                    continue;
                };
                self.abandon(i);
                self.refresh(i, true);
                return Some(id);
            }
        }
        // Bounded: each round takes one client off the heap or re-files it
        // later than `now`.
        for _ in 0..self.table.slot_count() {
            let (i, at) = self.table.earliest()?;
            if at > now {
                return None;
            }
            let id = self.table.id_at(i)?;
            let stall = self.options.write_stall_timeout;
            let c = self.table.storage.slots_mut()[i].client.as_mut()?;
            let mut fired = false;
            for timer in Timer::ALL {
                if c.deadline(timer, stall).get().is_none_or(|at| now < at) {
                    continue;
                }
                fired = true;
                match timer {
                    Timer::Connection => {
                        let open = !c.conn.is_closed();
                        c.conn.handle_timeout(now);
                        if open && c.conn.is_closed() {
                            self.stats.timed_out += 1;
                        }
                    }
                    Timer::WriteStall => {
                        // It takes nothing: it is not told, it is dropped.
                        c.conn.close(CloseReason::WriteQueueFull);
                        c.conn.handle_transport_closed();
                        c.abandoned = true;
                        c.stall_since = MaybeInstant::NONE;
                        self.stats.write_stalls += 1;
                    }
                }
            }
            self.refresh(i, true);
            if fired {
                return Some(id);
            }
        }
        None
    }

    // ---- internals ----

    /// Sends through `send` (which queues one packet on the client's
    /// connection: `|c| c.send::<P>(msg)`, say), under the rule of
    /// [`send`](Self::send): an adapter that encodes in its own way (through
    /// a trait object, for one) uses it.
    pub fn send_with(
        &mut self,
        id: ClientId,
        send: impl FnOnce(&mut ServerConnection<'a, C, R, T, N>) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let i = self.table.index(id).ok_or(SendError::Closed)?;
        self.send_at(i, send)
    }

    /// [`send_with`](Self::send_with) on the client in slot `i`.
    fn send_at(
        &mut self,
        i: usize,
        send: impl FnOnce(&mut ServerConnection<'a, C, R, T, N>) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let c = self.table.storage.slots_mut()[i]
            .client
            .as_mut()
            .ok_or(SendError::Closed)?;
        if c.abandoned {
            return Err(SendError::Closed);
        }
        let res = send(&mut c.conn);
        if let Err(SendError::WouldBlock { .. }) = res {
            c.conn.close(CloseReason::WriteQueueFull);
        }
        self.refresh(i, false);
        res
    }

    /// Gives up slot `i`'s transport: nothing more is read or written.
    fn abandon(&mut self, i: usize) {
        if let Some(c) = self.table.storage.slots_mut()[i].client.as_mut() {
            c.abandoned = true;
            c.stall_since = MaybeInstant::NONE;
            c.conn.handle_transport_closed();
        }
    }

    /// Brings slot `i`'s stall timer up to date and files its earliest
    /// deadline in the timer heap. `fresh`: the call gave the time now, so a
    /// stall that starts, starts now; otherwise it starts at the next call
    /// that gives the time (filed as due at once, so that one comes).
    fn refresh(&mut self, i: usize, fresh: bool) {
        let now = self.now;
        let stall = self.options.write_stall_timeout;
        let slot = &mut self.table.storage.slots_mut()[i];
        let Some(c) = slot.client.as_mut() else {
            return;
        };
        let queued = !c.abandoned && !c.conn.poll_transmit().is_empty();
        if !queued {
            c.stall_since = MaybeInstant::NONE;
            c.stall_unstarted = false;
        } else if c.stall_since.get().is_none() {
            if fresh {
                c.stall_since = MaybeInstant::new(now);
                c.stall_unstarted = false;
            } else {
                c.stall_unstarted = true;
            }
        }
        // The earliest of the client's timers; a stall not started yet is
        // due at once.
        let unstarted = match c.stall_unstarted {
            true => MaybeInstant::new(now),
            false => MaybeInstant::NONE,
        };
        let due = c
            .deadline(Timer::Connection, stall)
            .min(c.deadline(Timer::WriteStall, stall))
            .min(unstarted);
        self.table.refile(i, due);
    }
}

/// How many times its size a compressed frame is taken to inflate to when
/// fair service decides whether it is small (see
/// [`ServerOptions::round_work`]); what it did cost is charged after.
const INFLATE_GUESS: usize = 4;

/// `n` as a credit, at most `i32::MAX`.
fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whether fair service is compiled in (feature `fair-service`): without
/// it [`Server::begin_round`] does nothing and no round is counted.
const FAIR: bool = cfg!(feature = "fair-service");

/// Whether a connection's transmit queue is fuller than `percent` of it.
fn over_high_water<C: Codec, R: Buffer, T: Buffer, const N: usize>(
    conn: &ServerConnection<'_, C, R, T, N>,
    percent: u8,
) -> bool {
    let (_, tx) = conn.buffers();
    let pending = conn.poll_transmit().len() as u64;
    pending * 100 > tx.max_capacity() as u64 * percent.min(100) as u64
}

/// Encodes a lone `closeconn` frame with `reason`, for a transport that must
/// refuse a client without a connection ([`Server::refusal`] with the
/// server's codec). Returns the frame's length.
pub fn encode_refusal<C: Codec>(
    codec: &C,
    reason: &CloseReason,
    out: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let msg = CloseConn {
        reason: reason.as_wire(),
    };
    let mut body = [0u8; 96];
    let n = codec.encode(&msg, &mut body).map_err(|_| BufferTooSmall {
        required: FRAME_OVERHEAD + body.len(),
    })?;
    encode_frame(out, internal::CLOSECONN, Flags::EMPTY, &body[..n])
}

impl<'a, C, R, T, const N: usize, S> fmt::Debug for Server<'a, C, R, T, N, S>
where
    S: Storage<ServerSlot<'a, C, R, T, N>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("clients", &self.table.len())
            .field("stats", &self.stats)
            .field("shutting_down", &self.shutting_down)
            .finish()
    }
}
