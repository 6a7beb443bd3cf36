//! Strings a peer sent, checked as UTF-8 without `core::str::from_utf8`.
//!
//! A connection reads a few strings from its peer: the versions in `hello`
//! and `handshake`, the names of the server's registry, the reason of a
//! `closeconn`. It compares them with its own or copies a few bytes of
//! them, and never needs them as `&str`. Decoding them as `&str` would link
//! `core::str::from_utf8` (with its 256-byte table, about 0.7 KB of flash on
//! a Cortex-M4F) into every image, so they are decoded as bytes
//! ([`WireStr`]) and checked here, by the same rules as `str`: a peer's
//! invalid UTF-8 is still refused (`malformedpacket`, as before).

use core::fmt;
use core::marker::PhantomData;
use serde::de::{Deserialize, Deserializer, Error, Visitor};

/// The first character of `bytes` and its length in bytes; `None` when
/// `bytes` is empty or does not start with a whole, valid UTF-8 sequence
/// (overlong forms, surrogates and code points past U+10FFFF are invalid,
/// as they are for `str`).
pub(crate) fn first_char(bytes: &[u8]) -> Option<(char, usize)> {
    let b0 = *bytes.first()?;
    // The sequence's length is the lead byte's count of leading ones (none
    // for ASCII; one, or more than four, is not a lead byte).
    let len = b0.leading_ones() as usize;
    if len == 0 {
        return Some((char::from(b0), 1));
    }
    if !(2..=4).contains(&len) {
        return None;
    }
    let mut code = u32::from(b0 & (0x7f >> len));
    for &b in bytes.get(1..len)? {
        if b & 0xc0 != 0x80 {
            return None;
        }
        code = (code << 6) | u32::from(b & 0x3f);
    }
    // The smallest code point of each length: below it, an overlong form.
    let min = match len {
        2 => 0x80,
        3 => 0x800,
        _ => 0x1_0000,
    };
    if code < min {
        return None;
    }
    // Refuses surrogates and code points past U+10FFFF.
    char::from_u32(code).map(|c| (c, len))
}

/// Whether `bytes` are valid UTF-8 (what `core::str::from_utf8` accepts).
pub(crate) fn is_utf8(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some((_, n)) = first_char(bytes) else {
            return false;
        };
        bytes = bytes.get(n..).unwrap_or_default();
    }
    true
}

/// Appends the characters of `bytes` (valid UTF-8) to `out` while they fit:
/// the text cut to `out`'s capacity at a character boundary. Over a view,
/// so that one copy serves every capacity.
#[inline(never)]
pub(crate) fn push_cut(out: &mut heapless::string::StringView, mut bytes: &[u8]) {
    let mut utf8 = [0u8; 4];
    while let Some((c, n)) = first_char(bytes) {
        if out.push_str(c.encode_utf8(&mut utf8)).is_err() {
            break;
        }
        bytes = bytes.get(n..).unwrap_or_default();
    }
}

/// A string borrowed from a frame's body, as its bytes, checked to be UTF-8.
///
/// Decoded with `deserialize_bytes`: postcard writes a string and a byte
/// string alike (a length, then the bytes), and a self-describing codec
/// hands a string to [`Visitor::visit_borrowed_str`] (MessagePack's checks
/// it first, on the host). A self-describing codec's byte string that is
/// valid UTF-8 is taken as the string it spells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireStr<'a>(pub(crate) &'a [u8]);

impl<'de: 'a, 'a> Deserialize<'de> for WireStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_bytes(WireStrVisitor(PhantomData))
    }
}

struct WireStrVisitor<'a>(PhantomData<&'a [u8]>);

impl<'de: 'a, 'a> Visitor<'de> for WireStrVisitor<'a> {
    type Value = WireStr<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a borrowed string")
    }

    fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(WireStr(v.as_bytes()))
    }

    fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        if is_utf8(v) {
            Ok(WireStr(v))
        } else {
            Err(E::custom("invalid UTF-8"))
        }
    }
}

/// A `u32` of the protocol's own messages (a protocol version, a registry
/// id), decoded out of line: one copy of the codec's integer reader for all
/// of them (on a board, each inlined copy cost about 40 bytes of flash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WireU32(pub(crate) u32);

impl<'de> Deserialize<'de> for WireU32 {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire_u32(d).map(WireU32)
    }
}

/// [`WireU32`]'s decoder.
#[inline(never)]
fn wire_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    u32::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::codec::{CodecError, Postcard};

    /// Every sequence of up to 3 bytes drawn from bytes that matter to
    /// UTF-8 (ASCII, continuation bytes, every kind of lead byte and the
    /// bytes that never occur), and 4-byte sequences around the limits:
    /// `is_utf8` agrees with `core::str::from_utf8`, and `first_char`
    /// decodes what `str` does.
    #[test]
    fn agrees_with_core_on_edge_sequences() {
        let interesting: &[u8] = &[
            0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
            0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xf7, 0xf8, 0xff,
        ];
        let mut checked = 0;
        let mut check = |bytes: &[u8]| {
            let core = core::str::from_utf8(bytes);
            assert_eq!(is_utf8(bytes), core.is_ok(), "{bytes:02x?}");
            if let Ok(s) = core {
                let mut rest = bytes;
                for c in s.chars() {
                    assert_eq!(first_char(rest), Some((c, c.len_utf8())), "{bytes:02x?}");
                    rest = &rest[c.len_utf8()..];
                }
            }
            checked += 1;
        };
        check(&[]);
        for &a in interesting {
            check(&[a]);
            for &b in interesting {
                check(&[a, b]);
                for &c in interesting {
                    check(&[a, b, c]);
                    for &d in &[0x80, 0x8f, 0x90, 0xbf, 0x41, 0xc0] {
                        check(&[a, b, c, d]);
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn push_cut_stops_at_a_character_boundary() {
        let mut s = heapless::String::<4>::new();
        push_cut(s.as_mut_view(), "abé€".as_bytes());
        assert_eq!(s.as_str(), "abé");
        let mut s = heapless::String::<8>::new();
        push_cut(s.as_mut_view(), "ok".as_bytes());
        assert_eq!(s.as_str(), "ok");
    }

    #[test]
    fn a_wire_string_decodes_as_postcard_writes_a_str_and_refuses_bad_utf8() {
        let mut buf = [0u8; 16];
        let n = Postcard.encode("héllo", &mut buf).unwrap();
        let got: WireStr = Postcard.decode(&buf[..n]).unwrap();
        assert_eq!(got.0, "héllo".as_bytes());
        // The same length prefix, bytes that are not UTF-8.
        let bad = [2u8, 0xc3, 0x28];
        assert_eq!(Postcard.decode::<WireStr>(&bad), Err(CodecError::Malformed));
        assert!(Postcard.decode::<&str>(&bad).is_err());
    }
}
