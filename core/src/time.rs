//! Time as a value: the core never reads a clock.
//!
//! Adapters convert from their clock (`std::time::Instant`, `embassy_time::Instant`)
//! into [`Instant`], a count of microseconds since an origin the adapter chooses,
//! and pass it into every call that can start or check a timer.

use core::fmt;
use core::ops::{Add, Sub};

/// A point in time, in microseconds since an origin chosen by the adapter.
///
/// Only differences between instants of one connection mean anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Instant {
    micros: u64,
}

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// An instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }

    /// An instant `millis` milliseconds after the origin (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis.saturating_mul(1000),
        }
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// Seconds since the origin as a float, as the Python reference puts into
    /// its ping requests: the nearest `f64` to `micros / 1e6` (the value of
    /// `micros as f64 / 1e6` for any instant below 2^53 us, 285 years).
    ///
    /// Computed with integer operations only, so that a client's ping costs
    /// a board without a double-precision FPU no soft-float division or
    /// conversion routines (about 1 KB of flash on a Cortex-M4F).
    pub const fn as_secs_f64(self) -> f64 {
        f64::from_bits(secs_f64_bits(self.micros))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration {
            micros: self.micros.saturating_sub(earlier.micros),
        }
    }
}

/// `secs` as an `f64`, built from its bits (exact below 2^53; every `u64`
/// of seconds from microseconds, at most 2^45, is): no conversion routine on
/// a board without a double-precision FPU.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub(crate) const fn whole_secs_f64(secs: u64) -> f64 {
    if secs == 0 {
        return 0.0;
    }
    let zeros = secs.leading_zeros() as u64;
    // The top bit moved to bit 52 (nothing is lost below 2^53), where it
    // adds the one that the biased exponent 1023 + (63 - zeros) is short of.
    let significand = (secs << zeros) >> 11;
    f64::from_bits(((1022 + 63 - zeros) << 52) + significand)
}

/// The bits of the `f64` nearest to `micros / 1e6`, rounded to nearest, ties
/// to even: a long division by 10^6 to 55 significant bits (the 53 of the
/// significand, a round bit and a sticky bit), the remainder kept as sticky.
const fn secs_f64_bits(micros: u64) -> u64 {
    const PER_SEC: u64 = 1_000_000;
    const TOP: u64 = 1 << 54;
    if micros == 0 {
        return 0;
    }
    // q / 2^k is micros / 10^6 truncated; r the remainder (scaled alike).
    // q starts below 2^44 (u64::MAX / 10^6), so the loop always shifts in
    // at least 11 bits and at most 74 (micros = 1).
    let mut q = micros / PER_SEC;
    let mut r = micros % PER_SEC;
    let mut k: u64 = 0;
    while q < TOP {
        r <<= 1;
        q <<= 1;
        if r >= PER_SEC {
            r -= PER_SEC;
            q |= 1;
        }
        k += 1;
    }
    // q is in [2^54, 2^55): value = (q / 2^54) * 2^(54 - k).
    let mut significand = q >> 2;
    let mut exponent = 54 - k as i64;
    let round = q & 2 != 0;
    let sticky = q & 1 != 0 || r != 0;
    if round && (sticky || significand & 1 != 0) {
        significand += 1;
        if significand == 1 << 53 {
            significand >>= 1;
            exponent += 1;
        }
    }
    // The exponent is between -20 (1 us) and 44: always a normal number.
    (((exponent + 1023) as u64) << 52) | (significand & ((1 << 52) - 1))
}

/// An optional [`Instant`] in one word (a connection keeps two): the far
/// future (`u64::MAX` microseconds, where `Instant + Duration` saturates and
/// which no timer reaches) stands for none.
/// Ordered as instants with none last, so that `min` is the earliest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MaybeInstant(u64);

impl MaybeInstant {
    /// No instant.
    pub(crate) const NONE: MaybeInstant = MaybeInstant(u64::MAX);

    /// `at`, or none if `at` is the far future.
    pub(crate) const fn new(at: Instant) -> Self {
        MaybeInstant(at.micros)
    }

    /// `at`, or none.
    pub(crate) fn from_option(at: Option<Instant>) -> Self {
        at.map_or(Self::NONE, Self::new)
    }

