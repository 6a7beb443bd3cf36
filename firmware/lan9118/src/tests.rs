//! Host tests against a simulated register bank that follows the datasheet
//! (and QEMU's model where they agree).

use super::*;
use core::cell::RefCell;
use embassy_net_driver::{Driver, RxToken as _, TxToken as _};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::vec;
use std::vec::Vec;

const QEMU_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const FCS: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    R(u32, u32),
    W(u32, u32),
}

#[derive(Default, PartialEq, Eq, Debug)]
enum TxState {
    #[default]
    A,
    B,
    Data,
}

struct State {
    byte_test: u32,
    srst_never_clears: bool,
    hw_cfg: u32,
    int_sts: u32,
    int_en: u32,
    irq_cfg: u32,
    tx_cfg: u32,
    rx_cfg: u32,
    // MAC
    csr_data: u32,
    csr_busy_reads: u32,
    csr_busy_left: u32,
    mac_cr: u32,
    mac: [u8; 6],
    mii_acc: u32,
    mii_data: u32,
    // PHY
    cable: bool,
    partner: u32,
    bcr: u32,
    bsr: u32,
    anar: u32,
    isr: u32,
    imr: u32,
    // FIFOs
    tx_state: TxState,
    cmd_a: u32,
    cmd_b: u32,
    tx_words_left: usize,
    tx_cur: Vec<u8>,
    tx_frames: Vec<(u16, Vec<u8>)>,
    tx_status: VecDeque<u32>,
    tx_free: u32,
    rx_status: VecDeque<u32>,
    rx_data: VecDeque<u32>,
    empty_reads: u32,
    log: Vec<Op>,
}

struct Sim(RefCell<State>);

impl Sim {
    fn new() -> Self {
        Sim(RefCell::new(State {
            byte_test: BYTE_TEST_VALUE,
            srst_never_clears: false,
            hw_cfg: 0x0005_0000,
            int_sts: 0,
            int_en: 0,
            irq_cfg: 0,
            tx_cfg: 0,
            rx_cfg: 0,
            csr_data: 0,
            csr_busy_reads: 2,
            csr_busy_left: 0,
            mac_cr: 0x0004_0000,
            mac: QEMU_MAC,
            mii_acc: 0,
            mii_data: 0,
            cable: true,
            partner: 0x0f71, // QEMU: every 10/100 mode
            bcr: 0x3000,
            bsr: 0x7809,
            anar: 0x01e1,
            isr: 0,
            imr: 0,
            tx_state: TxState::A,
            cmd_a: 0,
            cmd_b: 0,
            tx_words_left: 0,
            tx_cur: Vec::new(),
            tx_frames: Vec::new(),
            tx_status: VecDeque::new(),
            tx_free: 4608,
            rx_status: VecDeque::new(),
            rx_data: VecDeque::new(),
            empty_reads: 0,
            log: Vec::new(),
        }))
    }

    fn st(&self) -> std::cell::RefMut<'_, State> {
        self.0.borrow_mut()
    }

    /// A frame arrives: status with the length including 4 FCS bytes, data
    /// words with the FCS appended.
    fn inject(&self, frame: &[u8], status_bits: u32) {
        let mut s = self.st();
        let mut bytes = frame.to_vec();
        bytes.extend_from_slice(&FCS);
        s.rx_status
            .push_back(((bytes.len() as u32) << 16) | status_bits);
        for w in bytes.chunks(4) {
            let mut b = [0u8; 4];
            b[..w.len()].copy_from_slice(w);
            s.rx_data.push_back(u32::from_le_bytes(b));
        }
        s.int_sts |= INT_RSFL;
    }

    fn log(&self) -> Vec<Op> {
        std::mem::take(&mut self.st().log)
    }

    fn irq_line(&self) -> bool {
        let s = self.0.borrow();
        s.irq_cfg & IRQ_CFG_EN != 0 && (s.int_sts_now() & s.int_en) != 0
    }
}

impl State {
    fn int_sts_now(&self) -> u32 {
        let phy = if self.isr & self.imr != 0 { INT_PHY } else { 0 };
        self.int_sts | phy
    }

