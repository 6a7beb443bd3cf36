//! UART0 of the board, a CMSDK APB UART at `0x4000_4000` (receive
//! interrupt 0, transmit interrupt 1), as an `embedded-io-async` byte
//! stream: [`UartRx`] reads, [`UartTx`] writes.
//!
//! The UART holds one byte each way. A read takes what is there (at least
//! one byte) and otherwise waits for the receive interrupt; a write puts
//! bytes in while the transmit holding register is free and otherwise waits
//! for the transmit interrupt. Under QEMU (`-serial tcp:...`) the emulator's
//! character device holds the rest: nothing is dropped while the firmware
//! is slow to read.

use core::future::poll_fn;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::Poll;
use cortex_m::peripheral::NVIC;
use embassy_sync::waitqueue::AtomicWaker;

/// UART0's registers.
pub const UART0_BASE: usize = 0x4000_4000;
/// UART0's receive interrupt line.
pub const RX_IRQ: u16 = 0;
/// UART0's transmit interrupt line.
pub const TX_IRQ: u16 = 1;
/// The APB clock of the UART (the board's 25 MHz).
const PCLK_HZ: u32 = 25_000_000;
/// The line rate set up (QEMU moves bytes as fast as it can whatever this
/// says, but ignores a divider below 16, as the hardware does).
pub const BAUD: u32 = 115_200;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
/// Reads as INTSTATUS, writes as INTCLEAR (write 1 to clear).
const INTCLEAR: usize = 0x0c;
const BAUDDIV: usize = 0x10;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_TX_INTEN: u32 = 1 << 2;
const CTRL_RX_INTEN: u32 = 1 << 3;
const INT_TX: u32 = 1 << 0;
const INT_RX: u32 = 1 << 1;

static RX_WAKER: AtomicWaker = AtomicWaker::new();
static TX_WAKER: AtomicWaker = AtomicWaker::new();
static TAKEN: AtomicBool = AtomicBool::new(false);

fn read(offset: usize) -> u32 {
    // SAFETY: UART0's registers are at UART0_BASE on mps2-an385; `offset`
    // is one of the register offsets above.
    unsafe { read_volatile((UART0_BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((UART0_BASE + offset) as *mut u32, value) }
}

#[derive(Clone, Copy)]
struct Irq(u16);
// SAFETY: 0 and 1 are valid external interrupt numbers on this board.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

pub(crate) fn on_rx_interrupt() {
    write(INTCLEAR, INT_RX);
    RX_WAKER.wake();
}

pub(crate) fn on_tx_interrupt() {
    write(INTCLEAR, INT_TX);
    TX_WAKER.wake();
}

/// The receiving half of UART0.
pub struct UartRx(());
/// The transmitting half of UART0.
pub struct UartTx(());

/// Sets UART0 up (8N1 at [`BAUD`], both interrupts on) and returns its two
/// halves; `None` if it was already taken.
pub fn init() -> Option<(UartRx, UartTx)> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    write(CTRL, 0);
    write(BAUDDIV, PCLK_HZ / BAUD);
    write(INTCLEAR, INT_TX | INT_RX);
    write(
        CTRL,
        CTRL_TX_EN | CTRL_RX_EN | CTRL_TX_INTEN | CTRL_RX_INTEN,
    );
    for irq in [RX_IRQ, TX_IRQ] {
        NVIC::unpend(Irq(irq));
        // SAFETY: the handlers only clear the UART's interrupt status and
        // wake a waker, both meant for sharing.
        unsafe { NVIC::unmask(Irq(irq)) };
    }
    Some((UartRx(()), UartTx(())))
}

impl embedded_io_async::ErrorType for UartRx {
    type Error = core::convert::Infallible;
}

impl embedded_io_async::ErrorType for UartTx {
    type Error = core::convert::Infallible;
}

/// Moves received bytes into `buf`; how many.
fn take_received(buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() && read(STATE) & STATE_RX_FULL != 0 {
        buf[n] = read(DATA) as u8;
        n += 1;
    }
    n
}

/// Puts bytes of `buf` in the transmit register while it is free; how many.
fn put_transmit(buf: &[u8]) -> usize {
    let mut n = 0;
    while n < buf.len() && read(STATE) & STATE_TX_FULL == 0 {
        write(DATA, u32::from(buf[n]));
        n += 1;
    }
    n
}

impl embedded_io_async::Read for UartRx {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            let n = take_received(buf);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            RX_WAKER.register(cx.waker());
            // A byte may have come between the check and the registration.
            match take_received(buf) {
                0 => Poll::Pending,
                n => Poll::Ready(Ok(n)),
            }
        })
        .await
    }
}

impl embedded_io_async::Write for UartTx {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| {
            let n = put_transmit(buf);
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            TX_WAKER.register(cx.waker());
            match put_transmit(buf) {
                0 => Poll::Pending,
                n => Poll::Ready(Ok(n)),
            }
        })
        .await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        poll_fn(|cx| {
            if read(STATE) & STATE_TX_FULL == 0 {
                return Poll::Ready(Ok(()));
            }
            TX_WAKER.register(cx.waker());
            if read(STATE) & STATE_TX_FULL == 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
