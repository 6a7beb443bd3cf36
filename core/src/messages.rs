//! The protocol's own messages, as serde types whose field names are those of
//! `docs/PROTOCOL.md` ("Packet registry", "Connection type `ping`").
//!
//! A self-describing codec (MessagePack) carries them as maps with these keys,
//! which is what the Python reference sends; postcard carries the fields in
//! order. Decoding borrows strings from the frame, so no message allocates.

use crate::registry::{Registry, RegistryMap, SyncReport, SyncSeed};
use crate::text::{WireStr, WireU32};
use core::fmt;
use core::marker::PhantomData;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOVERSION: u32 = 2;

/// `peng3dnet:internal.hello`, the server's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// The sender's software version (informational).
    #[serde(borrow, serialize_with = "text")]
    pub version: &'a str,
    /// The protocol version; a client closes on a different one.
    pub protoversion: u32,
}

/// [`Hello`] as a connection reads it: the version is checked to be UTF-8
/// and not kept (see [`crate::text`]).
#[derive(Deserialize)]
pub(crate) struct HelloIn<'a> {
    /// Decoded to be checked; informational, never read.
    #[serde(borrow)]
    #[allow(dead_code)]
    pub(crate) version: WireStr<'a>,
    pub(crate) protoversion: WireU32,
}

fn classic() -> &'static str {
    crate::types::CONNTYPE_CLASSIC
}

/// A string field, serialized out of line: one copy of the codec's string
/// writer for every message that has one (on a board, each message's
/// inlined copy cost about 100 bytes of flash).
#[inline(never)]
fn text<S: serde::Serializer>(value: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

/// A string written by [`text`], where a value is serialized (a map's
/// key, an option's content).
pub(crate) struct Text<'a>(pub(crate) &'a str);

impl Serialize for Text<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        text(&self.0, s)
    }
}

/// An optional string field, as [`text`] writes a string.
fn opt_text<S: serde::Serializer>(value: &Option<&str>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&Text(v)),
        None => s.serialize_none(),
    }
}

/// `peng3dnet:internal.settype`, the client's choice of connection type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetType<'a> {
    /// The connection type; a map without it means `classic`.
    #[serde(borrow, default = "classic", serialize_with = "text")]
    pub conntype: &'a str,
}

/// `peng3dnet:internal.handshake` as the server sends it: its versions and its
/// whole registry.
// Documented in `crate::raw`, its one public path.
#[doc(hidden)]
#[derive(Serialize)]
pub struct HandshakeOut<'a, const N: usize> {
    /// The server's software version.
    #[serde(serialize_with = "text")]
    pub version: &'a str,
    /// The protocol version.
    pub protoversion: u32,
    /// Every name the server has registered, with its id.
    pub registry: RegistryMap<'a, N>,
}

/// `peng3dnet:internal.handshake` as a client reads it: the server's registry is
/// compared with the client's while it is decoded, never stored.
// Documented in `crate::raw`, its one public path.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct HandshakeIn<'a, const N: usize> {
    /// The server's software version.
    pub version: &'a str,
    /// The protocol version.
    pub protoversion: u32,
    /// The comparison of the server's registry with the client's.
    pub sync: SyncReport<N>,
}

/// Decodes a [`HandshakeIn`] against a client's registry: the server's
/// names are looked up in it as they are read, and none is kept.
// Documented in `crate::raw`, its one public path.
#[doc(hidden)]
pub struct HandshakeSeed<'r, const N: usize>(pub &'r Registry<N>);

const HANDSHAKE_FIELDS: &[&str] = &["version", "protoversion", "registry"];

impl<'de, const N: usize> DeserializeSeed<'de> for HandshakeSeed<'_, N> {
    type Value = HandshakeIn<'de, N>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let (version, protoversion, sync) = HandshakeFields::new(self.0).deserialize(d)?;
        Ok(HandshakeIn {
            version,
            protoversion,
            sync,
        })
    }
}

/// The handshake as a connection reads it (its version checked as UTF-8 and
/// not kept, see [`crate::text`]): the protocol version and the comparison
/// of the registries.
pub(crate) struct ClientHandshakeSeed<'r, const N: usize>(pub(crate) &'r Registry<N>);

impl<'de, const N: usize> DeserializeSeed<'de> for ClientHandshakeSeed<'_, N> {
    type Value = (u32, SyncReport<N>);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let (_version, protoversion, sync) =
            HandshakeFields::<N, WireStr<'de>>::new(self.0).deserialize(d)?;
        Ok((protoversion, sync))
    }
}

