//! Firmware as server: the shared server role ([`scenario::server`]) with 4
//! client slots on port 4242 (QEMU's `hostfwd` maps the host's
//! 127.0.0.1:PORT to it), serving `peng3dnet serve`'s echo registry and
//! answering pings. A fifth concurrent client is refused with `serverfull`.
//!
//! The echo message `!shutdown` (sent by the host's test script last) shuts
//! the server down; the firmware then prints its counters and exits QEMU
//! with status 0 if it served echoes and a ping, refused a client, and had
//! all 4 slots busy at once (1 otherwise).
#![no_std]
#![no_main]

use embassy_executor::{Executor, Spawner};
use embassy_net::StackResources;
use embassy_time::Duration;
use mps2_an385::{exit, net, println, Semihosting};
use scenario::server::{self, EchoResources};
use static_cell::{ConstStaticCell, StaticCell};

/// 4 slots; the `five-slots` feature (used only to measure the static RAM
/// one more slot costs) makes it 5.
const SLOTS: usize = if cfg!(feature = "five-slots") { 5 } else { 4 };
/// Per slot: the connection's receive and transmit buffers...
const RX: usize = 512;
const TX: usize = 512;
/// ...and the TCP socket's (no copy buffer: the handler answers in place).
const SOCK_RX: usize = 1024;
const SOCK_TX: usize = 1024;
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

    static RESOURCES: ConstStaticCell<EchoResources<SLOTS, RX, TX, SOCK_RX, SOCK_TX>> =
        ConstStaticCell::new(EchoResources::new());
    match server::run(stack, RESOURCES.take(), Some(RUN_LIMIT), &Semihosting).await {
        Ok(summary) => {
            println!("SUMMARY server: {}", summary);
            exit(summary.passed())
        }
        Err(e) => {
            println!("FAIL: {}", e.as_str());
            exit(false)
        }
    }
}
