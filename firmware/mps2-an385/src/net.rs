//! The LAN9118 and the `embassy-net` stack.

use core::sync::atomic::AtomicU32;
use cortex_m::peripheral::NVIC;
use embassy_executor::Spawner;
use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use lan9118::{Lan9118, Lan9118Irq, Mmio};
use static_cell::StaticCell;

/// The LAN9118's registers.
pub const ETH_BASE: usize = 0x4020_0000;
/// The LAN9118's interrupt line.
pub const ETH_IRQ: u16 = 13;
/// Our address on QEMU's user network.
pub const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// QEMU's user-network gateway.
pub const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Interrupts that had no handler.
pub static SPURIOUS: AtomicU32 = AtomicU32::new(0);

static ETH_SIGNAL: Lan9118Irq = Lan9118Irq::new();

/// The driver as the stack holds it.
pub type Eth = Lan9118<'static, Mmio>;

#[derive(Clone, Copy)]
struct EthIrq;
// SAFETY: 13 is a valid external interrupt number on this board.
unsafe impl cortex_m::interrupt::InterruptNumber for EthIrq {
    fn number(self) -> u16 {
        ETH_IRQ
    }
}

fn regs() -> Mmio {
    // SAFETY: the LAN9118 of mps2-an385 is at ETH_BASE; the driver and the
    // interrupt handler are its only users.
    unsafe { Mmio::new(ETH_BASE) }
}

pub(crate) fn on_eth_interrupt() {
    lan9118::on_interrupt(&regs(), &ETH_SIGNAL);
}

/// Brings the LAN9118 up with its interrupt enabled.
pub fn init_eth() -> Result<Eth, lan9118::Error> {
    let eth = Lan9118::new(regs(), lan9118::Config::new(), Some(&ETH_SIGNAL))?;
    // The controller held line 13 active until IRQ_CFG was written: drop
    // the stale pending bit before enabling it.
    NVIC::unpend(EthIrq);
    // SAFETY: the handler (`DefaultHandler`) only touches INT_EN and the
    // waker slot, both meant for sharing.
    unsafe { NVIC::unmask(EthIrq) };
    Ok(eth)
}

/// Starts the network stack with `SOCKETS` sockets on the LAN9118 and the
/// static address 10.0.2.15/24; spawns its runner.
pub fn start<const SOCKETS: usize>(
    spawner: Spawner,
    eth: Eth,
    resources: &'static mut StackResources<SOCKETS>,
) -> Stack<'static> {
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ADDRESS, 24),
        gateway: Some(GATEWAY),
        dns_servers: heapless::Vec::new(),
    });
    // No RNG on this board: the seed (TCP initial sequence numbers, ports)
    // is fixed. Fine for a test; a product needs a real seed.
    let (stack, runner) = embassy_net::new(eth, config, resources, 0x5eed_1234_abcd_0042);
    spawner.spawn(net_task(runner).expect("net task"));
    stack
}

/// A static home for the stack's resources.
pub fn resources<const SOCKETS: usize>(
    cell: &'static StaticCell<StackResources<SOCKETS>>,
) -> &'static mut StackResources<SOCKETS> {
    cell.init(StackResources::new())
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Eth>) -> ! {
    runner.run().await
}
