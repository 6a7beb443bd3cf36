//! The server's client storage: caller-owned slots with generational ids, a
//! free list and one timer heap threaded through the slots themselves, so
//! that the server needs no storage beyond what the caller gives it.
//!
//! Slot indices inside the table are `u16` (a storage holds at most
//! [`MAX_SLOTS`] slots: the std adapter's 10,000 clients fit), and one link
//! field serves both the free list (while a slot is free) and the heap (while
//! its client is filed): a free slot is never in the heap. That keeps a
//! slot's bookkeeping at 8 bytes beside its deadline.

use crate::time::{Instant, MaybeInstant};
use core::fmt;

/// The id of a client on a [`Server`](super::Server): a slot and the
/// generation of its use. An id is never reused while the server lives
/// (until 2^32 reuses of one slot), so a stale id reaches nobody.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ClientId {
    slot: u32,
    generation: u32,
}

impl ClientId {
    pub(crate) const fn new(slot: u32, generation: u32) -> Self {
        ClientId { slot, generation }
    }

    /// The id as one number (generation in the high half, slot in the low).
    pub const fn as_u64(self) -> u64 {
        (self.generation as u64) << 32 | self.slot as u64
    }

    /// The slot index in the server's storage.
    pub const fn slot(self) -> usize {
        self.slot as usize
    }
}

/// `ClientId(slot/generation)`: written out rather than derived (a derived
/// `Debug` builds a struct in the formatter, measured larger on the
/// firmware, which logs ids).
impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({}/{})", self.slot, self.generation)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u64())
    }
}

/// No slot (the end of the free list, not in the timer heap).
const NIL: u16 = u16::MAX;

/// The most slots a [`Storage`] may hold: a growable one stops growing there.
pub const MAX_SLOTS: usize = NIL as usize;

/// One place for a client in a server's [`Storage`]. Make empty ones with
/// [`Slot::EMPTY`] (a fixed array: `[const { Slot::EMPTY }; 8]`) or
/// [`Slot::default`]; the server fills and empties them.
pub struct Slot<X> {
    generation: u32,
    /// While this slot is free: the next free slot. While it holds a
    /// client: where the client sits in the timer heap. [`NIL`]: none.
    link: u16,
    /// The slot index stored at heap position `this slot's index`.
    heap_item: u16,
    /// The earliest deadline of this slot's client, as filed in the heap.
    due: MaybeInstant,
    pub(crate) client: Option<X>,
}

impl<X> Slot<X> {
    /// An empty slot.
    pub const EMPTY: Self = Slot {
        generation: 0,
        link: NIL,
        heap_item: NIL,
        due: MaybeInstant::NONE,
        client: None,
    };
}

impl<X> Default for Slot<X> {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Where a server keeps its clients: a fixed array on a microcontroller
/// (`[Slot<_>; N]`), a growable vector on a host (the adapter's own type,
/// that implements [`push`](Self::push)).
pub trait Storage<T> {
    /// The slots there are now.
    fn slots(&self) -> &[T];

    /// The slots there are now, mutably.
    fn slots_mut(&mut self) -> &mut [T];

    /// Adds one slot at the end if the storage can grow, or hands it back.
    /// A fixed array cannot grow (the default). The server stops asking at
    /// [`MAX_SLOTS`].
    fn push(&mut self, slot: T) -> Result<(), T> {
        Err(slot)
    }

    /// Whether the server files its clients' deadlines in a timer heap
    /// threaded through the slots (the default: a large or growable
    /// storage), or finds the earliest by a scan over the slots (a small
    /// fixed array: far less code, and no slower for a handful of slots).
    const TIMER_HEAP: bool = true;
}

/// The most slots a fixed array may have for the server to scan it for the
/// earliest deadline instead of keeping a timer heap.
const SCAN_SLOTS: usize = 16;

impl<T, const K: usize> Storage<T> for [T; K] {
    const TIMER_HEAP: bool = K > SCAN_SLOTS;

    fn slots(&self) -> &[T] {
        self
    }

    fn slots_mut(&mut self) -> &mut [T] {
        self
    }
}

impl<T> Storage<T> for &mut [T] {
    fn slots(&self) -> &[T] {
        self
    }

