//! The server role: `peng3dnet-embassy`'s server with `SLOTS` client slots,
//! serving `peng3dnet serve`'s echo registry (`echo:echo` sent back
//! unchanged, `echo:ping` stamped) and answering pings; a client beyond the
//! slots is refused with `serverfull`. The echo message `!shutdown` shuts it
//! down.

use core::cell::Cell;
use core::fmt;
use embassy_futures::join::join;
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{with_timeout, Duration, Instant};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{Incoming, SendError};
use peng3dnet_core::{CloseReason, Closed, Config};
use peng3dnet_embassy::server::{
    ClientId, Ctx, Flow, Handler, Server, ServerOutbox, ServerResources,
};

use crate::echo::{self, Echo, EchoPing};
use crate::{fail, say, Fail, Log};

/// The port the server listens on.
pub const PORT: u16 = 4242;
/// The echo text that shuts the server down.
pub const SHUTDOWN: &str = "!shutdown";

/// A slot's resources with the echo handler: it answers in place, so there
/// is no copy buffer for packet bodies (`BODY` = 0).
pub type EchoResources<
    const SLOTS: usize,
    const RX: usize,
    const TX: usize,
    const SRX: usize,
    const STX: usize,
> = ServerResources<SLOTS, RX, TX, SRX, STX, 0>;

type EchoCtx<'c, 'a> = Ctx<'c, 'a, NoopRawMutex, Postcard, { echo::REGISTRY }>;
type EchoOutbox<'c, 'a> = ServerOutbox<'c, 'a, Postcard, { echo::REGISTRY }>;

struct EchoHandler<'s, L> {
    log: &'s L,
    shutdown: &'s Signal<NoopRawMutex, ()>,
    echoes: Cell<u32>,
    stamped: Cell<u32>,
    pings: Cell<u32>,
    closes: Cell<u32>,
}

impl<L: Log> Handler<NoopRawMutex, Postcard, { echo::REGISTRY }> for EchoHandler<'_, L> {
    fn on_connect(&self, ctx: &EchoCtx<'_, '_>) {
        say!(self.log, "server: client {:?} accepted", ctx.client_id());
    }

    // Answers in place: the packet is read where it lies in the client's
    // receive buffer and the answer queued at once, so a slot needs no copy
    // buffer. Out of line: the image is smaller so, and the footprint report
    // charges this application code to the application rather than to the
    // peng3dnet function it would be inlined into.
    #[inline(never)]
    fn on_packet_in_place(
        &self,
        client: ClientId,
        outbox: &mut EchoOutbox<'_, '_>,
        packet: Incoming<&[u8], Postcard>,
    ) -> Flow {
        let sent = if let Ok(text) = packet.decode::<Echo>() {
            let sent = outbox.send::<Echo>(&text);
            if sent.is_ok() {
                self.echoes.set(self.echoes.get() + 1);
                if text == SHUTDOWN {
                    say!(self.log, "server: shutdown asked by client {:?}", client);
                    self.shutdown.signal(());
                }
            }
            sent
        } else if let Ok(mut msg) = packet.decode::<EchoPing>() {
            msg.server_timestamp = Some(Instant::now().as_micros() as f64 / 1e6);
            let sent = outbox.send::<EchoPing>(&msg);
            if sent.is_ok() {
                self.stamped.set(self.stamped.get() + 1);
            }
            sent
        } else {
            Ok(())
        };
        match sent {
            Err(SendError::WouldBlock { .. }) => Flow::Retry,
            _ => Flow::Handled,
        }
    }

    fn on_close(&self, client: ClientId, closed: &Closed) {
        say!(
            self.log,
            "server: client {:?} closed ({}, by {:?})",
            client,
            closed.reason,
            closed.initiator
        );
        self.closes.set(self.closes.get() + 1);
        if closed.reason == CloseReason::PingComplete {
            self.pings.set(self.pings.get() + 1);
        }
    }
}

