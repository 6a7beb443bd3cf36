//! Frames on the wire: the length prefix, the header, and the incremental decoder.
//!
//! Every packet travels as one frame (`docs/PROTOCOL.md`, "Transport and framing"):
//!
//! | bytes | field | encoding |
//! |---|---|---|
//! | 4 | length of header + body | u32, big endian |
//! | 4 | packet id | u32, big endian |
//! | 2 | flags | u16, big endian |
//! | length - 6 | body | the codec's bytes |
//!
//! [`encode_frame`] writes one frame into a caller's buffer, all or nothing.
//! [`FrameDecoder`] accumulates a byte stream split at any byte and hands out
//! whole frames, borrowed from its buffer:
//!
//! ```
//! use peng3dnet_core::wire::{encode_frame, Flags, FrameDecoder};
//!
//! let mut out = [0u8; 64];
//! let n = encode_frame(&mut out, 64, Flags::EMPTY, b"hi").unwrap();
//! assert_eq!(&out[..n], &[0, 0, 0, 8, 0, 0, 0, 64, 0, 0, b'h', b'i']);
//!
//! let mut dec = FrameDecoder::new([0u8; 32]);
//! // The stream may arrive one byte at a time.
//! for byte in &out[..n - 1] {
//!     assert_eq!(dec.feed(core::slice::from_ref(byte)), 1);
//!     assert!(dec.next_frame().unwrap().is_none());
//! }
//! dec.feed(&out[n - 1..n]);
//! let frame = dec.next_frame().unwrap().unwrap();
//! assert_eq!((frame.packet_id, frame.body), (64, &b"hi"[..]));
//! ```

use crate::buffer::Buffer;
use core::fmt;

/// Size of the big-endian `u32` length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Size of the header that follows the length prefix: packet id and flags.
pub const HEADER_LEN: usize = 6;
/// Bytes a frame adds around its body.
pub const FRAME_OVERHEAD: usize = LENGTH_PREFIX_LEN + HEADER_LEN;

/// The flags field of a frame header.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Flags(pub u16);

impl Flags {
    /// No flag set.
    pub const EMPTY: Flags = Flags(0);
    /// Bit 0: the body is a zlib stream (RFC 1950).
    pub const COMPRESSED: Flags = Flags(1);
    /// Bit 1: AES encryption, reserved and never implemented by any peer.
    /// A frame carrying it is refused.
    pub const ENCRYPTED_AES: Flags = Flags(2);
    /// Every bit this implementation knows.
    pub const KNOWN: Flags = Flags(3);

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of `self` that no version of the protocol defines.
    pub const fn unknown_bits(self) -> u16 {
        self.0 & !Self::KNOWN.0
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags({:#06x})", self.0)
    }
}

/// The caller's buffer cannot hold what was to be written; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferTooSmall {
    /// Bytes the write needs.
    pub required: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: {} bytes required", self.required)
    }
}

impl core::error::Error for BufferTooSmall {}

/// Writes the length prefix and header of a frame whose body is `body_len`
/// bytes into `out[..FRAME_OVERHEAD]`.
///
/// # Panics
/// If `out` is shorter than [`FRAME_OVERHEAD`]; callers size it first.
#[inline]
pub(crate) fn write_header(out: &mut [u8], packet_id: u32, flags: Flags, body_len: usize) {
    // A body length was checked against u32 by every caller.
    let length = (body_len + HEADER_LEN) as u32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    out[4..8].copy_from_slice(&packet_id.to_be_bytes());
    out[8..10].copy_from_slice(&flags.0.to_be_bytes());
}

/// The largest body a frame can carry: the length field is a `u32`.
pub const MAX_BODY_LEN: usize = u32::MAX as usize - HEADER_LEN;

