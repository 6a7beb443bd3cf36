//! A growable heap buffer for connections on a host.

use peng3dnet_core::buffer::Buffer;

/// A heap buffer that grows (doubling) up to `max` bytes while a large frame
/// passes and shrinks back to `keep` bytes whenever it holds nothing, so an
/// idle connection costs at most `keep` bytes per direction.
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
        let len = self.bytes.len();
        if min_len > len {
            let new_len = min_len.max(len * 2).max(self.keep).max(1024).min(self.max);
            self.bytes.resize(new_len, 0);
        }
    }

    fn release(&mut self) {
        if self.bytes.len() > self.keep {
            self.bytes.truncate(self.keep);
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
        assert_eq!(b.bytes().len(), 10_000);
        b.reserve(20_000);
        assert_eq!(b.bytes().len(), 10_000);
        b.release();
        assert_eq!(b.bytes().len(), 2048);
        assert!(b.allocated() <= 2048 + 64);
    }
}
