//! # peng3dnet-echo
//!
//! The packets of the echo service of the `peng3dnet` program (the
//! reference's echo example), written once for both ends that speak it: the
//! host program's server and clients (`peng3dnet_std::echo`) and firmware that
//! talks to it or serves it (`firmware/`). `echo:echo` is sent back unchanged,
//! `echo:ping` is sent back with `server_timestamp` set. Registered in this
//! order ([`registry`]) they get ids 64 and 65.
//!
//! An application of the protocol, not part of it: that is why these packets
//! are not in `peng3dnet-core`. Like the core, this crate is `#![no_std]` and
//! never allocates, so a microcontroller's firmware uses it as it is.
//!
//! ```
//! use peng3dnet_core::registry::Registry;
//! use peng3dnet_echo::{Echo, EchoPing};
//!
//! let reg: Registry<8> = peng3dnet_echo::registry().unwrap();
//! assert_eq!(reg.id_of::<Echo>(), Some(64));
//! assert_eq!(reg.id_of::<EchoPing>(), Some(65));
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

use peng3dnet_core::registry::{Packet, Registry, RegistryError};
use peng3dnet_core::rules::Rules;
use serde::{Deserialize, Serialize};

/// `echo:echo`: any message; the server sends it back unchanged. The
/// program's messages are strings.
pub struct Echo;
impl Packet for Echo {
    const NAME: &'static str = "echo:echo";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = &'a str;
}

/// The message of `echo:ping` with the native codec (with MessagePack the
/// program's server takes any map).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EchoPingMsg {
    /// The client's clock when it sent the message (seconds).
    pub client_timestamp: f64,
    /// The server's clock when it answered (seconds); set by the server.
    pub server_timestamp: Option<f64>,
}

/// `echo:ping`: sent back with `server_timestamp` set.
pub struct EchoPing;
impl Packet for EchoPing {
    const NAME: &'static str = "echo:ping";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = EchoPingMsg;
}

/// A registry of capacity `N` with exactly the two echo packets: `echo:echo`
/// (id 64), then `echo:ping` (id 65), the registry of `peng3dnet serve`.
///
/// # Errors
/// [`RegistryError::Full`] when `N` has no room for both beside the five
/// internal packets (`N` < 7).
pub fn registry<const N: usize>() -> Result<Registry<N>, RegistryError> {
    let mut reg = Registry::new();
    reg.register::<Echo>()?;
    reg.register::<EchoPing>()?;
    Ok(reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programs_ids_and_too_small_a_registry() {
        let reg = registry::<7>().unwrap();
        assert_eq!(reg.by_id(64).unwrap().name, "echo:echo");
        assert_eq!(reg.by_id(65).unwrap().name, "echo:ping");
        assert_eq!(
            registry::<6>().unwrap_err(),
            RegistryError::Full { capacity: 6 }
        );
    }
}