/// Encodes one frame into `out` and returns its length.
///
/// All or nothing: if `out` is too small, nothing is written and the error says
/// how many bytes the frame needs.
pub fn encode_frame(
    out: &mut [u8],
    packet_id: u32,
    flags: Flags,
    body: &[u8],
) -> Result<usize, BufferTooSmall> {
    let required = FRAME_OVERHEAD.saturating_add(body.len());
    if out.len() < required || body.len() > MAX_BODY_LEN {
        return Err(BufferTooSmall { required });
    }
    write_header(out, packet_id, flags, body.len());
    out[FRAME_OVERHEAD..required].copy_from_slice(body);
    Ok(required)
}

/// One whole frame, borrowed from the decoder's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The packet id of the header.
    pub packet_id: u32,
    /// The flags of the header.
    pub flags: Flags,
    /// The body, still encoded (and compressed if `flags` say so).
    pub body: &'a [u8],
}

/// Why the decoder refused the stream. After an error the stream cannot be
/// resynchronised: the connection must close (see
/// [`CloseReason`](crate::CloseReason) for the reason each maps to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The length prefix announces a frame larger than the decoder's buffer.
    TooLarge {
        /// Header plus body length announced by the prefix.
        length: u32,
        /// The largest header plus body this decoder accepts.
        max: usize,
    },
    /// The length prefix is smaller than the 6-byte header.
    TooShort {
        /// The announced length.
        length: u32,
    },
    /// The header sets flag bits that no protocol version defines.
    UnknownFlags {
        /// The whole flags field.
        flags: Flags,
    },
    /// The header sets the reserved AES flag, which nobody implements.
    EncryptionUnsupported,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { length, max } => {
                write!(f, "frame of {length} bytes exceeds the maximum of {max}")
            }
            FrameError::TooShort { length } => {
                write!(f, "frame length {length} is shorter than the 6-byte header")
            }
            FrameError::UnknownFlags { flags } => write!(f, "unknown frame flags {flags:?}"),
            FrameError::EncryptionUnsupported => {
                f.write_str("AES-encrypted frames are not supported")
            }
        }
    }
}

impl core::error::Error for FrameError {}

/// Why a compressed body was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InflateError {
    /// The body inflates to more than the receiver can hold (a zlib bomb,
    /// or simply too large).
    TooLarge {
        /// The most bytes it could have inflated to.
        limit: usize,
    },
    /// The body is not a valid zlib stream, or bytes follow its end.
    Invalid,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::TooLarge { limit } => {
                write!(f, "compressed body inflates past {limit} bytes")
            }
            InflateError::Invalid => f.write_str("invalid zlib stream"),
        }
    }
}

impl core::error::Error for InflateError {}

/// An incremental frame decoder over a buffer the caller provides.
///
/// The buffer's length is the largest frame (length prefix included) the
/// decoder accepts; a larger one is refused with [`FrameError::TooLarge`]
/// as soon as its length prefix is complete, before its body is read.
///
/// Drive it with [`feed`](Self::feed) (copies) or with
/// [`free_space`](Self::free_space) + [`commit`](Self::commit) (read straight
/// into the buffer, no copy), then call [`next_frame`](Self::next_frame) until it
/// returns `Ok(None)`. A frame returned stays valid until the next `&mut` call.
///
/// Storage `B` is a [`Buffer`]: `[u8; N]` for a compile-time capacity,
/// `&'static mut [u8]`, or a growable buffer on a host (its maximum bounds
/// the frame size; it grows only while a frame needs the room and is
/// released whenever no byte is buffered).
pub struct FrameDecoder<B> {
    buf: B,
    /// First byte not yet handed out.
    start: usize,
    /// End of the bytes received.
    end: usize,
    /// Bytes handed out before `start` was last moved back to 0, wrapping:
    /// with `start`, where in the stream the next frame begins.
    base: u32,
    /// Set after an error: the stream is desynchronised for good.
    failed: Option<FrameError>,
}

impl<B: Buffer> FrameDecoder<B> {
    /// A decoder over `buf`. Its length bounds the frame size.
    pub fn new(buf: B) -> Self {
        FrameDecoder {
            buf,
            start: 0,
            end: 0,
            base: 0,
            failed: None,
        }
    }

