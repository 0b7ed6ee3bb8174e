//! A hash table over the skiplist's nodes for point lookups.
//!
//! The skiplist answers `get` in ~log4(n) * 4 dependent cache misses; this
//! table answers it in about two (the slot, then the node). Single writer,
//! any number of readers, no locks:
//!
//! * Open addressing with linear probing over an array of `AtomicU64`
//!   slots of any length: a key's home slot is the low 32 bits of its hash
//!   scaled to the length (multiply and shift), so the table can grow by
//!   1.4x rather than 2x, which keeps it 54-75% full instead of 38-75%
//!   (10.7-15 bytes per key rather than 10.7-21). A slot is empty (0), deleted
//!   (1), or a node pointer with a 16-bit tag of the key's hash in the top
//!   bits (x86-64 and aarch64 user addresses fit in 48 bits), so probing
//!   rarely touches a wrong node.
//! * The writer publishes a node with a `Release` store after the node is
//!   built; readers load slots with `Acquire`.
//! * Growing (load above 3/4, deleted slots counted) builds a new array
//!   1.4 times as long and swaps it in; the old array is freed through the
//!   epoch, like nodes. A lookup of an absent key (every new key, and every
//!   delete of a Redis collection's metadata key that a string write
//!   carries) probes to an empty slot: about 8 slots at a load of 3/4,
//!   about 32 at 7/8, where the table grew before. Growing at 3/4 costs
//!   1.5 bytes per key and made bulk loads about 6% faster.
//!
//! The table holds no keys of its own: the key bytes live in the node.

use super::sync::{AtomicU64, Ordering};

use crossbeam_epoch::{Atomic, Guard, Owned};

use super::Node;

const EMPTY: u64 = 0;
const DELETED: u64 = 1;
const PTR_MASK: u64 = (1 << 48) - 1;

const HUGE_PAGE: usize = 2 << 20;

/// How far ahead a rebuild prefetches (per stage).
const REHASH_AHEAD: usize = 16;

/// A zeroed slot array. Arrays of 2 MiB or more are 2 MiB-aligned and
/// advised to use transparent huge pages before first touch: lookups are
/// random, and huge pages spare them most TLB misses.
pub(crate) struct Table {
    len: usize,
    ptr: *mut AtomicU64,
    layout: std::alloc::Layout,
}

// SAFETY: the array is only accessed through atomics.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

impl Table {
    fn with_capacity(cap: usize) -> Table {
        // Whole cache lines of slots; `home` scales 32 bits of hash.
        let cap = cap.max(16).next_multiple_of(8);
        assert!(cap <= u32::MAX as usize, "hash table of {cap} slots");
        let size = cap * std::mem::size_of::<AtomicU64>();
        let align = if size >= HUGE_PAGE { HUGE_PAGE } else { 64 };
        let layout = std::alloc::Layout::from_size_align(size, align).expect("slot array layout");
        // SAFETY: non-zero size; zeroed memory is a valid array of EMPTY slots.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut AtomicU64;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // Shuttle's atomics (model tests) are not valid when zeroed.
        #[cfg(feature = "shuttle")]
        for i in 0..cap {
            // SAFETY: i < cap slots were allocated above.
            unsafe { ptr.add(i).write(AtomicU64::new(0)) };
        }
        if size >= HUGE_PAGE {
            // SAFETY: advice on memory we own; failure only means small pages.
            unsafe { libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE) };
        }
        Table {
            len: cap,
            ptr,
            layout,
        }
    }

    fn slots(&self) -> &[AtomicU64] {
        // SAFETY: ptr points to len initialized (zeroed) slots.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The home slot of hash `h`: its low 32 bits scaled to the length (the
    /// top 16 bits are the tag, so home and tag are independent). Scaling
    /// the low 48 bits instead measured 40% slower on 1M overwrites, for a
    /// reason not found; the low 32 bits match the speed of the earlier
    /// power-of-two mask. Tables stay below 2^32 slots.
    #[inline]
    fn home(&self, h: usize) -> usize {
        (((h as u64 & 0xFFFF_FFFF) * self.len as u64) >> 32) as usize
    }

    /// The slot after `i`, wrapping at the end.
    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.len { 0 } else { i + 1 }
    }

    /// Hints the CPU to fetch the slot for hash `h`.
    fn prefetch(&self, h: usize) {
        super::prefetch_line(self.ptr.wrapping_add(self.home(h)));
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: allocated in with_capacity with this layout.
        unsafe { std::alloc::dealloc(self.ptr.cast(), self.layout) };
    }
}

