//! Board support for QEMU's `mps2-an385` (Cortex-M3 at 25 MHz, LAN9118 at
//! `0x4020_0000` on interrupt 13), shared by the firmware images
//! (`client` and `server` over Ethernet, `uart-client` over UART0):
//!
//! * [`time`]: an `embassy-time` driver on the two CMSDK timers (a
//!   free-running counter and a one-shot alarm);
//! * [`net`]: the LAN9118 driver, its interrupt, and an `embassy-net`
//!   stack with the static address 10.0.2.15/24 (gateway 10.0.2.2, QEMU's
//!   user network);
//! * [`uart`]: UART0 (CMSDK APB UART) as an `embedded-io-async` byte
//!   stream, for the `uart-client` image (peng3dnet over the serial port);
//! * semihosting output ([`println!`], and [`Semihosting`] as the roles'
//!   [`scenario::Log`]), [`exit`], and panic/fault handlers that exit QEMU
//!   with status 1.
//!
//! The roles themselves (client scenario, echo server) are the shared
//! `scenario` crate's.
#![no_std]

pub mod net;
pub mod time;
pub mod uart;

use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;
pub use cortex_m_semihosting::hprintln as println;

/// The roles' [`scenario::Log`] on QEMU: one semihosting line each.
pub struct Semihosting;

impl scenario::Log for Semihosting {
    fn line(&self, args: core::fmt::Arguments<'_>) {
        println!("{}", args);
    }
}

/// Ends the emulator: status 0 when `ok`, 1 otherwise (semihosting
/// `SYS_EXIT`, honoured by `qemu-system-arm -semihosting-config
/// enable=on`).
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Without semihosting (a real board): stop here.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("FAIL: panic: {}", info);
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    println!("FAIL: hard fault at pc {:#010x}", frame.pc());
    exit(false)
}

/// Every interrupt without a handler of its own: the LAN9118's line goes
/// to its driver, anything else is counted.
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    match irqn as u16 {
        net::ETH_IRQ => net::on_eth_interrupt(),
        uart::RX_IRQ => uart::on_rx_interrupt(),
        uart::TX_IRQ => uart::on_tx_interrupt(),
        time::ALARM_IRQ => time::on_alarm(),
        time::COUNTER_IRQ => time::on_wrap(),
        _ => {
            net::SPURIOUS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}