    /// The largest frame, length prefix included, that fits.
    pub fn capacity(&self) -> usize {
        self.buf.max_capacity()
    }

    /// The storage, for inspection (for example its current size).
    pub fn buffer(&self) -> &B {
        &self.buf
    }

    /// Gives the storage back; whatever it holds is dropped.
    pub fn into_buffer(self) -> B {
        self.buf
    }

    /// The largest header + body length (the value of a length prefix) accepted.
    pub fn max_frame_len(&self) -> usize {
        self.capacity().saturating_sub(LENGTH_PREFIX_LEN)
    }

    /// Bytes received and not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Where in the received stream the next frame begins (wrapping): it
    /// moves when a frame is taken, so a connection tells one partly
    /// received frame from the next.
    pub(crate) fn position(&self) -> u32 {
        self.base.wrapping_add(self.start as u32)
    }

    /// Whether part of a frame is buffered, and no whole frame.
    pub(crate) fn has_partial(&self) -> bool {
        self.end != self.start && !self.has_frame()
    }

    /// The error that stopped the decoder, if any.
    pub fn error(&self) -> Option<FrameError> {
        self.failed
    }

    /// Space to read into. Write received bytes at its start, then call
    /// [`commit`](Self::commit) with their count. May move the buffered bytes
    /// to the buffer's start to make room. Empty once the decoder failed or
    /// holds a full buffer (call [`next_frame`](Self::next_frame) first).
    pub fn free_space(&mut self) -> &mut [u8] {
        self.make_room();
        if self.failed.is_some() {
            return &mut [];
        }
        let len = self.buf.bytes().len();
        if self.end == len && len < self.capacity() {
            // Grow with the bytes that arrive, not with what a length prefix
            // announces: by at least one byte, to at most twice what is held
            // (a growable buffer may round up), never past the frame being
            // received.
            let mut want = self.end + 1;
            let avail = &self.buf.bytes()[self.start..self.end];
            if avail.len() >= LENGTH_PREFIX_LEN {
                let length = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
                let frame_end = self.start + LENGTH_PREFIX_LEN + length as usize;
                want = want.max(frame_end.min(2 * self.end));
            }
            self.buf.reserve(want.min(self.capacity()));
        }
        // Never past the frame bound, even while the storage holds scratch
        // room for an inflated body.
        let len = self.buf.bytes().len().min(self.capacity());
        let end = self.end.min(len);
        &mut self.buf.bytes_mut()[end..len]
    }