/// The hash of a key and its tag.
pub(crate) fn hash_of(key: &[u8]) -> (usize, u64) {
    let h = xxhash_rust::xxh3::xxh3_64(key);
    // Tag 0 is reserved so that a tagged pointer is never EMPTY or DELETED.
    let tag = (h >> 48).max(1);
    (h as usize, tag << 48)
}

fn untag(slot: u64) -> *const Node {
    (slot & PTR_MASK) as usize as *const Node
}

/// The key of a node in the table.
fn key_of<'a>(node: *const Node) -> &'a [u8] {
    // SAFETY: nodes in the table are live (freed only through the epoch after
    // they leave it), and callers hold a guard or are the writer.
    unsafe { (*node).key() }
}

/// The table: the writer calls the `&mut`-style methods (through the index
/// writer, which is unique), readers call [`HashTable::find`].
pub(crate) struct HashTable {
    table: Atomic<Table>,
    /// Live entries and used slots (live + deleted); writer-side counts.
    live: AtomicU64,
    used: AtomicU64,
}

impl HashTable {
    pub(crate) fn new() -> Self {
        HashTable {
            table: Atomic::new(Table::with_capacity(16)),
            live: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    /// Bytes held by the slot array.
    pub(crate) fn memory_bytes(&self) -> usize {
        // SAFETY: only the writer replaces the table; a stale read of the
        // length is harmless for a statistic.
        let t = unsafe {
            self.table
                .load(Ordering::Acquire, crossbeam_epoch::unprotected())
                .deref()
        };
        t.slots().len() * 8
    }

    /// Finds the node whose key is `key`; `key_of` reads a node's key.
    pub(crate) fn find<'g>(&self, key: &[u8], guard: &'g Guard) -> Option<&'g Node> {
        let (h, tag) = hash_of(key);
        // SAFETY: the table pointer is never null and freed only via the epoch.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let mut i = t.home(h);
        loop {
            let s = t.slots()[i].load(Ordering::Acquire);
            if s == EMPTY {
                return None;
            }
            if s != DELETED && s & !PTR_MASK == tag {
                // SAFETY: a published node stays allocated until the epoch
                // of every reader that could have seen it has passed.
                let node = unsafe { &*untag(s) };
                if node.key() == key {
                    return Some(node);
                }
            }
            i = t.next(i);
        }
    }

    /// Prefetches the home slot of `key` (first stage of a lookup that
    /// other work can overlap; see [`HashTable::prefetch_node`]).
    pub(crate) fn prefetch_slot(&self, key: &[u8], guard: &Guard) {
        self.prefetch(hash_of(key), guard);
    }

    /// Second stage: reads the home slot of `key` (fetched by
    /// [`HashTable::prefetch_slot`] a while ago) and prefetches the node it
    /// points to if the tag matches.
    pub(crate) fn prefetch_node(&self, key: &[u8], guard: &Guard) {
        let (h, tag) = hash_of(key);
        // SAFETY: as in find.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let s = t.slots()[t.home(h)].load(Ordering::Acquire);
        if s > DELETED && s & !PTR_MASK == tag {
            super::prefetch_line(untag(s));
        }
    }

    /// Adds a node for a key that is not in the table (writer only).
    /// `key_of` reads a node's key (for rehashing when the table grows).
    pub(crate) fn insert(&self, key: &[u8], node: *const Node, guard: &Guard) {
        self.insert_hashed(hash_of(key), node, guard)
    }

    /// Prefetches the slot a later `insert_hashed(hash, ..)` will write.
    pub(crate) fn prefetch(&self, hash: (usize, u64), guard: &Guard) {
        // SAFETY: as in find.
        unsafe { self.table.load(Ordering::Acquire, guard).deref() }.prefetch(hash.0);
    }

