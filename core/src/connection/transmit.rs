//! The transmit side's storage: [`TxBuf`], the queue of encoded frames over
//! the caller's buffer, the space held back for `closeconn`
//! ([`CLOSE_RESERVE`], [`MIN_TX_BUFFER`]) and compression of outgoing bodies.

use super::config::Compressor;
use super::error::{NewConnectionError, SendError};
use super::Inner;
use crate::buffer::Buffer;
use crate::codec::{Codec, CodecError};
use crate::registry::RegistryAccess;
use crate::types::CloseReason;
use crate::wire::{write_header, Flags, FRAME_OVERHEAD, MAX_BODY_LEN};
use serde::Serialize;

/// Bytes of the transmit buffer held back so that a `closeconn` always fits.
pub const CLOSE_RESERVE: usize = 96;
/// The smallest transmit buffer a connection accepts.
pub const MIN_TX_BUFFER: usize = 2 * CLOSE_RESERVE;

/// A linear transmit queue over caller storage: the bytes from `start` to
/// `end` wait to be written; it starts over at 0 once they all are.
pub(super) struct TxBuf<B> {
    buf: B,
    start: usize,
    end: usize,
    /// A frame was queued since [`take_queued`](Self::take_queued) last
    /// looked (the keepalive needs none then).
    queued: bool,
    /// Body bytes encoded into frames so far, counted before compression
    /// (the server's measure of the work a client's answers cost).
    encoded: u64,
}

impl<B> TxBuf<B> {
    /// An empty queue over `buf`.
    pub(super) fn new(buf: B) -> Self {
        TxBuf {
            buf,
            start: 0,
            end: 0,
            queued: false,
            encoded: 0,
        }
    }

    /// Body bytes encoded so far, before compression (wrapping).
    pub(super) fn encoded(&self) -> u64 {
        self.encoded
    }

    /// The caller's storage.
    pub(super) fn buffer(&self) -> &B {
        &self.buf
    }

    /// Gives the storage back.
    pub(super) fn into_buffer(self) -> B {
        self.buf
    }

    /// Whether a frame was queued since the last call, or bytes still wait.
    pub(super) fn take_queued(&mut self) -> bool {
        core::mem::take(&mut self.queued) || self.end != self.start
    }
}

impl<B: Buffer> TxBuf<B> {
    /// Refuses storage smaller than [`MIN_TX_BUFFER`].
    pub(super) fn check_size(buf: &B) -> Result<(), NewConnectionError> {
        if buf.max_capacity() < MIN_TX_BUFFER {
            return Err(NewConnectionError::TxBufferTooSmall {
                required: MIN_TX_BUFFER,
            });
        }
        Ok(())
    }

    /// The most bytes the storage can ever hold.
    fn capacity(&self) -> usize {
        self.buf.max_capacity()
    }

    /// The bytes waiting to be written.
    pub(super) fn pending(&self) -> &[u8] {
        &self.buf.bytes()[self.start..self.end]
    }

