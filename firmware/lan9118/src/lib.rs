//! # lan9118
//!
//! An [`embassy_net_driver::Driver`] for the SMSC (now Microchip) LAN9118
//! 10/100 Ethernet controller and its software-compatible relatives
//! (LAN9220, LAN9221, LAN9215...): the controller of Arm's MPS2/MPS2+ boards
//! and of QEMU's `mps2-an385`, `mps2-an386`, `mps2-an500`, `mps2-an505`,
//! `realview-*` and `vexpress-*` machines.
//!
//! `#![no_std]`, no heap, no `unsafe` except in [`Mmio`]. Every register
//! access goes through the tiny [`Registers`] trait, so the driver runs
//! unchanged against memory-mapped hardware ([`Mmio`]) and against a
//! simulated register bank in the host's unit tests.
//!
//! ## Use on a board
//! ```ignore
//! static IRQ: lan9118::Lan9118Irq = lan9118::Lan9118Irq::new();
//!
//! // 32-bit bus at 0x4020_0000 on MPS2 (AN385); interrupt line 13.
//! let regs = unsafe { lan9118::Mmio::new(0x4020_0000) };
//! let eth = lan9118::Lan9118::new(regs, lan9118::Config::new(), Some(&IRQ)).unwrap();
//! // NVIC: clear line 13's pending bit (see below), then enable it.
//! let (stack, runner) = embassy_net::new(eth, net_config, resources, seed);
//!
//! // The interrupt handler of the controller's line:
//! fn eth_irq() { lan9118::on_interrupt(&regs, &IRQ); }
//! ```
//!
//! ## What the driver does
//! * **Bring-up** ([`Lan9118::new`]): checks BYTE_TEST (`0x87654321`; any
//!   other value means wrong base address, bus width or byte order), soft
//!   resets (HW_CFG.SRST) and waits for PMT_CTRL.READY, keeps the MAC address
//!   loaded from the EEPROM (or writes [`Config::mac`]), resets the internal
//!   PHY (address 1) and restarts autonegotiation advertising 10/100
//!   half/full, unmasks the PHY's link-down and autonegotiation-complete
//!   interrupts, sets IRQ_CFG ([`Config::irq_cfg`]), TX_CFG = TX_ON | TXSAO,
//!   RX_CFG = 0 (no offset, 4-byte end alignment) and MAC_CR = TXEN | RXEN
//!   (| FDPX when the link partner and we share a full-duplex mode). The FIFO
//!   sizes stay at their reset values (HW_CFG.TX_FIF_SZ = 5: 5 KiB TX, 11 KiB
//!   RX; the RX/TX split is not rewritten because QEMU drops bits 19:18 of
//!   HW_CFG on a write).
//! * **Transmit**: one frame per [`TxToken`]: TX command A = first segment |
//!   last segment | byte length, command B = tag << 16 | byte length, then
//!   `ceil(len / 4)` data words, bytes least significant first. No
//!   end-alignment padding (QEMU mistakes a pad word for the next command
//!   A). A real controller pads short frames to 64 bytes and appends the
//!   FCS (command B's disable bits stay 0); QEMU does neither and its user
//!   network accepts the short frames (ARP is 42 bytes). TX status
//!   words are popped (and errors counted in [`Stats`]) on every
//!   [`transmit`](embassy_net_driver::Driver::transmit) so the status FIFO
//!   never fills.
//! * **Receive**: only when RX_FIFO_INF says a status word is waiting (the
//!   RX FIFOs return stale data and raise RXE when read empty): pop RX
//!   status, read `ceil(length / 4)` words from the RX data FIFO, hand the
//!   frame to the stack *without its last four bytes* (the FCS, which the
//!   length includes). Frames with the error summary (bit 15) or filter-fail
//!   (bit 30) status bits, shorter than an Ethernet header, or longer than
//!   [`FRAME_BUFFER`] are drained word by word and dropped (RX_DP_CTRL's
//!   fast-forward is not used: QEMU's is broken).
//! * **Link**: the PHY's basic status register (read through MAC_CSR
//!   indirection and MII_ACC); MAC_CR.FDPX follows the negotiated duplex
//!   (ANAR & ANLPAR) each time the link comes up. While the link is up and
//!   INT_STS.PHY_INT is clear, [`link_state`](embassy_net_driver::Driver::link_state)
//!   costs one register read.
//!
//! ## Interrupts or polling
//! With a [`Lan9118Irq`] the driver sleeps between frames: when the RX
//! status FIFO is empty it registers the stack's waker, clears INT_STS and
//! enables INT_EN = RSFL (RX status FIFO level: at least one frame) | PHY_INT,
//! then checks the FIFO once more. The board's handler for the controller's
//! line calls [`on_interrupt`], which masks the controller's interrupts
//! (INT_EN = 0, so a level-triggered line drops) and wakes the stack; the
//! driver enables them again once it has drained the FIFO. The handler
//! touches no other register, so it never races the driver's FIFO accesses.
//!
//! Without one ([`Lan9118::new`] with `None`) the driver asks to be polled
//! again at once whenever there is nothing to receive: simple, but the CPU
//! never sleeps.
//!
//! ## Notes for real boards (LAN9118 / LAN9220)
//! * [`Mmio`] assumes a 32-bit data bus (as on MPS2) mapped at `base`, with
//!   the registers at their datasheet offsets. A 16-bit bus needs a
//!   [`Registers`] implementation that performs two 16-bit accesses per
//!   register, low half first (WORD_SWAP left at its reset value), and the
//!   board's byte order set so that BYTE_TEST reads `0x87654321`.
//! * IRQ_CFG: [`Config::irq_cfg`] defaults to `0x111` (IRQ_EN | active-high |
//!   push-pull), which is what MPS2 and QEMU need (QEMU holds the line
//!   active with any other polarity/type: an interrupt storm). Boards that
//!   wire IRQ as an active-low open-drain line want `0x100`; the
//!   de-assertion interval (bits 31:24) is left at 0.
//! * The datasheet's read-after-write timing rules (section "Register
//!   access timing") require a delay between writing some control registers
//!   and reading registers they affect. The driver reads BYTE_TEST once after
//!   each control write during bring-up; in the data path the only such pair
//!   is INT_EN/INT_STS followed by a read of RX_FIFO_INF, which is separated
//!   by several bus cycles on a Cortex-M at up to ~100 MHz. Faster hosts may
//!   need a [`Registers`] implementation that inserts the datasheet's delays.
//! * With the TX data FIFO too full for a maximal frame (only possible when
//!   the MAC cannot send, e.g. without a link) the driver asks to be polled
//!   again instead of sleeping on the TDFA interrupt.
//! * The chip must be out of power-down: reading BYTE_TEST wakes it, and
//!   [`Lan9118::new`] waits for PMT_CTRL.READY (bounded by [`POLL_LIMIT`]).
//! * The PHY's vendor registers 17, 18, 27 and 31 are never accessed (QEMU
//!   does not model them), so speed is not reported; duplex is computed from
//!   the standard autonegotiation registers.
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(test)]
extern crate std;
#[cfg(test)]
mod tests;