    /// `insert` with the key's hash already computed.
    pub(crate) fn insert_hashed(&self, (h, tag): (usize, u64), node: *const Node, guard: &Guard) {
        debug_assert_eq!(node as u64 & !PTR_MASK, 0, "pointer wider than 48 bits");
        let used = self.used.load(Ordering::Relaxed);
        let cap = self.capacity(guard);
        if (used + 1) * 4 > cap as u64 * 3 {
            // Grow by 1.4x when live entries fill 15/28 of the table or more
            // (the load just after a growth); otherwise deleted slots are the
            // problem and a same-size rebuild clears them.
            let live = self.live.load(Ordering::Relaxed) as usize;
            let target = if live * 28 >= cap * 15 {
                cap + cap * 2 / 5
            } else {
                cap
            };
            self.grow_to(target, guard);
        }
        // SAFETY: as in find.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let mut i = t.home(h);
        loop {
            let s = t.slots()[i].load(Ordering::Relaxed);
            if s == EMPTY || s == DELETED {
                if s == EMPTY {
                    self.used.fetch_add(1, Ordering::Relaxed);
                }
                t.slots()[i].store(node as u64 | tag, Ordering::Release);
                self.live.fetch_add(1, Ordering::Relaxed);
                return;
            }
            i = t.next(i);
        }
    }

    fn capacity(&self, guard: &Guard) -> usize {
        // SAFETY: as in find.
        unsafe { self.table.load(Ordering::Acquire, guard).deref() }
            .slots()
            .len()
    }

    /// Removes the slot of `node` (writer only).
    pub(crate) fn remove(&self, key: &[u8], node: *const Node, guard: &Guard) {
        // SAFETY: as in find.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let (h, tag) = hash_of(key);
        let mut i = t.home(h);
        loop {
            let s = t.slots()[i].load(Ordering::Relaxed);
            if s == EMPTY {
                debug_assert!(false, "removing a node that is not in the hash table");
                return;
            }
            if s == node as u64 | tag {
                t.slots()[i].store(DELETED, Ordering::Release);
                self.live.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            i = t.next(i);
        }
    }

    /// Makes room for `n` live entries without growing again (bulk loads).
    pub(crate) fn reserve(&self, n: usize, guard: &Guard) {
        if n * 4 > self.capacity(guard) * 3 {
            self.grow_to((n * 4).div_ceil(3) + 1, guard);
        }
    }

    /// Rebuilds the slots in an array of at least `capacity` slots (deleted
    /// slots are dropped) and swaps it in.
    fn grow_to(&self, capacity: usize, guard: &Guard) {
        // SAFETY: as in find.
        let old = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let new = Table::with_capacity(capacity);
        let mut live = 0u64;
        // A two-stage pipeline, REHASH_AHEAD entries deep each: the node's
        // key is prefetched, then (the key hashed) its new home slot, then
        // the entry is placed. Every step is otherwise a cache miss.
        let mut keyed = [0u64; REHASH_AHEAD];
        let mut homed = [(0u64, 0usize); REHASH_AHEAD];
        let place = |(s, h): (u64, usize)| {
            let mut i = new.home(h);
            while new.slots()[i].load(Ordering::Relaxed) != EMPTY {
                i = new.next(i);
            }
            new.slots()[i].store(s, Ordering::Relaxed);
        };
        let mut n = 0usize;
        let live_slots = old.slots().iter().map(|s| s.load(Ordering::Relaxed));
        for s in live_slots.filter(|&s| s != EMPTY && s != DELETED) {
            super::prefetch(untag(s));
            if n >= REHASH_AHEAD {
                let k = keyed[n % REHASH_AHEAD];
                let (h, _) = hash_of(key_of(untag(k)));
                new.prefetch(h);
                if n >= 2 * REHASH_AHEAD {
                    place(homed[n % REHASH_AHEAD]);
                }
                homed[n % REHASH_AHEAD] = (k, h);
            }
            keyed[n % REHASH_AHEAD] = s;
            n += 1;
        }
        // Drain: entries still waiting for their hash, then for placement.
        for j in n.saturating_sub(2 * REHASH_AHEAD)..n {
            if j + REHASH_AHEAD < n {
                place(homed[j % REHASH_AHEAD]);
            } else {
                let k = keyed[j % REHASH_AHEAD];
                place((k, hash_of(key_of(untag(k))).0));
            }
        }
        live += n as u64;
        self.used.store(live, Ordering::Relaxed);
        let prev = self.table.swap(Owned::new(new), Ordering::AcqRel, guard);
        // SAFETY: readers pinned before the swap may still probe the old
        // array; the epoch frees it after them.
        unsafe { guard.defer_destroy(prev) };
    }
}

impl Drop for HashTable {
    fn drop(&mut self) {
        // SAFETY: &mut self: no reader remains.
        unsafe {
            let g = crossbeam_epoch::unprotected();
            let p = self.table.load(Ordering::Relaxed, g);
            if !p.is_null() {
                drop(p.into_owned());
            }
        }
    }
}

#[cfg(all(test, not(feature = "shuttle")))]
mod tests {
    use super::super::{Entry, Node};
    use super::*;