    fn slots_mut(&mut self) -> &mut [T] {
        self
    }
}

/// The bookkeeping over a [`Storage`]: the free list, the count, the heap.
pub(crate) struct Table<X, S> {
    pub(crate) storage: S,
    _client: core::marker::PhantomData<fn(X) -> X>,
    free_head: u16,
    len: usize,
    heap_len: u16,
}

impl<X, S: Storage<Slot<X>>> Table<X, S> {
    /// Takes over `storage`; whatever its slots held is dropped.
    pub(crate) fn new(mut storage: S) -> Self {
        let slots = storage.slots_mut();
        // Chain the slots so that slot 0 is taken first (slots past
        // MAX_SLOTS stay out of the chain: they are never used).
        let mut free_head = NIL;
        for i in (0..slots.len().min(MAX_SLOTS)).rev() {
            let s = &mut slots[i];
            s.client = None;
            s.link = free_head;
            s.due = MaybeInstant::NONE;
            free_head = i as u16;
        }
        Table {
            storage,
            _client: core::marker::PhantomData,
            free_head,
            len: 0,
            heap_len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Puts `client` into a free slot (growing the storage if it can and
    /// `limit` allows), or hands it back.
    pub(crate) fn insert(&mut self, client: X, limit: usize) -> Result<ClientId, X> {
        if self.len >= limit {
            return Err(client);
        }
        if self.free_head == NIL {
            let n = self.storage.slots().len();
            if n >= MAX_SLOTS || self.storage.push(Slot::EMPTY).is_err() {
                return Err(client);
            }
            self.free_head = n as u16;
        }
        let index = self.free_head;
        let s = &mut self.storage.slots_mut()[index as usize];
        self.free_head = s.link;
        // Taken: the link is the heap position now, and it is in no heap.
        s.link = NIL;
        s.client = Some(client);
        self.len += 1;
        Ok(ClientId::new(index as u32, s.generation))
    }

    /// The slot index of a live id.
    pub(crate) fn index(&self, id: ClientId) -> Option<usize> {
        let s = self.storage.slots().get(id.slot())?;
        (s.generation == id.generation && s.client.is_some()).then_some(id.slot())
    }

    pub(crate) fn get_mut(&mut self, id: ClientId) -> Option<&mut X> {
        let i = self.index(id)?;
        self.storage.slots_mut()[i].client.as_mut()
    }

    pub(crate) fn get(&self, id: ClientId) -> Option<&X> {
        let i = self.index(id)?;
        self.storage.slots()[i].client.as_ref()
    }

    /// The id of the client in slot `i`, if there is one.
    pub(crate) fn id_at(&self, i: usize) -> Option<ClientId> {
        let s = self.storage.slots().get(i)?;
        s.client
            .as_ref()
            .map(|_| ClientId::new(i as u32, s.generation))
    }

    /// Takes the client out; its id is dead from now on.
    pub(crate) fn remove(&mut self, id: ClientId) -> Option<X> {
        let i = self.index(id)?;
        self.refile(i, MaybeInstant::NONE);
        let s = &mut self.storage.slots_mut()[i];
        let client = s.client.take()?;
        s.generation = s.generation.wrapping_add(1);
        // Out of the heap (refiled as none above): the link is free again.
        s.link = self.free_head;
        self.free_head = i as u16;
        self.len -= 1;
        Some(client)
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.storage.slots().len()
    }

    // ---- the timer heap: a binary min-heap of slot indices by `due` (a
    // storage without one: `due` alone, scanned) ----

    /// The slot whose deadline comes first, with it.
    pub(crate) fn earliest(&self) -> Option<(usize, Instant)> {
        if !S::TIMER_HEAP {
            // The first of the earliest (free slots have no deadline).
            let mut best: Option<(usize, Instant)> = None;
            for (i, s) in self.storage.slots().iter().enumerate() {
                match (s.due.get(), best) {
                    (Some(at), Some((_, b))) if at >= b => {}
                    (Some(at), _) => best = Some((i, at)),
                    (None, _) => {}
                }
            }
            return best;
        }
        if self.heap_len == 0 {
            return None;
        }
        let slots = self.storage.slots();
        let i = slots[0].heap_item as usize;
        slots[i].due.get().map(|at| (i, at))
    }

    /// Files slot `i` under `due` (none: takes it out of the heap).
    pub(crate) fn refile(&mut self, i: usize, due: MaybeInstant) {
        let slots = self.storage.slots_mut();
        let old = slots[i].due;
        if old == due {
            return;
        }
        slots[i].due = due;
        if !S::TIMER_HEAP {
            return;
        }
        let pos = slots[i].link;
        match (pos == NIL, due.get().is_some()) {
            (true, false) => {}
            (true, true) => {
                let at = self.heap_len;
                self.heap_len += 1;
                self.place(at, i as u16);
                self.sift_up(at);
            }
            (false, false) => {
                self.heap_len -= 1;
                let last = self.heap_len;
                self.storage.slots_mut()[i].link = NIL;
                if pos != last {
                    let moved = self.storage.slots()[last as usize].heap_item;
                    self.place(pos, moved);
                    self.sift_down(pos);
                    self.sift_up(pos);
                }
            }
            (false, true) => {
                if due.get() < old.get() {
                    self.sift_up(pos);
                } else {
                    self.sift_down(pos);
                }
            }
        }
    }

    fn key(&self, pos: u16) -> u64 {
        let slots = self.storage.slots();
        slots[slots[pos as usize].heap_item as usize]
            .due
            .get()
            .map_or(u64::MAX, Instant::as_micros)
    }

    fn place(&mut self, pos: u16, item: u16) {
        let slots = self.storage.slots_mut();
        slots[pos as usize].heap_item = item;
        slots[item as usize].link = pos;
    }

    fn swap(&mut self, a: u16, b: u16) {
        let slots = self.storage.slots();
        let (ia, ib) = (slots[a as usize].heap_item, slots[b as usize].heap_item);
        self.place(a, ib);
        self.place(b, ia);
    }

    fn sift_up(&mut self, mut pos: u16) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.key(parent) <= self.key(pos) {
                break;
            }
            self.swap(parent, pos);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: u16) {
        loop {
            // In u32: the children of a position near MAX_SLOTS overflow u16.
            let (l, r) = (2 * pos as u32 + 1, 2 * pos as u32 + 2);
            let heap_len = u32::from(self.heap_len);
            let mut least = pos;
            if l < heap_len && self.key(l as u16) < self.key(least) {
                least = l as u16;
            }
            if r < heap_len && self.key(r as u16) < self.key(least) {
                least = r as u16;
            }
            if least == pos {
                return;
            }
            self.swap(pos, least);
            pos = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    struct Grow(Vec<Slot<u32>>, usize);
    impl Storage<Slot<u32>> for Grow {
        fn slots(&self) -> &[Slot<u32>] {
            &self.0
        }
        fn slots_mut(&mut self) -> &mut [Slot<u32>] {
            &mut self.0
        }
        fn push(&mut self, slot: Slot<u32>) -> Result<(), Slot<u32>> {
            if self.0.len() < self.1 {
                self.0.push(slot);
                Ok(())
            } else {
                Err(slot)
            }
        }
    }

    #[test]
    fn ids_are_generational_and_slots_reused() {
        let mut t = Table::new([const { Slot::EMPTY }; 2]);
        let a = t.insert(1, 10).unwrap();
        let b = t.insert(2, 10).unwrap();
        assert_eq!(t.insert(3, 10), Err(3), "a fixed array does not grow");
        assert_eq!(t.remove(a), Some(1));
        assert_eq!(t.remove(a), None, "a dead id stays dead");
        let c = t.insert(3, 10).unwrap();
        assert_eq!(c.slot(), a.slot());
        assert_ne!(c, a);
        assert!(t.get(a).is_none());
        assert_eq!(t.get(b), Some(&2));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn growable_storage_grows_up_to_its_limit_and_the_server_limit() {
        let mut t = Table::new(Grow(Vec::new(), 3));
        assert!(t.insert(1, 2).is_ok());
        assert!(t.insert(2, 2).is_ok());
        assert_eq!(t.insert(3, 2), Err(3), "the server's limit");
        assert!(t.insert(3, 5).is_ok());
        assert_eq!(t.insert(4, 5), Err(4), "the storage's limit");
        assert_eq!(t.slot_count(), 3);
    }

    #[test]
    fn the_heap_hands_out_the_earliest_deadline_after_any_change() {
        const { assert!(<Grow as Storage<Slot<u32>>>::TIMER_HEAP) };
        earliest_after_any_change::<64, _>(Table::new(Grow(Vec::new(), 64)));
    }

    #[test]
    fn the_scan_of_a_small_array_hands_out_the_earliest_deadline_after_any_change() {
        type Small = [Slot<u32>; SCAN_SLOTS];
        const { assert!(!<Small as Storage<Slot<u32>>>::TIMER_HEAP) };
        earliest_after_any_change::<SCAN_SLOTS, _>(Table::new([const { Slot::EMPTY }; SCAN_SLOTS]));
        let big = [const { Slot::EMPTY }; SCAN_SLOTS + 1];
        const { assert!(<[Slot<u32>; SCAN_SLOTS + 1] as Storage<Slot<u32>>>::TIMER_HEAP) };
        earliest_after_any_change::<{ SCAN_SLOTS + 1 }, _>(Table::new(big));
    }

    /// Fills all `K` slots of `t`, files, changes and removes deadlines, and
    /// checks that `earliest` hands them out in order.
    fn earliest_after_any_change<const K: usize, S: Storage<Slot<u32>>>(mut t: Table<u32, S>) {
        let ids: Vec<ClientId> = (0..K as u32).map(|i| t.insert(i, K).unwrap()).collect();
        // Deadlines in a scrambled order, some changed, some removed.
        let mut due = [None; K];
        for (k, id) in ids.iter().enumerate() {
            let at = (k as u64 * 37) % 64 + 1;
            due[k] = Some(at);
            t.refile(id.slot(), MaybeInstant::new(Instant::from_micros(at)));
        }
        for k in (0..K).step_by(3) {
            let at = (k as u64 * 11) % 50 + 100;
            due[k] = Some(at);
            t.refile(ids[k].slot(), MaybeInstant::new(Instant::from_micros(at)));
        }
        for k in (0..K).step_by(5) {
            due[k] = None;
            t.refile(ids[k].slot(), MaybeInstant::NONE);
        }
        t.remove(ids[7]);
        due[7] = None;
        let mut popped = Vec::new();
        while let Some((i, at)) = t.earliest() {
            assert_eq!(Some(at.as_micros()), due[i], "slot {i}");
            popped.push(at.as_micros());
            t.refile(i, MaybeInstant::NONE);
            assert!(popped.len() <= K);
        }
        let mut want: Vec<u64> = due.iter().flatten().copied().collect();
        want.sort_unstable();
        assert_eq!(popped, want);
    }
}