use core::task::Context;
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

/// Register offsets (from the controller's base address) and bits, as in the
/// SMSC LAN9118 datasheet. 32-bit accesses only.
pub mod regs {
    /// RX data FIFO (read; any offset 0x00..0x1c).
    pub const RX_DATA_FIFO: u32 = 0x00;
    /// TX data FIFO (write; any offset 0x20..0x3c).
    pub const TX_DATA_FIFO: u32 = 0x20;
    /// RX status FIFO (read pops).
    pub const RX_STATUS_FIFO: u32 = 0x40;
    /// TX status FIFO (read pops).
    pub const TX_STATUS_FIFO: u32 = 0x48;
    /// Chip id (bits 31:16) and revision.
    pub const ID_REV: u32 = 0x50;
    /// Interrupt pin configuration.
    pub const IRQ_CFG: u32 = 0x54;
    /// Interrupt status (write 1 to clear).
    pub const INT_STS: u32 = 0x58;
    /// Interrupt enable.
    pub const INT_EN: u32 = 0x5c;
    /// Reads [`BYTE_TEST_VALUE`].
    pub const BYTE_TEST: u32 = 0x64;
    /// FIFO level interrupt thresholds.
    pub const FIFO_INT: u32 = 0x68;
    /// Receive configuration.
    pub const RX_CFG: u32 = 0x6c;
    /// Transmit configuration.
    pub const TX_CFG: u32 = 0x70;
    /// Hardware configuration (soft reset, FIFO sizes).
    pub const HW_CFG: u32 = 0x74;
    /// RX FIFO information: status words (23:16) and data bytes (15:0) used.
    pub const RX_FIFO_INF: u32 = 0x7c;
    /// TX FIFO information: status words used (23:16), data bytes free (15:0).
    pub const TX_FIFO_INF: u32 = 0x80;
    /// Power management (READY in bit 0).
    pub const PMT_CTRL: u32 = 0x84;
    /// MAC CSR command (indirect access to the MAC registers).
    pub const MAC_CSR_CMD: u32 = 0xa4;
    /// MAC CSR data.
    pub const MAC_CSR_DATA: u32 = 0xa8;
    /// Automatic flow control configuration.
    pub const AFC_CFG: u32 = 0xac;

