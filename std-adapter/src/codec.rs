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
use serde::de::{DeserializeSeed, IgnoredAny};
use serde::{Deserialize, Serialize};
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
