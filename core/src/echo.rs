//! The packets of the echo service (the reference's echo example), shared by
//! the `peng3dnet` program (`peng3dnet_std::echo`) and firmware that talks to
//! it: `echo:echo` is sent back unchanged, `echo:ping` is sent back with
//! `server_timestamp` set. Registered in this order they get ids 64 and 65.
//!
//! ```
//! use peng3dnet_core::echo::{Echo, EchoPing};
//! use peng3dnet_core::registry::Registry;
//!
//! let mut reg = Registry::<8>::new();
//! assert_eq!(reg.register::<Echo>(), Ok(64));
//! assert_eq!(reg.register::<EchoPing>(), Ok(65));
//! ```

use crate::registry::Packet;
use crate::rules::Rules;
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