    /// Marks `n` bytes written at the start of [`free_space`](Self::free_space)
    /// as received. `n` is clamped to the storage; after an error nothing
    /// committed is parsed.
    ///
    /// `commit(0)` (a read that brought nothing, such as one that would
    /// block) on an empty decoder lets a growable buffer give its memory
    /// back, so that an idle connection holds none.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.bytes().len());
        if n == 0 && self.start == self.end {
            self.base = self.base.wrapping_add(self.start as u32);
            self.start = 0;
            self.end = 0;
            self.buf.release();
        }
    }

    /// Copies as much of `bytes` as fits and returns how many were taken.
    /// The caller feeds the rest after taking frames out.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let space = self.free_space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// Moves a partial frame to the buffer's start when little room is left;
    /// gives back scratch room an inflated body used.
    fn make_room(&mut self) {
        let len = self.buf.bytes().len();
        if self.start == self.end {
            if self.end != 0 || len != 0 {
                self.buf.release();
            }
            self.base = self.base.wrapping_add(self.start as u32);
            self.start = 0;
            self.end = 0;
        } else if len > self.capacity() {
            // Grown for an inflated body, which is gone now: keep only the
            // received bytes.
            let (start, end) = (self.start, self.end);
            self.buf.bytes_mut().copy_within(start..end, 0);
            self.base = self.base.wrapping_add(start as u32);
            self.start = 0;
            self.end = end - start;
            self.buf.shrink(self.end);
        } else if self.start > 0 && len - self.end < len / 2 {
            let (start, end) = (self.start, self.end);
            self.buf.bytes_mut().copy_within(start..end, 0);
            self.base = self.base.wrapping_add(start as u32);
            self.start = 0;
            self.end = end - start;
        }
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the error
    /// that makes the stream unusable (returned again on every later call).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        Ok(self
            .next_frame_range()?
            .map(|(packet_id, flags, body)| Frame {
                packet_id,
                flags,
                body: &self.buf.bytes()[body],
            }))
    }

    /// Puts the frame starting at `frame_start` (taken by the last
    /// [`next_frame_range`](Self::next_frame_range)) back, to be taken again.
    pub(crate) fn unread(&mut self, frame_start: usize) {
        self.start = self.start.min(frame_start);
    }

    /// The length (prefix included) and flags of the whole frame that waits
    /// next, if one does (a failed decoder or a length it refuses: none).
    pub(crate) fn peek_whole(&self) -> Option<(u32, usize, Flags)> {
        if self.failed.is_some() {
            return None;
        }
        let avail = self.buf.bytes().get(self.start..self.end)?;
        let head: &[u8; FRAME_OVERHEAD] = avail.get(..FRAME_OVERHEAD)?.try_into().ok()?;
        let [l0, l1, l2, l3, i0, i1, i2, i3, f0, f1] = *head;
        let total = LENGTH_PREFIX_LEN + u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if total < FRAME_OVERHEAD || avail.len() < total {
            return None;
        }
        let id = u32::from_be_bytes([i0, i1, i2, i3]);
        Some((id, total, Flags(u16::from_be_bytes([f0, f1]))))
    }

    /// Whether a whole frame (or an error) is waiting in the buffer.
    pub fn has_frame(&self) -> bool {
        if self.failed.is_some() {
            return true;
        }
        let avail = &self.buf.bytes()[self.start..self.end];
        if avail.len() < LENGTH_PREFIX_LEN {
            return false;
        }
        let length = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        length < HEADER_LEN
            || avail.len() >= LENGTH_PREFIX_LEN + length
            || length > self.max_frame_len()
    }

    /// The bytes of a range returned by [`next_frame_range`](Self::next_frame_range),
    /// valid until the next `&mut` call.
    pub(crate) fn stored(&self, range: core::ops::Range<usize>) -> &[u8] {
        &self.buf.bytes()[range]
    }

    /// Inflates the zlib stream at `body` (a range from
    /// [`next_frame_range`](Self::next_frame_range)) into the free space after
    /// the received bytes, and returns where the inflated body is. It stays
    /// valid until the next `&mut` call. The output is bounded: a body that
    /// would inflate to more than the largest frame body is refused, and so
    /// are bytes after the end of the zlib stream. A growable buffer makes
    /// scratch room for the largest body past whatever else is buffered
    /// ([`Buffer::reserve_scratch`]); in a fixed buffer the room is what the
    /// received bytes leave free.
    #[cfg(feature = "zlib")]
    pub(crate) fn inflate(
        &mut self,
        body: core::ops::Range<usize>,
    ) -> Result<core::ops::Range<usize>, InflateError> {
        use miniz_oxide::inflate::core::inflate_flags::{
            TINFL_FLAG_PARSE_ZLIB_HEADER, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        };
        use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
        use miniz_oxide::inflate::TINFLStatus;
        let max_body = self.max_frame_len().saturating_sub(HEADER_LEN);
        // A growable buffer grows so the largest body fits after the input,
        // whatever else is buffered.
        self.buf.reserve_scratch(self.end + max_body);
        let (received, free) = self.buf.bytes_mut().split_at_mut(self.end);
        let limit = free.len().min(max_body);
        let out = &mut free[..limit];
        let mut state = DecompressorOxide::new();
        let input = &received[body];
        let (status, read, written) = decompress(
            &mut state,
            input,
            out,
            0,
            TINFL_FLAG_PARSE_ZLIB_HEADER | TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        );
        match status {
            TINFLStatus::Done if read == input.len() => Ok(self.end..self.end + written),
            // Bytes after the end of the stream.
            TINFLStatus::Done => Err(InflateError::Invalid),
            TINFLStatus::HasMoreOutput => Err(InflateError::TooLarge { limit }),
            _ => Err(InflateError::Invalid),
        }
    }

    /// The receive fast path's look at the next frame: if it is whole and
    /// has no flag set, `accept` is asked with its packet id; when it
    /// returns `Some`, the frame is taken and its body's range (for
    /// [`stored`](Self::stored)) returned beside `accept`'s value. `None` (nothing taken) for anything else (a partial
    /// frame, a flag, a length the decoder refuses, a failed decoder, a
    /// refusal by `accept`), which [`next_frame_range`](Self::next_frame_range)
    /// then handles. A frame taken here is one `next_frame_range` would have
    /// returned the same way.
    #[inline(always)]
    pub(crate) fn take_plain_if<X>(
        &mut self,
        accept: impl FnOnce(u32) -> Option<X>,
    ) -> Option<(X, core::ops::Range<usize>)> {
        if self.failed.is_some() {
            return None;
        }
        let start = self.start;
        let avail = self.buf.bytes().get(start..self.end)?;
        let head: &[u8; FRAME_OVERHEAD] = avail.get(..FRAME_OVERHEAD)?.try_into().ok()?;
        let [l0, l1, l2, l3, i0, i1, i2, i3, f0, f1] = *head;
        let total = LENGTH_PREFIX_LEN + u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        // A whole frame fits the buffer, so its length is within
        // `max_frame_len`; one shorter than the header is left to the
        // general path, which refuses it.
        // Few branches on this path (`|`, not `||`): it runs once a frame.
        if (f0 | f1 != 0) | (total < FRAME_OVERHEAD) | (avail.len() < total) {
            return None;
        }
        let x = accept(u32::from_be_bytes([i0, i1, i2, i3]))?;
        self.start = start + total;
        Some((x, start + FRAME_OVERHEAD..start + total))
    }

    /// Like [`next_frame`](Self::next_frame), with the body as a range of the
    /// buffer, so the caller can borrow it later.
    pub(crate) fn next_frame_range(
        &mut self,
    ) -> Result<Option<(u32, Flags, core::ops::Range<usize>)>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let avail = &self.buf.bytes()[self.start..self.end];
        if avail.len() < LENGTH_PREFIX_LEN {
            return Ok(None);
        }
        let length = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
        let max = self.max_frame_len();
        let err = if (length as usize) < HEADER_LEN {
            Some(FrameError::TooShort { length })
        } else if length as usize > max {
            Some(FrameError::TooLarge { length, max })
        } else {
            None
        };
        if let Some(e) = err {
            self.failed = Some(e);
            return Err(e);
        }
        let total = LENGTH_PREFIX_LEN + length as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let packet_id = u32::from_be_bytes([avail[4], avail[5], avail[6], avail[7]]);
        let flags = Flags(u16::from_be_bytes([avail[8], avail[9]]));
        let err = if flags.unknown_bits() != 0 {
            Some(FrameError::UnknownFlags { flags })
        } else if flags.contains(Flags::ENCRYPTED_AES) {
            Some(FrameError::EncryptionUnsupported)
        } else {
            None
        };
        if let Some(e) = err {
            self.failed = Some(e);
            return Err(e);
        }
        let body_start = self.start + FRAME_OVERHEAD;
        let body_end = self.start + total;
        self.start = body_end;
        Ok(Some((packet_id, flags, body_start..body_end)))
    }
}