    fn phy_read(&mut self, reg: u32) -> u32 {
        match reg {
            PHY_BCR => {
                let v = self.bcr;
                self.bcr &= !BCR_RESET;
                v
            }
            PHY_BSR => self.bsr,
            2 => 0x0007,
            3 => 0xc0d1,
            PHY_ANAR => self.anar,
            PHY_ANLPAR => self.partner,
            PHY_ISR => std::mem::take(&mut self.isr),
            PHY_IMR => self.imr,
            r => panic!("PHY register {r} read (not modelled by QEMU)"),
        }
    }

    fn phy_write(&mut self, reg: u32, v: u32) {
        match reg {
            PHY_BCR => {
                if v & BCR_RESET != 0 {
                    self.bcr = 0x3000 | BCR_RESET; // clears on the next read
                    self.anar = 0x01e1;
                    self.imr = 0;
                    return;
                }
                self.bcr = v & !BCR_AN_RESTART;
                if v & BCR_AN_RESTART != 0 && self.cable {
                    self.bsr |= BSR_LINK | 0x20;
                    self.isr |= PHY_INT_AN_COMPLETE;
                }
            }
            PHY_ANAR => self.anar = v,
            PHY_IMR => self.imr = v,
            r => panic!("PHY register {r} written"),
        }
    }

    fn mac_reg_read(&mut self, idx: u32) -> u32 {
        match idx {
            MAC_CR => self.mac_cr,
            MAC_ADDRH => u32::from_le_bytes([self.mac[4], self.mac[5], 0, 0]),
            MAC_ADDRL => u32::from_le_bytes([self.mac[0], self.mac[1], self.mac[2], self.mac[3]]),
            MAC_MII_ACC => self.mii_acc,
            MAC_MII_DATA => self.mii_data,
            i => panic!("MAC register {i} read"),
        }
    }

    fn mac_reg_write(&mut self, idx: u32, v: u32) {
        match idx {
            MAC_CR => self.mac_cr = v,
            MAC_ADDRH => {
                self.mac[4] = v as u8;
                self.mac[5] = (v >> 8) as u8;
            }
            MAC_ADDRL => self.mac[..4].copy_from_slice(&v.to_le_bytes()),
            MAC_MII_ACC => {
                assert_ne!(v & MII_ACC_BUSY, 0, "MII access without the busy bit");
                assert_eq!((v >> 11) & 0x1f, PHY_ADDR, "internal PHY is at 1");
                let reg = (v >> 6) & 0x1f;
                if v & MII_ACC_WRITE != 0 {
                    let d = self.mii_data;
                    self.phy_write(reg, d);
                } else {
                    self.mii_data = self.phy_read(reg);
                }
                self.mii_acc = v & !MII_ACC_BUSY;
            }
            MAC_MII_DATA => self.mii_data = v & 0xffff,
            i => panic!("MAC register {i} written"),
        }
    }

    fn tx_push(&mut self, v: u32) {
        match self.tx_state {
            TxState::A => {
                assert_eq!(v & (3 << 24), 0, "end alignment must stay 0 (QEMU)");
                assert_ne!(v & TX_CMD_A_FIRST, 0, "first segment");
                assert_ne!(v & TX_CMD_A_LAST, 0, "last segment");
                self.cmd_a = v;
                self.tx_state = TxState::B;
            }
            TxState::B => {
                let len = self.cmd_a & 0x7ff;
                assert_eq!(v & 0x7ff, len, "command B's length is command A's");
                self.cmd_b = v;
                self.tx_words_left = (len as usize).div_ceil(4);
                self.tx_cur.clear();
                self.tx_state = TxState::Data;
                if self.tx_words_left == 0 {
                    self.tx_done();
                }
            }
            TxState::Data => {
                self.tx_cur.extend_from_slice(&v.to_le_bytes());
                self.tx_words_left -= 1;
                if self.tx_words_left == 0 {
                    self.tx_done();
                }
            }
        }
    }

    fn tx_done(&mut self) {
        let len = (self.cmd_a & 0x7ff) as usize;
        let mut f = std::mem::take(&mut self.tx_cur);
        f.truncate(len);
        let tag = (self.cmd_b >> 16) as u16;
        self.tx_frames.push((tag, f));
        self.tx_status.push_back((tag as u32) << 16);
        self.tx_state = TxState::A;
    }
}

