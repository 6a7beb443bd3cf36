//! Board support for the NUCLEO-F767ZI, shared by its two firmware images
//! (`client` and `server`): the clocks (216 MHz from the ST-LINK's 8 MHz),
//! the hardware RNG that seeds `embassy-net`, the RMII Ethernet MAC with
//! the board's LAN8742A PHY (address 0, managed over SMI), DHCP, and the
//! three user LEDs. Output is defmt over RTT (`probe-rs run`); the roles
//! are the shared `scenario` crate's.
#![no_std]

use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use embassy_stm32::{bind_interrupts, eth, peripherals, rng};
use panic_probe as _;
use static_cell::StaticCell;

pub use scenario::Defmt;

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<peripherals::RNG>;
});

/// The Ethernet driver as the stack holds it.
pub type Eth = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// The LAN8742A's SMI address on the Nucleo-144 boards.
pub const PHY_ADDRESS: u8 = 0;

/// The board once its network is configured.
pub struct Board {
    /// The network stack, its DHCP lease in place.
    pub stack: Stack<'static>,
    /// LD1 (green), lit when a role passed.
    pub green: Output<'static>,
    /// LD2 (blue), lit while the network is up and a role runs.
    pub blue: Output<'static>,
    /// LD3 (red), lit when a role failed.
    pub red: Output<'static>,
}

impl Board {
    /// Shows a role's outcome on the LEDs (green: passed, red: failed).
    pub async fn show(&mut self, ok: bool) {
        self.blue.set_low();
        if ok {
            self.green.set_high();
        } else {
            self.red.set_high();
        }
    }
}

fn clocks() -> embassy_stm32::Config {
    use embassy_stm32::rcc::*;
    let mut config = embassy_stm32::Config::default();
    // The ST-LINK's MCO drives the HSE input with 8 MHz (bypass mode);
    // 8 / 4 * 216 / 2 = 216 MHz, the APB buses at 54 and 108 MHz.
    config.rcc.hse = Some(Hse {
        freq: Hertz(8_000_000),
        mode: HseMode::Bypass,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL216,
        divp: Some(PllPDiv::DIV2),
        divq: None,
        divr: None,
    });
    config.rcc.sys = Sysclk::PLL1_P;
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV4;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config
}

/// A locally administered unicast MAC address from the chip's unique ID,
/// so that two boards on one network differ.
fn mac_address() -> [u8; 6] {
    let uid = embassy_stm32::uid::uid();
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    for (i, b) in uid.iter().enumerate() {
        mac[1 + i % 5] ^= *b;
    }
    mac
}

/// Brings the board up: clocks, RNG, Ethernet with DHCP on a stack of
/// `SOCKETS` sockets (one of them is DHCP's); returns once the lease is in
/// place, with the network task spawned.
pub async fn init<const SOCKETS: usize>(
    spawner: Spawner,
    resources: &'static mut StackResources<SOCKETS>,
) -> Board {
    let p = embassy_stm32::init(clocks());
    let mut blue = Output::new(p.PB7, Level::High, Speed::Low);
    let green = Output::new(p.PB0, Level::Low, Speed::Low);
    let red = Output::new(p.PB14, Level::Low, Speed::Low);

    // The hardware RNG seeds the stack (TCP initial sequence numbers,
    // local ports).
    let mut rng = Rng::new(p.RNG, Irqs);
    let seed = rng.next_u64();

    let mac = mac_address();
    defmt::info!(
        "nucleo-f767zi: MAC {=[u8]:02x}, waiting for the PHY's link and a DHCP lease",
        mac
    );
    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    // RMII on the Nucleo-144's pins: REF_CLK PA1, CRS_DV PA7, RXD0 PC4,
    // RXD1 PC5, TXD0 PG13, TXD1 PB13, TX_EN PG11; SMI: MDIO PA2, MDC PC1.
    let phy = GenericPhy::new(Sma::new(p.ETH_SMA, p.PA2, p.PC1), PHY_ADDRESS);
    let device: Eth = Ethernet::new_with_phy(
        PACKETS.init(PacketQueue::new()),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        mac,
        phy,
    );
    let config = embassy_net::Config::dhcpv4(Default::default());
    let (stack, runner) = embassy_net::new(device, config, resources, seed);
    match net_task(runner) {
        Ok(task) => spawner.spawn(task),
        Err(_) => defmt::panic!("the network task is already running"),
    }
    stack.wait_config_up().await;
    if let Some(c) = stack.config_v4() {
        defmt::info!("nucleo-f767zi: DHCP lease {}", c.address);
    }
    blue.set_high();
    Board {
        stack,
        green,
        blue,
        red,
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, Eth>) -> ! {
    runner.run().await
}