impl<B> fmt::Debug for FrameDecoder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &(self.end - self.start))
            .field("failed", &self.failed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pid: u32, flags: u16, body: &[u8]) -> ([u8; 64], usize) {
        let mut out = [0u8; 64];
        let n = encode_frame(&mut out, pid, Flags(flags), body).unwrap();
        (out, n)
    }

    #[test]
    fn encode_is_all_or_nothing() {
        let mut out = [0xAAu8; 11];
        assert_eq!(
            encode_frame(&mut out, 1, Flags::EMPTY, b"ab"),
            Err(BufferTooSmall { required: 12 })
        );
        assert_eq!(out, [0xAA; 11]);
    }

    #[test]
    fn length_prefix_split_at_every_byte() {
        let (a, na) = frame(70, 0, b"first");
        let (b, nb) = frame(71, 1, b"second!");
        let mut stream = [0u8; 128];
        stream[..na].copy_from_slice(&a[..na]);
        stream[na..na + nb].copy_from_slice(&b[..nb]);
        let stream = &stream[..na + nb];
        for split in 0..=stream.len() {
            let mut dec = FrameDecoder::new([0u8; 40]);
            let mut got = [0u32; 2];
            let mut count = 0;
            for part in [&stream[..split], &stream[split..]] {
                assert_eq!(dec.feed(part), part.len());
                while let Some(f) = dec.next_frame().unwrap() {
                    got[count] = f.packet_id;
                    count += 1;
                }
            }
            assert_eq!((count, got), (2, [70, 71]), "split at {split}");
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn too_large_is_refused_before_the_body() {
        let mut dec = FrameDecoder::new([0u8; 16]);
        dec.feed(&[0, 0, 0, 13]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::TooLarge {
                length: 13,
                max: 12
            })
        );
        // Sticky, and no more space is offered.
        assert!(dec.free_space().is_empty());
        assert!(dec.next_frame().is_err());
        let mut dec = FrameDecoder::new([0u8; 16]);
        dec.feed(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn too_short_and_flags() {
        for len in [0u8, 5] {
            let mut dec = FrameDecoder::new([0u8; 16]);
            dec.feed(&[0, 0, 0, len]);
            assert_eq!(
                dec.next_frame(),
                Err(FrameError::TooShort { length: len as u32 })
            );
        }
        let (f, n) = frame(1, 4, b"");
        let mut dec = FrameDecoder::new([0u8; 16]);
        dec.feed(&f[..n]);
        assert_eq!(
            dec.next_frame(),
            Err(FrameError::UnknownFlags { flags: Flags(4) })
        );
        let (f, n) = frame(1, 2, b"");
        let mut dec = FrameDecoder::new([0u8; 16]);
        dec.feed(&f[..n]);
        assert_eq!(dec.next_frame(), Err(FrameError::EncryptionUnsupported));
    }

    #[test]
    fn empty_body_and_exact_capacity() {
        let (f, n) = frame(9, 0, b"xy");
        let mut dec = FrameDecoder::new([0u8; 12]);
        assert_eq!(dec.feed(&f[..n]), 12);
        assert_eq!(dec.next_frame().unwrap().unwrap().body, b"xy");
        let (f, n) = frame(9, 0, b"");
        assert_eq!(dec.feed(&f[..n]), 10);
        assert_eq!(dec.next_frame().unwrap().unwrap().body, b"");
    }

    #[test]
    fn compaction_keeps_partial_frames() {
        let (f, n) = frame(5, 0, b"0123456789");
        let mut dec = FrameDecoder::new([0u8; 30]);
        for _ in 0..50 {
            // Feed a frame and a half, take one out, then the rest.
            let mut fed = dec.feed(&f[..n]);
            assert_eq!(fed, n);
            fed = dec.feed(&f[..7]);
            assert_eq!(fed, 7);
            assert_eq!(dec.next_frame().unwrap().unwrap().body, b"0123456789");
            assert!(dec.next_frame().unwrap().is_none());
            assert_eq!(dec.feed(&f[7..n]), n - 7);
            assert_eq!(dec.next_frame().unwrap().unwrap().body, b"0123456789");
        }
    }
}