impl Registers for Sim {
    fn read(&self, offset: u32) -> u32 {
        let mut s = self.st();
        let v = match offset {
            0x00..=0x1c => match s.rx_data.pop_front() {
                Some(v) => v,
                None => {
                    s.empty_reads += 1;
                    s.int_sts |= INT_RXE;
                    0xdead_beef
                }
            },
            RX_STATUS_FIFO => match s.rx_status.pop_front() {
                Some(v) => v,
                None => {
                    s.empty_reads += 1;
                    0xdead_beef
                }
            },
            TX_STATUS_FIFO => s.tx_status.pop_front().unwrap_or(0xdead_beef),
            ID_REV => 0x0118_0001,
            IRQ_CFG => s.irq_cfg,
            INT_STS => s.int_sts_now(),
            INT_EN => s.int_en,
            BYTE_TEST => s.byte_test,
            RX_CFG => s.rx_cfg,
            TX_CFG => s.tx_cfg,
            HW_CFG => {
                if s.hw_cfg & HW_CFG_SRST != 0 && !s.srst_never_clears {
                    // Reset completes after one read.
                    s.hw_cfg = 0x0005_0000;
                    0x0005_0001
                } else {
                    s.hw_cfg
                }
            }
            RX_FIFO_INF => ((s.rx_status.len() as u32) << 16) | (s.rx_data.len() as u32 * 4),
            TX_FIFO_INF => ((s.tx_status.len() as u32) << 16) | s.tx_free,
            PMT_CTRL => PMT_CTRL_READY,
            MAC_CSR_CMD => {
                if s.csr_busy_left > 0 {
                    s.csr_busy_left -= 1;
                    MAC_CSR_BUSY
                } else {
                    0
                }
            }
            MAC_CSR_DATA => s.csr_data,
            o => panic!("read of unknown register {o:#x}"),
        };
        s.log.push(Op::R(offset, v));
        v
    }

    fn write(&self, offset: u32, v: u32) {
        let mut s = self.st();
        s.log.push(Op::W(offset, v));
        match offset {
            0x20..=0x3c => s.tx_push(v),
            IRQ_CFG => s.irq_cfg = v,
            INT_STS => s.int_sts &= !v,
            INT_EN => s.int_en = v,
            RX_CFG => s.rx_cfg = v,
            TX_CFG => s.tx_cfg = v,
            HW_CFG => {
                if v & HW_CFG_SRST != 0 {
                    s.hw_cfg = 0x0005_0000 | HW_CFG_SRST;
                    s.int_sts = 0;
                    s.int_en = 0;
                    s.mac_cr = 0x0004_0000;
                    s.rx_status.clear();
                    s.rx_data.clear();
                } else {
                    panic!("HW_CFG written without reset (QEMU drops bits 19:18)");
                }
            }
            MAC_CSR_CMD => {
                assert_ne!(v & MAC_CSR_BUSY, 0, "MAC CSR command without busy bit");
                let idx = v & 0xff;
                if v & MAC_CSR_READ != 0 {
                    s.csr_data = s.mac_reg_read(idx);
                } else {
                    let d = s.csr_data;
                    s.mac_reg_write(idx, d);
                }
                s.csr_busy_left = s.csr_busy_reads;
            }
            MAC_CSR_DATA => s.csr_data = v,
            o => panic!("write of unknown register {o:#x} = {v:#x}"),
        }
    }
}

struct CountWaker(AtomicUsize);
impl Wake for CountWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<CountWaker>, Waker) {
    let w = Arc::new(CountWaker(AtomicUsize::new(0)));
    (w.clone(), Waker::from(w))
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn up(sim: &Sim) -> Lan9118<'_, &Sim> {
    let d = Lan9118::new(sim, Config::new(), None).expect("bring-up");
    sim.log();
    d
}

