//! Codecs and compression on std: MessagePack for talking to the Python
//! reference, a codec that follows the server, and zlib compression.
//!
//! ```
//! use peng3dnet_core::codec::Codec;
//! use peng3dnet_core::messages::Hello;
//! use peng3dnet_std::codec::{AnyCodec, MsgPack};
//!
//! // The reference's hello, as its MessagePack bytes.
//! let mut buf = [0u8; 64];
//! let n = MsgPack.encode(&Hello { version: "0.1.3a0", protoversion: 2 }, &mut buf).unwrap();
//! assert_eq!(buf[0], 0x82); // a map of two entries
//!
//! // A client that starts with the native codec switches when the hello is
//! // MessagePack.
//! let mut codec = AnyCodec::default();
//! codec.detect_from_hello(&buf[..n]);
//! assert_eq!(codec, AnyCodec::MsgPack);
//! ```

use peng3dnet_core::codec::{Codec, CodecError, Postcard};
use peng3dnet_core::connection::Compressor;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Cursor, Write};

/// MessagePack, the encoding of the Python reference: structs as maps with
/// their field names, strings as `str`, integers in their smallest form.
/// Decoding borrows strings from the body and refuses trailing bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgPack;

fn encode_error(e: rmp_serde::encode::Error) -> CodecError {
    use rmp_serde::encode::Error;
    match e {
        Error::InvalidValueWrite(_) => CodecError::BufferTooSmall,
        _ => CodecError::Unsupported,
    }
}

/// Counts what is written.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Codec for MsgPack {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn self_describing(&self) -> bool {
        true
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut [u8],
    ) -> Result<usize, CodecError> {
        let total = out.len();
        let mut rest: &mut [u8] = out;
        let mut ser = rmp_serde::Serializer::new(&mut rest).with_struct_map();
        value.serialize(&mut ser).map_err(encode_error)?;
        Ok(total - rest.len())
    }

    fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, CodecError> {
        let mut counter = Counter(0);
        let mut ser = rmp_serde::Serializer::new(&mut counter).with_struct_map();
        value.serialize(&mut ser).map_err(encode_error)?;
        Ok(counter.0)
    }

    fn decode_seed<'de, S: DeserializeSeed<'de>>(
        &self,
        seed: S,
        bytes: &'de [u8],
    ) -> Result<S::Value, CodecError> {
        // One value, and nothing after it.
        let mut probe = rmp_serde::Deserializer::new(Cursor::new(bytes));
        IgnoredAny::deserialize(&mut probe).map_err(|_| CodecError::Malformed)?;
        if probe.position() != bytes.len() as u64 {
            return Err(CodecError::TrailingBytes);
        }
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        seed.deserialize(&mut de).map_err(|_| CodecError::Malformed)
    }
}

/// The native codec or MessagePack, chosen at run time. A server picks one;
/// a client starts with [`AnyCodec::Postcard`] and switches to the server's
/// from its `hello` (a MessagePack hello is a map, whose first byte no
/// postcard hello can have).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnyCodec {
    /// [`Postcard`], the native codec.
    #[default]
    Postcard,
    /// [`MsgPack`], the Python reference's.
    MsgPack,
}

impl AnyCodec {
    /// The codec named `name` (`postcard` or `msgpack`).
    pub fn from_name(name: &str) -> Option<AnyCodec> {
        match name {
            "postcard" => Some(AnyCodec::Postcard),
            "msgpack" => Some(AnyCodec::MsgPack),
            _ => None,
        }
    }
}

