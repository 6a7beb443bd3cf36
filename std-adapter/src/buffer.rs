//! A growable heap buffer for connections on a host.

use peng3dnet_core::buffer::Buffer;
use std::cell::RefCell;

/// The least a [`HeapBuffer`] grows to from empty: one read's worth of
/// small frames.
const MIN_GROWTH: usize = 1024;
/// Spare [`MIN_GROWTH`] buffers kept per thread (64 KiB at most), so that a
/// busy connection whose buffers are given back after every read and every
/// answer does not pay the allocator and the zeroing each time.
const SPARES: usize = 64;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A spare buffer of [`MIN_GROWTH`] bytes (its contents are another
/// buffer's old bytes: the core reads only what it wrote), if one is kept.
fn take_spare() -> Option<Vec<u8>> {
    SPARE.with(|s| s.borrow_mut().pop())
}

/// Keeps `bytes` (exactly [`MIN_GROWTH`] long) for the next buffer that
/// grows from empty, or drops it when enough are kept.
fn give_spare(bytes: Vec<u8>) {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES {
            s.push(bytes);
        }
    });
}

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
            if len == 0 && new_len == MIN_GROWTH && self.bytes.capacity() == 0 {
                if let Some(spare) = take_spare() {
                    self.bytes = spare;
                    return;
                }
            }
            if new_len > len {
                self.bytes.resize(new_len, 0);
            }
        }
    }

    /// Gives the storage past `keep_len` bytes back: all of a
    /// [`MIN_GROWTH`] buffer to the thread's spares when `keep_len` is 0.
    fn cut(&mut self, keep_len: usize) {
        if self.bytes.len() <= keep_len {
            return;
        }
        if keep_len == 0 && self.bytes.len() == MIN_GROWTH && self.bytes.capacity() == MIN_GROWTH {
            give_spare(std::mem::take(&mut self.bytes));
            return;
        }
        self.bytes.truncate(keep_len);
        self.bytes.shrink_to_fit();
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
        self.cut(self.keep);
    }

    fn shrink(&mut self, used: usize) {
        self.cut(used.max(self.keep).min(self.max));
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
    fn spare_buffers_are_reused_and_bounded() {
        // Another thread: its spares are its own.
        std::thread::spawn(|| {
            let mut bufs: Vec<HeapBuffer> = (0..SPARES + 8)
                .map(|_| {
                    let mut b = HeapBuffer::new(10_000, 0);
                    b.reserve(1);
                    b
                })
                .collect();
            for b in &mut bufs {
                b.release();
                assert_eq!(b.allocated(), 0);
            }
            assert_eq!(SPARE.with(|s| s.borrow().len()), SPARES);
            let mut b = HeapBuffer::new(10_000, 0);
            b.reserve(10);
            assert_eq!(b.bytes().len(), MIN_GROWTH);
            assert_eq!(SPARE.with(|s| s.borrow().len()), SPARES - 1);
            // A larger buffer is not kept.
            b.reserve(5000);
            b.release();
            assert_eq!(SPARE.with(|s| s.borrow().len()), SPARES - 1);
        })
        .join()
        .unwrap();
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