#[test]
fn bring_up_programs_the_documented_values() {
    let sim = Sim::new();
    let d = Lan9118::new(&sim, Config::new(), None).unwrap();
    assert_eq!(d.mac(), QEMU_MAC);
    let log = sim.log();
    let writes: Vec<(u32, u32)> = log
        .iter()
        .filter_map(|op| match *op {
            Op::W(o, v) => Some((o, v)),
            _ => None,
        })
        .collect();
    // BYTE_TEST is checked before anything is written, then a soft reset.
    assert_eq!(log[0], Op::R(BYTE_TEST, BYTE_TEST_VALUE));
    assert_eq!(writes[0], (HW_CFG, HW_CFG_SRST));
    assert!(writes.contains(&(INT_EN, 0)));
    assert!(writes.contains(&(INT_STS, 0xffff_ffff)));
    assert!(writes.contains(&(IRQ_CFG, 0x111)));
    assert!(writes.contains(&(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO)));
    assert!(writes.contains(&(RX_CFG, 0)));
    let s = sim.st();
    assert_eq!(s.mac_cr, 0x0010_000c, "TXEN | RXEN | FDPX, promiscuous off");
    assert_eq!(s.int_en, 0, "interrupts stay off until the driver sleeps");
    assert_eq!(s.imr, PHY_INT_AN_COMPLETE | PHY_INT_LINK_DOWN);
    assert_eq!(s.anar, ANAR_10_100_ALL);
    assert_eq!(s.empty_reads, 0);
}

#[test]
fn bring_up_refuses_a_wrong_byte_test() {
    let sim = Sim::new();
    sim.st().byte_test = 0x4321_8765; // half-word swapped bus
    assert_eq!(
        Lan9118::new(&sim, Config::new(), None).err(),
        Some(Error::NotFound(0x4321_8765))
    );
    // Nothing was written.
    assert!(sim.log().iter().all(|op| matches!(op, Op::R(..))));
}

#[test]
fn bring_up_times_out_on_a_stuck_reset() {
    let sim = Sim::new();
    sim.st().srst_never_clears = true;
    assert_eq!(
        Lan9118::new(&sim, Config::new(), None).err(),
        Some(Error::Timeout("soft reset"))
    );
}

#[test]
fn configured_mac_is_written_least_significant_byte_first() {
    let sim = Sim::new();
    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let d = Lan9118::new(
        &sim,
        Config {
            mac: Some(mac),
            ..Config::new()
        },
        None,
    )
    .unwrap();
    assert_eq!(d.mac(), mac);
    assert_eq!(sim.st().mac, mac);
    let log = sim.log();
    // ADDRL is written as 0x33221102 through MAC_CSR_DATA then CMD.
    let i = log
        .iter()
        .position(|op| *op == Op::W(MAC_CSR_DATA, 0x3322_1102))
        .unwrap();
    assert_eq!(log[i + 1], Op::W(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_ADDRL));
    assert_eq!(
        HardwareAddress::Ethernet(mac),
        embassy_net_driver::Driver::hardware_address(&d)
    );
}

#[test]
fn eeprom_mac_is_read_from_addrl_addrh() {
    // QEMU's preload: ADDRL 0x12005452, ADDRH 0x00005634.
    let sim = Sim::new();
    let d = up(&sim);
    assert_eq!(
        u32::from_le_bytes([d.mac()[0], d.mac()[1], d.mac()[2], d.mac()[3]]),
        0x1200_5452
    );
    assert_eq!(u32::from_le_bytes([d.mac()[4], d.mac()[5], 0, 0]), 0x5634);
}

