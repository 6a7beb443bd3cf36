//! The footprint harness's board support, shared by its two images
//! (`baseline` and `peng3dnet`), so that they differ only in the job's
//! code:
//!
//! * a Cortex-M4F (`thumbv7em-none-eabihf`) with the memory map of ARM's
//!   MPS2 AN386, whose LAN9220 Ethernet controller (software compatible
//!   with the LAN9118) is at `0x4020_0000`: the real
//!   [`lan9118`] embassy-net driver of this workspace, polled (no
//!   interrupt);
//! * an `embassy-time` driver on SysTick (1 ms ticks; the harness is only
//!   built and linked, never run, so its clock rate is nominal);
//! * an `embassy-net` stack with one TCP socket and a static address;
//! * a panic handler that stops (as `panic-halt` does: nothing formatted).
//!
//! `firmware/run.sh overhead` builds both images and prints what the
//! library adds to flash and static RAM.
#![no_std]

use core::cell::RefCell;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Waker;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_executor::Spawner;
use embassy_net::{
    IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4,
};
use embassy_time_queue_utils::Queue;
use lan9118::{Lan9118, Mmio};
use static_cell::StaticCell;

/// The server both images connect to.
pub const SERVER: IpEndpoint =
    IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 2, 100)), 4242);
/// The TCP socket's buffers, each way, in both images.
pub const SOCKET_BUFFER: usize = 1024;

/// The Ethernet driver as the stack holds it.
pub type Eth = Lan9118<'static, Mmio>;

/// Brings the board up and starts the network stack (its runner is a
/// task); `None` when the Ethernet controller is missing.
pub fn start(spawner: Spawner) -> Option<Stack<'static>> {
    let mut core = cortex_m::Peripherals::take()?;
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(CORE_HZ / 1000 - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();
    // SAFETY: the LAN9220 of the AN386 map is at 0x4020_0000; the driver is
    // its only user.
    let regs = unsafe { Mmio::new(0x4020_0000) };
    let eth = Lan9118::new(regs, lan9118::Config::new(), None).ok()?;
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
        dns_servers: heapless::Vec::new(),
    });
    static RESOURCES: StaticCell<StackResources<1>> = StaticCell::new();
    let resources = RESOURCES.init(StackResources::new());
    // A fixed seed: the images are only measured, never run.
    let (stack, runner) = embassy_net::new(eth, config, resources, 0x5eed_1234_abcd_0042);
    spawner.spawn(net_task(runner).ok()?);
    Some(stack)
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Eth>) -> ! {
    runner.run().await
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

// ---- time ------------------------------------------------------------------

/// The nominal core clock SysTick counts.
const CORE_HZ: u32 = 16_000_000;

/// Milliseconds since boot (SysTick's interrupt counts them).
static MILLIS: AtomicU32 = AtomicU32::new(0);

struct SysTickDriver {
    queue: Mutex<RefCell<Queue>>,
}

impl embassy_time_driver::Driver for SysTickDriver {
    fn now(&self) -> u64 {
        u64::from(MILLIS.load(Ordering::Relaxed)) * 1000
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            self.queue.borrow_ref_mut(cs).schedule_wake(at, waker);
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    queue: Mutex::new(RefCell::new(Queue::new())),
});

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
    let now = embassy_time_driver::Driver::now(&DRIVER);
    critical_section::with(|cs| {
        DRIVER.queue.borrow_ref_mut(cs).next_expiration(now);
    });
}
