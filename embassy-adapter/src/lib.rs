//! # peng3dnet-embassy
//!
//! peng3dnet for microcontrollers on [embassy](https://embassy.dev):
//! `#![no_std]`, no heap, every buffer sized at compile time. A [`Session`]
//! drives one connection of the core over an `embassy-net` TCP socket's
//! halves ([`Session::run_io`], in place) or any `embedded_io_async` reader
//! and writer ([`Session::run`]: a TLS session, a UART, a test pipe); the
//! [`server`] serves `N` clients at once.
//!
//! ```
//! use embassy_sync::blocking_mutex::raw::NoopRawMutex;
//! use embassy_sync::pipe::Pipe;
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::connection::Config;
//! use peng3dnet_core::registry::Registry;
//! use peng3dnet_core::CloseReason;
//! use peng3dnet_embassy::{Resources, Session};
//!
//! # embassy_futures::block_on(async {
//! // Two pipes make an in-memory link; a real board uses a TcpSocket's halves.
//! let (up, down) = (Pipe::<NoopRawMutex, 512>::new(), Pipe::<NoopRawMutex, 512>::new());
//! let config = Config::new();
//! let server_registry = Registry::<8>::new();
//! let mut client_registry = Registry::<8>::new();
//! let mut server_res = Resources::<512, 512>::new();
//! let mut client_res = Resources::<512, 512>::new();
//! let server: Session<NoopRawMutex, _, 8, _> =
//!     Session::server(&config, &server_registry, Postcard, &mut server_res).unwrap();
//! let client: Session<NoopRawMutex, _, 8, _> =
//!     Session::client(&config, &mut client_registry, Postcard, &mut client_res, "classic").unwrap();
//!
//! let app = async {
//!     client.wait_connected().await.unwrap();
//!     client.close(CloseReason::UserRequest);
//! };
//! let (_, s, c) = embassy_futures::join::join3(
//!     app,
//!     server.run(&up, &down),
//!     client.run(&down, &up),
//! )
//! .await;
//! assert_eq!(s.unwrap().reason, CloseReason::UserRequest);
//! assert_eq!(c.unwrap().reason, CloseReason::UserRequest);
//! # });
//! ```
//!
//! A session's futures may run in different tasks at once (a receiver and a
//! sender, say); all are cancel-safe (see [`session`]).
//!
//! ## Memory
//!
//! Every buffer is the caller's and sized at compile time; nothing is copied
//! twice where it can be avoided:
//! - [`Session::run`] takes any reader and writer and copies through two
//!   [`CHUNK`]-byte buffers; [`Session::run_io`] with an `embassy-net`
//!   socket's `TcpReader` and `TcpWriter` ([`Input`], [`Output`]) moves bytes
//!   straight between the socket's buffers and the connection's.
//! - [`Session::receive`] copies a packet into the caller's buffer;
//!   [`Session::receive_with`] lends it where it lies, with the connection's
//!   outbox to answer through.
//! - The [`server`]'s handler answers in place
//!   ([`Handler::on_packet_in_place`]) or defers to an async
//!   [`Handler::on_packet`], which gets a copy in a per-slot buffer whose size
//!   is a parameter of [`ServerResources`] (0 when nothing is deferred).
//!
//! ## Testing your handlers
//!
//! The feature `test-util` adds `test_util`: two `embassy-net` stacks on
//! an in-memory link (`test_util::with_link`), so that a host test runs
//! the N-slot [`Server`] with your own [`Handler`] and client [`Session`]s
//! against it on embassy's std executor (`embassy-executor` with
//! `platform-std`), the same `no_std`, heap-free code as on the board
//! (`tests/user_handler.rs` is the example).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

mod fmt;
pub mod io;
pub mod server;
pub mod session;
#[cfg(feature = "test-util")]
pub mod test_util;
#[cfg(feature = "tls")]
pub mod tls;

pub use io::{Input, Output};
pub use server::{Ctx, Handler, Server, ServerOptions, ServerResources};
pub use session::{ReceiveError, Resources, RunError, Session, CHUNK};
