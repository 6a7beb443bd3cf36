//! Firmware as client: through QEMU's user network to `peng3dnet serve` on
//! the host (`guestfwd` maps 10.0.2.100:4242 to the host's 127.0.0.1:PORT,
//! one relay per connection). It runs the shared client scenario
//! ([`scenario::client`]: handshake, 1,000 checked echoes, a ping on a
//! second connection, a packet refused by its rules, a close with
//! `userrequest`), prints a summary and exits QEMU with status 0 (1 on any
//! failure).
#![no_std]
#![no_main]

use embassy_executor::{Executor, Spawner};
use embassy_net::{IpEndpoint, Ipv4Address, StackResources};
use embassy_time::{with_timeout, Duration};
use mps2_an385::{exit, net, println, Semihosting};
use scenario::client::{self, ClientBufs};
use static_cell::{ConstStaticCell, StaticCell};

/// The server as the board sees it (QEMU's `guestfwd`).
const SERVER: IpEndpoint = IpEndpoint::new(
    embassy_net::IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 100)),
    4242,
);
/// Bound of the whole scenario (QEMU's `timeout` on the host is the outer one).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

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
    println!("client: booted, bringing up the LAN9118");
    let eth = match net::init_eth() {
        Ok(eth) => eth,
        Err(e) => {
            println!("FAIL: LAN9118: {}", e);
            exit(false)
        }
    };
    static STACK: StaticCell<StackResources<3>> = StaticCell::new();
    let stack = net::start(spawner, eth, net::resources(&STACK));
    stack.wait_config_up().await;

    static BUFS: ConstStaticCell<ClientBufs> = ConstStaticCell::new(ClientBufs::new());
    let run = client::run(stack, SERVER, BUFS.take(), &Semihosting);
    let ok = match with_timeout(SCENARIO_TIMEOUT, run).await {
        Ok(Ok(summary)) => {
            println!(
                "SUMMARY client: {}, {} spurious interrupts",
                summary,
                net::SPURIOUS.load(core::sync::atomic::Ordering::Relaxed)
            );
            true
        }
        Ok(Err(e)) => {
            println!("FAIL: {}", e.as_str());
            false
        }
        Err(_) => {
            println!(
                "FAIL: scenario timed out after {} s",
                SCENARIO_TIMEOUT.as_secs()
            );
            false
        }
    };
    exit(ok)
}