    /// What BYTE_TEST reads when the bus is set up right.
    pub const BYTE_TEST_VALUE: u32 = 0x8765_4321;
    /// HW_CFG: soft reset (self-clearing).
    pub const HW_CFG_SRST: u32 = 1;
    /// PMT_CTRL: the device is ready.
    pub const PMT_CTRL_READY: u32 = 1;
    /// IRQ_CFG: push-pull output (instead of open drain).
    pub const IRQ_CFG_TYPE: u32 = 1 << 0;
    /// IRQ_CFG: active high.
    pub const IRQ_CFG_POL: u32 = 1 << 4;
    /// IRQ_CFG: master interrupt enable.
    pub const IRQ_CFG_EN: u32 = 1 << 8;
    /// INT_STS/INT_EN: RX status FIFO level (at least one frame waiting with
    /// FIFO_INT's default threshold of 0).
    pub const INT_RSFL: u32 = 1 << 3;
    /// INT_STS: the RX FIFO was read while empty.
    pub const INT_RXE: u32 = 1 << 14;
    /// INT_STS/INT_EN: the PHY raised an interrupt.
    pub const INT_PHY: u32 = 1 << 18;
    /// TX_CFG: transmitter on.
    pub const TX_CFG_TX_ON: u32 = 1 << 1;
    /// TX_CFG: TX status FIFO overrun allowed (a full status FIFO does not
    /// stop the transmitter).
    pub const TX_CFG_TXSAO: u32 = 1 << 2;
    /// TX command A: first segment of a frame.
    pub const TX_CMD_A_FIRST: u32 = 1 << 13;
    /// TX command A: last segment of a frame.
    pub const TX_CMD_A_LAST: u32 = 1 << 12;
    /// TX status: error summary.
    pub const TX_STS_ERROR: u32 = 1 << 15;
    /// RX status: the frame failed the address filter.
    pub const RX_STS_FILTER_FAIL: u32 = 1 << 30;
    /// RX status: error summary (CRC, runt, too long...).
    pub const RX_STS_ERROR: u32 = 1 << 15;
    /// RX status: broadcast frame.
    pub const RX_STS_BROADCAST: u32 = 1 << 13;
    /// RX status: multicast frame.
    pub const RX_STS_MULTICAST: u32 = 1 << 10;
    /// MAC_CSR_CMD: busy / start.
    pub const MAC_CSR_BUSY: u32 = 1 << 31;
    /// MAC_CSR_CMD: read (instead of write).
    pub const MAC_CSR_READ: u32 = 1 << 30;

