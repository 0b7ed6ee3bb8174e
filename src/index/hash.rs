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
//! * Growing (load above 3/4, deleted slots counted) swaps in a new array
//!   1.4 times as long, built ahead by a helper thread where it can be
//!   (see [`Spare`]); the old array is freed through the epoch, like
//!   nodes. A lookup of an absent key (every new key, and every
//!   delete of a Redis collection's metadata key that a string write
//!   carries) probes to an empty slot: about 8 slots at a load of 3/4,
//!   about 32 at 7/8, where the table grew before. Growing at 3/4 costs
//!   1.5 bytes per key and made bulk loads about 6% faster.
//!
//! The table holds no keys of its own: the key bytes live in the node.

use std::sync::{Arc, Mutex};

use super::sync::{AtomicU64, Ordering};

use crossbeam_epoch::{Atomic, Guard, Owned, Shared};

use super::Node;

const EMPTY: u64 = 0;
const DELETED: u64 = 1;
const PTR_MASK: u64 = (1 << 48) - 1;

/// A zeroed slot array, in 4 KiB pages. Until session 17 arrays of 2 MiB
/// or more asked for transparent huge pages (lookups are random, and huge
/// pages spare them TLB misses), but each 2 MiB page cost its first toucher
/// a 4-5 ms fault on the development VM (whose host backs it with 4 KiB
/// pages), the shard thread included, and in-process gets measured no
/// difference (1.65M-1.73M/s with them, 1.58M-1.77M/s without, three
/// alternating runs of `get/hit`).
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
        let layout = std::alloc::Layout::from_size_align(size, 64).expect("slot array layout");
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
        Table {
            len: cap,
            ptr,
            layout,
        }
    }

    /// Touches every page of the array (writing the zeros it holds), so
    /// that whoever uses it next takes no page fault.
    fn fault_in(&self) {
        for slot in self
            .slots()
            .iter()
            .step_by(4096 / std::mem::size_of::<AtomicU64>())
        {
            slot.store(EMPTY, Ordering::Relaxed);
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

/// Probes `t` for the node whose key is `key` (hash `h`, tag `tag`).
fn probe<'g>(t: &Table, key: &[u8], h: usize, tag: u64) -> Option<&'g Node> {
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

/// Slots of the old array a growing table moves per insert. A growth
/// starts at a load of 3/4 into an array 1.4 times as long, which takes
/// 0.3 of the old length in inserts before it must grow again; moving 128
/// slots per insert (about 96 entries) empties the old array within 1/128
/// of its length in inserts. Measured against 16 per insert
/// (redis-benchmark SET -P 16 on new keys): the longer window made every
/// insert of a new key probe both arrays, and SET's p99 went from 4.0-4.5
/// ms (whole-table rehash) to 7-12 ms; at 128 it is 3.9-4.1 ms. Model tests use small tables,
/// so they move a few slots at a time to see a growth half done.
const MIGRATE_STEP: usize = if cfg!(feature = "shuttle") { 4 } else { 128 };

/// The table: the writer calls the `&mut`-style methods (through the index
/// writer, which is unique), readers call [`HashTable::find`].
///
/// Growing is incremental, as Redis rehashes its dictionaries: a growth
/// swaps in an empty array and keeps the old one beside it; every insert
/// then moves the next [`MIGRATE_STEP`] slots of the old array into the new
/// one, until the old array is empty and goes to the epoch. Until then
/// lookups probe the new array, then the old one; the old array keeps every
/// entry it had (moves copy) and loses only the removed ones, which are
/// removed from both. So a growth never stops the writer for a rehash of
/// the whole table (25-40 ms at a few hundred thousand keys, measured
/// under redis-benchmark SET -P 16), and a reader always finds a present
/// key:
///
/// * it loads the new array, then the old one, then probes them in that
///   order. Seeing the old array gone (an `Acquire` of the `Release` that
///   cleared it after the last move) means every move is visible in the new
///   array it probes next; seeing it present means it probes it too.
/// * A reader that loaded the array a growth replaced probes only that
///   one, which holds every key inserted before the growth started.
pub(crate) struct HashTable {
    table: Atomic<Table>,
    /// The array being emptied into `table` (null: none).
    old: Atomic<Table>,
    /// Slots of `old` moved so far (writer only).
    moved: AtomicU64,
    /// Live entries (in both arrays, counted once), and used slots (live +
    /// deleted) of `table`; writer-side counts.
    live: AtomicU64,
    used: AtomicU64,
    /// The next array, built ahead of a growth on a helper thread.
    spare: Arc<Mutex<Spare>>,
    /// Whether the spare for the coming growth was asked for (writer
    /// only): inserts between the spare's load and the growth check this
    /// instead of taking the lock.
    spare_asked: std::sync::atomic::AtomicBool,
}

/// The array the next growth swaps in, built and faulted in by a helper
/// thread when the table is nearly full ([`SPARE_AT`]), so that the writer
/// neither allocates it nor takes its page faults, every request of the
/// shard waiting meanwhile. When the arrays were in 2 MiB pages, a growth
/// to 8 MiB held the shard thread 10-15 ms (`perf` under redis-benchmark
/// SET -P 16: `do_huge_pmd_wp_page` below `insert_hashed` and `migrate`).
enum Spare {
    None,
    /// Asked for, of this capacity; being built.
    Building(usize),
    /// Built, of this capacity.
    Ready(usize, Table),
}

/// The load (in percent of the slots) from which the next array is built
/// ahead; the table grows at 75%, 5% of the slots in inserts later. At 1M
/// keys inserted the load is 68%, so the memory figures of the benchmarks
/// hold no spare.
const SPARE_AT: u64 = 70;

/// Runs `f` on the index's helper thread; `false` if there is none. The
/// thread is in the idle scheduling class: at normal priority the
/// scheduler woke it on the shard thread's core, where it took turns of
/// 4 ms with the shard thread while it faulted a spare in.
fn on_helper(f: Box<dyn FnOnce() + Send>) -> bool {
    type Job = Box<dyn FnOnce() + Send>;
    static HELPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    HELPER
        .get_or_init(|| crate::storage::io::job_threads("flashkv-idxprep", 1, true, |f: Job| f()))
        .as_ref()
        .is_some_and(|tx| tx.send(f).is_ok())
}

impl HashTable {
    pub(crate) fn new() -> Self {
        HashTable {
            table: Atomic::new(Table::with_capacity(16)),
            old: Atomic::null(),
            moved: AtomicU64::new(0),
            live: AtomicU64::new(0),
            used: AtomicU64::new(0),
            spare: Arc::new(Mutex::new(Spare::None)),
            spare_asked: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Has the helper thread build the array of `capacity` slots for the
    /// next growth, unless one is built or being built (writer only).
    fn prepare_spare(&self, capacity: usize) {
        if cfg!(feature = "shuttle") {
            return; // model tests run no helper threads
        }
        self.spare_asked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut s = self.spare.lock().expect("spare lock");
        if !matches!(*s, Spare::None) {
            return;
        }
        *s = Spare::Building(capacity);
        drop(s);
        let spare = self.spare.clone();
        let built = on_helper(Box::new(move || {
            let t = Table::with_capacity(capacity);
            t.fault_in();
            let mut s = spare.lock().expect("spare lock");
            if matches!(*s, Spare::Building(c) if c == capacity) {
                *s = Spare::Ready(capacity, t);
            }
            // Otherwise a growth came first and gave up on it: dropped.
        }));
        if !built {
            *self.spare.lock().expect("spare lock") = Spare::None;
        }
    }

    /// The spare array if it is built and of `capacity` slots; any other
    /// is given up (writer only).
    fn take_spare(&self, capacity: usize) -> Option<Table> {
        self.spare_asked
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let prev = std::mem::replace(&mut *self.spare.lock().expect("spare lock"), Spare::None);
        match prev {
            Spare::Ready(c, t) if c == capacity => Some(t),
            _ => None,
        }
    }

    /// Bytes held by the slot arrays. Any thread may ask (the index's
    /// readers report it), so the arrays are read under a pinned guard: a
    /// growth may retire either one meanwhile.
    pub(crate) fn memory_bytes(&self) -> usize {
        let g = crossbeam_epoch::pin();
        // SAFETY: the table pointer is never null, and arrays are freed only
        // through the epoch, after this guard.
        let t = unsafe { self.table.load(Ordering::Acquire, &g).deref() };
        let old = self.old.load(Ordering::Acquire, &g);
        // SAFETY: as above.
        let o = unsafe { old.as_ref() }.map_or(0, |o| o.slots().len());
        let spare = match &*self.spare.lock().expect("spare lock") {
            Spare::Ready(_, t) => t.slots().len(),
            _ => 0,
        };
        (t.slots().len() + o + spare) * 8
    }

    /// Finds the node whose key is `key`.
    pub(crate) fn find<'g>(&self, key: &[u8], guard: &'g Guard) -> Option<&'g Node> {
        let (h, tag) = hash_of(key);
        // The new array first, then the old one (see the type's docs for why
        // both loads come before either probe).
        // SAFETY: the table pointer is never null and freed only via the epoch.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let old = self.old.load(Ordering::Acquire, guard);
        if let Some(n) = probe(t, key, h, tag) {
            return Some(n);
        }
        // SAFETY: an old array is freed only via the epoch.
        unsafe { old.as_ref() }.and_then(|o| probe(o, key, h, tag))
    }

    /// Prefetches the home slot of `key` (first stage of a lookup that
    /// other work can overlap; see [`HashTable::prefetch_node`]).
    pub(crate) fn prefetch_slot(&self, key: &[u8], guard: &Guard) {
        self.prefetch(hash_of(key), guard);
    }

    /// Second stage: reads the home slot of `key` (fetched by
    /// [`HashTable::prefetch_slot`] a while ago) and prefetches the node it
    /// points to (its header and key: two lines) if the tag matches.
    /// Whether it did: false says the key is probably absent (it may still
    /// sit in a later slot of its probe).
    pub(crate) fn prefetch_node(&self, key: &[u8], guard: &Guard) -> bool {
        let (h, tag) = hash_of(key);
        // SAFETY: as in find.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let s = t.slots()[t.home(h)].load(Ordering::Acquire);
        let hit = s > DELETED && s & !PTR_MASK == tag;
        if hit {
            super::prefetch(untag(s));
        }
        hit
    }

    /// Adds a node for a key that is not in the table (writer only).
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
        self.migrate(MIGRATE_STEP, guard);
        let used = self.used.load(Ordering::Relaxed);
        let cap = self.capacity(guard);
        if (used + 1) * 4 > cap as u64 * 3 {
            // Grow by 1.4x when live entries fill 15/28 of the table or more
            // (the load just after a growth); otherwise deleted slots are the
            // problem and a same-size rebuild clears them. A growth still
            // moving (not expected: MIGRATE_STEP per insert ends it long
            // before) finishes first.
            self.migrate(usize::MAX, guard);
            if (self.used.load(Ordering::Relaxed) + 1) * 4 > cap as u64 * 3 {
                let live = self.live.load(Ordering::Relaxed) as usize;
                let target = if live * 28 >= cap * 15 {
                    cap + cap * 2 / 5
                } else {
                    cap
                };
                self.start_growth(target, guard);
            }
        } else if (used + 1) * 100 >= cap as u64 * SPARE_AT
            && !self.spare_asked.load(std::sync::atomic::Ordering::Relaxed)
            && self.live.load(Ordering::Relaxed) as usize * 28 >= cap * 15
            && self.old.load(Ordering::Relaxed, guard).is_null()
        {
            self.prepare_spare(cap + cap * 2 / 5);
        }
        // SAFETY: as in find.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        self.place(t, h, node as u64 | tag);
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores tagged pointer `s` (hash `h`) in the first free slot of its
    /// probe sequence in `t`, the current array (writer only).
    fn place(&self, t: &Table, h: usize, s: u64) {
        let mut i = t.home(h);
        loop {
            let cur = t.slots()[i].load(Ordering::Relaxed);
            if cur == EMPTY || cur == DELETED {
                if cur == EMPTY {
                    self.used.fetch_add(1, Ordering::Relaxed);
                }
                t.slots()[i].store(s, Ordering::Release);
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

    /// Swaps in an empty array of at least `capacity` slots; the current one
    /// becomes the old array, emptied by later inserts (writer only; no
    /// growth may be moving).
    fn start_growth(&self, capacity: usize, guard: &Guard) {
        debug_assert!(self.old.load(Ordering::Relaxed, guard).is_null());
        let cur = self.table.load(Ordering::Acquire, guard);
        // The old array is published before the new one, so a reader that
        // sees the new array sees the old one (or its end) too.
        self.old.store(cur, Ordering::Release);
        self.moved.store(0, Ordering::Relaxed);
        self.used.store(0, Ordering::Relaxed);
        let next = self
            .take_spare(capacity)
            .unwrap_or_else(|| Table::with_capacity(capacity));
        self.table.store(Owned::new(next), Ordering::Release);
    }

    /// Moves up to `budget` slots of the old array into the new one; frees
    /// the old array (through the epoch) once all are moved (writer only).
    fn migrate(&self, budget: usize, guard: &Guard) {
        let old = self.old.load(Ordering::Relaxed, guard);
        // SAFETY: only the writer frees an old array, and it is the caller.
        let Some(o) = (unsafe { old.as_ref() }) else {
            return;
        };
        // SAFETY: as in find.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let mut at = self.moved.load(Ordering::Relaxed) as usize;
        let end = at.saturating_add(budget).min(o.len);
        // In chunks: prefetch the chunk's nodes (for their keys), hash them
        // and prefetch their new home slots, then place them; each stage's
        // cache misses overlap.
        const CHUNK: usize = 32;
        let mut chunk = [(0u64, 0usize); CHUNK];
        while at < end {
            let stop = (at + CHUNK).min(end);
            let mut n = 0;
            for slot in &o.slots()[at..stop] {
                let s = slot.load(Ordering::Relaxed);
                if s != EMPTY && s != DELETED {
                    super::prefetch(untag(s));
                    chunk[n] = (s, 0);
                    n += 1;
                }
            }
            for c in &mut chunk[..n] {
                c.1 = hash_of(key_of(untag(c.0))).0;
                t.prefetch(c.1);
            }
            for &(s, h) in &chunk[..n] {
                self.place(t, h, s);
            }
            at = stop;
        }
        self.moved.store(at as u64, Ordering::Relaxed);
        if at == o.len {
            // Every entry is in the new array: readers that see the old one
            // gone see every move (Release).
            let old = self.old.swap(Shared::null(), Ordering::AcqRel, guard);
            // SAFETY: readers pinned before this may still probe the old
            // array; the epoch frees it after them.
            unsafe { guard.defer_destroy(old) };
        }
    }

    /// Removes the slot of `node` (writer only), from the old array too
    /// while a growth is moving it.
    pub(crate) fn remove(&self, key: &[u8], node: *const Node, guard: &Guard) {
        let (h, tag) = hash_of(key);
        let s = node as u64 | tag;
        let clear = |t: &Table| {
            let mut i = t.home(h);
            loop {
                let cur = t.slots()[i].load(Ordering::Relaxed);
                if cur == EMPTY {
                    return false;
                }
                if cur == s {
                    t.slots()[i].store(DELETED, Ordering::Release);
                    return true;
                }
                i = t.next(i);
            }
        };
        // SAFETY: as in find.
        let t = unsafe { self.table.load(Ordering::Acquire, guard).deref() };
        let old = self.old.load(Ordering::Relaxed, guard);
        // Both arrays: a reader probes the old one after missing in the new.
        let in_new = clear(t);
        // SAFETY: only the writer frees an old array, and it is the caller.
        let in_old = unsafe { old.as_ref() }.is_some_and(clear);
        if in_new || in_old {
            self.live.fetch_sub(1, Ordering::Relaxed);
        } else {
            debug_assert!(false, "removing a node that is not in the hash table");
        }
    }

    /// Whether a growth is moving its old array (model tests).
    #[cfg(all(test, feature = "shuttle"))]
    pub(crate) fn moving(&self) -> bool {
        // SAFETY: only the pointer's nullness is read.
        !self
            .old
            .load(Ordering::Acquire, unsafe { crossbeam_epoch::unprotected() })
            .is_null()
    }

    /// Makes room for `n` live entries without growing again (bulk loads,
    /// which size the table before they start): a growth moved at once.
    /// The table is sized to a load of 2/3, below [`SPARE_AT`]. (Until
    /// session 19 it was sized to the growth threshold, 3/4: the load
    /// passed [`SPARE_AT`] during the bulk load itself, so every reopen
    /// had the helper build the next array at once, 1.4 times the table
    /// and 15 bytes a key, which the first new key then grew into.)
    pub(crate) fn reserve(&self, n: usize, guard: &Guard) {
        self.migrate(usize::MAX, guard);
        if n * 3 > self.capacity(guard) * 2 {
            self.start_growth((n * 3).div_ceil(2) + 1, guard);
            self.migrate(usize::MAX, guard);
        }
    }
}

impl Drop for HashTable {
    fn drop(&mut self) {
        // SAFETY: &mut self: no reader remains.
        unsafe {
            let g = crossbeam_epoch::unprotected();
            for a in [&self.table, &self.old] {
                let p = a.load(Ordering::Relaxed, g);
                if !p.is_null() {
                    drop(p.into_owned());
                }
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

    /// A growth moves the old array a few slots per insert, not all at
    /// once; meanwhile every present key is found, a key removed from
    /// either array is gone, and the old array goes once it is empty.
    #[test]
    fn grows_a_few_slots_per_insert_and_finds_every_key_meanwhile() {
        let t = HashTable::new();
        let g = crossbeam_epoch::pin();
        let key = |i: u32| format!("grow-{i:08}").into_bytes();
        let mut nodes = Vec::new();
        let mut removed = std::collections::BTreeSet::new();
        let (mut growths, mut inserts_while_moving) = (0, 0);
        for i in 0..20_000u32 {
            let k = key(i);
            let n = Node::alloc(1, &k, &entry());
            let moving_before = !t.old.load(Ordering::Relaxed, &g).is_null();
            t.insert(&k, n, &g);
            nodes.push(n);
            let old = t.old.load(Ordering::Relaxed, &g);
            if !old.is_null() {
                inserts_while_moving += 1;
                if !moving_before {
                    growths += 1;
                    // SAFETY: the old array lives while it is in the table.
                    let len = unsafe { old.deref() }.len;
                    assert!(
                        (t.moved.load(Ordering::Relaxed) as usize) < len,
                        "a growth moved all {len} slots at once"
                    );
                }
                // Remove a key while the old array is being moved: from
                // whichever array holds it.
                if i % 7 == 0 {
                    let r = i / 2;
                    if removed.insert(r) {
                        t.remove(&key(r), nodes[r as usize], &g);
                    }
                }
            }
            if i % 97 == 0 || !old.is_null() {
                for j in (0..=i).step_by(13) {
                    let found = t.find(&key(j), &g).map(|n| n as *const Node);
                    let want = (!removed.contains(&j)).then_some(nodes[j as usize] as *const Node);
                    assert_eq!(found, want, "key {j} after {i} inserts");
                }
            }
        }
        assert!(growths >= 8, "{growths} growths");
        assert!(inserts_while_moving > growths, "moves spread over inserts");
        // Moves end: the old array goes within 1/16 of its length in inserts.
        let cap = t.capacity(&g);
        let mut i = 20_000u32;
        while !t.old.load(Ordering::Relaxed, &g).is_null() {
            assert!(
                ((i - 20_000) as usize) < cap / 16,
                "still moving after {} inserts",
                i - 20_000
            );
            let k = key(i);
            let n = Node::alloc(1, &k, &entry());
            t.insert(&k, n, &g);
            nodes.push(n);
            i += 1;
        }
        assert_eq!(
            t.live.load(Ordering::Relaxed) as usize,
            nodes.len() - removed.len()
        );
        for (j, n) in nodes.iter().enumerate() {
            let found = t.find(&key(j as u32), &g).map(|n| n as *const Node);
            let want = (!removed.contains(&(j as u32))).then_some(*n as *const Node);
            assert_eq!(found, want, "key {j}");
        }
        drop(t);
        for n in nodes {
            // SAFETY: allocated above; the table is gone, nothing else holds them.
            unsafe { Node::free(n) };
        }
    }

    /// Near full, the next array is built on the helper thread (counted in
    /// the table's memory), and the growth swaps in that very array; every
    /// key is found across it.
    #[test]
    fn the_next_array_is_built_ahead_and_swapped_in_at_the_growth() {
        let t = HashTable::new();
        let g = crossbeam_epoch::pin();
        let key = |i: u32| format!("spare-{i:08}").into_bytes();
        let mut nodes = Vec::new();
        let mut insert = |t: &HashTable, i: u32| {
            let k = key(i);
            let n = Node::alloc(1, &k, &entry());
            t.insert(&k, n, &g);
            nodes.push(n);
        };
        // Grow past the small sizes, then stop just past the spare's load.
        let mut i = 0u32;
        while t.capacity(&g) < 10_000 || !t.old.load(Ordering::Relaxed, &g).is_null() {
            insert(&t, i);
            i += 1;
        }
        let cap = t.capacity(&g);
        while (t.used.load(Ordering::Relaxed) + 1) * 100 < cap as u64 * SPARE_AT {
            insert(&t, i);
            i += 1;
        }
        insert(&t, i);
        i += 1;
        let want = cap + cap * 2 / 5;
        let ready = crate::storage::io::eventually(
            || matches!(&*t.spare.lock().unwrap(), Spare::Ready(c, _) if *c == want),
        );
        assert!(ready, "no spare of {want} slots was built");
        let spare_ptr = match &*t.spare.lock().unwrap() {
            Spare::Ready(_, a) => a.ptr,
            _ => unreachable!(),
        };
        assert_eq!(t.memory_bytes(), (cap + Table::with_capacity(want).len) * 8);
        while t.old.load(Ordering::Relaxed, &g).is_null() {
            insert(&t, i);
            i += 1;
        }
        // SAFETY: the table pointer is never null.
        let now = unsafe { t.table.load(Ordering::Acquire, &g).deref() };
        assert_eq!(now.ptr, spare_ptr, "the growth built an array of its own");
        assert!(matches!(*t.spare.lock().unwrap(), Spare::None));
        for j in 0..i {
            let found = t.find(&key(j), &g).map(|n| n as *const Node);
            assert_eq!(found, Some(nodes[j as usize] as *const Node), "key {j}");
        }
        drop(t);
        for n in nodes {
            // SAFETY: allocated above; the table is gone, nothing else holds them.
            unsafe { Node::free(n) };
        }
    }

    /// A reserved table takes its entries without growing again, and
    /// without building the next array ahead (that is for tables that
    /// grow by inserts).
    #[test]
    fn reserve_sizes_for_the_count() {
        let t = HashTable::new();
        let g = crossbeam_epoch::pin();
        t.reserve(100_000, &g);
        let cap = t.capacity(&g);
        assert!(
            cap * 2 >= 100_000 * 3 && cap < 100_000 * 3 / 2 + 16,
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
        assert!(
            !t.spare_asked.load(std::sync::atomic::Ordering::Relaxed),
            "a spare was asked for"
        );
        assert!(matches!(*t.spare.lock().unwrap(), Spare::None));
        assert_eq!(t.memory_bytes(), cap * 8);
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
