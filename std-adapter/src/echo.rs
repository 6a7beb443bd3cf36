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
        .on_raw::<EchoPing>(|ctx, body| {
            let stamp = unix_time();
            if ctx.codec().self_describing() {
                match ctx.codec().decode::<Value>(body) {
                    Ok(Value::Map(mut map)) => {
                        map.insert("server_timestamp".into(), stamp.into());
                        let _ = ctx.send::<EchoPingAny>(&Value::Map(map));
                    }
                    _ => ctx.close(CloseReason::MalformedPacket),
                }
            } else {
                match ctx.codec().decode::<EchoPingMsg>(body) {
                    Ok(mut msg) => {
                        msg.server_timestamp = Some(stamp);
                        let _ = ctx.send::<EchoPing>(&msg);
                    }
                    Err(_) => ctx.close(CloseReason::MalformedPacket),
                }
            }
        })
}

/// `echo:ping` carrying any map (with a self-describing codec).
pub struct EchoPingAny;
impl Packet for EchoPingAny {
    const NAME: &'static str = "echo:ping";
    const RULES: Rules = Rules::SMART;
    type Message<'a> = Value;
}