    /// MAC register index: control.
    pub const MAC_CR: u32 = 1;
    /// MAC register index: address, bytes 4 and 5.
    pub const MAC_ADDRH: u32 = 2;
    /// MAC register index: address, bytes 0 to 3.
    pub const MAC_ADDRL: u32 = 3;
    /// MAC register index: MII (PHY) access.
    pub const MAC_MII_ACC: u32 = 6;
    /// MAC register index: MII (PHY) data.
    pub const MAC_MII_DATA: u32 = 7;
    /// MAC_CR: transmitter enable.
    pub const MAC_CR_TXEN: u32 = 1 << 3;
    /// MAC_CR: receiver enable.
    pub const MAC_CR_RXEN: u32 = 1 << 2;
    /// MAC_CR: full duplex.
    pub const MAC_CR_FDPX: u32 = 1 << 20;
    /// MII_ACC: busy / start.
    pub const MII_ACC_BUSY: u32 = 1 << 0;
    /// MII_ACC: write (instead of read).
    pub const MII_ACC_WRITE: u32 = 1 << 1;
    /// The internal PHY's address.
    pub const PHY_ADDR: u32 = 1;

    /// PHY register: basic control.
    pub const PHY_BCR: u32 = 0;
    /// PHY register: basic status.
    pub const PHY_BSR: u32 = 1;
    /// PHY register: autonegotiation advertisement.
    pub const PHY_ANAR: u32 = 4;
    /// PHY register: link partner ability.
    pub const PHY_ANLPAR: u32 = 5;
    /// PHY register: interrupt source (read clears).
    pub const PHY_ISR: u32 = 29;
    /// PHY register: interrupt mask.
    pub const PHY_IMR: u32 = 30;
    /// BCR: reset (self-clearing).
    pub const BCR_RESET: u32 = 1 << 15;
    /// BCR: autonegotiation enable.
    pub const BCR_AN_ENABLE: u32 = 1 << 12;
    /// BCR: restart autonegotiation.
    pub const BCR_AN_RESTART: u32 = 1 << 9;
    /// BSR: link up.
    pub const BSR_LINK: u32 = 1 << 2;
    /// ANAR: 10/100, half and full duplex, IEEE 802.3.
    pub const ANAR_10_100_ALL: u32 = 0x01e1;
    /// ANAR/ANLPAR: 100BASE-TX full duplex.
    pub const AN_100_FULL: u32 = 1 << 8;
    /// ANAR/ANLPAR: 100BASE-TX half duplex.
    pub const AN_100_HALF: u32 = 1 << 7;
    /// ANAR/ANLPAR: 10BASE-T full duplex.
    pub const AN_10_FULL: u32 = 1 << 6;
    /// PHY interrupt: autonegotiation complete.
    pub const PHY_INT_AN_COMPLETE: u32 = 1 << 6;
    /// PHY interrupt: link down.
    pub const PHY_INT_LINK_DOWN: u32 = 1 << 4;
}

use regs::*;

/// Bytes of one frame buffer: the largest frame the driver receives,
/// FCS and a VLAN tag included, rounded up to whole words.
pub const FRAME_BUFFER: usize = 1536;
/// The largest frame handed to the stack (Ethernet header included, FCS
/// excluded): embassy-net's MTU for the Ethernet medium.
pub const MTU: usize = 1514;
/// Bytes of TX FIFO space a maximal frame needs (two command words and the
/// data rounded up to words).
const TX_SPACE_NEEDED: u32 = 8 + (MTU as u32).div_ceil(4) * 4;
/// Most register reads spent waiting for a busy bit or a reset.
pub const POLL_LIMIT: u32 = 100_000;

/// 32-bit register access to one controller. `read`/`write` take `&self`
/// so the driver and the interrupt handler can each hold a handle.
pub trait Registers {
    /// Reads the register at byte `offset` from the controller's base.
    fn read(&self, offset: u32) -> u32;
    /// Writes the register at byte `offset` from the controller's base.
    fn write(&self, offset: u32, value: u32);
}

impl<T: Registers + ?Sized> Registers for &T {
    fn read(&self, offset: u32) -> u32 {
        (**self).read(offset)
    }
    fn write(&self, offset: u32, value: u32) {
        (**self).write(offset, value)
    }
}

