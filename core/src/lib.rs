//! # peng3dnet-core
//!
//! The protocol core of [peng3dnet](https://pypi.org/project/peng3dnet/) in Rust:
//! length-prefixed frames, a packet registry, SmartPacket rules, the
//! connection state machine (classic handshake with registry sync, the `ping`
//! connection type, custom connection types, close with reasons) and the
//! server's decisions ([`server`]). It is `#![no_std]`, never allocates, has no `unsafe`
//! and does no I/O: an adapter moves bytes and time in and events and bytes
//! out. `peng3dnet-std` (TCP, TLS) and `peng3dnet-embassy` (microcontrollers)
//! are such adapters; any other transport can be one.
//!
//! ```
//! use peng3dnet_core::codec::Postcard;
//! use peng3dnet_core::connection::{Config, Connection, Event};
//! use peng3dnet_core::registry::{Packet, Registry};
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::time::Instant;
//! use peng3dnet_core::Side;
//!
//! /// A chat line, received by the server only, once the handshake is done.
//! struct Say;
//! impl Packet for Say {
//!     const NAME: &'static str = "chat:say";
//!     const RULES: Rules = Rules::SMART.side(Side::Server);
//!     type Message<'a> = &'a str;
//! }
//!
//! let config = Config::new();
//! let mut server_reg = Registry::<8>::new();
//! server_reg.register::<Say>().unwrap();
//! let mut client_reg = server_reg.clone();
//! let now = Instant::ZERO;
//! let mut server =
//!     Connection::server(&config, &server_reg, Postcard, [0u8; 512], [0u8; 512], now).unwrap();
//! let mut client =
//!     Connection::client(&config, &mut client_reg, Postcard, [0u8; 512], [0u8; 512], "classic", now)
//!         .unwrap();
//!
//! // A "transport" that copies every queued byte across, then lets each side
//! // handle its events. Real adapters do the same with sockets.
//! let mut heard = None;
//! for round in 0..4 {
//!     let n = client.handle_input(server.poll_transmit());
//!     server.transmitted(n);
//!     while let Some(event) = client.poll(now) {
//!         if let Event::Connected = event {
//!             client.send::<Say>(&"hello, server").unwrap();
//!         }
//!     }
//!     let n = server.handle_input(client.poll_transmit());
//!     client.transmitted(n);
//!     while let Some(event) = server.poll(now) {
//!         if let Event::Packet(p) = event {
//!             heard = Some((round, p.decode::<Say>().unwrap().len()));
//!         }
//!     }
//! }
//! assert_eq!(heard, Some((1, 13)));
//! // The rules hold on send too: the server may not send what only it receives.
//! assert!(server.send::<Say>(&"no").is_err());
//! ```
//!
//! ## Modules
//! - [`buffer`]: the caller's storage: fixed arrays, or growable host buffers.
//! - [`wire`]: frames, the incremental decoder.
//! - [`codec`]: the codec trait and [`codec::Postcard`].
//! - [`registry`]: packet names, ids and rules; typed packets ([`registry::Packet`]).
//! - [`rules`]: SmartPacket rules.
//! - [`connection`]: the state machine of one connection, and its calling order.
//! - [`server`]: the server's view of all its clients (admission, client
//!   table, send rule, broadcast, timers, statistics), sans-IO, and its
//!   calling order.
//! - [`messages`]: the protocol's own messages.
//! - [`time`]: the core's `Instant` and `Duration`.
//! - [`raw`]: for adapter authors' test peers and fuzzers, the pieces of the
//!   handshake and of the rule checks that a [`Connection`] uses inside.
//!
//! The protocol's constants are at the root: [`State`], [`Mode`], [`Side`],
//! [`SecurityLevel`] and [`TlsFacts`], the connection types
//! ([`CONNTYPE_CLASSIC`], ...), [`CloseReason`] and [`Initiator`]. The
//! connection's everyday types are documented in [`connection`] and also
//! re-exported at the root (`peng3dnet_core::Connection` is
//! [`connection::Connection`]).
//!
//! The protocol is specified in `docs/PROTOCOL.md` of the repository; the
//! close reasons this crate adds to the reference's are listed on
//! [`CloseReason`].
//!
//! ## Features
//! - `defmt`: `defmt::Format` for the public types.
//! - `zlib`: accept zlib-compressed frames (inflated without a heap).
//! - `mismatch-report`: each connection keeps which names differed when a
//!   client's handshake closed with `packetregmismatch`
//!   ([`Connection::registry_mismatch`](connection::Connection::registry_mismatch),
//!   about 48 bytes per connection); `peng3dnet-std` turns it on, a board's
//!   slots do without.
//! - `fair-service`: rounds of fair service in the core
//!   [`Server`](server::Server) (`begin_round`), for adapters that serve
//!   many clients in turns; `peng3dnet-std` turns it on.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[cfg(test)]
extern crate std;

pub mod buffer;
pub mod codec;
pub mod connection;
pub mod messages;
pub mod raw;
pub mod registry;
pub mod rules;
pub mod server;
mod text;
pub mod time;
// The constants' one documented path is the crate root (below); the module
// stays reachable so that `peng3dnet_core::types::...` keeps compiling.
#[doc(hidden)]
pub mod types;
pub mod wire;

// Shortcuts to items documented in `connection`: one page each, there.
#[doc(no_inline)]
pub use connection::{Config, Connection, Event, Outbox, Take};
pub use types::{
    CloseReason, Closed, Initiator, Mode, SecurityLevel, Side, State, TlsFacts, CONNTYPE_CLASSIC,
    CONNTYPE_NOTSET, CONNTYPE_PING, MAX_REASON_LEN,
};