/// The fields of a `handshake`, its version decoded as `V`: one visitor
/// for [`HandshakeSeed`] (`&str`) and [`ClientHandshakeSeed`]
/// ([`WireStr`]).
struct HandshakeFields<'r, const N: usize, V>(&'r Registry<N>, PhantomData<V>);

impl<'r, const N: usize, V> HandshakeFields<'r, N, V> {
    fn new(registry: &'r Registry<N>) -> Self {
        HandshakeFields(registry, PhantomData)
    }
}

impl<'de, const N: usize, V: Deserialize<'de>> DeserializeSeed<'de> for HandshakeFields<'_, N, V> {
    type Value = (V, u32, SyncReport<N>);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_struct("HandshakeIn", HANDSHAKE_FIELDS, self)
    }
}

impl<'de, const N: usize, V: Deserialize<'de>> Visitor<'de> for HandshakeFields<'_, N, V> {
    type Value = (V, u32, SyncReport<N>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a handshake with version, protoversion and registry")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let version = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let WireU32(protoversion) = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        let sync = seq
            .next_element_seed(SyncSeed::new(self.0))?
            .ok_or_else(|| A::Error::invalid_length(2, &self))?;
        Ok((version, protoversion, sync))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let (mut version, mut protoversion, mut sync) = (None, None, None);
        while let Some(key) = map.next_key::<WireStr<'de>>()? {
            match key.0 {
                b"version" => version = Some(map.next_value()?),
                b"protoversion" => protoversion = Some(map.next_value::<WireU32>()?.0),
                b"registry" if sync.is_none() => {
                    sync = Some(map.next_value_seed(SyncSeed::new(self.0))?)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((
            version.ok_or_else(|| A::Error::missing_field("version"))?,
            protoversion.ok_or_else(|| A::Error::missing_field("protoversion"))?,
            sync.ok_or_else(|| A::Error::missing_field("registry"))?,
        ))
    }
}

/// `peng3dnet:internal.handshake.accept`, the client's answer to the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeAccept {
    /// Whether the client accepted the server's registry.
    pub success: bool,
}

/// `peng3dnet:internal.closeconn`: the sender is closing, with a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseConn<'a> {
    /// The reason, or `None` (`nil`).
    #[serde(borrow, serialize_with = "opt_text")]
    pub reason: Option<&'a str>,
}

/// [`CloseConn`] as a connection reads it (see [`crate::text`]).
#[derive(Deserialize)]
pub(crate) struct CloseConnIn<'a> {
    #[serde(borrow)]
    pub(crate) reason: Option<WireStr<'a>>,
}

/// The ping request (raw id 64) on a `ping` connection. Only `time` is read and
/// echoed back, which bounds the answer whatever else a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingRequest {
    /// The client's clock when it sent the request, in seconds.
    pub time: f64,
}

/// Version information a server puts into its ping answer under `peng3dnet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo<'a> {
    /// Software version.
    #[serde(borrow, serialize_with = "text")]
    pub version: &'a str,
    /// Software release.
    #[serde(serialize_with = "text")]
    pub release: &'a str,
    /// Protocol version.
    pub protoversion: u32,
}

/// The ping answer (raw id 65): a map of `oldmsg` (the request's `time`),
/// `peng3dnet` (version information) and the server's own ping data as
/// further string entries, as the reference merges them.
#[derive(Clone, Copy, Debug)]
pub struct PingResponse<'a> {
    /// The request, as far as it is echoed.
    pub oldmsg: PingRequest,
    /// The server's versions.
    pub peng3dnet: PeerInfo<'a>,
    /// Further entries of the answer.
    pub data: &'a [(&'a str, &'a str)],
}

impl Serialize for PingResponse<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2 + self.data.len()))?;
        map.serialize_entry("oldmsg", &self.oldmsg)?;
        map.serialize_entry("peng3dnet", &self.peng3dnet)?;
        for (k, v) in self.data {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, Postcard};

    #[test]
    fn handshake_round_trip_through_the_seed() {
        let mut reg = Registry::<8>::new();
        reg.register_raw("t:x", None, crate::rules::Rules::NONE)
            .unwrap();
        let out = HandshakeOut {
            version: "1.0",
            protoversion: PROTOVERSION,
            registry: reg.as_map(),
        };
        let mut buf = [0u8; 256];
        let n = Postcard.encode(&out, &mut buf).unwrap();
        let hs = Postcard
            .decode_seed(HandshakeSeed(&reg), &buf[..n])
            .unwrap();
        assert_eq!((hs.version, hs.protoversion), ("1.0", 2));
        assert!(hs.sync.same_names());
        assert_eq!(hs.sync.matched, 6);
    }
}