/// A controller memory-mapped on a 32-bit bus at a fixed address.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: usize,
}

impl Mmio {
    /// The controller at `base` (`0x4020_0000` on MPS2 AN385).
    ///
    /// # Safety
    /// `base` must be the address of a LAN9118-compatible controller's
    /// register window (256 bytes, 32-bit accesses), and nothing else may
    /// drive the controller while the returned handle and its copies are in
    /// use (the interrupt handler's copy for [`on_interrupt`] excepted).
    pub const unsafe fn new(base: usize) -> Self {
        Mmio { base }
    }
}

impl Registers for Mmio {
    fn read(&self, offset: u32) -> u32 {
        // SAFETY: `new`'s contract: an aligned register inside the window.
        unsafe { core::ptr::read_volatile((self.base + offset as usize) as *const u32) }
    }
    fn write(&self, offset: u32, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.base + offset as usize) as *mut u32, value) }
    }
}

/// Settings of [`Lan9118::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The MAC address to program; `None` keeps the one the controller
    /// loaded from its EEPROM (QEMU: 52:54:00:12:34:56 unless `-nic ...,mac=`).
    pub mac: Option<[u8; 6]>,
    /// IRQ_CFG's value (see the crate docs); default `0x111`.
    pub irq_cfg: u32,
    /// Reset the internal PHY and restart autonegotiation (default true).
    pub reset_phy: bool,
}

impl Config {
    /// The defaults: EEPROM MAC, IRQ_CFG `0x111`, PHY reset.
    pub const fn new() -> Self {
        Config {
            mac: None,
            irq_cfg: IRQ_CFG_EN | IRQ_CFG_POL | IRQ_CFG_TYPE,
            reset_phy: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// Why bring-up failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// BYTE_TEST did not read `0x87654321` (wrong address, bus width or byte
    /// order, or no controller): the value read.
    NotFound(u32),
    /// A busy bit or reset did not clear within [`POLL_LIMIT`] reads: which.
    Timeout(&'static str),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NotFound(v) => write!(f, "no LAN9118: BYTE_TEST reads {v:#010x}"),
            Error::Timeout(what) => write!(f, "LAN9118: {what} timed out"),
        }
    }
}

/// Frame counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to the stack.
    pub rx_frames: u32,
    /// Frames dropped (error or filter-fail status, too short, too long).
    pub rx_dropped: u32,
    /// Frames written to the TX FIFO.
    pub tx_frames: u32,
    /// TX status words with the error bit.
    pub tx_errors: u32,
}

/// The link between the interrupt handler and the driver: a waker slot.
/// Put it in a `static`.
pub struct Lan9118Irq {
    waker: AtomicWaker,
}

impl Lan9118Irq {
    /// An empty slot.
    pub const fn new() -> Self {
        Lan9118Irq {
            waker: AtomicWaker::new(),
        }
    }
}

impl Default for Lan9118Irq {
    fn default() -> Self {
        Self::new()
    }
}

/// The interrupt handler's work: masks the controller's interrupts (INT_EN
/// = 0, which drops its interrupt line) and wakes the driver, which enables
/// them again once it has drained the RX FIFO. Call it from the handler of
/// the controller's interrupt line (13 on MPS2 AN385).
pub fn on_interrupt<R: Registers>(regs: &R, irq: &Lan9118Irq) {
    regs.write(INT_EN, 0);
    irq.waker.wake();
}

/// The driver: give it to `embassy_net::new`.
pub struct Lan9118<'d, R: Registers> {
    regs: R,
    irq: Option<&'d Lan9118Irq>,
    mac: [u8; 6],
    link_up: bool,
    tag: u16,
    stats: Stats,
    rx: [u8; FRAME_BUFFER],
    tx: [u8; FRAME_BUFFER],
}