    /// The instant, if any.
    pub(crate) const fn get(self) -> Option<Instant> {
        if self.0 == u64::MAX {
            None
        } else {
            Some(Instant { micros: self.0 })
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at the far future instead of overflowing.
    // Out of line on bare metal: a 64-bit saturating add is a dozen
    // instructions on a 32-bit core, inlined at every timer.
    #[cfg_attr(target_os = "none", inline(never))]
    fn add(self, rhs: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_add(rhs.micros),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

/// A span of time in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Duration {
    micros: u64,
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { micros: 0 };

    /// Forever: a timer set this long never fires (it turns a timeout off).
    pub const MAX: Duration = Duration { micros: u64::MAX };

    /// `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Self {
        Duration { micros }
    }

    /// `millis` milliseconds (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Duration {
            micros: millis.saturating_mul(1000),
        }
    }

    /// `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            micros: secs.saturating_mul(1_000_000),
        }
    }

    /// The span in microseconds.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }

    /// The span in milliseconds, rounded down.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1000
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.micros < 1000 {
            write!(f, "{}us", self.micros)
        } else {
            write!(f, "{}.{:03}ms", self.micros / 1000, self.micros % 1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Instant;

    fn by_float(micros: u64) -> f64 {
        micros as f64 / 1e6
    }

    #[test]
    fn whole_secs_are_exact() {
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        for s in [0, 1, 2, 3, 1 << 52, (1 << 53) - 1, u64::MAX / 1_000_000] {
            assert_eq!(
                super::whole_secs_f64(s).to_bits(),
                (s as f64).to_bits(),
                "{s}"
            );
        }
        for i in 0..100_000u32 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let s = (x >> 11) >> (i % 53);
            assert_eq!(
                super::whole_secs_f64(s).to_bits(),
                (s as f64).to_bits(),
                "{s}"
            );
        }
    }

    #[test]
    fn secs_f64_matches_float_division() {
        let edges = [
            0,
            1,
            2,
            499_999,
            500_000,
            999_999,
            1_000_000,
            1_000_001,
            1_500_000,
            86_400_000_000,
            1_764_000_000_123_456, // a Unix time in microseconds
            (1 << 53) - 1,
        ];
        for m in edges {
            let got = Instant::from_micros(m).as_secs_f64();
            assert_eq!(got.to_bits(), by_float(m).to_bits(), "{m} us");
        }
        // Pseudo-random instants of every magnitude (a fixed LCG: the same
        // values every run), 200,000 of them.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..200_000u32 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let m = (x >> 11) >> (i % 53);
            let got = Instant::from_micros(m).as_secs_f64();
            assert_eq!(got.to_bits(), by_float(m).to_bits(), "{m} us");
        }
    }

    /// Whether `got` is within half an ulp of `micros / 10^6` (exact, in
    /// integers: for these values `got` = significand / 2^shift).
    fn is_nearest(micros: u64, got: f64) -> bool {
        let bits = got.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023 - 52;
        let significand = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
        assert!((-60..0).contains(&exponent), "{got}");
        let shift = (-exponent) as u32;
        let scaled = u128::from(micros) << shift; // micros * 2^shift
        let mine = significand * 1_000_000;
        scaled.abs_diff(mine) <= 500_000
    }

    #[test]
    fn secs_f64_is_nearest_above_2_pow_53() {
        // Where `micros as f64` already rounds (so the float division may
        // round twice), the integer route is still the nearest value.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for m in [1 << 53, (1 << 53) + 1, u64::MAX / 3, u64::MAX - 1, u64::MAX] {
            assert!(
                is_nearest(m, Instant::from_micros(m).as_secs_f64()),
                "{m} us"
            );
        }
        for _ in 0..100_000u32 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let m = x | (1 << 53);
            assert!(
                is_nearest(m, Instant::from_micros(m).as_secs_f64()),
                "{m} us"
            );
        }
        // And the check itself can fail: one ulp off is not nearest.
        let m = u64::MAX / 3;
        let off = f64::from_bits(Instant::from_micros(m).as_secs_f64().to_bits() + 1);
        assert!(!is_nearest(m, off));
    }
}