    fn entry() -> Entry {
        Entry {
            segment: 1,
            offset: 0,
            value_len: 0,
            version: 1,
            tombstone: false,
            flags: 0,
        }
    }

    /// Growth keeps every key findable, deleted slots are reused or rebuilt
    /// away, and the load stays between 15/28 (after a growth) and 3/4.
    #[test]
    fn finds_every_key_across_growth_and_deletes() {
        let t = HashTable::new();
        let g = crossbeam_epoch::pin();
        let key = |i: u32| format!("key-{i:08}").into_bytes();
        let mut nodes = Vec::new();
        let mut caps = vec![t.capacity(&g)];
        for i in 0..50_000u32 {
            let k = key(i);
            let n = Node::alloc(1, &k, &entry());
            t.insert(&k, n, &g);
            nodes.push(n);
            let cap = t.capacity(&g);
            if cap != *caps.last().unwrap() {
                caps.push(cap);
                // Just grown: live entries fill 15/28 to 3/4 of the new array.
                let live = t.live.load(Ordering::Relaxed) as usize;
                assert!(
                    live * 4 <= cap * 3 && live * 28 >= cap * 15 - 140,
                    "{live} in {cap}"
                );
            }
        }
        assert!(caps.len() > 10, "the table grew: {caps:?}");
        for w in caps.windows(2) {
            assert!(
                w[1] * 5 >= w[0] * 7 - 5 && w[1] <= w[0] * 7 / 5 + 8,
                "{caps:?}"
            );
        }
        // Remove every other key, then add new ones into the freed room.
        for i in (0..50_000u32).step_by(2) {
            t.remove(&key(i), nodes[i as usize], &g);
        }
        for i in 50_000..75_000u32 {
            let k = key(i);
            let n = Node::alloc(1, &k, &entry());
            t.insert(&k, n, &g);
            nodes.push(n);
        }
        assert_eq!(t.live.load(Ordering::Relaxed), 50_000);
        for i in 0..75_000u32 {
            let found = t.find(&key(i), &g).map(|n| n as *const Node);
            if i < 50_000 && i % 2 == 0 {
                assert_eq!(found, None, "removed key {i}");
            } else {
                assert_eq!(found, Some(nodes[i as usize] as *const Node), "key {i}");
            }
        }
        assert!(t.find(b"absent", &g).is_none());
        drop(t);
        for n in nodes {
            // SAFETY: allocated above; the table is gone, nothing else holds them.
            unsafe { Node::free(n) };
        }
    }

    /// A reserved table takes its entries without growing again.
    #[test]
    fn reserve_sizes_for_the_count() {
        let t = HashTable::new();
        let g = crossbeam_epoch::pin();
        t.reserve(100_000, &g);
        let cap = t.capacity(&g);
        assert!(
            cap * 3 >= 100_000 * 4 && cap < 100_000 * 4 / 3 + 16,
            "{cap}"
        );
        let mut nodes = Vec::new();
        for i in 0..100_000u32 {
            let k = i.to_be_bytes();
            let n = Node::alloc(1, &k, &entry());
            t.insert(&k, n, &g);
            nodes.push(n);
        }
        assert_eq!(t.capacity(&g), cap);
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(
                t.find(&(i as u32).to_be_bytes(), &g)
                    .map(|n| n as *const Node),
                Some(*n as *const Node)
            );
        }
        drop(t);
        for n in nodes {
            // SAFETY: as above.
            unsafe { Node::free(n) };
        }
    }
}