impl<'d, R: Registers> Lan9118<'d, R> {
    /// Brings the controller up (see the crate docs for the sequence). With
    /// `irq`, the driver sleeps until [`on_interrupt`] wakes it; without,
    /// it is polled continuously.
    pub fn new(regs: R, config: Config, irq: Option<&'d Lan9118Irq>) -> Result<Self, Error> {
        let test = regs.read(BYTE_TEST);
        if test != BYTE_TEST_VALUE {
            return Err(Error::NotFound(test));
        }
        wait_ready(&regs)?;
        regs.write(HW_CFG, HW_CFG_SRST);
        poll(&regs, "soft reset", |r| r.read(HW_CFG) & HW_CFG_SRST == 0)?;
        wait_ready(&regs)?;

        // Interrupts off and acknowledged while we configure.
        regs.write(INT_EN, 0);
        regs.write(INT_STS, 0xffff_ffff);
        settle(&regs);

        let mac = match config.mac {
            Some(mac) => {
                mac_write(
                    &regs,
                    MAC_ADDRL,
                    u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
                )?;
                mac_write(&regs, MAC_ADDRH, u32::from_le_bytes([mac[4], mac[5], 0, 0]))?;
                mac
            }
            None => {
                let l = mac_read(&regs, MAC_ADDRL)?.to_le_bytes();
                let h = mac_read(&regs, MAC_ADDRH)?.to_le_bytes();
                [l[0], l[1], l[2], l[3], h[0], h[1]]
            }
        };

        if config.reset_phy {
            phy_write(&regs, PHY_BCR, BCR_RESET)?;
            let mut cleared = false;
            for _ in 0..64 {
                if phy_read(&regs, PHY_BCR)? & BCR_RESET == 0 {
                    cleared = true;
                    break;
                }
            }
            if !cleared {
                return Err(Error::Timeout("PHY reset"));
            }
            phy_write(&regs, PHY_ANAR, ANAR_10_100_ALL)?;
            phy_write(&regs, PHY_BCR, BCR_AN_ENABLE | BCR_AN_RESTART)?;
        }
        // Link changes raise INT_STS.PHY_INT (which INT_EN only enables
        // while the driver sleeps). Reading the PHY's ISR clears it.
        phy_write(&regs, PHY_IMR, PHY_INT_AN_COMPLETE | PHY_INT_LINK_DOWN)?;
        phy_read(&regs, PHY_ISR)?;
        regs.write(INT_STS, 0xffff_ffff);

        regs.write(IRQ_CFG, config.irq_cfg);
        settle(&regs);
        regs.write(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        regs.write(RX_CFG, 0);
        settle(&regs);
        // Full duplex until the link says otherwise (see `link_state`).
        mac_write(&regs, MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX)?;

        Ok(Lan9118 {
            regs,
            irq,
            mac,
            link_up: false,
            tag: 0,
            stats: Stats::default(),
            rx: [0; FRAME_BUFFER],
            tx: [0; FRAME_BUFFER],
        })
    }

    /// The MAC address in use.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frame counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The register handle.
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// Rereads the link from the PHY and sets MAC_CR.FDPX when it came up.
    fn refresh_link(&mut self) -> bool {
        let regs = &self.regs;
        if regs.read(INT_STS) & INT_PHY != 0 {
            let _ = phy_read(regs, PHY_ISR);
            regs.write(INT_STS, INT_PHY);
        }
        // BSR's link bit latches low: the second read is the present state.
        let _ = phy_read(regs, PHY_BSR);
        let up = matches!(phy_read(regs, PHY_BSR), Ok(bsr) if bsr & BSR_LINK != 0);
        if up && !self.link_up {
            let common = match (phy_read(regs, PHY_ANAR), phy_read(regs, PHY_ANLPAR)) {
                (Ok(a), Ok(b)) => a & b,
                _ => AN_100_FULL,
            };
            // The best common mode: 100 full, 100 half, 10 full, 10 half.
            let full = common & AN_100_FULL != 0
                || (common & AN_100_HALF == 0 && common & AN_10_FULL != 0);
            let cr = MAC_CR_TXEN | MAC_CR_RXEN | if full { MAC_CR_FDPX } else { 0 };
            let _ = mac_write(regs, MAC_CR, cr);
        }
        self.link_up = up;
        up
    }

    /// Enables the controller's interrupts after registering `cx`'s waker,
    /// or asks to be polled again when there is no interrupt.
    fn sleep(&self, cx: &mut Context) {
        match self.irq {
            Some(irq) => {
                irq.waker.register(cx.waker());
                self.regs.write(INT_STS, INT_RSFL);
                self.regs.write(INT_EN, INT_RSFL | INT_PHY);
            }
            None => cx.waker().wake_by_ref(),
        }
    }

    /// Pops RX status words until a good frame is in `rx`; returns its
    /// length without the FCS, or `None` when the FIFO is empty.
    fn pop_frame(&mut self) -> Option<usize> {
        loop {
            if (self.regs.read(RX_FIFO_INF) >> 16) & 0xff == 0 {
                return None;
            }
            let status = self.regs.read(RX_STATUS_FIFO);
            let len = ((status >> 16) & 0x3fff) as usize;
            let words = len.div_ceil(4);
            let bad = status & (RX_STS_ERROR | RX_STS_FILTER_FAIL) != 0;
            if bad || len < 14 + 4 || words * 4 > FRAME_BUFFER {
                for _ in 0..words {
                    self.regs.read(RX_DATA_FIFO);
                }
                self.stats.rx_dropped = self.stats.rx_dropped.wrapping_add(1);
                continue;
            }
            for chunk in self.rx[..words * 4].chunks_exact_mut(4) {
                chunk.copy_from_slice(&self.regs.read(RX_DATA_FIFO).to_le_bytes());
            }
            self.stats.rx_frames = self.stats.rx_frames.wrapping_add(1);
            return Some(len - 4);
        }
    }

    /// Room in the TX FIFO for a maximal frame; pops (and counts) TX
    /// status words on the way.
    fn tx_ready(&mut self) -> bool {
        let inf = self.regs.read(TX_FIFO_INF);
        for _ in 0..(inf >> 16) & 0xff {
            if self.regs.read(TX_STATUS_FIFO) & TX_STS_ERROR != 0 {
                self.stats.tx_errors = self.stats.tx_errors.wrapping_add(1);
            }
        }
        inf & 0xffff >= TX_SPACE_NEEDED
    }
}

fn settle<R: Registers>(regs: &R) {
    // A dummy read: the datasheet's delay between a control write and a
    // dependent read.
    regs.read(BYTE_TEST);
}

fn poll<R: Registers>(
    regs: &R,
    what: &'static str,
    done: impl Fn(&R) -> bool,
) -> Result<(), Error> {
    for _ in 0..POLL_LIMIT {
        if done(regs) {
            return Ok(());
        }
    }
    Err(Error::Timeout(what))
}

fn wait_ready<R: Registers>(regs: &R) -> Result<(), Error> {
    poll(regs, "PMT_CTRL.READY", |r| {
        r.read(PMT_CTRL) & PMT_CTRL_READY != 0
    })
}

fn mac_wait<R: Registers>(regs: &R) -> Result<(), Error> {
    poll(regs, "MAC CSR", |r| r.read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0)
}

/// Writes MAC register `index` through MAC_CSR_DATA/MAC_CSR_CMD.
pub fn mac_write<R: Registers>(regs: &R, index: u32, value: u32) -> Result<(), Error> {
    mac_wait(regs)?;
    regs.write(MAC_CSR_DATA, value);
    regs.write(MAC_CSR_CMD, MAC_CSR_BUSY | (index & 0xff));
    mac_wait(regs)
}

/// Reads MAC register `index` through MAC_CSR_CMD/MAC_CSR_DATA.
pub fn mac_read<R: Registers>(regs: &R, index: u32) -> Result<u32, Error> {
    mac_wait(regs)?;
    regs.write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | (index & 0xff));
    mac_wait(regs)?;
    Ok(regs.read(MAC_CSR_DATA))
}

