//! Helpers for testing your own handlers and clients (feature `test-util`,
//! off by default; enable it in your `[dev-dependencies]`).
//!
//! - [`spawn_server`]: the mio [`Server`](crate::server::Server) you built,
//!   bound to `127.0.0.1:0` and running on a thread of its own. The
//!   [`RunningServer`] it returns is the guard: its
//!   [`local_addr`](RunningServer::local_addr) is where to connect, and
//!   dropping it shuts the server down and waits for its thread.
//! - [`stream_pair`] (Unix): a client and a server connection over an
//!   in-memory socket pair, no TCP and no port: the server side is a core
//!   server connection you drive yourself (answer, refuse, close, stay
//!   silent), for testing a client against a scripted peer.
//! - The clients' `expect::<P>(timeout)`
//!   ([blocking](crate::client::Client::expect),
//!   [tokio](crate::tokio_client::ClientReceiver::expect)) waits for one
//!   packet type and names what came instead.
//!
//! ```
//! use peng3dnet_core::registry::Packet;
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_std::client::{Client, ClientOptions};
//! use peng3dnet_std::server::Server;
//! use peng3dnet_std::test_util::spawn_server;
//! use peng3dnet_std::StdRegistry;
//! use std::time::Duration;
//!
//! /// The packet under test: the server answers it with the text reversed.
//! struct Reverse;
//! impl Packet for Reverse {
//!     const NAME: &'static str = "test:reverse";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! let mut registry = StdRegistry::new();
//! registry.register::<Reverse>()?;
//! let server = spawn_server(Server::builder(registry.clone()).on::<Reverse>(|ctx, text| {
//!     let reversed: String = text.chars().rev().collect();
//!     let _ = ctx.send::<Reverse>(&reversed.as_str());
//! }))?;
//!
//! let t = Duration::from_secs(5);
//! let mut client = Client::connect(server.local_addr(), registry, ClientOptions::default())?;
//! client.wait_connected(t)?;
//! client.send::<Reverse>(&"abc")?;
//! assert_eq!(client.expect::<Reverse>(t)?.decode::<Reverse>()?, "cba");
//! // Dropping `server` shuts it down.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::server::{RunningServer, ServerBuilder};
use peng3dnet_core::codec::Codec;
use std::io;

/// Binds the server `builder` describes to `127.0.0.1:0` (a port the
/// system chooses) and runs it on a thread of its own; see the
/// [module docs](self).
///
/// # Errors
/// What binding or starting the thread gave.
pub fn spawn_server<C: Codec + Send + 'static>(
    builder: ServerBuilder<C>,
) -> io::Result<RunningServer<C>> {
    builder.bind("127.0.0.1:0")?.spawn()
}

#[cfg(unix)]
pub use unix::stream_pair;

#[cfg(unix)]
mod unix {
    use crate::client::ClientError;
    use crate::stream::{StreamConnection, StreamOptions};
    use crate::StdRegistry;
    use peng3dnet_core::codec::Postcard;
    use std::os::unix::net::UnixStream;

    /// A client and a server connection (in that order), with the native
    /// codec, over the two ends of a [`UnixStream::pair`]: in memory, no
    /// TCP, no port. The server has queued `hello`; the handshake runs as
    /// the two are driven, each in its own thread (every call of a
    /// [`StreamConnection`] blocks until its peer answers). Both get
    /// `registry` and `options`.
    ///
    /// ```
    /// use peng3dnet_core::CloseReason;
    /// use peng3dnet_std::client::ClientEvent;
    /// use peng3dnet_std::echo::{self, Echo};
    /// use peng3dnet_std::stream::StreamOptions;
    /// use peng3dnet_std::test_util::stream_pair;
    /// use std::time::Duration;
    ///
    /// let t = Duration::from_secs(5);
    /// let (mut client, mut server) = stream_pair(echo::registry(), StreamOptions::default())?;
    /// // A scripted server: answer the first echo with a close.
    /// let server = std::thread::spawn(move || -> Result<(), peng3dnet_std::client::ClientError> {
    ///     server.expect::<Echo>(t)?;
    ///     server.close(CloseReason::ServerFull)
    /// });
    /// client.wait_connected(t)?;
    /// client.send::<Echo>(&"hello")?;
    /// loop {
    ///     if let ClientEvent::Closed(closed) = client.recv(t)? {
    ///         assert_eq!(closed.reason, CloseReason::ServerFull);
    ///         break;
    ///     }
    /// }
    /// server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// What creating the socket pair gave, as [`ClientError::Io`];
    /// [`ClientError::Setup`] for options a connection refuses.
    #[allow(clippy::type_complexity)]
    pub fn stream_pair(
        registry: StdRegistry,
        options: StreamOptions,
    ) -> Result<
        (
            StreamConnection<UnixStream, Postcard>,
            StreamConnection<UnixStream, Postcard>,
        ),
        ClientError,
    > {
        let (a, b) = UnixStream::pair()?;
        let server = StreamConnection::server(b, registry.clone(), Postcard, options.clone())?;
        let client = StreamConnection::client(a, registry, Postcard, options)?;
        Ok((client, server))
    }
}
