//! Body codecs: how a message becomes the bytes of a frame's body.
//!
//! Both peers of one connection use the same codec. [`Postcard`] is the native
//! codec of this project; a MessagePack codec for talking to the Python reference
//! implements the same [`Codec`] trait (see `docs/PROTOCOL.md`, "Body encoding").
//! Every internal message in [`crate::messages`] is a plain serde type whose
//! field names are those of the protocol, so a self-describing codec writes
//! them as maps with those keys.
//!
//! ```
//! use peng3dnet_core::codec::{Codec, Postcard};
//! use peng3dnet_core::messages::HandshakeAccept;
//!
//! let mut buf = [0u8; 8];
//! let n = Postcard.encode(&HandshakeAccept { success: true }, &mut buf).unwrap();
//! let back: HandshakeAccept = Postcard.decode(&buf[..n]).unwrap();
//! assert!(back.success);
//! ```

use core::fmt;
use core::marker::PhantomData;
use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};

/// Why a body could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum CodecError {
    /// The output buffer is too small; nothing usable was written.
    BufferTooSmall,
    /// The bytes are not a valid encoding of the expected type.
    Malformed,
    /// The value decoded, but bytes were left over after it.
    TrailingBytes,
    /// The value cannot be represented by this codec.
    Unsupported,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodecError::BufferTooSmall => "output buffer too small",
            CodecError::Malformed => "malformed message body",
            CodecError::TrailingBytes => "trailing bytes after the message body",
            CodecError::Unsupported => "value not representable by this codec",
        })
    }
}

impl core::error::Error for CodecError {}

/// A message body encoding.
///
/// Implementations are cheap values (usually zero-sized) and `Clone`: each
/// received packet ([`Incoming`](crate::connection::Incoming)) carries a copy,
/// so that it can be decoded after the connection that received it is
/// locked or gone. Decoding borrows from the body, so `&str` and `&[u8]`
/// fields cost no copy.
pub trait Codec: Clone {
    /// A short name for diagnostics, such as `"postcard"` or `"msgpack"`.
    fn name(&self) -> &'static str;

    /// Whether the encoding carries its own structure (field names, types), as
    /// MessagePack does and postcard does not. A self-describing codec can skip
    /// values it does not know.
    fn self_describing(&self) -> bool;

    /// Encodes `value` into the start of `out` and returns the length written.
    /// On error the contents of `out` are unspecified.
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut [u8])
        -> Result<usize, CodecError>;

    /// The length [`encode`](Self::encode) would write for `value`.
    fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, CodecError>;

    /// Decodes one value through `seed`; the whole of `bytes` must be used.
    fn decode_seed<'de, S: DeserializeSeed<'de>>(
        &self,
        seed: S,
        bytes: &'de [u8],
    ) -> Result<S::Value, CodecError>;

    /// Decodes one `T`; the whole of `bytes` must be used.
    fn decode<'de, T: Deserialize<'de>>(&self, bytes: &'de [u8]) -> Result<T, CodecError> {
        self.decode_seed(PhantomData::<T>, bytes)
    }

    /// Offered the body of the server's `hello` (the first packet a client
    /// receives) before it is decoded. A codec that supports several encodings
    /// switches to the server's one here. The default does nothing.
    fn detect_from_hello(&mut self, _hello_body: &[u8]) {}
}

/// The native codec: [postcard](https://docs.rs/postcard), compact and
/// non-self-describing. Structs are encoded as their fields in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Postcard;

fn postcard_error(e: postcard::Error) -> CodecError {
    match e {
        postcard::Error::SerializeBufferFull => CodecError::BufferTooSmall,
        postcard::Error::WontImplement
        | postcard::Error::NotYetImplemented
        | postcard::Error::SerializeSeqLengthUnknown => CodecError::Unsupported,
        _ => CodecError::Malformed,
    }
}

impl Codec for Postcard {
    fn name(&self) -> &'static str {
        "postcard"
    }

    fn self_describing(&self) -> bool {
        false
    }

    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut [u8],
    ) -> Result<usize, CodecError> {
        postcard::to_slice(value, out)
            .map(|written| written.len())
            .map_err(postcard_error)
    }

    fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, CodecError> {
        postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
            .map_err(postcard_error)
    }

    fn decode_seed<'de, S: DeserializeSeed<'de>>(
        &self,
        seed: S,
        bytes: &'de [u8],
    ) -> Result<S::Value, CodecError> {
        let mut de = postcard::Deserializer::from_bytes(bytes);
        let value = seed.deserialize(&mut de).map_err(postcard_error)?;
        match de.finalize() {
            Ok([]) => Ok(value),
            Ok(_) => Err(CodecError::TrailingBytes),
            Err(e) => Err(postcard_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    struct Msg<'a> {
        text: &'a str,
        n: u32,
    }

    #[test]
    fn postcard_round_trip_and_errors() {
        let mut buf = [0u8; 16];
        let msg = Msg {
            text: "hey",
            n: 300,
        };
        let n = Postcard.encode(&msg, &mut buf).unwrap();
        assert_eq!(Postcard.encoded_len(&msg), Ok(n));
        assert_eq!(Postcard.decode::<Msg>(&buf[..n]), Ok(msg));
        assert_eq!(
            Postcard.decode::<Msg>(&buf[..n - 1]),
            Err(CodecError::Malformed)
        );
        buf[n] = 7;
        assert_eq!(
            Postcard.decode::<Msg>(&buf[..n + 1]),
            Err(CodecError::TrailingBytes)
        );
        let mut small = [0u8; 3];
        assert_eq!(
            Postcard.encode(&msg, &mut small),
            Err(CodecError::BufferTooSmall)
        );
    }
}
