//! The pieces the state machine is built from, for code that speaks or checks
//! the protocol without a [`Connection`](crate::connection::Connection): an
//! adapter author's raw test peer that plays a server's handshake by hand, a
//! fuzzer's oracle that re-checks the rules, a protocol analyser. An
//! application and an adapter that drives a `Connection` need none of it: the
//! connection sends and reads the handshake and checks the rules itself.
//!
//! - [`HandshakeOut`], [`RegistryMap`]: `peng3dnet:internal.handshake` as a
//!   server sends it, with its whole registry ([`Registry::as_map`]).
//! - [`HandshakeIn`], [`HandshakeSeed`], [`SyncReport`]: the same message as a
//!   client reads it, the server's registry compared with the client's while
//!   it is decoded; [`Registry::apply_sync`] then adopts the server's ids.
//!   [`SyncSeed`] ([`Registry::sync_seed`]) decodes the registry map alone.
//! - [`RuleContext`]: what [`Rules::check_receive`] and
//!   [`Rules::check_send`] check a packet against.
//!
//! The other messages of the protocol (`hello`, `settype`,
//! `handshake.accept`, `closeconn`, the ping messages) are plain serde types
//! in [`messages`](crate::messages); the internal packet ids are in
//! [`registry::internal`](crate::registry::internal).
//!
//! ```
//! use peng3dnet_core::codec::{Codec, Postcard};
//! use peng3dnet_core::messages::PROTOVERSION;
//! use peng3dnet_core::raw::{HandshakeOut, HandshakeSeed, RuleContext};
//! use peng3dnet_core::registry::{Registry, SyncPolicy};
//! use peng3dnet_core::rules::Rules;
//! use peng3dnet_core::{Mode, SecurityLevel, Side, State};
//!
//! // A server's handshake body, as a raw test peer writes it.
//! let mut server = Registry::<8>::new();
//! server.register_raw("demo:b", None, Rules::NONE).unwrap();
//! server.register_raw("demo:a", None, Rules::NONE).unwrap();
//! let out = HandshakeOut { version: "1.0", protoversion: PROTOVERSION, registry: server.as_map() };
//! let mut body = [0u8; 256];
//! let n = Postcard.encode(&out, &mut body).unwrap();
//!
//! // A client with the same names in another order adopts the server's ids.
//! let mut client = Registry::<8>::new();
//! client.register_raw("demo:a", None, Rules::NONE).unwrap();
//! client.register_raw("demo:b", None, Rules::NONE).unwrap();
//! let hs = Postcard.decode_seed(HandshakeSeed(&client), &body[..n]).unwrap();
//! assert!(hs.sync.same_names());
//! client.apply_sync(&hs.sync, SyncPolicy::CloseConnection).unwrap();
//! assert_eq!(client.by_name("demo:b").unwrap().id, 64);
//!
//! // The rules of a packet against a connection's situation.
//! let ctx = RuleContext {
//!     side: Side::Client,
//!     state: State::Active,
//!     mode: Mode::NOTSET,
//!     conntype: "classic",
//!     security: SecurityLevel::None,
//! };
//! assert!(Rules::SMART.side(Side::Server).check_send(&ctx).is_ok());
//! assert!(Rules::SMART.side(Side::Server).check_receive(&ctx).is_err());
//! ```
//!
//! [`Registry::as_map`]: crate::registry::Registry::as_map
//! [`Registry::apply_sync`]: crate::registry::Registry::apply_sync
//! [`Registry::sync_seed`]: crate::registry::Registry::sync_seed
//! [`Rules::check_receive`]: crate::rules::Rules::check_receive
//! [`Rules::check_send`]: crate::rules::Rules::check_send

// The items are defined beside the code that uses them (messages, registry,
// rules) and hidden there, so that this module is their one documented path;
// their old paths keep compiling.
#[doc(inline)]
pub use crate::messages::{HandshakeIn, HandshakeOut, HandshakeSeed};
#[doc(inline)]
pub use crate::registry::{RegistryMap, SyncReport, SyncSeed};
#[doc(inline)]
pub use crate::rules::RuleContext;
