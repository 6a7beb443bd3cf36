//! The packets of `peng3dnet serve`'s echo service (`peng3dnet_std::echo`),
//! from `peng3dnet-echo`, which the host program uses too: its registry is
//! exactly `echo:echo` (id 64) and `echo:ping` (id 65).

use peng3dnet_core::registry::{Packet, Registry, RegistryError};
use peng3dnet_core::rules::Rules;
use peng3dnet_core::SecurityLevel;

/// Registry capacity: the 5 internal packets and the 2 echo packets, plus one spare.
pub const REGISTRY: usize = 8;

pub use peng3dnet_echo::{Echo, EchoPing, EchoPingMsg};

/// `echo:ping` as the *client firmware* registers it: the same name (so the
/// handshake's registry sync, which compares names, passes against the
/// unmodified `peng3dnet serve`), with a stricter local rule: it may only be
/// sent over TLS with a verified server (`min_security(ServerAuth)`, checked
/// on send only). On this plain-TCP connection every send of it is refused
/// before the wire; the server's answers of the same name would still be
/// received.
pub struct SecureEchoPing;
impl Packet for SecureEchoPing {
    const NAME: &'static str = "echo:ping";
    const RULES: Rules = Rules::SMART.min_security(SecurityLevel::ServerAuth);
    type Message<'a> = EchoPingMsg;
}

/// The server's registry: `echo:echo` (64), `echo:ping` (65), as
/// `peng3dnet serve`'s ([`peng3dnet_echo::registry`]).
pub fn server_registry() -> Result<Registry<REGISTRY>, RegistryError> {
    peng3dnet_echo::registry()
}

/// The client firmware's registry: the same names, `echo:ping` with the
/// TLS-only rule of [`SecureEchoPing`].
pub fn client_registry() -> Result<Registry<REGISTRY>, RegistryError> {
    let mut reg = Registry::new();
    reg.register::<Echo>()?;
    reg.register::<SecureEchoPing>()?;
    Ok(reg)
}