#[test]
fn transmit_writes_command_words_and_little_endian_data() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let f = frame(61, 3);
    let tok = d.transmit(&mut cx).expect("room");
    tok.consume(61, |buf| buf.copy_from_slice(&f));
    let log = sim.log();
    let tx: Vec<u32> = log
        .iter()
        .filter_map(|op| match *op {
            Op::W(TX_DATA_FIFO, v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(
        tx.len(),
        2 + 16,
        "two command words and ceil(61/4) data words"
    );
    assert_eq!(tx[0], (1 << 13) | (1 << 12) | 61);
    assert_eq!(tx[1], (1 << 16) | 61);
    assert_eq!(tx[2], u32::from_le_bytes([f[0], f[1], f[2], f[3]]));
    assert_eq!(
        tx[17], f[60] as u32,
        "the last word holds one byte, zero padded"
    );
    assert_eq!(sim.st().tx_frames, vec![(1, f)]);
    assert_eq!(d.stats().tx_frames, 1);
}

#[test]
fn transmit_word_multiple_has_no_pad_word() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    for (i, len) in [42usize, 60, 64, 1514].into_iter().enumerate() {
        let f = frame(len, i as u8);
        d.transmit(&mut cx)
            .unwrap()
            .consume(len, |b| b.copy_from_slice(&f));
        let tx = sim
            .log()
            .iter()
            .filter(|op| matches!(op, Op::W(TX_DATA_FIFO, _)))
            .count();
        assert_eq!(tx, 2 + len.div_ceil(4));
        assert_eq!(sim.st().tx_frames.last().unwrap().1, f);
    }
    assert_eq!(
        sim.st().tx_state,
        TxState::A,
        "the FIFO is at a frame boundary"
    );
}

#[test]
fn transmit_pops_tx_status_and_counts_errors() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    d.transmit(&mut cx).unwrap().consume(60, |b| b.fill(1));
    d.transmit(&mut cx).unwrap().consume(60, |b| b.fill(2));
    assert_eq!(
        sim.st().tx_status.len(),
        1,
        "the second transmit popped the first status"
    );
    sim.st().tx_status.push_back(TX_STS_ERROR);
    assert!(d.transmit(&mut cx).is_some());
    assert!(sim.st().tx_status.is_empty());
    assert_eq!(d.stats().tx_errors, 1);
}

#[test]
fn transmit_waits_for_fifo_space() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (count, w) = waker();
    let mut cx = Context::from_waker(&w);
    sim.st().tx_free = 1000;
    assert!(d.transmit(&mut cx).is_none());
    assert_eq!(count.0.load(Ordering::SeqCst), 1, "asks to be polled again");
    sim.st().tx_free = 1524;
    assert!(d.transmit(&mut cx).is_some());
}

#[test]
fn receive_drops_the_four_fcs_bytes() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let f = frame(60, 9);
    sim.inject(&f, RX_STS_BROADCAST);
    let (rx, _tx) = d.receive(&mut cx).expect("a frame");
    let got = rx.consume(|b| b.to_vec());
    assert_eq!(got, f);
    let s = sim.st();
    assert!(s.rx_data.is_empty(), "all 16 words (60 + 4 FCS) read");
    assert_eq!(s.empty_reads, 0);
}

#[test]
fn receive_every_length_and_alignment() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    for len in (14..=80).chain([1500, 1514, 1518]) {
        let f = frame(len, len as u8);
        sim.inject(&f, 0);
        let (rx, _) = d.receive(&mut cx).unwrap();
        assert_eq!(rx.consume(|b| b.to_vec()), f, "length {len}");
    }
    assert!(d.receive(&mut cx).is_none());
    assert_eq!(sim.st().empty_reads, 0);
    assert_eq!(d.stats().rx_frames, 70);
}

#[test]
fn receive_drops_bad_frames_and_keeps_the_fifo_in_step() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    sim.inject(&frame(60, 1), RX_STS_FILTER_FAIL);
    sim.inject(&frame(70, 2), RX_STS_ERROR);
    sim.inject(&frame(1600, 3), 0); // longer than the frame buffer
    sim.inject(&frame(10, 4), 0); // runt: shorter than a header
    let good = frame(99, 5);
    sim.inject(&good, 0);
    let (rx, _) = d.receive(&mut cx).unwrap();
    assert_eq!(rx.consume(|b| b.to_vec()), good);
    assert_eq!(d.stats().rx_dropped, 4);
    assert_eq!(d.stats().rx_frames, 1);
    let s = sim.st();
    assert!(s.rx_data.is_empty() && s.rx_status.is_empty());
    assert_eq!(s.empty_reads, 0);
}

#[test]
fn receive_on_an_empty_fifo_reads_no_fifo() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (count, w) = waker();
    let mut cx = Context::from_waker(&w);
    assert!(d.receive(&mut cx).is_none());
    let log = sim.log();
    assert!(
        !log.iter()
            .any(|op| matches!(op, Op::R(RX_STATUS_FIFO, _) | Op::R(0x00..=0x1c, _))),
        "{log:?}"
    );
    assert_eq!(sim.st().empty_reads, 0);
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "polling mode: asks to be polled again"
    );
}

