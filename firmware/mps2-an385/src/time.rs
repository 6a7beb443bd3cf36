//! An `embassy-time` driver on the board's two CMSDK APB timers (25 MHz
//! PCLK):
//!
//! * TIMER1 (`0x4000_1000`, interrupt 9) counts down freely from
//!   `0xFFFF_FFFF`; its interrupt counts the wraps (one per 171.8 s). `now()`
//!   is the wrap count and the counter, in microseconds (embassy-time's
//!   default tick rate of 1 MHz).
//! * TIMER0 (`0x4000_0000`, interrupt 8) is a one-shot alarm set to the
//!   earliest timer of the queue (the executor's integrated timer queue).
//!
//! Time comes from the counter, never from counting periodic interrupts: a
//! first version counted 1 ms SysTick interrupts and ran 23 % slow under
//! QEMU, which drops ticks it delivers late.

use core::cell::RefCell;
use core::task::Waker;
use cortex_m::peripheral::NVIC;
use critical_section::{CriticalSection, Mutex};
use embassy_time_queue_utils::Queue;

/// PCLK of the AN385 image (and QEMU's model of it).
pub const PCLK_HZ: u64 = 25_000_000;
const TICKS_PER_US: u64 = PCLK_HZ / 1_000_000;

/// TIMER0: the alarm.
pub const ALARM_IRQ: u16 = 8;
/// TIMER1: the free-running counter.
pub const COUNTER_IRQ: u16 = 9;

const TIMER0: usize = 0x4000_0000;
const TIMER1: usize = 0x4000_1000;
const CTRL: usize = 0x0;
const VALUE: usize = 0x4;
const RELOAD: usize = 0x8;
const INTSTATUS: usize = 0xc;
const CTRL_EN: u32 = 1 << 0;
const CTRL_IRQEN: u32 = 1 << 3;

fn read(timer: usize, reg: usize) -> u32 {
    // SAFETY: the CMSDK timers' registers on this board.
    unsafe { core::ptr::read_volatile((timer + reg) as *const u32) }
}

fn write(timer: usize, reg: usize, value: u32) {
    // SAFETY: as in `read`; only this module drives the two timers.
    unsafe { core::ptr::write_volatile((timer + reg) as *mut u32, value) }
}

#[derive(Clone, Copy)]
struct Irq(u16);
// SAFETY: 8 and 9 are the timers' interrupt lines on this board.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

struct State {
    wraps: u64,
    last: u64,
    queue: Queue,
}

struct TimerDriver {
    state: Mutex<RefCell<State>>,
}

impl TimerDriver {
    /// Microseconds since `init`, with interrupts off.
    fn now_locked(&self, cs: CriticalSection<'_>) -> u64 {
        let mut s = self.state.borrow_ref_mut(cs);
        let mut wraps = s.wraps;
        let mut value = read(TIMER1, VALUE);
        // The counter reaches 0, holds there for one tick and reloads; the
        // interrupt (which counts the wrap) is raised on reaching 0.
        let elapsed = if read(TIMER1, INTSTATUS) & 1 != 0 {
            // Wrapped, not yet counted: read again, after the wrap.
            value = read(TIMER1, VALUE);
            wraps += 1;
            0u32.wrapping_sub(value)
        } else if value == 0 {
            // At the end of the period, the interrupt not raised yet.
            u32::MAX
        } else {
            0u32.wrapping_sub(value)
        };
        let ticks = (wraps << 32) | u64::from(elapsed);
        let now = (ticks / TICKS_PER_US).max(s.last);
        s.last = now;
        now
    }

    /// Sets TIMER0 to fire at `at` (never, for `u64::MAX`).
    fn arm(&self, at: u64, now: u64) {
        write(TIMER0, CTRL, 0);
        write(TIMER0, INTSTATUS, 1);
        if at == u64::MAX {
            return;
        }
        let ticks = at
            .saturating_sub(now)
            .saturating_mul(TICKS_PER_US)
            .clamp(1, u64::from(u32::MAX)) as u32;
        write(TIMER0, RELOAD, ticks); // also sets VALUE
        write(TIMER0, CTRL, CTRL_EN | CTRL_IRQEN);
    }

    /// Wakes what expired and sets the alarm to the next timer.
    fn run_queue(&self, cs: CriticalSection<'_>) {
        let now = self.now_locked(cs);
        let next = self.state.borrow_ref_mut(cs).queue.next_expiration(now);
        self.arm(next, now);
    }
}

impl embassy_time_driver::Driver for TimerDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now_locked(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let changed = self.state.borrow_ref_mut(cs).queue.schedule_wake(at, waker);
            if changed {
                self.run_queue(cs);
            }
        })
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: TimerDriver = TimerDriver {
    state: Mutex::new(RefCell::new(State {
        wraps: 0,
        last: 0,
        queue: Queue::new(),
    })),
});

/// Starts the counter and enables both timers' interrupts (call once,
/// before the executor runs).
pub fn init() {
    write(TIMER0, CTRL, 0);
    write(TIMER0, INTSTATUS, 1);
    write(TIMER1, CTRL, 0);
    write(TIMER1, INTSTATUS, 1);
    write(TIMER1, RELOAD, u32::MAX); // also sets VALUE
    write(TIMER1, CTRL, CTRL_EN | CTRL_IRQEN);
    for irq in [ALARM_IRQ, COUNTER_IRQ] {
        NVIC::unpend(Irq(irq));
        // SAFETY: the handlers below only touch the driver's state inside a
        // critical section.
        unsafe { NVIC::unmask(Irq(irq)) };
    }
}

/// TIMER0's interrupt: the alarm.
pub(crate) fn on_alarm() {
    critical_section::with(|cs| {
        write(TIMER0, CTRL, 0);
        write(TIMER0, INTSTATUS, 1);
        DRIVER.run_queue(cs);
    });
}

/// TIMER1's interrupt: one more wrap of the counter.
pub(crate) fn on_wrap() {
    critical_section::with(|cs| {
        if read(TIMER1, INTSTATUS) & 1 != 0 {
            write(TIMER1, INTSTATUS, 1);
            DRIVER.state.borrow_ref_mut(cs).wraps += 1;
        }
    });
}