    /// Drops the first `n` waiting bytes (they were written).
    pub(super) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.clear();
        }
    }

    /// Drops every waiting byte and lets a growable buffer shrink.
    pub(super) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.buf.release();
    }

    /// Writes one frame of the protocol's own, `msg` encoded by `codec`, as
    /// [`push_frame`](Self::push_frame) does, and says whether it fits. Whoever
    /// queues one closes the connection (or refuses it) when it does not, and
    /// reports no size, so none is computed: that spares a second serializer
    /// per message type in the firmware's flash.
    #[must_use]
    pub(super) fn push_message<C: Codec, M: Serialize + ?Sized>(
        &mut self,
        packet_id: u32,
        reserve: usize,
        compressor: Option<&(dyn Compressor + Sync)>,
        codec: &C,
        msg: &M,
    ) -> bool {
        self.push_frame(
            packet_id,
            reserve,
            compressor,
            |out| codec.encode(msg, out),
            || Ok(0),
        )
        .is_ok()
    }

    /// Writes one frame whose body `body` encodes into the free space, keeping
    /// `reserve` bytes free. All or nothing. Only the size of a frame that
    /// does not fit is computed (`body_len`), to tell `WouldBlock` from
    /// `TooLarge`.
    ///
    /// A thin generic shell over [`push_encoded`](Self::push_encoded), which
    /// is compiled once per buffer type: every message type and every
    /// protocol message shares it (on a board, each copy of the frame logic
    /// cost about 250 bytes of flash).
    #[inline]
    pub(super) fn push_frame(
        &mut self,
        packet_id: u32,
        reserve: usize,
        compressor: Option<&(dyn Compressor + Sync)>,
        body: impl Fn(&mut [u8]) -> Result<usize, CodecError>,
        body_len: impl FnOnce() -> Result<usize, CodecError>,
    ) -> Result<(), SendError> {
        match self.push_encoded(packet_id, reserve, compressor, &body) {
            Ok(()) => Ok(()),
            Err(NoRoom::Encode(e)) => Err(SendError::Encode(e)),
            Err(NoRoom::Full { capacity }) => {
                let required = FRAME_OVERHEAD + body_len().map_err(SendError::Encode)?;
                if required > capacity {
                    Err(SendError::TooLarge { required, capacity })
                } else {
                    Err(SendError::WouldBlock { required })
                }
            }
        }
    }

    /// [`push_frame`](Self::push_frame)'s work, through a trait object.
    /// Out of line on bare metal (one copy for every message type: flash);
    /// inlined on a host, where the encoder is then called directly
    /// (measured with callgrind: a fifth fewer instructions a send).
    #[cfg_attr(target_os = "none", inline(never))]
    #[cfg_attr(not(target_os = "none"), inline)]
    fn push_encoded(
        &mut self,
        packet_id: u32,
        reserve: usize,
        compressor: Option<&(dyn Compressor + Sync)>,
        body: &dyn Fn(&mut [u8]) -> Result<usize, CodecError>,
    ) -> Result<(), NoRoom> {
        let capacity = self.capacity().saturating_sub(reserve);
        let mut compacted = false;
        loop {
            let len = self.buf.bytes().len().min(capacity);
            let limit = len.saturating_sub(self.end);
            if limit >= FRAME_OVERHEAD {
                let end = self.end;
                let out = &mut self.buf.bytes_mut()[end..end + limit];
                match body(&mut out[FRAME_OVERHEAD..]) {
                    Ok(n) if n <= MAX_BODY_LEN => {
                        self.encoded = self.encoded.wrapping_add(n as u64);
                        let wants = compressor.filter(|c| n > c.threshold());
                        if wants.is_some() {
                            // A growable buffer makes room for the deflated
                            // copy after the body (zlib's worst case).
                            let need = end + FRAME_OVERHEAD + n + zlib_bound(n);
                            if need > self.buf.bytes().len() {
                                self.buf.reserve(need.min(capacity));
                            }
                        }
                        let len = self.buf.bytes().len().min(capacity);
                        let out = &mut self.buf.bytes_mut()[end..len];
                        let (n, flags) = compress_in_place(&mut out[FRAME_OVERHEAD..], n, wants);
                        write_header(out, packet_id, flags, n);
                        self.end += FRAME_OVERHEAD + n;
                        self.queued = true;
                        return Ok(());
                    }
                    Ok(_) => return Err(NoRoom::Encode(CodecError::Unsupported)),
                    Err(CodecError::BufferTooSmall) => {}
                    Err(e) => return Err(NoRoom::Encode(e)),
                }
            }
            if len < capacity {
                // A growable buffer: double (at least by a frame header).
                let want = (len * 2)
                    .max(len + FRAME_OVERHEAD + 1)
                    .min(capacity + reserve);
                self.buf.reserve(want);
                if self.buf.bytes().len() > len {
                    continue;
                }
            }
            if compacted || self.start == 0 {
                break;
            }
            let (start, end) = (self.start, self.end);
            self.buf.bytes_mut().copy_within(start..end, 0);
            self.start = 0;
            self.end = end - start;
            compacted = true;
        }
        Err(NoRoom::Full { capacity })
    }
}

/// Why [`TxBuf::push_encoded`] queued nothing.
enum NoRoom {
    /// The body did not encode.
    Encode(CodecError),
    /// It did not fit the `capacity` bytes the queue may use.
    Full { capacity: usize },
}

impl<C: Codec, T: Buffer, const N: usize, G: RegistryAccess<N>> Inner<'_, C, T, N, G> {
    /// Queues a protocol message; when it does not fit, the connection closes
    /// with `writequeuefull`.
    pub(super) fn queue_internal<M: Serialize>(&mut self, packet_id: u32, msg: &M) {
        let queued = self.tx.push_message(
            packet_id,
            CLOSE_RESERVE,
            self.config.compressor,
            &self.codec,
            msg,
        );
        if !queued {
            self.close(CloseReason::WriteQueueFull);
        }
    }
}

/// The most bytes zlib may need for `n` bytes of input (deflate's stored
/// blocks plus the zlib header and checksum), with some slack.
fn zlib_bound(n: usize) -> usize {
    n + n / 1000 + 5 * (n / 16_384 + 1) + 64
}

/// Compresses the `n`-byte body at the start of `area` in place when a
/// compressor wants it and it shrinks; returns the body's length and flags.
fn compress_in_place(
    area: &mut [u8],
    n: usize,
    compressor: Option<&(dyn Compressor + Sync)>,
) -> (usize, Flags) {
    match compressor.and_then(|c| c.compress_in_place(area, n)) {
        Some(m) => (m, Flags::COMPRESSED),
        None => (n, Flags::EMPTY),
    }
}
