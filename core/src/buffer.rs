//! Storage for a connection's received and queued bytes, owned by the caller.
//!
//! A microcontroller gives fixed arrays (`[u8; N]`) or `&'static mut [u8]`;
//! their capacity is their length. A host can give a growable buffer that
//! starts empty, grows up to a maximum while a large frame passes, and gives
//! its memory back when it holds nothing, so that an idle connection costs
//! almost nothing. The core only asks for room and tells when the buffer is
//! empty; the policy is the buffer's.
//!
//! ```
//! use peng3dnet_core::buffer::Buffer;
//!
//! let mut fixed = [0u8; 64];
//! assert_eq!(Buffer::max_capacity(&fixed), 64);
//! fixed.reserve(1000); // cannot grow: stays 64 bytes
//! assert_eq!(fixed.bytes().len(), 64);
//! ```

/// Byte storage for [`FrameDecoder`](crate::wire::FrameDecoder) and a
/// connection's transmit queue.
pub trait Buffer {
    /// The storage as it is now.
    fn bytes(&self) -> &[u8];

    /// The storage as it is now, mutably.
    fn bytes_mut(&mut self) -> &mut [u8];

    /// The most bytes it can ever hold; it bounds the frame size. For a fixed
    /// buffer, its length.
    fn max_capacity(&self) -> usize {
        self.bytes().len()
    }

    /// Asks for at least `min_len` bytes of storage (never more than
    /// [`max_capacity`](Self::max_capacity)), keeping the contents. A fixed
    /// buffer does nothing; a growable one may round up.
    fn reserve(&mut self, min_len: usize) {
        let _ = min_len;
    }

    /// Told that the buffer holds no data now: a growable buffer may give its
    /// memory back. A fixed buffer does nothing.
    fn release(&mut self) {}

    /// Asks for at least `min_len` bytes of scratch room after the received
    /// bytes, where the frame decoder inflates a compressed body: up to
    /// [`max_capacity`](Self::max_capacity) plus the largest body, so that
    /// the room a body inflates into does not depend on what else is
    /// buffered. The default is [`reserve`](Self::reserve): a fixed buffer
    /// cannot grow, and there the room is what the received bytes leave free.
    fn reserve_scratch(&mut self, min_len: usize) {
        self.reserve(min_len);
    }

    /// Told that only the first `used` bytes hold data, after the storage
    /// grew past [`max_capacity`](Self::max_capacity) for scratch room: a
    /// growable buffer may give back what lies past them. A fixed buffer
    /// does nothing.
    fn shrink(&mut self, used: usize) {
        let _ = used;
    }
}

impl<const N: usize> Buffer for [u8; N] {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl Buffer for &mut [u8] {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}
