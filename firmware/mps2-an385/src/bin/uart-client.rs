//! Firmware as client over the serial port: UART0 carries peng3dnet to the
//! host's `peng3dnet serve --serial` (QEMU's `-serial tcp:...` makes the
//! UART a 127.0.0.1 socket). It runs the shared scenario over a byte
//! stream ([`scenario::stream`]: handshake, 1,000 checked echoes, a packet
//! refused by its rules, a close with `userrequest`, then a ping as the next
//! connection on the link), prints a summary and exits QEMU with status 0
//! (1 on any failure). No network stack is linked: the LAN9118 stays off.
#![no_std]
#![no_main]

use embassy_executor::{Executor, Spawner};
use embassy_time::{with_timeout, Duration};
use mps2_an385::{exit, println, uart, Semihosting};
use scenario::stream::{self, StreamBufs};
use static_cell::{ConstStaticCell, StaticCell};

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
async fn app(_spawner: Spawner) {
    println!("uart-client: booted, UART0 at {} baud", uart::BAUD);
    let Some((rx, tx)) = uart::init() else {
        println!("FAIL: UART0 already taken");
        exit(false)
    };
    static BUFS: ConstStaticCell<StreamBufs> = ConstStaticCell::new(StreamBufs::new());
    let run = stream::run(rx, tx, BUFS.take(), &Semihosting);
    let ok = match with_timeout(SCENARIO_TIMEOUT, run).await {
        Ok(Ok(summary)) => {
            println!("SUMMARY uart-client: {}", summary);
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
