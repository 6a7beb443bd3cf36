//! A growable heap buffer for connections on a host.

use peng3dnet_core::buffer::Buffer;

/// The least a [`HeapBuffer`] grows to from empty: one read's worth of
/// small frames.
const MIN_GROWTH: usize = 1024;

/// A heap buffer that grows with what it is asked to hold (the core asks
/// for at most twice what is received or queued, never what a length prefix
/// announces) up to `max` bytes, and shrinks back to `keep` bytes whenever it
/// holds nothing, so an idle connection costs at most `keep` bytes per
/// direction (none with `keep` 0).
///
/// A receive buffer may grow past `max` by at most `max` again, as scratch
/// room to inflate one compressed body beside whatever else is buffered
/// ([`Buffer::reserve_scratch`]); it gives that room back as soon as the
/// body is gone ([`Buffer::shrink`]).
#[derive(Debug, Clone)]
pub struct HeapBuffer {
    bytes: Vec<u8>,
    max: usize,
    keep: usize,
}

impl HeapBuffer {
    /// An empty buffer that may grow to `max` bytes and keeps `keep` bytes
    /// of storage when empty.
    pub fn new(max: usize, keep: usize) -> Self {
        HeapBuffer {
            bytes: Vec::new(),
            max,
            keep: keep.min(max),
        }
    }

    /// The storage held now, in bytes.
    pub fn allocated(&self) -> usize {
        self.bytes.capacity()
    }

    /// Grows to `min_len` bytes (rounded up to `keep` and to the least
    /// growth), at most `limit`.
    fn grow(&mut self, min_len: usize, limit: usize) {
        let len = self.bytes.len();
        if min_len > len {
            let new_len = min_len.max(self.keep).max(MIN_GROWTH).min(limit);
            if new_len > len {
                self.bytes.resize(new_len, 0);
            }
        }
    }
}

impl Buffer for HeapBuffer {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn max_capacity(&self) -> usize {
        self.max
    }

    fn reserve(&mut self, min_len: usize) {
        self.grow(min_len, self.max);
    }

    fn reserve_scratch(&mut self, min_len: usize) {
        self.grow(min_len, self.max.saturating_mul(2));
    }

    fn release(&mut self) {
        if self.bytes.len() > self.keep {
            self.bytes.truncate(self.keep);
            self.bytes.shrink_to_fit();
        }
    }

    fn shrink(&mut self, used: usize) {
        let keep = used.max(self.keep).min(self.max);
        if self.bytes.len() > keep {
            self.bytes.truncate(keep);
            self.bytes.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_max_and_shrinks_to_keep() {
        let mut b = HeapBuffer::new(10_000, 2048);
        assert_eq!(b.bytes().len(), 0);
        b.reserve(1);
        assert_eq!(b.bytes().len(), 2048);
        b.reserve(5000);
        assert_eq!(b.bytes().len(), 5000);
        b.reserve(9000);
        assert_eq!(b.bytes().len(), 9000);
        b.reserve(20_000);
        assert_eq!(b.bytes().len(), 10_000);
        b.release();
        assert_eq!(b.bytes().len(), 2048);
        assert!(b.allocated() <= 2048 + 64);
    }

    #[test]
    fn keep_zero_gives_everything_back() {
        let mut b = HeapBuffer::new(10_000, 0);
        b.reserve(1);
        assert_eq!(b.bytes().len(), MIN_GROWTH);
        b.release();
        assert_eq!(b.allocated(), 0);
    }

    #[test]
    fn scratch_goes_past_max_and_shrinks_back() {
        let mut b = HeapBuffer::new(10_000, 0);
        b.reserve(3000);
        b.reserve_scratch(3000 + 9_990);
        assert_eq!(b.bytes().len(), 12_990);
        b.reserve_scratch(30_000);
        assert_eq!(b.bytes().len(), 20_000);
        b.bytes_mut()[..3].copy_from_slice(b"abc");
        b.shrink(3);
        assert_eq!(b.bytes(), b"abc");
        assert!(b.allocated() < 64);
    }
}
