//! The echo service of the reference's echo example, as used by the
//! `peng3dnet` program: `echo:echo` is sent back unchanged, `echo:ping` is sent
//! back with `server_timestamp` set. The packets are `peng3dnet-echo`'s,
//! which firmware shares (re-exported here).

use crate::codec::Value;
use crate::server::{Server, ServerBuilder, ServerOptions};
use crate::StdRegistry;
use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::registry::Packet;
use peng3dnet_core::rules::Rules;
use peng3dnet_core::CloseReason;
use std::time::{SystemTime, UNIX_EPOCH};

pub use peng3dnet_echo::{Echo, EchoPing, EchoPingMsg};

/// A registry with exactly the two echo packets (ids 64 and 65;
/// [`peng3dnet_echo::registry`]).
pub fn registry() -> StdRegistry {
    // Cannot fail: a registry of REGISTRY_CAPACITY (256) has room for both.
    peng3dnet_echo::registry().expect("room for the echo packets")
}

/// Seconds since the Unix epoch, as the reference's `time.time()`.
pub fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An echo server builder with both handlers installed, on `registry`
/// (which must hold both echo packets; [`registry`] gives exactly those).
///
/// # Panics
/// If `registry` lacks `echo:echo` or `echo:ping`.
pub fn server(registry: StdRegistry, options: ServerOptions) -> ServerBuilder {
    server_with_codec(Postcard, registry, options)
}

/// [`server`] with another codec. `echo:echo` bodies are sent back byte for
/// byte, whatever they hold. With a self-describing codec (MessagePack),
/// `echo:ping` may be any map, as the reference's clients send, and gets
/// `server_timestamp` added; with postcard it is an [`EchoPingMsg`].
///
/// # Panics
/// If `registry` lacks `echo:echo` or `echo:ping`.
pub fn server_with_codec<C: Codec + Send + 'static>(
    codec: C,
    registry: StdRegistry,
    options: ServerOptions,
) -> ServerBuilder<C> {
    Server::builder(registry)
        .codec(codec)
        .options(options)
        .on_raw::<Echo>(|ctx, body| {
            let _ = ctx.send_body::<Echo>(body);
        })
        .on_raw::<EchoPing>(|ctx, body| match stamp_ping(ctx.codec(), body) {
            Some(PingAnswer::Any(map)) => {
                let _ = ctx.send::<EchoPingAny>(&map);
            }
            Some(PingAnswer::Msg(msg)) => {
                let _ = ctx.send::<EchoPing>(&msg);
            }
            None => ctx.close(CloseReason::MalformedPacket),
        })
}

/// The echo service's answer to an `echo:ping` body: send it back as
/// [`EchoPingAny`] or [`EchoPing`]; `None` when the body is malformed (the
/// service then closes with `malformedpacket`).
#[derive(Clone, Debug, PartialEq)]
pub enum PingAnswer {
    /// With a self-describing codec: the client's map with
    /// `server_timestamp` added.
    Any(Value),
    /// With postcard: the message with `server_timestamp` set.
    Msg(EchoPingMsg),
}

/// Stamps an `echo:ping` body with the time now, as the echo service
/// answers it (over TCP and over `peng3dnet serve --serial` alike).
pub fn stamp_ping<C: Codec>(codec: &C, body: &[u8]) -> Option<PingAnswer> {
    let stamp = unix_time();
    if codec.self_describing() {
        match codec.decode::<Value>(body) {
            Ok(Value::Map(mut map)) => {
                map.insert("server_timestamp".into(), stamp.into());
                Some(PingAnswer::Any(Value::Map(map)))
            }
            _ => None,
        }
    } else {
        let mut msg = codec.decode::<EchoPingMsg>(body).ok()?;
        msg.server_timestamp = Some(stamp);
        Some(PingAnswer::Msg(msg))
    }
}

/// `echo:ping` carrying any map (with a self-describing codec).
pub struct EchoPingAny;
impl Packet for EchoPingAny {
    const NAME: &'static str = "echo:ping";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = Value;
}
