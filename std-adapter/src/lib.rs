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

/// The core's time since `start`.
pub(crate) fn instant_since(start: std::time::Instant) -> peng3dnet_core::time::Instant {
    peng3dnet_core::time::Instant::from_micros(start.elapsed().as_micros() as u64)
}