/// The server's counters when it stopped; its [`Display`](fmt::Display) is
/// the text of the `SUMMARY server:` line.
#[derive(Debug, Clone, Copy)]
pub struct ServerSummary {
    /// Connections accepted into a slot.
    pub accepted: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// `echo:echo` messages answered.
    pub echoes: u32,
    /// `echo:ping` messages stamped and sent back.
    pub stamped: u32,
    /// Connections closed with `pingcomplete`.
    pub pings: u32,
    /// Connections refused with `serverfull`.
    pub refused: u64,
    /// Most slots busy at once.
    pub peak: usize,
    /// Slots of this server.
    pub slots: usize,
    /// Connections closed.
    pub closes: u32,
}

impl ServerSummary {
    /// The check of the emulator's scenario: echoes answered, a ping, a
    /// client refused, and every slot busy at once.
    pub fn passed(&self) -> bool {
        self.echoes >= 1 && self.pings >= 1 && self.refused >= 1 && self.peak == self.slots
    }
}

impl fmt::Display for ServerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accepted, {} handshakes, {} echoes, {} echo:ping stamped, {} pings, {} refused (serverfull), peak {} of {} slots, {} closes -> {}",
            self.accepted,
            self.handshakes,
            self.echoes,
            self.stamped,
            self.pings,
            self.refused,
            self.peak,
            self.slots,
            self.closes,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// Serves the echo service on [`PORT`] of `stack` with the `SLOTS` slots of
/// `resources` until a client sends [`SHUTDOWN`] or `limit` (if any)
/// passed; returns the counters. The stack needs `SLOTS + 1` free TCP
/// sockets (one listens to refuse clients beyond the slots).
pub async fn run<
    L: Log,
    const SLOTS: usize,
    const RX: usize,
    const TX: usize,
    const SRX: usize,
    const STX: usize,
>(
    stack: Stack<'_>,
    resources: &mut EchoResources<SLOTS, RX, TX, SRX, STX>,
    limit: Option<Duration>,
    log: &L,
) -> Result<ServerSummary, Fail> {
    let config = Config::new();
    let registry = echo::server_registry().map_err(|e| fail!("registry: {}", e))?;
    let server: Server<'_, NoopRawMutex, Postcard, { echo::REGISTRY }, SLOTS> =
        Server::new(&config, &registry, Postcard);
    let shutdown = Signal::new();
    let handler = EchoHandler {
        log,
        shutdown: &shutdown,
        echoes: Cell::new(0),
        stamped: Cell::new(0),
        pings: Cell::new(0),
        closes: Cell::new(0),
    };
    let address = stack.config_v4().map(|c| c.address.address());
    say!(
        log,
        "server: listening on {}:{} with {} slots (buffers per slot: {} + {} connection, {} + {} socket)",
        Shown(address),
        PORT,
        SLOTS,
        RX,
        TX,
        SRX,
        STX
    );
    let stopper = async {
        match limit {
            Some(limit) => {
                let _ = with_timeout(limit, shutdown.wait()).await;
            }
            None => shutdown.wait().await,
        }
        server.shutdown();
    };
    // Before the join: a run that fails at once would leave the stopper
    // waiting.
    server
        .check_tx_capacity(TX)
        .map_err(|e| fail!("server: {}", e))?;
    let (stats, ()) = join(server.run(stack, PORT, resources, &handler), stopper).await;
    let stats = stats.map_err(|e| fail!("server: {}", e))?;
    Ok(ServerSummary {
        accepted: stats.accepted,
        handshakes: stats.handshakes,
        echoes: handler.echoes.get(),
        stamped: handler.stamped.get(),
        pings: handler.pings.get(),
        refused: stats.refused,
        peak: stats.peak_clients,
        slots: SLOTS,
        closes: handler.closes.get(),
    })
}

/// An address if known, `?` otherwise.
struct Shown<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Shown<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("?"),
        }
    }
}
