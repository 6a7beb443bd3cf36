//! The TLS suite (`tls_suite/`) against the tokio server, on two workers.

use peng3dnet_std::server::Runtime;

/// The server the suite runs against.
const RUNTIME: Runtime = Runtime::Tokio { workers: 2 };

mod tls_suite;
