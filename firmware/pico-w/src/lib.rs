//! Board support for the Raspberry Pi Pico W, shared by its two firmware
//! images (`client` and `server`): the CYW43439 Wi-Fi chip on its PIO-driven
//! SPI (WL_ON GPIO 23, data GPIO 24, chip select GPIO 25, clock GPIO 29;
//! PIO0, DMA channel 0), its firmware from the `cyw43-firmware` crate, the
//! join of the network named at build time (`WIFI_SSID`, `WIFI_PASSWORD`),
//! DHCP, and the LED (on the CYW43439's GPIO 0). The stack's seed comes
//! from the ring oscillator's random bit. Output is defmt over RTT
//! (`probe-rs run`); the roles are the shared `scenario` crate's.
#![no_std]

use cyw43::{Aligned, JoinOptions, A4};
use cyw43_pio::{PioSpi, DEFAULT_CLOCK_DIVIDER};
use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::{Runner, Stack, StackResources};
use embassy_rp::clocks::RoscRng;
use embassy_rp::gpio::{Level, Output};
use embassy_rp::peripherals::{DMA_CH0, PIO0};
use embassy_rp::pio::{self, Pio};
use embassy_rp::{bind_interrupts, dma};
use embassy_time::{Duration, Timer};
use panic_probe as _;
use static_cell::StaticCell;

pub use scenario::Defmt;

bind_interrupts!(struct Irqs {
    PIO0_IRQ_0 => pio::InterruptHandler<PIO0>;
    DMA_IRQ_0 => dma::InterruptHandler<DMA_CH0>;
});

/// The Wi-Fi network, given at build time.
pub const WIFI_SSID: Option<&str> = option_env!("WIFI_SSID");
/// Its passphrase (an open network when not given).
pub const WIFI_PASSWORD: Option<&str> = option_env!("WIFI_PASSWORD");

/// The chip's firmware, 4-byte aligned as its loader wants it.
static FIRMWARE: &Aligned<A4, [u8]> = &Aligned(*cyw43_firmware::CYW43_43439A0);
/// The Pico W's NVRAM (board settings), packed by build.rs from nvram.txt.
static NVRAM: &Aligned<A4, [u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/nvram.bin")));

type Spi = cyw43::SpiBus<Output<'static>, PioSpi<'static, PIO0, 0>>;

/// The board once its network is configured.
pub struct Board {
    /// The network stack, its DHCP lease in place.
    pub stack: Stack<'static>,
    /// The CYW43439's control (the LED is its GPIO 0).
    pub control: cyw43::Control<'static>,
}

impl Board {
    /// Shows a role's outcome on the LED: steady when it passed, blinking
    /// (forever) when it failed.
    pub async fn show(&mut self, ok: bool) {
        if ok {
            self.control.gpio_set(0, true).await;
            return;
        }
        loop {
            self.control.gpio_set(0, true).await;
            Timer::after(Duration::from_millis(200)).await;
            self.control.gpio_set(0, false).await;
            Timer::after(Duration::from_millis(200)).await;
        }
    }
}

/// Brings the board up: the CYW43439, the Wi-Fi join (retried every 2 s)
/// and DHCP on a stack of `SOCKETS` sockets (one of them is DHCP's);
/// returns once the lease is in place, with the driver's and the stack's
/// tasks spawned. Without `WIFI_SSID` at build time it logs that and stops.
pub async fn init<const SOCKETS: usize>(
    spawner: Spawner,
    resources: &'static mut StackResources<SOCKETS>,
) -> Board {
    let p = embassy_rp::init(Default::default());
    // black_box: an image built without the variable still holds the whole
    // driver and role (the compiler would drop all that follows), so its
    // footprint is the real one.
    let Some(ssid) = core::hint::black_box(WIFI_SSID) else {
        defmt::error!("FAIL: built without WIFI_SSID (and WIFI_PASSWORD): no network to join");
        loop {
            Timer::after(Duration::from_secs(3600)).await;
        }
    };

    let power = Output::new(p.PIN_23, Level::Low);
    let cs = Output::new(p.PIN_25, Level::High);
    let mut pio = Pio::new(p.PIO0, Irqs);
    let spi = PioSpi::new(
        &mut pio.common,
        pio.sm0,
        DEFAULT_CLOCK_DIVIDER,
        pio.irq0,
        cs,
        p.PIN_24,
        p.PIN_29,
        dma::Channel::new(p.DMA_CH0, Irqs),
    );
    static STATE: StaticCell<cyw43::State> = StaticCell::new();
    let (device, mut control, runner) =
        cyw43::new(STATE.init(cyw43::State::new()), power, spi, FIRMWARE, NVRAM).await;
    match wifi_task(runner) {
        Ok(task) => spawner.spawn(task),
        Err(_) => defmt::panic!("the Wi-Fi task is already running"),
    }
    control.init(cyw43_firmware::CYW43_43439A0_CLM).await;
    control
        .set_power_management(cyw43::PowerManagementMode::PowerSave)
        .await;

    let seed = RoscRng.next_u64();
    let config = embassy_net::Config::dhcpv4(Default::default());
    let (stack, runner) = embassy_net::new(device, config, resources, seed);
    match net_task(runner) {
        Ok(task) => spawner.spawn(task),
        Err(_) => defmt::panic!("the network task is already running"),
    }

    let options = match WIFI_PASSWORD {
        Some(pw) => JoinOptions::new(pw.as_bytes()),
        None => JoinOptions::new_open(),
    };
    defmt::info!("pico-w: joining {=str}", ssid);
    while let Err(e) = control.join(ssid, options.clone()).await {
        defmt::warn!("pico-w: join failed ({}), again in 2 s", e);
        Timer::after(Duration::from_secs(2)).await;
    }
    stack.wait_link_up().await;
    stack.wait_config_up().await;
    if let Some(c) = stack.config_v4() {
        defmt::info!("pico-w: DHCP lease {}", c.address);
    }
    Board { stack, control }
}

#[embassy_executor::task]
async fn wifi_task(runner: cyw43::Runner<'static, Spi>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, cyw43::NetDriver<'static>>) -> ! {
    runner.run().await
}
