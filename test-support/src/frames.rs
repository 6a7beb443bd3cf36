//! Frame and body builders, written from PROTOCOL.md ("Framing") rather than
//! with the core's encoder, so that a test's expected bytes do not come from
//! the code under test; and a frame reader for what a connection emitted.

use peng3dnet_core::codec::{Codec, Postcard};
use peng3dnet_core::wire::FrameDecoder;
use serde::Serialize;
use std::io::Write as _;

/// One frame as bytes: the length (of what follows it, 4 bytes big-endian),
/// the packet id (4 bytes), the flags (2 bytes), the body. Any flags, any
/// body: the bytes a test wants the other side to see, valid or not.
///
/// # Panics
///
/// When the body is longer than a frame's length field can say.
pub fn frame(packet_id: u32, flags: u16, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len() + 6).expect("a body that fits a frame");
    let mut out = Vec::with_capacity(body.len() + 10);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&packet_id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// `msg` encoded with `codec`.
///
/// # Panics
///
/// When `codec` cannot encode `msg`, or `encoded_len` disagrees with
/// `encode`.
pub fn encode<C: Codec, T: Serialize + ?Sized>(codec: &C, msg: &T) -> Vec<u8> {
    let len = codec.encoded_len(msg).expect("an encodable message");
    let mut out = vec![0u8; len];
    let n = codec.encode(msg, &mut out).expect("the message encodes");
    assert_eq!(n, len, "encoded_len disagrees with encode");
    out
}

/// `msg` encoded with [`Postcard`], the codec of the core's tests.
pub fn postcard<T: Serialize + ?Sized>(msg: &T) -> Vec<u8> {
    encode(&Postcard, msg)
}

/// `data` as one zlib stream (RFC 1950) at `level` (0 to 9; more is 9), by
/// an independent compressor (flate2).
pub fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level.min(9)));
    z.write_all(data).expect("compress into a Vec");
    z.finish().expect("compress into a Vec")
}

/// `data` as a zlib stream (RFC 1950) of one stored deflate block (RFC 1951
/// 3.2.4), written by hand: at most 65,535 bytes.
///
/// # Panics
///
/// When `data` is longer than one stored block holds.
pub fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("at most 65,535 bytes in a stored block");
    let mut out = vec![0x78, 0x01, 0x01];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// The frames in a byte stream as `(packet id, flags, body)`, read with the
/// core's decoder.
///
/// # Panics
///
/// When the stream holds an invalid frame or ends inside one.
pub fn frames_of(bytes: &[u8]) -> Vec<(u32, u16, Vec<u8>)> {
    let mut storage = vec![0u8; bytes.len().max(16)];
    let mut dec = FrameDecoder::new(&mut storage[..]);
    assert_eq!(dec.feed(bytes), bytes.len());
    let mut out = Vec::new();
    while let Some(f) = dec.next_frame().expect("valid frames") {
        out.push((f.packet_id, f.flags.0, f.body.to_vec()));
    }
    assert_eq!(dec.buffered(), 0, "a partial frame at the end");
    out
}
