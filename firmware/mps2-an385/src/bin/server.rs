//! Firmware as server: `peng3dnet-embassy`'s server with 4 client slots on
//! port 4242 (QEMU's `hostfwd` maps the host's 127.0.0.1:PORT to it),
//! serving `peng3dnet serve`'s echo registry (`echo:echo` sent back
//! unchanged, `echo:ping` stamped) and answering pings. A fifth concurrent
//! client is refused with `serverfull`.
//!
//! The echo message `!shutdown` (sent by the host's test script last) shuts
//! the server down; the firmware then prints its counters and exits QEMU
//! with status 0 if it served echoes and a ping, refused a client, and had
//! all 4 slots busy at once (1 otherwise).
#![no_std]
#![no_main]

use core::cell::Cell;
use embassy_executor::{Executor, Spawner};
use embassy_futures::join::join;
use embassy_net::StackResources;
use embassy_sync::blocking_mutex::raw::NoopRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::{with_timeout, Duration, Instant};
use mps2_an385::echo::{self, Echo, EchoPing};
use mps2_an385::{exit, net, println};
use peng3dnet_core::codec::Postcard;
use peng3dnet_core::connection::{Incoming, SendError};
use peng3dnet_core::{CloseReason, Closed, Config, Initiator};
use peng3dnet_embassy::server::{
    ClientId, Ctx, Flow, Handler, Server, ServerOutbox, ServerResources,
};
use static_cell::{ConstStaticCell, StaticCell};

const PORT: u16 = 4242;
/// 4 slots; the `five-slots` feature (used only to measure the static RAM
/// one more slot costs) makes it 5.
const SLOTS: usize = if cfg!(feature = "five-slots") { 5 } else { 4 };
/// Per slot: the connection's receive and transmit buffers...
const RX: usize = 512;
const TX: usize = 512;
/// ...and the TCP socket's. The handler answers in place, so there is no
/// copy buffer for packet bodies (the last parameter of `ServerResources`).
const SOCK_RX: usize = 1024;
const SOCK_TX: usize = 1024;
const BODY: usize = 0;
/// The server stops by itself after this long without `!shutdown`.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[cortex_m_rt::entry]
fn main() -> ! {
    mps2_an385::time::init();
    static EXECUTOR: StaticCell<Executor> = StaticCell::new();
    EXECUTOR
        .init(Executor::new())
        .run(|spawner| spawner.spawn(app(spawner).expect("app task")))
}

type Ctx4<'c, 'a> = Ctx<'c, 'a, NoopRawMutex, Postcard, { echo::REGISTRY }>;
type Outbox4<'c, 'a> = ServerOutbox<'c, 'a, Postcard, { echo::REGISTRY }>;

struct EchoHandler<'s> {
    shutdown: &'s Signal<NoopRawMutex, ()>,
    echoes: Cell<u32>,
    stamped: Cell<u32>,
    pings: Cell<u32>,
    closes: Cell<u32>,
}

impl Handler<NoopRawMutex, Postcard, { echo::REGISTRY }> for EchoHandler<'_> {
    fn on_connect(&self, ctx: &Ctx4<'_, '_>) {
        println!("server: client {:?} accepted", ctx.client_id());
    }

    // Answers in place: the packet is read where it lies in the client's
    // receive buffer and the answer queued at once, so a slot needs no copy
    // buffer (BODY = 0 below). Out of line: the image is 172 bytes smaller
    // so, and the footprint report charges this application code to the
    // application rather than to the peng3dnet function it was inlined into.
    #[inline(never)]
    fn on_packet_in_place(
        &self,
        client: ClientId,
        outbox: &mut Outbox4<'_, '_>,
        packet: Incoming<&[u8], Postcard>,
    ) -> Flow {
        let sent = if let Ok(text) = packet.decode::<Echo>() {
            let sent = outbox.send::<Echo>(&text);
            if sent.is_ok() {
                self.echoes.set(self.echoes.get() + 1);
                if text == "!shutdown" {
                    println!("server: shutdown asked by client {:?}", client);
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
        println!(
            "server: client {:?} closed ({}, by {:?})",
            client, closed.reason, closed.initiator
        );
        self.closes.set(self.closes.get() + 1);
        if closed.reason == CloseReason::PingComplete {
            self.pings.set(self.pings.get() + 1);
        }
    }
}

#[embassy_executor::task]
async fn app(spawner: Spawner) {
    let eth = match net::init_eth() {
        Ok(eth) => eth,
        Err(e) => {
            println!("FAIL: LAN9118: {}", e);
            exit(false)
        }
    };
    static STACK: StaticCell<StackResources<{ SLOTS + 2 }>> = StaticCell::new();
    let stack = net::start(spawner, eth, net::resources(&STACK));
    stack.wait_config_up().await;

    let config = Config::new();
    let registry = match echo::server_registry() {
        Ok(r) => r,
        Err(e) => {
            println!("FAIL: registry: {}", e);
            exit(false)
        }
    };
    static RESOURCES: ConstStaticCell<ServerResources<SLOTS, RX, TX, SOCK_RX, SOCK_TX, BODY>> =
        ConstStaticCell::new(ServerResources::new());
    let resources = RESOURCES.take();
    let server: Server<'_, NoopRawMutex, Postcard, { echo::REGISTRY }, SLOTS> =
        Server::new(&config, &registry, Postcard);
    let shutdown = Signal::new();
    let handler = EchoHandler {
        shutdown: &shutdown,
        echoes: Cell::new(0),
        stamped: Cell::new(0),
        pings: Cell::new(0),
        closes: Cell::new(0),
    };
    println!(
        "server: listening on 10.0.2.15:{} with {} slots (buffers per slot: {} + {} connection, {} + {} socket)",
        PORT, SLOTS, RX, TX, SOCK_RX, SOCK_TX
    );
    let stopper = async {
        let _ = with_timeout(RUN_LIMIT, shutdown.wait()).await;
        server.shutdown();
    };
    let (stats, ()) = join(server.run(stack, PORT, resources, &handler), stopper).await;

    let ok = handler.echoes.get() >= 1
        && handler.pings.get() >= 1
        && stats.refused >= 1
        && stats.peak_clients == SLOTS;
    println!(
        "SUMMARY server: {} accepted, {} handshakes, {} echoes, {} echo:ping stamped, {} pings, {} refused (serverfull), peak {} of {} slots, {} closes -> {}",
        stats.accepted,
        stats.handshakes,
        handler.echoes.get(),
        handler.stamped.get(),
        handler.pings.get(),
        stats.refused,
        stats.peak_clients,
        SLOTS,
        handler.closes.get(),
        if ok { "PASS" } else { "FAIL" }
    );
    exit(ok)
}
