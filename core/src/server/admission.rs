//! Admission beyond the slot count: a bound on clients from one address and
//! on accepts per second (a token bucket), so that one peer cannot take
//! every slot and a flood of new connections (each a handshake, a TLS one
//! perhaps) cannot take the server's time.

use crate::time::{Duration, Instant};

/// A token bucket of accepts: `burst` tokens, refilled at `rate` a second.
/// Tokens are counted in millionths, so that the refill is exact in
/// microseconds.
#[derive(Clone, Copy, Debug)]
pub(super) struct AcceptBucket {
    /// Millionths of a token held.
    micro_tokens: u64,
    /// When it was last refilled.
    at: Instant,
}

/// One token in millionths.
const TOKEN: u64 = 1_000_000;

impl AcceptBucket {
    /// A full bucket of `burst` tokens.
    pub(super) const fn full(burst: u32) -> Self {
        AcceptBucket {
            micro_tokens: burst as u64 * TOKEN,
            at: Instant::ZERO,
        }
    }

    /// Refills it up to `now`, at `rate` tokens a second, to at most
    /// `burst`.
    fn refill(&mut self, now: Instant, rate: u32, burst: u32) {
        let elapsed: Duration = now - self.at;
        self.at = self.at.max(now);
        let gained = elapsed.as_micros().saturating_mul(rate as u64);
        self.micro_tokens = self
            .micro_tokens
            .saturating_add(gained)
            .min(burst as u64 * TOKEN);
    }

    /// Whether an accept may happen at `now` (`rate` 0: always).
    pub(super) fn allows(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        self.refill(now, rate, burst);
        self.micro_tokens >= TOKEN
    }

    /// An accept happened: one token less.
    pub(super) fn take(&mut self, rate: u32) {
        if rate != 0 {
            self.micro_tokens = self.micro_tokens.saturating_sub(TOKEN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = AcceptBucket::full(3);
        let t0 = Instant::from_millis(1_000);
        for _ in 0..3 {
            assert!(b.allows(t0, 10, 3));
            b.take(10);
        }
        assert!(!b.allows(t0, 10, 3), "the burst is spent");
        // 10 a second: one more after 100 ms, not before.
        assert!(!b.allows(Instant::from_millis(1_099), 10, 3));
        assert!(b.allows(Instant::from_millis(1_100), 10, 3));
        b.take(10);
        // A long pause refills to the burst, no more.
        let later = Instant::from_millis(60_000);
        let mut n = 0;
        while b.allows(later, 10, 3) && n < 10 {
            b.take(10);
            n += 1;
        }
        assert_eq!(n, 3);
        // Rate 0: no bound.
        assert!(AcceptBucket::full(0).allows(later, 0, 0));
    }
}