impl Codec for AnyCodec {
    fn name(&self) -> &'static str {
        match self {
            AnyCodec::Postcard => Postcard.name(),
            AnyCodec::MsgPack => MsgPack.name(),
        }
    }

    fn self_describing(&self) -> bool {
        matches!(self, AnyCodec::MsgPack)
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut [u8],
    ) -> Result<usize, CodecError> {
        match self {
            AnyCodec::Postcard => Postcard.encode(value, out),
            AnyCodec::MsgPack => MsgPack.encode(value, out),
        }
    }

    fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, CodecError> {
        match self {
            AnyCodec::Postcard => Postcard.encoded_len(value),
            AnyCodec::MsgPack => MsgPack.encoded_len(value),
        }
    }

    fn decode_seed<'de, S: DeserializeSeed<'de>>(
        &self,
        seed: S,
        bytes: &'de [u8],
    ) -> Result<S::Value, CodecError> {
        match self {
            AnyCodec::Postcard => Postcard.decode_seed(seed, bytes),
            AnyCodec::MsgPack => MsgPack.decode_seed(seed, bytes),
        }
    }

    fn detect_from_hello(&mut self, hello_body: &[u8]) {
        // MessagePack maps: fixmap 0x80-0x8f, map16 0xde, map32 0xdf. A
        // postcard hello starts with the varint length of a short string.
        *self = match hello_body.first() {
            Some(0x80..=0x8f | 0xde | 0xdf) => AnyCodec::MsgPack,
            _ => AnyCodec::Postcard,
        };
    }
}

/// zlib compression of outgoing bodies above a threshold, as the reference
/// does (on, above 8,192 bytes, level 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zlib {
    /// Bodies longer than this are compressed.
    pub threshold: usize,
    /// zlib level, 0 to 9.
    pub level: u32,
}

impl Default for Zlib {
    fn default() -> Self {
        Zlib {
            threshold: 8192,
            level: 6,
        }
    }
}

impl Compressor for Zlib {
    fn threshold(&self) -> usize {
        self.threshold
    }

    fn compress(&self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        let mut z = flate2::Compress::new(flate2::Compression::new(self.level.min(9)), true);
        match z.compress(input, out, flate2::FlushCompress::Finish) {
            Ok(flate2::Status::StreamEnd) => usize::try_from(z.total_out()).ok(),
            _ => None,
        }
    }
}

/// The reference's default compression, for [`peng3dnet_core::connection::Config::compressor`].
pub static ZLIB_DEFAULT: Zlib = Zlib {
    threshold: 8192,
    level: 6,
};

