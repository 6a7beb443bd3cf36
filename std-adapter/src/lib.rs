//! peng3dnet on std (work in progress).
use peng3dnet_core::registry::Registry;

pub mod buffer;
pub mod client;
pub mod echo;
pub mod ping;
pub mod server;
pub mod tls;
mod transport;

/// Registry capacity of the std adapter (internal packets included).
pub const REGISTRY_CAPACITY: usize = 256;

/// The registry type of the std adapter.
pub type StdRegistry = Registry<REGISTRY_CAPACITY>;

/// The core's clock on std: monotonic, with its origin at the Unix epoch, so
/// that a ping request carries wall-clock seconds as the reference's do.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: std::time::Instant,
    origin_micros: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let origin_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Clock {
            start: std::time::Instant::now(),
            origin_micros,
        }
    }

    pub(crate) fn now(&self) -> peng3dnet_core::time::Instant {
        peng3dnet_core::time::Instant::from_micros(
            self.origin_micros + self.start.elapsed().as_micros() as u64,
        )
    }
}