fn mii_wait<R: Registers>(regs: &R) -> Result<(), Error> {
    for _ in 0..POLL_LIMIT {
        if mac_read(regs, MAC_MII_ACC)? & MII_ACC_BUSY == 0 {
            return Ok(());
        }
    }
    Err(Error::Timeout("MII"))
}

fn mii_command(reg: u32, write: bool) -> u32 {
    (PHY_ADDR << 11) | ((reg & 0x1f) << 6) | if write { MII_ACC_WRITE } else { 0 } | MII_ACC_BUSY
}

/// Reads register `reg` of the internal PHY.
pub fn phy_read<R: Registers>(regs: &R, reg: u32) -> Result<u32, Error> {
    mii_wait(regs)?;
    mac_write(regs, MAC_MII_ACC, mii_command(reg, false))?;
    mii_wait(regs)?;
    Ok(mac_read(regs, MAC_MII_DATA)? & 0xffff)
}

/// Writes register `reg` of the internal PHY.
pub fn phy_write<R: Registers>(regs: &R, reg: u32, value: u32) -> Result<(), Error> {
    mii_wait(regs)?;
    mac_write(regs, MAC_MII_DATA, value & 0xffff)?;
    mac_write(regs, MAC_MII_ACC, mii_command(reg, true))?;
    mii_wait(regs)
}

