//! The server suite (`server_suite/`) against the mio server.

use peng3dnet_std::server::Runtime;

/// The server the suite runs against.
const RUNTIME: Runtime = Runtime::Mio;

mod server_suite;
