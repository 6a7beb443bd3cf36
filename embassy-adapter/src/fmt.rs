//! Logging through `defmt` or `log`, chosen by a feature; nothing by default.

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("choose one of the features `defmt` and `log`");

macro_rules! debug {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        defmt::debug!($($arg)*);
        #[cfg(feature = "log")]
        log::debug!($($arg)*);
        #[cfg(not(any(feature = "defmt", feature = "log")))]
        {
            let _ = ($($arg)*);
        }
    }};
}

pub(crate) use debug;