/// A received frame (FCS removed), in the driver's buffer.
pub struct RxToken<'a> {
    frame: &'a mut [u8],
}

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<T, F: FnOnce(&mut [u8]) -> T>(self, f: F) -> T {
        f(self.frame)
    }
}

/// Room for one frame to send.
pub struct TxToken<'a, R: Registers> {
    regs: &'a R,
    buf: &'a mut [u8; FRAME_BUFFER],
    tag: &'a mut u16,
    stats: &'a mut Stats,
}

impl<R: Registers> embassy_net_driver::TxToken for TxToken<'_, R> {
    fn consume<T, F: FnOnce(&mut [u8]) -> T>(self, len: usize, f: F) -> T {
        // embassy-net never asks for more than the MTU; the frame buffer
        // holds that, rounded up to words.
        let len = len.min(FRAME_BUFFER);
        let out = f(&mut self.buf[..len]);
        *self.tag = self.tag.wrapping_add(1);
        write_frame(self.regs, &self.buf[..len], *self.tag);
        self.stats.tx_frames = self.stats.tx_frames.wrapping_add(1);
        out
    }
}

/// Writes one frame into the TX data FIFO: command A, command B, the data
/// words. The frame leaves when its last word is written.
pub fn write_frame<R: Registers>(regs: &R, frame: &[u8], tag: u16) {
    let len = frame.len() as u32 & 0x7ff;
    regs.write(TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | len);
    regs.write(TX_DATA_FIFO, ((tag as u32) << 16) | len);
    let mut words = frame.chunks_exact(4);
    for w in &mut words {
        regs.write(TX_DATA_FIFO, u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        regs.write(TX_DATA_FIFO, u32::from_le_bytes(last));
    }
}

impl<R: Registers> embassy_net_driver::Driver for Lan9118<'_, R> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, R>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let len = match self.pop_frame() {
            Some(len) => len,
            None => {
                self.sleep(cx);
                // A frame that arrived before the interrupt was enabled.
                self.pop_frame()?
            }
        };
        let Lan9118 {
            regs,
            rx,
            tx,
            tag,
            stats,
            ..
        } = self;
        Some((
            RxToken {
                frame: &mut rx[..len],
            },
            TxToken {
                regs,
                buf: tx,
                tag,
                stats,
            },
        ))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Self::TxToken<'_>> {
        if !self.tx_ready() {
            // Only without a link: ask to be polled again.
            cx.waker().wake_by_ref();
            return None;
        }
        Some(TxToken {
            regs: &self.regs,
            buf: &mut self.tx,
            tag: &mut self.tag,
            stats: &mut self.stats,
        })
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        // Fast path: up, and the PHY raised nothing since.
        if self.link_up && self.regs.read(INT_STS) & INT_PHY == 0 {
            return LinkState::Up;
        }
        if self.refresh_link() {
            LinkState::Up
        } else {
            self.sleep(cx);
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
