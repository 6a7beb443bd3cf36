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
    /// its ping requests.
    pub fn as_secs_f64(self) -> f64 {
        self.micros as f64 / 1e6
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration {
            micros: self.micros.saturating_sub(earlier.micros),
        }
    }
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