#[test]
fn interrupt_mode_sleeps_and_wakes() {
    static IRQ: Lan9118Irq = Lan9118Irq::new();
    let sim = Sim::new();
    let mut d = Lan9118::new(&sim, Config::new(), Some(&IRQ)).unwrap();
    let (count, w) = waker();
    let mut cx = Context::from_waker(&w);
    assert!(!sim.irq_line());
    assert!(d.receive(&mut cx).is_none());
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "sleeps: no self-wake");
    assert_eq!(sim.st().int_en, INT_RSFL | INT_PHY);
    assert!(!sim.irq_line(), "nothing pending, line low");

    // A frame arrives: the line rises, the handler masks it and wakes.
    let f = frame(64, 7);
    sim.inject(&f, 0);
    assert!(sim.irq_line());
    on_interrupt(&&sim, &IRQ);
    assert!(!sim.irq_line(), "the handler drops the line");
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    let (rx, _) = d.receive(&mut cx).unwrap();
    assert_eq!(rx.consume(|b| b.to_vec()), f);
    assert_eq!(sim.st().int_en, 0, "still masked while frames are handled");
    assert!(d.receive(&mut cx).is_none());
    assert_eq!(sim.st().int_en, INT_RSFL | INT_PHY, "re-armed once drained");
    assert_eq!(
        sim.st().int_sts & INT_RSFL,
        0,
        "stale status cleared before re-arming"
    );
}

#[test]
fn a_frame_racing_the_rearm_is_not_lost() {
    // The frame lands after the FIFO was found empty but before INT_EN is
    // written: the second check after arming must find it.
    struct Racy<'a>(&'a Sim, std::cell::Cell<bool>);
    impl Registers for Racy<'_> {
        fn read(&self, o: u32) -> u32 {
            self.0.read(o)
        }
        fn write(&self, o: u32, v: u32) {
            if o == INT_EN && v != 0 && !self.1.replace(true) {
                self.0.inject(&frame(50, 1), 0);
            }
            self.0.write(o, v)
        }
    }
    static IRQ: Lan9118Irq = Lan9118Irq::new();
    let sim = Sim::new();
    let racy = Racy(&sim, std::cell::Cell::new(false));
    let mut d = Lan9118::new(&racy, Config::new(), Some(&IRQ)).unwrap();
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let (rx, _) = d.receive(&mut cx).expect("found on the second check");
    assert_eq!(rx.consume(|b| b.len()), 50);
}

#[test]
fn link_follows_the_phy_and_sets_duplex() {
    let sim = Sim::new();
    let mut d = up(&sim);
    let (count, w) = waker();
    let mut cx = Context::from_waker(&w);
    assert!(d.link_state(&mut cx) == LinkState::Up);
    assert_eq!(sim.st().mac_cr & MAC_CR_FDPX, MAC_CR_FDPX);
    sim.log();
    // Up and nothing raised: one register read.
    assert!(d.link_state(&mut cx) == LinkState::Up);
    assert_eq!(sim.log(), vec![Op::R(INT_STS, 0)]);

    // Cable out: the PHY raises link-down.
    {
        let mut s = sim.st();
        s.bsr &= !BSR_LINK;
        s.isr |= PHY_INT_LINK_DOWN;
    }
    assert!(d.link_state(&mut cx) == LinkState::Down);
    assert_eq!(sim.st().isr, 0, "the PHY's interrupt source was read");
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        1,
        "polling mode: poll again"
    );

    // Back up against a half-duplex-only partner: FDPX off.
    {
        let mut s = sim.st();
        s.partner = 0x00a1; // 100 half, 10 half
        s.bsr |= BSR_LINK;
        s.isr |= PHY_INT_AN_COMPLETE;
    }
    assert!(d.link_state(&mut cx) == LinkState::Up);
    assert_eq!(sim.st().mac_cr, MAC_CR_TXEN | MAC_CR_RXEN);
}

#[test]
fn capabilities_are_ethernet_sized() {
    let sim = Sim::new();
    let d = up(&sim);
    let caps = embassy_net_driver::Driver::capabilities(&d);
    assert_eq!(caps.max_transmission_unit, 1514);
}
