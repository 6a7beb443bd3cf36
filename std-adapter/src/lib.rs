//! # peng3dnet-std
//!
//! peng3dnet on std: TCP servers for thousands of clients, on tokio
//! ([tokio_server]: tasks on every worker, sync and async handlers) or on one
//! mio event loop ([server]), with one builder for both; an async
//! [tokio client](tokio_client) and a blocking [client], a blocking driver of one connection
//! over any byte stream ([stream]: a socket pair, a serial port),
//! [TLS](tls) with rustls, [ping], and the `peng3dnet` program. The protocol itself is
//! [`peng3dnet_core`]; this crate only moves bytes and time.
//!
//! ```
//! use peng3dnet_core::registry::Packet;
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::CloseReason;
//! use peng3dnet_std::client::{Client, ClientEvent, ClientOptions};
//! use peng3dnet_std::server::Server;
//! use peng3dnet_std::StdRegistry;
//! use std::time::Duration;
//!
//! /// A chat line: sent by clients, broadcast by the server to everyone else.
//! struct Say;
//! impl Packet for Say {
//!     const NAME: &'static str = "chat:say";
//!     const RULES: Rules = Rules::SMART;
//!     type Message<'a> = &'a str;
//! }
//!
//! let mut registry = StdRegistry::new();
//! registry.register::<Say>()?;
//! let server = Server::builder(registry.clone())
//!     .on::<Say>(|ctx, text| {
//!         let me = ctx.client_id();
//!         let _ = ctx.broadcast::<Say>(&text, &[me]);
//!     })
//!     // The server counts a client once its handshake is done on the
//!     // server's side too (a client is connected a moment earlier): only
//!     // then do broadcasts reach it. Tell it so.
//!     .on_handshake(|ctx| {
//!         let _ = ctx.send::<Say>(&"welcome");
//!     })
//!     .bind("127.0.0.1:0")?;
//! let addr = server.local_addr();
//! let running = server.spawn()?;
//!
//! let t = Duration::from_secs(5);
//! let mut alice = Client::connect(addr, registry.clone(), ClientOptions::default())?;
//! let mut bob = Client::connect(addr, registry, ClientOptions::default())?;
//! for client in [&mut alice, &mut bob] {
//!     loop {
//!         if let ClientEvent::Packet(p) = client.recv(t)? {
//!             assert_eq!(p.decode::<Say>()?, "welcome");
//!             break;
//!         }
//!     }
//! }
//! alice.send::<Say>(&"hi bob")?;
//! loop {
//!     if let ClientEvent::Packet(p) = bob.recv(t)? {
//!         assert_eq!(p.decode::<Say>()?, "hi bob");
//!         break;
//!     }
//! }
//! alice.close(CloseReason::UserRequest)?;
//! running.handle().shutdown();
//! let closed = bob.wait_closed(t)?;
//! assert_eq!(closed.reason, CloseReason::ServerShutdown);
//! running.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The program
//! `cargo run --release -p peng3dnet-std --bin peng3dnet -- demo` runs a
//! server and a client in one process and prints what happens;
//! `peng3dnet serve`, `peng3dnet ping ADDR` and `peng3dnet echo ADDR MSG...`
//! talk to real peers (`--help` on each). Its echo service is [`echo`], with
//! the packets of the `peng3dnet-echo` crate, which firmware shares.
//!
//! ## Features
//! - `cli` (default): the `peng3dnet` program, with its argument parser
//!   (`clap`) and JSON output (`serde_json`). The library needs neither:
//!   `default-features = false` leaves them out.
//! - `tokio` (default): [`tokio_client`], an async client on tokio, over
//!   TCP or any `AsyncRead + AsyncWrite` stream, and [`tokio_server`], the
//!   server on tokio.
//! - `serial` (with `cli`): serial ports (`serialport`) as streams of
//!   [`stream::StreamConnection`].
//! - `test-util`: `test_util`, helpers for testing your handlers and
//!   clients (a server on `127.0.0.1:0` with a guard, an in-memory
//!   connection pair).
use peng3dnet_core::registry::Registry;

pub mod buffer;
pub mod client;
pub mod codec;
pub mod echo;
pub mod ping;
#[cfg(feature = "tokio")]
mod poll_stream;
pub mod server;
pub mod stream;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod tls;
#[cfg(feature = "tokio")]
pub mod tokio_client;
#[cfg(feature = "tokio")]
pub mod tokio_server;
mod transport;

/// Registry capacity of the std adapter (internal packets included).
pub const REGISTRY_CAPACITY: usize = 256;

/// The registry type of the std adapter.
pub type StdRegistry = Registry<REGISTRY_CAPACITY>;

/// A std duration in the core's units (saturating).
pub(crate) fn core_duration(d: std::time::Duration) -> peng3dnet_core::time::Duration {
    peng3dnet_core::time::Duration::from_micros(d.as_micros().min(u64::MAX as u128) as u64)
}

/// An optional timeout in the core's units: `None` is off
/// ([`Duration::MAX`](peng3dnet_core::time::Duration::MAX)).
pub(crate) fn core_timeout(d: Option<std::time::Duration>) -> peng3dnet_core::time::Duration {
    d.map_or(peng3dnet_core::time::Duration::MAX, core_duration)
}

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