/// A value of a self-describing codec ([`MsgPack`]) whose shape no Rust type
/// declares: an entry of a ping answer ([`PingReply::data`]), an `echo:ping`
/// map of the reference's clients ([`echo`](crate::echo)). It takes what a
/// JSON value can hold, as `serde_json::Value` does (which these places used
/// before), so that the answers are the same: a map's keys must be strings
/// and are kept sorted (a repeated key keeps its last value), binary and
/// extension values do not decode, and a float that is not finite becomes
/// [`Nil`](Self::Nil).
///
/// ```
/// use peng3dnet_core::codec::Codec;
/// use peng3dnet_std::codec::{MsgPack, Value};
///
/// let mut buf = [0u8; 64];
/// let n = MsgPack.encode(&("players", 3, -1, 0.5), &mut buf).unwrap();
/// let v: Value = MsgPack.decode(&buf[..n]).unwrap();
/// assert_eq!(
///     v,
///     Value::Array(vec![Value::from("players"), Value::Int(3), Value::Int(-1), Value::Float(0.5)])
/// );
/// ```
///
/// [`PingReply::data`]: crate::ping::PingReply::data
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `nil` (JSON's `null`).
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer: every integer MessagePack carries fits (`i64` and `u64`).
    Int(i128),
    /// A finite floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// A map with string keys, in key order.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        if f.is_finite() {
            Value::Float(f)
        } else {
            Value::Nil
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => match (u64::try_from(*i), i64::try_from(*i)) {
                (Ok(u), _) => s.serialize_u64(u),
                (_, Ok(i)) => s.serialize_i64(i),
                _ => s.serialize_i128(*i),
            },
            Value::Float(f) => s.serialize_f64(*f),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => s.collect_seq(items),
            Value::Map(map) => s.collect_map(map),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nil, a boolean, a number, a string, an array or a map with string keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // The hint is the sender's claim: bounded, memory follows the items.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            entries.insert(k, v);
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peng3dnet_core::messages::{CloseConn, Hello, SetType};

    #[test]
    fn msgpack_matches_the_reference_bytes() {
        let mut buf = [0u8; 64];
        // {"conntype": "classic"}: fixmap 1, fixstr 8 "conntype", fixstr 7.
        let n = MsgPack
            .encode(
                &SetType {
                    conntype: "classic",
                },
                &mut buf,
            )
            .unwrap();
        let mut expected = vec![0x81, 0xa8];
        expected.extend_from_slice(b"conntype");
        expected.push(0xa7);
        expected.extend_from_slice(b"classic");
        assert_eq!(&buf[..n], &expected[..]);
        assert_eq!(
            MsgPack.encoded_len(&SetType {
                conntype: "classic"
            }),
            Ok(n)
        );
        // {"reason": nil}
        let n = MsgPack
            .encode(&CloseConn { reason: None }, &mut buf)
            .unwrap();
        assert_eq!(&buf[..n], b"\x81\xa6reason\xc0");
        // {} means classic.
        let st: SetType = MsgPack.decode(&[0x80]).unwrap();
        assert_eq!(st.conntype, "classic");
        // Trailing bytes and truncation are refused; small buffers too.
        let n = MsgPack
            .encode(
                &Hello {
                    version: "v",
                    protoversion: 2,
                },
                &mut buf,
            )
            .unwrap();
        assert_eq!(
            MsgPack.decode::<Hello>(&buf[..n - 1]),
            Err(CodecError::Malformed)
        );
        buf[n] = 0xc0;
        assert_eq!(
            MsgPack.decode::<Hello>(&buf[..n + 1]),
            Err(CodecError::TrailingBytes)
        );
        let mut small = [0u8; 4];
        assert_eq!(
            MsgPack.encode(
                &Hello {
                    version: "v",
                    protoversion: 2
                },
                &mut small
            ),
            Err(CodecError::BufferTooSmall)
        );
    }

    /// What serde_json's value made of the same bytes, re-encoded: the
    /// answers of the ping and echo code, which used it before.
    fn as_serde_json(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let v: serde_json::Value = MsgPack.decode(bytes)?;
        let mut out = vec![0u8; 1024];
        let n = MsgPack.encode(&v, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    fn as_value(bytes: &[u8]) -> Result<Vec<u8>, CodecError> {
        let v: Value = MsgPack.decode(bytes)?;
        let mut out = vec![0u8; 1024];
        let n = MsgPack.encode(&v, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    #[test]
    fn values_decode_and_encode_as_serde_json_values_did() {
        #[derive(Serialize)]
        struct Ping<'a> {
            client_timestamp: f64,
            nick: &'a str,
            z: Option<u8>,
            a: (i64, u64, bool, f32),
            nested: BTreeMap<&'a str, Vec<i8>>,
        }
        let mut nested = BTreeMap::new();
        nested.insert("xs", vec![-1, 0, 1]);
        let mut buf = vec![0u8; 256];
        let n = MsgPack
            .encode(
                &Ping {
                    client_timestamp: 1.5,
                    nick: "grüße",
                    z: None,
                    a: (i64::MIN, u64::MAX, true, 0.25),
                    nested,
                },
                &mut buf,
            )
            .unwrap();
        let same = as_value(&buf[..n]).unwrap();
        assert_eq!(same, as_serde_json(&buf[..n]).unwrap());
        // Keys come back sorted: "a" first.
        assert_eq!(&same[..3], b"\x85\xa1a");
        // A repeated key keeps its last value; NaN becomes nil.
        let dup = b"\x83\xa1k\x01\xa1k\x02\xa1n\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00";
        assert_eq!(as_value(dup), as_serde_json(dup));
        assert_eq!(as_value(dup).unwrap(), b"\x82\xa1k\x02\xa1n\xc0");
        // What serde_json refused is refused: binary, a non-string key.
        for refused in [&b"\xc4\x01x"[..], &b"\x81\x01\x02"[..]] {
            assert_eq!(as_serde_json(refused), Err(CodecError::Malformed));
            assert_eq!(as_value(refused), Err(CodecError::Malformed));
        }
    }

    #[test]
    fn zlib_round_trip_through_the_core_inflater_format() {
        let input = vec![b'a'; 20_000];
        let mut out = vec![0u8; 20_000];
        let n = ZLIB_DEFAULT.compress(&input, &mut out).unwrap();
        assert!(n < 1000);
        let back = miniz_inflate(&out[..n]);
        assert_eq!(back, input);
    }

    fn miniz_inflate(data: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut d = flate2::read::ZlibDecoder::new(data);
        let mut v = Vec::new();
        d.read_to_end(&mut v).unwrap();
        v
    }
}
