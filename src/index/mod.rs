//! The lock-free ordered index of one shard: key -> location and version.
//!
//! A skiplist with exactly one writer (the owning shard thread, through
//! [`IndexWriter`]) and any number of readers on any thread (through
//! [`Index`]). Readers never block and never take a lock:
//!
//! * Nodes are linked bottom-up with `Release` stores after they are fully
//!   built; readers follow links with `Acquire` loads, so a reader sees either
//!   no node or a complete one.
//! * A key's entry (segment, offset, value length, version, flags) lives in
//!   the node and is updated in place under a per-node sequence lock: the
//!   writer makes the sequence odd, stores the fields, makes it even; a reader
//!   retries while the sequence is odd or changed. No allocation on overwrite.
//! * Unlinked nodes are freed through crossbeam-epoch once no reader pinned
//!   before the unlink can still hold them.
//!
//! Memory per key is one allocation: a 32-byte header, 8 bytes per tower
//! level (1.33 levels on average, p = 1/4), and the key bytes inline.
//! With a single writer no CAS is needed; "one writer" is enforced by the type
//! system (`IndexWriter` is created once and is neither `Clone` nor `Sync`).
//!
//! Point lookups go through a hash table over the same nodes (`hash.rs`):
//! about two cache misses instead of the skiplist's walk. Ordered iteration
//! uses the skiplist.
//!
//! Linking a new key needs the skiplist's walk: over a million keys, some
//! 15-20 dependent cache misses, 1-2 us. A group commit knows its keys in
//! advance, so [`IndexWriter::prepare`] walks for all of them at once,
//! interleaved with prefetches (16 walks in flight, each step of one
//! overlapping the memory waits of the others), and keeps each key's
//! predecessors as a hint. The upserts that follow start from the hint
//! and only step over nodes linked since; a hint is checked before use
//! and dropped if it does not fit the key (see `take_hint`). Keys of one
//! gap linked one after another walk from the last of them (`finger`), and
//! a batch in ascending order (a bulk load of sorted keys) is not walked
//! at all: each key is linked next to the previous one through a splice,
//! as RocksDB's skiplist does for sequential inserts (`splice_seek`).
//!
//! Deleted keys stay in the index as tombstone entries until merge drops the
//! tombstone record, so that merge can tell a live tombstone from a dead one.
//!
//! # Version chains
//!
//! Each node also heads a short chain of *old versions* of its key
//! ([`OldVersion`]: version and value bytes, newest first), kept only while
//! an open snapshot may read them. The writer pushes the value it overwrites
//! when a snapshot older than the new version is open, and trims what no
//! snapshot can read any more ([`IndexWriter::trim`]); readers at version v
//! take the current entry if its version is <= v, else the newest old
//! version <= v ([`Index::get_at`]). Old values are copied into memory, so
//! a snapshot never depends on a segment that merge may delete. Chain links
//! are published with `Release` stores and freed through the epoch, like
//! nodes.

use std::alloc::{Layout, alloc, dealloc};
use std::cmp::Ordering as CmpOrdering;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::Bound;
use std::ptr;
use std::sync::Arc;

use self::sync::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

/// The atomics of the index: std's, or Shuttle's under the `shuttle`
/// feature, so that model tests control every interleaving point.
pub(crate) mod sync {
    #[cfg(feature = "shuttle")]
    pub(crate) use shuttle::sync::atomic::{
        AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };
    #[cfg(not(feature = "shuttle"))]
    pub(crate) use std::sync::atomic::{
        AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };

    /// A spin-wait step: under Shuttle, a yield, so the scheduler runs the
    /// thread being waited for.
    #[inline]
    pub(crate) fn spin() {
        #[cfg(feature = "shuttle")]
        shuttle::thread::yield_now();
        #[cfg(not(feature = "shuttle"))]
        std::hint::spin_loop();
    }
}

use crossbeam_epoch::Guard;

mod hash;
use hash::HashTable;

const MAX_HEIGHT: usize = 20;
const KEY_LEN_MASK: u32 = (1 << 24) - 1;

/// Byte-wise key order, comparing the first 8 bytes as one big-endian
/// integer before calling memcmp: most keys differ there, and the integer
/// compare is a few instructions where memcmp is a call.
#[inline]
pub fn key_cmp(a: &[u8], b: &[u8]) -> CmpOrdering {
    key_prefix(a).cmp(&key_prefix(b)).then_with(|| a.cmp(b))
}

/// The first 8 bytes of a key as a big-endian integer (zero-padded): keys
/// with different prefixes order like their prefixes.
#[inline]
pub fn key_prefix(k: &[u8]) -> u64 {
    if let Some(head) = k.first_chunk::<8>() {
        // The common case, without the variable-length copy (a memcpy call).
        return u64::from_be_bytes(*head);
    }
    let mut p = [0u8; 8];
    p[..k.len()].copy_from_slice(k);
    u64::from_be_bytes(p)
}

/// Entry flag of a key with an expiry time: the log record's flag of the
/// same value (`storage::format::FLAG_EXPIRES`). The index counts the live
/// entries that carry it ([`Index::expiring`]).
pub const ENTRY_EXPIRES: u8 = 2;

/// Index-only entry flag (never written to the log): the entry is a part
/// of a cross-shard commit, hidden from plain reads while that commit is
/// unsettled (the value it replaced is first in its version chain).
pub const ENTRY_XSHARD: u8 = 0x80;

/// Where a key's newest record is and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Segment id.
    pub segment: u32,
    /// Byte offset of the record in the segment.
    pub offset: u32,
    /// Length of the record's value.
    pub value_len: u32,
    /// Commit version of the record.
    pub version: u64,
    /// The record is a delete.
    pub tombstone: bool,
    /// Record flags as stored in the log (expiry present, ...).
    pub flags: u8,
}

impl Entry {
    fn loc(&self) -> u64 {
        (u64::from(self.segment) << 32) | u64::from(self.offset)
    }

    fn meta(&self) -> u64 {
        u64::from(self.value_len)
            | (u64::from(self.tombstone) << 32)
            | (u64::from(self.flags) << 40)
    }

    fn from_parts(loc: u64, version: u64, meta: u64) -> Self {
        Entry {
            segment: (loc >> 32) as u32,
            offset: loc as u32,
            value_len: meta as u32,
            version,
            tombstone: (meta >> 32) & 1 == 1,
            flags: (meta >> 40) as u8,
        }
    }

    /// Whether this entry points at the given place.
    pub fn is_at(&self, segment: u32, offset: u32) -> bool {
        self.segment == segment && self.offset == offset
    }
}

/// An older version of a key, kept for open snapshots.
#[derive(Debug)]
pub struct OldVersion {
    /// Commit version of this value.
    pub version: u64,
    /// The value; `None` if the key was absent (deleted) at this version.
    pub value: Option<Box<[u8]>>,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
    older: AtomicPtr<OldVersion>,
    /// A horizon the chain from here down is trimmed to: at most one of its
    /// versions is at or below it, the oldest (0: none known). Only the
    /// writer uses it, to skip walks that would cut nothing.
    trimmed: AtomicU64,
}

impl OldVersion {
    /// An old version to push onto a chain.
    pub fn new(version: u64, value: Option<Box<[u8]>>, expires_at_ms: Option<u64>) -> Box<Self> {
        Box::new(OldVersion {
            version,
            value,
            expires_at_ms,
            older: AtomicPtr::new(ptr::null_mut()),
            trimmed: AtomicU64::new(0),
        })
    }
}

/// What a key held at a version: see [`Index::get_at`].
#[derive(Debug)]
pub enum At<'g> {
    /// The current entry is the one (its version is <= the asked version).
    Current(Entry),
    /// An old version from the chain.
    Old(&'g OldVersion),
    /// The key did not exist at that version.
    Absent,
}

/// Frees a chain from `p` on (unreachable by then).
///
/// # Safety
/// Every element from `p` on must be unreachable by readers.
unsafe fn free_chain(mut p: *mut OldVersion) {
    while !p.is_null() {
        // SAFETY: by the caller's contract the element is ours to free.
        let mut b = unsafe { Box::from_raw(p) };
        // Owned: read the link without an atomic operation (this may run
        // on any thread that collects epoch garbage).
        p = *b.older.get_mut();
    }
}

#[repr(C)]
struct Node {
    /// Key length (low 24 bits) and tower height (high 8 bits); immutable.
    key_height: u32,
    /// Sequence lock over `loc`, `version` and `meta`.
    seq: AtomicU32,
    loc: AtomicU64,
    version: AtomicU64,
    meta: AtomicU64,
    /// Old versions, newest first (null: none).
    older: AtomicPtr<OldVersion>,
    // followed by `height` tower links (AtomicPtr<Node>) and the key bytes
}

const HEADER: usize = size_of::<Node>();

impl Node {
    fn layout(height: usize, key_len: usize) -> Layout {
        Layout::from_size_align(HEADER + height * size_of::<AtomicPtr<Node>>() + key_len, 8)
            .expect("node layout: sizes are bounded by MAX_KEY_LEN and MAX_HEIGHT")
    }

    /// Allocates a node with null links.
    fn alloc(height: usize, key: &[u8], entry: &Entry) -> *mut Node {
        debug_assert!(key.len() <= KEY_LEN_MASK as usize && (1..=MAX_HEIGHT).contains(&height));
        let layout = Self::layout(height, key.len());
        // SAFETY: layout has non-zero size (HEADER > 0); every byte we later
        // read is written here before the node is published.
        unsafe {
            let p = alloc(layout) as *mut Node;
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            ptr::write(
                p,
                Node {
                    key_height: key.len() as u32 | ((height as u32) << 24),
                    seq: AtomicU32::new(0),
                    loc: AtomicU64::new(entry.loc()),
                    version: AtomicU64::new(entry.version),
                    meta: AtomicU64::new(entry.meta()),
                    older: AtomicPtr::new(ptr::null_mut()),
                },
            );
            for i in 0..height {
                ptr::write(Self::tower_ptr(p, i), AtomicPtr::new(ptr::null_mut()));
            }
            let kp = (p as *mut u8).add(HEADER + height * size_of::<AtomicPtr<Node>>());
            ptr::copy_nonoverlapping(key.as_ptr(), kp, key.len());
            p
        }
    }

    /// # Safety
    /// `p` must point to a live node with height > `level`.
    unsafe fn tower_ptr(p: *const Node, level: usize) -> *mut AtomicPtr<Node> {
        // SAFETY: by the caller's contract the tower slot is inside the allocation.
        unsafe {
            (p as *mut u8).add(HEADER + level * size_of::<AtomicPtr<Node>>())
                as *mut AtomicPtr<Node>
        }
    }

    fn height(&self) -> usize {
        (self.key_height >> 24) as usize
    }

    fn next(&self, level: usize) -> &AtomicPtr<Node> {
        debug_assert!(level < self.height());
        // SAFETY: level < height, so the slot is inside this node's allocation.
        unsafe { &*Self::tower_ptr(self, level) }
    }

    fn key(&self) -> &[u8] {
        let len = (self.key_height & KEY_LEN_MASK) as usize;
        // SAFETY: the key bytes follow the tower and were written at allocation.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Node as *const u8)
                    .add(HEADER + self.height() * size_of::<AtomicPtr<Node>>()),
                len,
            )
        }
    }

    fn alloc_size(&self) -> usize {
        Self::layout(self.height(), self.key().len()).size()
    }

    /// Reads the entry consistently (sequence lock, reader side).
    fn entry(&self) -> Entry {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                sync::spin();
                continue;
            }
            let loc = self.loc.load(Ordering::Relaxed);
            let version = self.version.load(Ordering::Relaxed);
            let meta = self.meta.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Entry::from_parts(loc, version, meta);
            }
        }
    }

    /// Stores a new entry (sequence lock, writer side; one writer only).
    fn set_entry(&self, e: &Entry) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.loc.store(e.loc(), Ordering::Relaxed);
        self.version.store(e.version, Ordering::Relaxed);
        self.meta.store(e.meta(), Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// # Safety
    /// `p` must have been allocated by [`Node::alloc`] and be unreachable.
    unsafe fn free(p: *mut Node) {
        // SAFETY: the caller guarantees p is a live, unreachable node; its
        // chain is reachable only through it.
        unsafe {
            free_chain(*(*p).older.get_mut());
            let layout = Self::layout((*p).height(), (*p).key().len());
            dealloc(p as *mut u8, layout);
        }
    }
}

struct Inner {
    head: *mut Node,
    /// Highest tower level in use (readers start their descent there).
    height: AtomicUsize,
    /// Entries, tombstones included.
    len: AtomicUsize,
    /// Tombstone entries.
    tombstones: AtomicUsize,
    /// Entries (not tombstones) with [`ENTRY_EXPIRES`].
    expiring: AtomicUsize,
    /// Bytes allocated for nodes (keys included) and version chains.
    bytes: AtomicUsize,
    /// Of `bytes`, those of version chains.
    old_bytes: AtomicUsize,
    /// Point-lookup table over the same nodes.
    hash: HashTable,
}

// SAFETY: nodes are shared through atomics only; the single writer is
// enforced by IndexWriter and reclamation goes through crossbeam-epoch.
unsafe impl Send for Inner {}
// SAFETY: as above.
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        // No reader or writer remains (we hold the last Arc); nodes that were
        // unlinked earlier are owned by the epoch collector, not the list.
        let mut p = self.head;
        while !p.is_null() {
            // SAFETY: p is a live node of this list; its level-0 successor is
            // read before it is freed.
            unsafe {
                let next = (*p).next(0).load(Ordering::Relaxed);
                Node::free(p);
                p = next;
            }
        }
    }
}

/// The shared, read-only view of the index. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

/// The one writer of an index. Not `Clone`, not `Sync`.
pub struct IndexWriter {
    inner: Arc<Inner>,
    rng: u64,
    /// Search hints of the prepared batch, one per upsert in call order
    /// (see [`IndexWriter::prepare`]).
    hints: Vec<Hint>,
    /// Predecessors of the hints, `height` of them from each hint's `base`.
    hint_preds: Vec<*const Node>,
    /// The successor each predecessor had when the hint was made (null:
    /// none), parallel to `hint_preds`.
    hint_succs: Vec<*const Node>,
    /// Copies of the hinted keys (see `Hint::key`).
    hint_keys: Vec<u8>,
    /// The next upsert's slot in `hints`.
    cursor: usize,
    /// At each level, the node of that level last linked by an upsert of
    /// the prepared batch (null: none yet). Keys that arrive in ascending
    /// order (a bulk load of sorted keys) all have the same hinted
    /// predecessors, so the walk right from a hint would step over every
    /// key linked before it in the batch; it starts from here instead.
    finger: [*const Node; MAX_HEIGHT],
    /// The prepared batch is (nearly) in ascending key order: its new keys
    /// are linked through `splice` rather than through walks.
    ascending: bool,
    /// For an ascending batch: around the last key linked, at every level,
    /// the node before it and the one after it (null: none), as RocksDB's
    /// skiplist keeps for sequential inserts. The next key, if it falls
    /// between them at level 0, is linked with two key comparisons.
    splice: Option<Box<Splice>>,
    /// Chain elements trim walks have visited (tests count them).
    #[cfg(test)]
    walked: std::cell::Cell<u64>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: the hint pointers name nodes of `inner` (which is `Send + Sync`);
// only this writer dereferences them, on whichever thread owns it.
unsafe impl Send for IndexWriter {}

/// See `IndexWriter::splice`.
struct Splice {
    prev: [*const Node; MAX_HEIGHT],
    next: [*const Node; MAX_HEIGHT],
}

/// Where a prepared key would be linked: its tower height (drawn in
/// advance; 0: no hint, the key was present), its predecessors and their
/// successors, and where its copy is in `hint_keys`.
#[derive(Clone, Copy)]
struct Hint {
    height: usize,
    base: usize,
    key: usize,
    key_len: usize,
}

/// Walks in flight at once in [`IndexWriter::prepare`].
const WALKS: usize = 16;

/// How many keys ahead a group's hash slots are prefetched: enough to
/// cover a miss, few enough that the lines are still cached when used.
pub const SLOTS_AHEAD: usize = 16;

/// One interleaved search of [`IndexWriter::prepare`].
#[derive(Clone, Copy)]
struct Walk {
    slot: usize,
    x: *const Node,
    next: *const Node,
    level: usize,
}

/// Asks the CPU to start loading a node (its header and a short key).
#[inline]
fn prefetch(p: *const Node) {
    if !p.is_null() {
        prefetch_line(p);
        prefetch_line((p as *const u8).wrapping_add(64));
    }
}

/// Asks the CPU to start loading the cache line holding `p`. A hint only:
/// it never faults, whatever the address.
#[inline]
pub(crate) fn prefetch_line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Creates an empty index and its writer.
pub fn new_index() -> (Index, IndexWriter) {
    let head = Node::alloc(
        MAX_HEIGHT,
        &[],
        &Entry {
            segment: 0,
            offset: 0,
            value_len: 0,
            version: 0,
            tombstone: false,
            flags: 0,
        },
    );
    let inner = Arc::new(Inner {
        head,
        height: AtomicUsize::new(1),
        len: AtomicUsize::new(0),
        tombstones: AtomicUsize::new(0),
        expiring: AtomicUsize::new(0),
        bytes: AtomicUsize::new(Node::layout(MAX_HEIGHT, 0).size()),
        old_bytes: AtomicUsize::new(0),
        hash: HashTable::new(),
    });
    (
        Index {
            inner: inner.clone(),
        },
        IndexWriter {
            inner,
            rng: 0x9E37_79B9_7F4A_7C15,
            hints: Vec::new(),
            hint_preds: Vec::new(),
            hint_succs: Vec::new(),
            hint_keys: Vec::new(),
            cursor: 0,
            finger: [ptr::null(); MAX_HEIGHT],
            ascending: false,
            splice: None,
            #[cfg(test)]
            walked: std::cell::Cell::new(0),
            _not_sync: PhantomData,
        },
    )
}

impl Inner {
    fn head(&self) -> &Node {
        // SAFETY: the head lives as long as Inner.
        unsafe { &*self.head }
    }

    /// First node with key >= `key` (or > when `inclusive` is false), and the
    /// predecessors at every level if `preds` is given.
    fn seek<'g>(
        &'g self,
        key: &[u8],
        inclusive: bool,
        mut preds: Option<&mut [*const Node; MAX_HEIGHT]>,
    ) -> Option<&'g Node> {
        let mut x = self.head();
        let top = self.height.load(Ordering::Acquire);
        // The node that ended the walk at level 0 is the answer. It must be
        // the node that was compared, not a second load of the link, which a
        // concurrent insert may have changed since.
        let mut stop: Option<&Node> = None;
        for level in (0..MAX_HEIGHT).rev() {
            if level < top {
                loop {
                    let next = x.next(level).load(Ordering::Acquire);
                    // SAFETY: linked nodes are live while the caller holds an
                    // epoch guard (readers) or is the writer.
                    let Some(n) = (unsafe { next.as_ref() }) else {
                        stop = None;
                        break;
                    };
                    let before = match n.key().cmp(key) {
                        CmpOrdering::Less => true,
                        CmpOrdering::Equal => !inclusive,
                        CmpOrdering::Greater => false,
                    };
                    if before {
                        x = n;
                    } else {
                        stop = Some(n);
                        break;
                    }
                }
            }
            if let Some(p) = preds.as_deref_mut() {
                p[level] = x;
            }
        }
        stop
    }

    /// Last node with key < `key` (or <= when `inclusive`); `None` for the
    /// unbounded case means the last node of the list.
    fn seek_back<'g>(&'g self, key: Option<&[u8]>, inclusive: bool) -> Option<&'g Node> {
        let mut x = self.head();
        let top = self.height.load(Ordering::Acquire);
        for level in (0..top).rev() {
            loop {
                let next = x.next(level).load(Ordering::Acquire);
                // SAFETY: see seek.
                let Some(n) = (unsafe { next.as_ref() }) else {
                    break;
                };
                let before = match key {
                    None => true,
                    Some(k) => match n.key().cmp(k) {
                        CmpOrdering::Less => true,
                        CmpOrdering::Equal => inclusive,
                        CmpOrdering::Greater => false,
                    },
                };
                if before {
                    x = n;
                } else {
                    break;
                }
            }
        }
        if ptr::eq(x, self.head) { None } else { Some(x) }
    }
}

impl Index {
    /// The newest version of `key` older than `below`, from its chain (an
    /// element with no value: absent then). `None` if the chain has none.
    pub fn older_than<'g>(
        &'g self,
        key: &[u8],
        below: u64,
        guard: &'g Guard,
    ) -> Option<&'g OldVersion> {
        let n = self.inner.hash.find(key, guard)?;
        let mut p = n.older.load(Ordering::Acquire);
        // SAFETY: as in node_at.
        while let Some(v) = unsafe { p.as_ref() } {
            if v.version < below {
                return Some(v);
            }
            p = v.older.load(Ordering::Acquire);
        }
        None
    }

    /// Starts fetching the hash slot a lookup of `key` reads first, so that
    /// a batch of lookups can have their cache misses in flight together:
    /// call this for every key of the batch, then
    /// [`Index::prefetch_node`] for each, then look them up.
    pub fn prefetch_slot(&self, key: &[u8], guard: &Guard) {
        self.inner.hash.prefetch_slot(key, guard);
    }

    /// The second stage of [`Index::prefetch_slot`]: starts fetching the
    /// node of `key` if its home slot names it. False if it does not (the
    /// key is probably absent).
    pub fn prefetch_node(&self, key: &[u8], guard: &Guard) -> bool {
        self.inner.hash.prefetch_node(key, guard)
    }

    /// The entry for `key`, tombstones included.
    pub fn get(&self, key: &[u8], guard: &Guard) -> Option<Entry> {
        self.inner.hash.find(key, guard).map(|n| n.entry())
    }

    /// What `key` held at version `at`: the current entry if it is that old
    /// or older, else the newest old version <= `at` (tombstones are
    /// returned as they are; an old version with no value is a delete).
    pub fn get_at<'g>(&'g self, key: &[u8], at: u64, guard: &'g Guard) -> At<'g> {
        let Some(n) = self.inner.hash.find(key, guard) else {
            return At::Absent;
        };
        node_at(n, at)
    }

    /// Entries in `[lower, upper]` bounds, in key order (or reverse order),
    /// tombstones included. Borrowed keys stay valid while `guard` is held.
    /// The iteration is weakly consistent: it sees every key present for its
    /// whole duration and may or may not see concurrent changes.
    pub fn range<'g>(
        &'g self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        _guard: &'g Guard,
    ) -> Iter<'g> {
        let lower_owned = map_bound(lower);
        let upper_owned = map_bound(upper);
        Iter {
            inner: &self.inner,
            next: None,
            started: false,
            lower: lower_owned,
            upper: upper_owned,
            reverse,
        }
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether the index has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of tombstone entries.
    pub fn tombstones(&self) -> usize {
        self.inner.tombstones.load(Ordering::Relaxed)
    }

    /// Number of entries (not tombstones) with [`ENTRY_EXPIRES`]: keys with
    /// an expiry time, expired or not.
    pub fn expiring(&self) -> usize {
        self.inner.expiring.load(Ordering::Relaxed)
    }

    /// Bytes allocated for the index nodes (keys included).
    pub fn memory_bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Relaxed) + self.inner.hash.memory_bytes()
    }

    /// Bytes of the old versions kept for snapshots (values included), of
    /// [`Index::memory_bytes`].
    pub fn old_version_bytes(&self) -> usize {
        self.inner.old_bytes.load(Ordering::Relaxed)
    }
}

fn node_at(n: &Node, at: u64) -> At<'_> {
    // A push stores the chain before the entry that replaces its head, so a
    // reader that sees the newer entry sees the chain holding what it
    // replaced.
    let e = n.entry();
    if e.version <= at {
        return At::Current(e);
    }
    let mut p = n.older.load(Ordering::Acquire);
    // SAFETY: chain elements are freed through the epoch only after they
    // are unlinked; the caller's guard (or the writer) keeps them alive.
    while let Some(v) = unsafe { p.as_ref() } {
        if v.version <= at {
            return At::Old(v);
        }
        p = v.older.load(Ordering::Acquire);
    }
    At::Absent
}

struct SendChain(*mut OldVersion);
// SAFETY: only dereferenced to free an unreachable chain.
unsafe impl Send for SendChain {}

fn map_bound(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Iterator over a key range; see [`Index::range`].
pub struct Iter<'g> {
    inner: &'g Inner,
    next: Option<&'g Node>,
    started: bool,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    reverse: bool,
}

impl<'g> Iterator for Iter<'g> {
    type Item = (&'g [u8], Entry);

    fn next(&mut self) -> Option<Self::Item> {
        self.next_node().map(|n| (n.key(), n.entry()))
    }
}

impl<'g> Iter<'g> {
    /// The next key and what a reader at version `at` sees of it (as
    /// [`Index::get_at`], without looking the key up again).
    pub fn next_at(&mut self, at: u64) -> Option<(&'g [u8], At<'g>)> {
        self.next_node().map(|n| (n.key(), node_at(n, at)))
    }

    fn next_node(&mut self) -> Option<&'g Node> {
        let node = if !self.started {
            self.started = true;
            if self.reverse {
                match &self.upper {
                    Bound::Unbounded => self.inner.seek_back(None, false),
                    Bound::Included(k) => self.inner.seek_back(Some(k), true),
                    Bound::Excluded(k) => self.inner.seek_back(Some(k), false),
                }
            } else {
                match &self.lower {
                    Bound::Unbounded => {
                        // SAFETY: see Inner::seek.
                        unsafe { self.inner.head().next(0).load(Ordering::Acquire).as_ref() }
                    }
                    Bound::Included(k) => self.inner.seek(k, true, None),
                    Bound::Excluded(k) => self.inner.seek(k, false, None),
                }
            }
        } else {
            let cur = self.next?;
            if self.reverse {
                self.inner.seek_back(Some(cur.key()), false)
            } else {
                // SAFETY: see Inner::seek.
                unsafe { cur.next(0).load(Ordering::Acquire).as_ref() }
            }
        };
        let Some(n) = node else {
            self.next = None;
            return None;
        };
        let in_range = if self.reverse {
            match &self.lower {
                Bound::Unbounded => true,
                Bound::Included(k) => n.key() >= k.as_slice(),
                Bound::Excluded(k) => n.key() > k.as_slice(),
            }
        } else {
            match &self.upper {
                Bound::Unbounded => true,
                Bound::Included(k) => n.key() <= k.as_slice(),
                Bound::Excluded(k) => n.key() < k.as_slice(),
            }
        };
        if !in_range {
            self.next = None;
            return None;
        }
        self.next = Some(n);
        Some(n)
    }
}

impl IndexWriter {
    /// The read view of this index.
    pub fn reader(&self) -> Index {
        Index {
            inner: self.inner.clone(),
        }
    }

    fn random_height(&mut self) -> usize {
        // xorshift64*; p = 1/4 per extra level.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (1 + (r.trailing_zeros() as usize) / 2).min(MAX_HEIGHT)
    }

    /// Prepares the upserts that follow, one per key of `keys` in this
    /// order: finds where each key not in the index would be linked, all
    /// searches interleaved (see the module documentation). Upserts made
    /// in another order, or with other keys, stay correct (a hint that
    /// does not fit is not used) but gain nothing. The hints last until
    /// [`IndexWriter::clear_hints`] or the next `prepare`.
    pub fn prepare(&mut self, keys: &[&[u8]]) {
        self.clear_hints();
        // A batch in ascending order (a bulk load of sorted keys, or runs
        // of them) links each new key right after the previous one: a walk
        // per key would repeat the same path down the list, while the
        // splice finds the place with a couple of comparisons. Random
        // batches ascend at about half of their steps.
        let ascending = keys.windows(2).filter(|w| w[0] < w[1]).count();
        if keys.len() >= 2 && ascending * 8 >= (keys.len() - 1) * 7 {
            self.ascending = true;
            return;
        }
        self.hints.resize(
            keys.len(),
            Hint {
                height: 0,
                base: 0,
                key: 0,
                key_len: 0,
            },
        );
        // Each key's presence check below reads its hash slot, a cache
        // miss of its own: it is fetched SLOTS_AHEAD keys in advance (all
        // at once would be too much for the cache in a large group).
        for k in keys.iter().take(SLOTS_AHEAD) {
            self.prefetch_slot(k);
        }
        let head = self.inner.head as *const Node;
        let top = self.inner.height.load(Ordering::Relaxed);
        let mut walks: [Option<Walk>; WALKS] = [None; WALKS];
        let mut next_key = 0;
        loop {
            let mut live = false;
            for w in walks.iter_mut() {
                while w.is_none() && next_key < keys.len() {
                    let slot = next_key;
                    next_key += 1;
                    if let Some(k) = keys.get(slot + SLOTS_AHEAD) {
                        self.prefetch_slot(k);
                    }
                    if self.find(keys[slot]).is_some() {
                        continue;
                    }
                    let height = self.random_height();
                    let base = self.hint_preds.len();
                    self.hint_preds.resize(base + height, head);
                    // Levels above the list's height: the head, with no
                    // successor.
                    self.hint_succs.resize(base + height, ptr::null());
                    let key = self.hint_keys.len();
                    self.hint_keys.extend_from_slice(keys[slot]);
                    self.hints[slot] = Hint {
                        height,
                        base,
                        key,
                        key_len: keys[slot].len(),
                    };
                    // SAFETY: the head has every level.
                    let next = unsafe { (*head).next(top - 1).load(Ordering::Relaxed) };
                    prefetch(next);
                    *w = Some(Walk {
                        slot,
                        x: head,
                        next,
                        level: top - 1,
                    });
                }
                let Some(walk) = w else { continue };
                live = true;
                if self.step(walk, keys[walk.slot]) {
                    *w = None;
                }
            }
            if !live {
                break;
            }
        }
    }

    /// One step of a prepared search: compares the (prefetched) candidate
    /// and moves right or down, prefetching the next candidate. True when
    /// the walk has passed level 0.
    fn step(&mut self, w: &mut Walk, key: &[u8]) -> bool {
        let hint = self.hints[w.slot];
        // SAFETY: the writer reads nodes of its own list; nothing is
        // unlinked while a batch is prepared.
        unsafe {
            if let Some(n) = w.next.as_ref()
                && n.key() < key
            {
                w.x = n;
                w.next = n.next(w.level).load(Ordering::Relaxed);
                prefetch(w.next);
                return false;
            }
            if w.level < hint.height {
                self.hint_preds[hint.base + w.level] = w.x;
                self.hint_succs[hint.base + w.level] = w.next;
            }
            if w.level == 0 {
                return true;
            }
            w.level -= 1;
            w.next = (*w.x).next(w.level).load(Ordering::Relaxed);
            prefetch(w.next);
            false
        }
    }

    /// Drops the hints of the prepared batch.
    pub fn clear_hints(&mut self) {
        self.hints.clear();
        self.hint_preds.clear();
        self.hint_succs.clear();
        self.hint_keys.clear();
        self.cursor = 0;
        self.finger = [ptr::null(); MAX_HEIGHT];
        self.ascending = false;
        self.splice = None;
    }

    /// Fills `preds` for linking a new `key` with a tower of `height`,
    /// from the splice of the last key linked in this ascending batch:
    /// the lowest level whose splice still brackets `key` (its two nodes
    /// still adjacent, the key between them) is found going up, every
    /// level up to `height` must bracket it too, and the levels below are
    /// searched from there. Without a splice, or if no level brackets the
    /// key, a search from the head makes a new splice.
    fn splice_seek(&mut self, key: &[u8], height: usize, preds: &mut [*const Node; MAX_HEIGHT]) {
        let head = self.inner.head as *const Node;
        // SAFETY (all dereferences below): splice nodes are live nodes of
        // this list: the splice is dropped with the hints, which every
        // unlink clears.
        let brackets = |sp: &Splice, level: usize| unsafe {
            let (p, n) = (sp.prev[level], sp.next[level]);
            ptr::eq((*p).next(level).load(Ordering::Relaxed), n)
                && (p == head || (*p).key() < key)
                && n.as_ref().is_none_or(|n| key < n.key())
        };
        let found = self.splice.as_deref_mut().and_then(|sp| {
            let low = (0..MAX_HEIGHT).find(|&l| brackets(sp, l))?;
            if !(low + 1..height).all(|l| brackets(sp, l)) {
                return None;
            }
            for level in (0..low).rev() {
                let mut x = sp.prev[level + 1];
                // SAFETY: as above; x is a node of this list below `key`.
                unsafe {
                    loop {
                        match (*x).next(level).load(Ordering::Relaxed).as_ref() {
                            Some(n) if n.key() < key => x = n,
                            _ => break,
                        }
                    }
                    sp.prev[level] = x;
                    sp.next[level] = (*x).next(level).load(Ordering::Relaxed);
                }
            }
            Some(())
        });
        if found.is_none() {
            let mut prev = [head; MAX_HEIGHT];
            self.inner.seek(key, true, Some(&mut prev));
            let mut sp = Box::new(Splice {
                prev,
                next: [ptr::null(); MAX_HEIGHT],
            });
            for (level, &p) in prev.iter().enumerate() {
                // SAFETY: seek fills every level with live nodes (or the head).
                sp.next[level] = unsafe { (*p).next(level).load(Ordering::Relaxed) };
            }
            self.splice = Some(sp);
        }
        let sp = self.splice.as_deref().expect("made above");
        preds[..height].copy_from_slice(&sp.prev[..height]);
    }

    /// The next upsert's hint, if there is one that fits `key`: its height
    /// and, in `preds`, the predecessors at each of its levels. A hinted
    /// predecessor must still sort before `key` (it was found for this key
    /// if the upserts follow `prepare`'s order; if not, it is checked
    /// here); from it the walk moves right over nodes linked since.
    fn take_hint(&mut self, key: &[u8], preds: &mut [*const Node; MAX_HEIGHT]) -> Option<usize> {
        if self.hints.is_empty() {
            return None;
        }
        let slot = self.cursor;
        self.cursor += 1;
        let hint = *self.hints.get(slot)?;
        if hint.height == 0 {
            return None;
        }
        // The hint was made for this very key: each predecessor sorted
        // before it, its successor after it, and neither can have been
        // unlinked since (`remove_if_at` clears the hints). A predecessor
        // whose link is unchanged is exact without reading any key (the
        // successor's key would be a cache miss); otherwise the upserts
        // since linked nodes after it, and the search walks right over them.
        let same_key = hint.key_len == key.len()
            && self.hint_keys.get(hint.key..hint.key + key.len()) == Some(key);
        let head = self.inner.head as *const Node;
        let range = hint.base..hint.base + hint.height;
        let hinted = self.hint_preds[range.clone()]
            .iter()
            .zip(&self.hint_succs[range]);
        for (level, ((&start, &succ), pred)) in hinted.zip(preds.iter_mut()).enumerate() {
            let mut p = start;
            // SAFETY: hinted nodes are live nodes of this list (nothing is
            // unlinked while hints exist: `remove_if_at` clears them).
            unsafe {
                if same_key {
                    if ptr::eq((*p).next(level).load(Ordering::Relaxed), succ) {
                        *pred = p;
                        continue;
                    }
                    // Nodes were linked after the hinted predecessor: if the
                    // last one linked at this level lies between it and the
                    // key, the walk starts there (see `finger`).
                    let f = self.finger[level];
                    if !f.is_null()
                        && f != p
                        && (*f).key() < key
                        && (p == head || (*f).key() > (*p).key())
                    {
                        p = f;
                    }
                } else if p != head && (*p).key() >= key {
                    return None;
                }
                loop {
                    match (*p).next(level).load(Ordering::Relaxed).as_ref() {
                        Some(n) if n.key() < key => p = n,
                        _ => break,
                    }
                }
            }
            *pred = p;
        }
        Some(hint.height)
    }

    /// Starts fetching what an upsert of `key` will read (its hash slot),
    /// so that work done before the upsert hides the cache miss; call
    /// [`IndexWriter::prefetch_node`] later, then upsert.
    pub fn prefetch_slot(&self, key: &[u8]) {
        // SAFETY: as in `find`.
        self.inner
            .hash
            .prefetch_slot(key, unsafe { crossbeam_epoch::unprotected() });
    }

    /// The second stage of [`IndexWriter::prefetch_slot`]: starts fetching
    /// the node of `key` if it is present.
    pub fn prefetch_node(&self, key: &[u8]) {
        // SAFETY: as in `find`.
        self.inner
            .hash
            .prefetch_node(key, unsafe { crossbeam_epoch::unprotected() });
    }

    /// Whether the index holds no key, tombstones included, from `lo` to
    /// `hi` (both included): one search, where a lookup of each key in the
    /// range would be a cache miss or more apiece.
    pub fn none_in(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.inner.seek(lo, true, None).is_none_or(|n| n.key() > hi)
    }

    /// The entry for `key` (the writer needs no guard: it never frees what it reads).
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.find(key).map(|n| n.entry())
    }

    fn find(&self, key: &[u8]) -> Option<&Node> {
        // SAFETY: the writer is the only one that frees nodes or tables, and
        // it does so through a pinned guard, never while it holds this one.
        self.inner
            .hash
            .find(key, unsafe { crossbeam_epoch::unprotected() })
    }

    fn account(&self, old: Option<&Entry>, new: Option<&Entry>) {
        let was = old.is_some_and(|e| e.tombstone);
        let is = new.is_some_and(|e| e.tombstone);
        if was && !is {
            self.inner.tombstones.fetch_sub(1, Ordering::Relaxed);
        } else if is && !was {
            self.inner.tombstones.fetch_add(1, Ordering::Relaxed);
        }
        let expires =
            |e: Option<&Entry>| e.is_some_and(|e| !e.tombstone && e.flags & ENTRY_EXPIRES != 0);
        match (expires(old), expires(new)) {
            (true, false) => {
                self.inner.expiring.fetch_sub(1, Ordering::Relaxed);
            }
            (false, true) => {
                self.inner.expiring.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Inserts or overwrites; returns the previous entry.
    pub fn upsert(&mut self, key: &[u8], entry: Entry) -> Option<Entry> {
        type NoKeep = fn(Option<&Entry>) -> Option<Box<OldVersion>>;
        self.upsert_inner(key, entry, None::<(NoKeep, &mut bool)>, 0, None)
    }

    /// [`IndexWriter::upsert_keeping_with`] with `old` always kept (the
    /// tests' shorthand).
    #[cfg(test)]
    pub fn upsert_keeping(
        &mut self,
        key: &[u8],
        entry: Entry,
        old: Box<OldVersion>,
        horizon: u64,
        guard: &Guard,
    ) -> (Option<Entry>, bool) {
        self.upsert_keeping_with(key, entry, |_| Some(old), horizon, guard)
    }

    /// Inserts or overwrites, in a single lookup of the key, with the old
    /// version that `keep` makes from the entry the key has (`None`:
    /// absent), if it makes one, pushed first on the key's version chain
    /// (for a new key, the chain is in place before the node is linked, so
    /// no reader sees the node without it); the chain is then trimmed to
    /// what snapshots at or above `horizon` can read. Returns the previous
    /// entry, and whether the key had no old versions before (its chain is
    /// new: the caller keeps a list of chained keys to trim).
    pub fn upsert_keeping_with(
        &mut self,
        key: &[u8],
        entry: Entry,
        keep: impl FnOnce(Option<&Entry>) -> Option<Box<OldVersion>>,
        horizon: u64,
        guard: &Guard,
    ) -> (Option<Entry>, bool) {
        let mut fresh = false;
        let prev = self.upsert_inner(key, entry, Some((keep, &mut fresh)), horizon, Some(guard));
        (prev, fresh)
    }

    fn upsert_inner<K: FnOnce(Option<&Entry>) -> Option<Box<OldVersion>>>(
        &mut self,
        key: &[u8],
        entry: Entry,
        keep: Option<(K, &mut bool)>,
        horizon: u64,
        guard: Option<&Guard>,
    ) -> Option<Entry> {
        let mut preds = [self.inner.head as *const Node; MAX_HEIGHT];
        let hinted = self.take_hint(key, &mut preds);
        if let Some(n) = self.find(key).map(|n| n as *const Node) {
            // SAFETY: only this writer frees nodes, and it frees none of
            // the key's while it overwrites it; the reference is detached
            // from `self` so that `keep_old_at` may borrow it mutably.
            let n = unsafe { &*n };
            let old = n.entry();
            if let (Some((k, fresh)), Some(g)) = (keep, guard)
                && let Some(k) = k(Some(&old))
            {
                *fresh = self.keep_old_at(n, k, horizon, g);
            }
            n.set_entry(&entry);
            self.account(Some(&old), Some(&entry));
            return Some(old);
        }
        let height = match hinted {
            Some(h) => h,
            None if self.ascending => {
                let h = self.random_height();
                self.splice_seek(key, h, &mut preds);
                h
            }
            None => {
                self.inner.seek(key, true, Some(&mut preds));
                self.random_height()
            }
        };
        let node = Node::alloc(height, key, &entry);
        if let Some((k, fresh)) = keep
            && let Some(k) = k(None)
        {
            *fresh = true;
            self.chain_grew(chain_bytes(&k));
            // SAFETY: node is fresh and private.
            unsafe { (*node).older.store(Box::into_raw(k), Ordering::Relaxed) };
        }
        // SAFETY: node is fresh and private; preds are live nodes of this list
        // whose towers reach `level` (head has every level).
        unsafe {
            for (level, pred) in preds.iter().enumerate().take(height) {
                let succ = (**pred).next(level).load(Ordering::Relaxed);
                (*node).next(level).store(succ, Ordering::Relaxed);
            }
            for (level, pred) in preds.iter().enumerate().take(height) {
                (**pred).next(level).store(node, Ordering::Release);
            }
            if !self.hints.is_empty() {
                self.finger[..height].fill(node);
            }
            if let Some(sp) = self.splice.as_deref_mut() {
                for level in 0..height {
                    sp.prev[level] = node;
                    sp.next[level] = (*node).next(level).load(Ordering::Relaxed);
                }
            }
            self.inner
                .bytes
                .fetch_add((*node).alloc_size(), Ordering::Relaxed);
        }
        if height > self.inner.height.load(Ordering::Relaxed) {
            self.inner.height.store(height, Ordering::Release);
        }
        self.inner.hash.insert(key, node, &crossbeam_epoch::pin());
        self.inner.len.fetch_add(1, Ordering::Relaxed);
        self.account(None, Some(&entry));
        None
    }

    /// Pushes `old` as the newest old version of `key` (call right before
    /// overwriting the key's entry with a newer one), then trims the chain
    /// to what snapshots at or above `horizon` can read. Returns whether
    /// the key had no old versions before; false if the key is absent.
    /// The tests' way to build chains (the store keeps versions through
    /// [`IndexWriter::upsert_keeping_with`]).
    #[cfg(test)]
    pub fn keep_old(
        &mut self,
        key: &[u8],
        old: Box<OldVersion>,
        horizon: u64,
        guard: &Guard,
    ) -> bool {
        let Some(n) = self.find(key).map(|n| n as *const Node) else {
            return false;
        };
        // SAFETY: as in upsert_inner.
        self.keep_old_at(unsafe { &*n }, old, horizon, guard)
    }

    /// Pushes `old` on node `n`'s chain and trims it (see
    /// [`IndexWriter::upsert_keeping_with`]). The chain keeps at least
    /// `old` (see the trims below).
    fn keep_old_at(&mut self, n: &Node, old: Box<OldVersion>, horizon: u64, guard: &Guard) -> bool {
        let prev = n.older.load(Ordering::Relaxed);
        let fresh = prev.is_null();
        old.older.store(prev, Ordering::Relaxed);
        // SAFETY: the writer owns the chain; elements are live until retired.
        if let Some(p) = unsafe { prev.as_ref() } {
            // The chain below keeps its mark, and `old`, newer than every
            // version in it, adds none at or below the mark.
            let mark = p.trimmed.load(Ordering::Relaxed);
            if old.version > mark {
                old.trimmed.store(mark, Ordering::Relaxed);
            }
        }
        let (v, bytes) = (old.version, chain_bytes(&old));
        let p = Box::into_raw(old);
        n.older.store(p, Ordering::Release);
        self.chain_grew(bytes);
        // The entry that replaces `v` is newer than the horizon (or the
        // caller would not keep it), so `v` itself may still be needed.
        if v <= horizon {
            // SAFETY: p is a live element we just linked.
            let p = unsafe { &*p };
            self.cut_after(p, guard);
            p.trimmed.store(horizon, Ordering::Relaxed);
        } else {
            // Cuts below `v`, which is newer than the horizon.
            self.trim_from(n, horizon, u64::MAX, guard);
        }
        fresh
    }

    /// Drops the old versions of `key` that no snapshot at or above
    /// `horizon` (u64::MAX: no snapshot) can read; returns whether any
    /// remain.
    pub fn trim(&mut self, key: &[u8], horizon: u64, guard: &Guard) -> bool {
        let Some(n) = self.find(key) else {
            return false;
        };
        let cur = n.entry().version;
        self.trim_from(n, horizon, cur, guard);
        !n.older.load(Ordering::Relaxed).is_null()
    }

    /// Drops every old version of `key` that no reader can need: the
    /// version `u` whose next newer one (or the entry) is `n` stays only if
    /// `n > floor` (readers not pinned to a point, such as snapshots whose
    /// start is not fixed yet, may read anything replaced above `floor`),
    /// or a snapshot start in `points` (ascending) reads it (`u <= s < n`).
    /// Versions between two open snapshots go, where [`IndexWriter::trim`]
    /// keeps everything above the oldest one. Returns whether any remain.
    pub fn trim_exact(&mut self, key: &[u8], floor: u64, points: &[u64], guard: &Guard) -> bool {
        let Some(n) = self.find(key) else {
            return false;
        };
        let mut newer = n.entry().version;
        let mut link = &n.older;
        let mut p = link.load(Ordering::Relaxed);
        // SAFETY: the writer owns the chain; elements are live until retired.
        while let Some(v) = unsafe { p.as_ref() } {
            #[cfg(test)]
            self.walked.set(self.walked.get() + 1);
            let next = v.older.load(Ordering::Relaxed);
            let i = points.partition_point(|&s| s < v.version);
            if newer > floor || points.get(i).is_some_and(|&s| s < newer) {
                (newer, link) = (v.version, &v.older);
            } else {
                // Unlinked, a reader on it still walks on from it: a reader
                // that needs none of it gets the same answer either way.
                link.store(next, Ordering::Release);
                self.chain_shrank(chain_bytes(v));
                let c = SendChain(p);
                // SAFETY: unlinked; readers pinned before now may still be
                // on it. Only this element goes, not the rest of the chain.
                unsafe {
                    guard.defer_unchecked(move || {
                        let c = c;
                        drop(Box::from_raw(c.0))
                    });
                }
            }
            p = next;
        }
        !n.older.load(Ordering::Relaxed).is_null()
    }

    fn trim_from(&self, n: &Node, horizon: u64, cur: u64, guard: &Guard) {
        if cur <= horizon {
            let head = n.older.swap(ptr::null_mut(), Ordering::Release);
            self.retire_chain(head, guard);
            return;
        }
        let head = n.older.load(Ordering::Relaxed);
        // SAFETY: the writer owns the chain; elements are live until retired.
        let Some(head) = (unsafe { head.as_ref() }) else {
            return;
        };
        // Trimmed to this horizon or a later one already: nothing to cut.
        // (While a long snapshot holds the horizon, every overwrite of a
        // hot key walked its whole chain before session 24.)
        if head.trimmed.load(Ordering::Relaxed) >= horizon {
            return;
        }
        let mut p: *const OldVersion = head;
        // SAFETY: as above.
        while let Some(v) = unsafe { p.as_ref() } {
            #[cfg(test)]
            self.walked.set(self.walked.get() + 1);
            if v.version <= horizon {
                self.cut_after(v, guard);
                break;
            }
            p = v.older.load(Ordering::Relaxed);
        }
        head.trimmed.store(horizon, Ordering::Relaxed);
    }

    fn chain_grew(&self, bytes: usize) {
        self.inner.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inner.old_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn chain_shrank(&self, bytes: usize) {
        self.inner.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.inner.old_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn cut_after(&self, v: &OldVersion, guard: &Guard) {
        let rest = v.older.swap(ptr::null_mut(), Ordering::Release);
        self.retire_chain(rest, guard);
    }

    fn retire_chain(&self, head: *mut OldVersion, guard: &Guard) {
        if head.is_null() {
            return;
        }
        let mut bytes = 0;
        let mut p = head;
        // SAFETY: the chain from head is unlinked; the writer still owns it.
        while let Some(v) = unsafe { p.as_ref() } {
            bytes += chain_bytes(v);
            p = v.older.load(Ordering::Relaxed);
        }
        self.chain_shrank(bytes);
        let c = SendChain(head);
        // SAFETY: unlinked; readers pinned before now may still walk it.
        unsafe {
            guard.defer_unchecked(move || {
                let c = c;
                free_chain(c.0)
            });
        }
    }

    /// Overwrites the entry of `key` only if it still points at
    /// (`segment`, `offset`); returns whether it did. Merge uses this so that
    /// a write racing with it is never undone.
    pub fn update_if_at(&mut self, key: &[u8], segment: u32, offset: u32, entry: Entry) -> bool {
        let Some(n) = self.find(key) else {
            return false;
        };
        let old = n.entry();
        if !old.is_at(segment, offset) {
            return false;
        }
        n.set_entry(&entry);
        self.account(Some(&old), Some(&entry));
        true
    }

    /// Removes `key` only if its entry points at (`segment`, `offset`).
    /// The node is freed once no reader can hold it.
    pub fn remove_if_at(&mut self, key: &[u8], segment: u32, offset: u32, guard: &Guard) -> bool {
        // Hints may name the node this unlinks.
        self.clear_hints();
        let mut preds = [self.inner.head as *const Node; MAX_HEIGHT];
        let Some(n) = self.inner.seek(key, true, Some(&mut preds)) else {
            return false;
        };
        // A node with old versions stays: open snapshots still read them.
        if n.key() != key
            || !n.entry().is_at(segment, offset)
            || !n.older.load(Ordering::Relaxed).is_null()
        {
            return false;
        }
        let old = n.entry();
        let height = n.height();
        // SAFETY: preds[level] precedes n at every level below its height
        // (single writer: nothing changed since the seek).
        unsafe {
            for level in (0..height).rev() {
                let succ = n.next(level).load(Ordering::Relaxed);
                (*preds[level]).next(level).store(succ, Ordering::Release);
            }
        }
        self.inner
            .bytes
            .fetch_sub(n.alloc_size(), Ordering::Relaxed);
        self.inner.hash.remove(key, n, guard);
        self.inner.len.fetch_sub(1, Ordering::Relaxed);
        self.account(Some(&old), None);
        let p = SendPtr(n as *const Node as *mut Node);
        // SAFETY: the node is unlinked; readers pinned before now may still
        // hold it, and the epoch defers the free until they are gone.
        unsafe {
            guard.defer_unchecked(move || {
                let p = p;
                Node::free(p.0)
            });
        }
        true
    }

    /// Starts a bulk load into an empty index: keys must come in strictly
    /// increasing order. O(1) per key (no search).
    /// `expected` sizes the hash table up front.
    pub fn bulk_loader(&mut self, expected: usize) -> Option<BulkLoader<'_>> {
        if !self.inner.head().next(0).load(Ordering::Relaxed).is_null() {
            return None;
        }
        self.inner.hash.reserve(expected, &crossbeam_epoch::pin());
        // Large loads fill the hash table on a second thread while this one
        // builds the list: the table's inserts are random memory accesses,
        // a quarter of a 10M-key start-up when done inline.
        let helper = (expected >= PARALLEL_HASH_MIN).then(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<HashJob>>(8);
            let inner = Arc::clone(&self.inner);
            let handle = std::thread::Builder::new()
                .name("flashkv-index-load".into())
                .spawn(move || {
                    for batch in rx {
                        insert_hash_batch(&inner.hash, &batch);
                    }
                })
                .map_err(|e| tracing::warn!(error = %e, "no hash-loading thread; loading inline"))
                .ok()?;
            Some((tx, handle))
        });
        let head = self.inner.head as *const Node;
        Some(BulkLoader {
            tails: [head; MAX_HEIGHT],
            last_key: None,
            w: self,
            batch: Vec::with_capacity(HASH_BATCH),
            helper: helper.flatten(),
        })
    }
}

/// A node's hash-table insert, deferred by the bulk loader: (hash, tag),
/// node address.
type HashJob = ((usize, u64), usize);

/// Hash inserts per batch of the bulk loader.
const HASH_BATCH: usize = 4096;

/// Bulk loads of at least this many keys fill the hash table on a helper
/// thread.
const PARALLEL_HASH_MIN: usize = 1 << 18;

/// Inserts a batch into the hash table, PREFETCH_DISTANCE slots ahead of
/// the insert (the caller is the table's only writer).
fn insert_hash_batch(hash: &HashTable, batch: &[HashJob]) {
    let guard = crossbeam_epoch::pin();
    for (i, &(h, node)) in batch.iter().enumerate() {
        if let Some(&(ahead, _)) = batch.get(i + PREFETCH_DISTANCE) {
            hash.prefetch(ahead, &guard);
        }
        hash.insert_hashed(h, node as *const Node, &guard);
    }
}

impl BulkLoader<'_> {
    /// Hands the batch of hash inserts to the helper thread, or does it.
    fn flush_hash(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(HASH_BATCH));
        let batch = match &self.helper {
            Some((tx, _)) => match tx.send(batch) {
                Ok(()) => return,
                // The helper is gone (it panicked; its join reports that).
                Err(std::sync::mpsc::SendError(batch)) => batch,
            },
            None => batch,
        };
        insert_hash_batch(&self.w.inner.hash, &batch);
    }
}

impl Drop for BulkLoader<'_> {
    fn drop(&mut self) {
        // Every node is in the hash table when the loader is gone.
        self.flush_hash();
        if let Some((tx, handle)) = self.helper.take() {
            drop(tx);
            if let Err(panic) = handle.join()
                && !std::thread::panicking()
            {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

fn chain_bytes(v: &OldVersion) -> usize {
    size_of::<OldVersion>() + v.value.as_ref().map_or(0, |b| b.len())
}

struct SendPtr(*mut Node);
// SAFETY: the pointer is only dereferenced to free an unreachable node.
unsafe impl Send for SendPtr {}

/// Appends keys in increasing order to an empty index; see
/// [`IndexWriter::bulk_loader`].
pub struct BulkLoader<'w> {
    w: &'w mut IndexWriter,
    tails: [*const Node; MAX_HEIGHT],
    last_key: Option<*const Node>,
    /// Hash inserts not yet made (nodes are linked into the list first).
    batch: Vec<HashJob>,
    /// The thread that fills the hash table, for large loads.
    helper: Option<(
        std::sync::mpsc::SyncSender<Vec<HashJob>>,
        std::thread::JoinHandle<()>,
    )>,
}

/// How many hash inserts are kept in flight behind prefetches.
const PREFETCH_DISTANCE: usize = 16;

impl BulkLoader<'_> {
    /// Appends `key`; returns false (and does nothing) if `key` is not
    /// greater than the previous key.
    pub fn push(&mut self, key: &[u8], entry: Entry) -> bool {
        if let Some(last) = self.last_key {
            // SAFETY: last is a live node of this list.
            if key_cmp(unsafe { (*last).key() }, key) != CmpOrdering::Less {
                return false;
            }
        }
        let height = self.w.random_height();
        let node = Node::alloc(height, key, &entry);
        // SAFETY: tails are live nodes with towers reaching each level.
        unsafe {
            for level in 0..height {
                (*self.tails[level])
                    .next(level)
                    .store(node, Ordering::Release);
                self.tails[level] = node;
            }
            self.w
                .inner
                .bytes
                .fetch_add((*node).alloc_size(), Ordering::Relaxed);
        }
        if height > self.w.inner.height.load(Ordering::Relaxed) {
            self.w.inner.height.store(height, Ordering::Release);
        }
        // The node is linked; its hash slot is written in a batch.
        self.batch.push((hash::hash_of(key), node as usize));
        if self.batch.len() == HASH_BATCH {
            self.flush_hash();
        }
        self.w.inner.len.fetch_add(1, Ordering::Relaxed);
        self.w.account(None, Some(&entry));
        self.last_key = Some(node);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn e(seg: u32, off: u32, version: u64) -> Entry {
        Entry {
            segment: seg,
            offset: off,
            value_len: 10,
            version,
            tombstone: false,
            flags: 0,
        }
    }

    /// `keep_old` and `upsert_keeping` tell when a key's chain is new (the
    /// store lists chained keys by it): on the first old version only,
    /// again once a trim emptied the chain, never for an absent key.
    #[test]
    fn keeping_an_old_version_tells_when_the_chain_is_new() {
        let (_index, mut w) = new_index();
        let guard = crossbeam_epoch::pin();
        let old = |v: u64| OldVersion::new(v, Some(v.to_le_bytes().into()), None);
        assert!(!w.keep_old(b"absent", old(1), 0, &guard));
        w.upsert(b"k", e(1, 0, 1));
        assert!(w.keep_old(b"k", old(1), 0, &guard));
        w.upsert(b"k", e(1, 10, 2));
        assert!(!w.keep_old(b"k", old(2), 0, &guard));
        let (prev, fresh) = w.upsert_keeping(b"k", e(1, 20, 3), old(2), 0, &guard);
        assert_eq!(prev.map(|p| p.version), Some(2));
        assert!(!fresh);
        assert!(!w.trim(b"k", u64::MAX, &guard));
        let (_, fresh) = w.upsert_keeping(b"k", e(1, 30, 4), old(3), 0, &guard);
        assert!(fresh, "a chain emptied by a trim starts again");
        let (prev, fresh) = w.upsert_keeping(b"new", e(1, 40, 5), old(0), 0, &guard);
        assert!(prev.is_none());
        assert!(fresh, "a new key's kept version is a new chain");
    }

    /// While a long snapshot holds the horizon, overwrites of a hot key
    /// each keep a version without walking the chain (before session 24
    /// each walked all of it: quadratic in the overwrites); once the
    /// horizon moves, one walk trims the chain to what it needs.
    #[test]
    fn a_held_horizon_keeps_versions_without_walking_the_chain() {
        const N: u64 = 10_000;
        let (index, mut w) = new_index();
        let guard = crossbeam_epoch::pin();
        let old = |v: u64| OldVersion::new(v, Some(v.to_le_bytes().into()), None);
        w.upsert(b"k", e(1, 0, 1));
        for v in 2..=N {
            w.keep_old(b"k", old(v - 1), 1, &guard);
            w.upsert(b"k", e(1, 0, v));
        }
        assert!(
            w.walked.get() < 3 * N,
            "{} chain elements walked for {N} overwrites",
            w.walked.get()
        );
        let chain = |index: &Index| {
            let n = index.inner.hash.find(b"k", &guard).unwrap();
            let mut len = 0;
            let mut p = n.older.load(Ordering::Acquire);
            // SAFETY: pinned; the test's writer retires through the guard.
            while let Some(v) = unsafe { p.as_ref() } {
                len += 1;
                p = v.older.load(Ordering::Acquire);
            }
            len
        };
        assert_eq!(
            chain(&index),
            N - 1,
            "the snapshot at 1 keeps every version"
        );
        assert!(matches!(index.get_at(b"k", 1, &guard), At::Old(v) if v.version == 1));
        // The horizon moves to N - 5: versions N - 5 and newer stay.
        w.keep_old(b"k", old(N), N - 5, &guard);
        w.upsert(b"k", e(1, 0, N + 1));
        assert_eq!(chain(&index), 6);
        assert!(matches!(index.get_at(b"k", N - 5, &guard), At::Old(v) if v.version == N - 5));
        assert!(matches!(index.get_at(b"k", N - 6, &guard), At::Absent));
        // The periodic trim at the same horizon cuts nothing and walks nothing.
        let walked = w.walked.get();
        assert!(w.trim(b"k", N - 5, &guard));
        assert_eq!(w.walked.get(), walked);
        assert_eq!(chain(&index), 6);
        // Later: only the newest at or below N - 1 and above.
        assert!(w.trim(b"k", N - 1, &guard));
        assert_eq!(chain(&index), 2);
    }

    /// The exact trim keeps the version each snapshot point reads, and
    /// every version whose successor is above the floor; memory follows.
    #[test]
    fn an_exact_trim_keeps_what_each_reader_reads() {
        let (index, mut w) = new_index();
        let guard = crossbeam_epoch::pin();
        let old = |v: u64| OldVersion::new(v, Some(v.to_le_bytes().into()), None);
        w.upsert(b"k", e(1, 0, 1));
        let bare = index.memory_bytes();
        for v in 2..=11 {
            w.keep_old(b"k", old(v - 1), 0, &guard);
            w.upsert(b"k", e(1, 0, v));
        }
        let chain = |index: &Index| {
            (1..=11)
                .filter_map(|at| match index.get_at(b"k", at, &guard) {
                    At::Old(v) => Some((at, v.version)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // Snapshots at 3 and 7; a snapshot still opening above 8.
        assert!(w.trim_exact(b"k", 8, &[3, 7], &guard));
        assert_eq!(
            chain(&index),
            [
                (3, 3),
                (4, 3),
                (5, 3),
                (6, 3),
                (7, 7),
                (8, 8),
                (9, 9),
                (10, 10)
            ]
        );
        let one = size_of::<OldVersion>() + 8;
        assert_eq!(index.memory_bytes(), bare + 5 * one);
        assert_eq!(index.old_version_bytes(), 5 * one);
        // The opening one is gone, and so is the snapshot at 3.
        assert!(w.trim_exact(b"k", u64::MAX, &[7], &guard));
        assert_eq!(chain(&index), [(7, 7), (8, 7), (9, 7), (10, 7)]);
        assert_eq!(index.memory_bytes(), bare + one);
        assert!(!w.trim_exact(b"k", u64::MAX, &[], &guard));
        assert_eq!(index.memory_bytes(), bare);
        assert_eq!(index.old_version_bytes(), 0);
        assert!(!w.trim_exact(b"absent", u64::MAX, &[], &guard));
    }

    #[test]
    fn prepared_batches_link_like_plain_upserts() {
        fn xorshift(r: &mut u64) -> u64 {
            *r ^= *r << 13;
            *r ^= *r >> 7;
            *r ^= *r << 17;
            *r
        }
        let (index, mut w) = new_index();
        let mut model = BTreeMap::new();
        let mut r = 0x1234_5678_9abc_def1u64;
        let mut version = 0u64;
        for round in 0..300 {
            // Batches with new keys, present keys and duplicates.
            let n = (xorshift(&mut r) % 200) as usize;
            let mut keys: Vec<Vec<u8>> = (0..n)
                .map(|_| format!("k{:05}", xorshift(&mut r) % 20_000).into_bytes())
                .collect();
            if round % 8 == 3 {
                // Ascending keys (a sorted bulk load): linked through the
                // splice.
                keys.sort();
            } else if round % 8 == 7 {
                // Sorted runs of three, each reversed: too few ascending
                // steps for the splice, so hints are used; keys that fall
                // into one gap share hinted predecessors, and their
                // upserts walk from the finger.
                keys.sort();
                for run in keys.chunks_mut(3) {
                    run.swap(0, run.len() - 1);
                }
            }
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            w.prepare(&refs);
            // Most rounds upsert in the prepared order; some shuffle it or
            // drop keys, so that hints that do not fit are checked and left.
            let mut order: Vec<usize> = (0..n).collect();
            match round % 4 {
                1 => order.reverse(),
                2 => order.retain(|i| i % 3 != 0),
                _ => {}
            }
            for i in order {
                version += 1;
                w.upsert(&keys[i], e(1, version as u32, version));
                model.insert(keys[i].clone(), version);
            }
            w.clear_hints();
            if round % 50 == 0 {
                // Unlinks invalidate hints: prepare new keys, unlink some
                // present ones (which may be hinted predecessors), then
                // upsert the prepared keys.
                let fresh: Vec<Vec<u8>> = (0..40)
                    .map(|_| format!("k{:05}", xorshift(&mut r) % 20_000).into_bytes())
                    .collect();
                let refs: Vec<&[u8]> = fresh.iter().map(|k| k.as_slice()).collect();
                w.prepare(&refs);
                let victims: Vec<Vec<u8>> = model.keys().step_by(7).take(20).cloned().collect();
                let guard = crossbeam_epoch::pin();
                for k in &victims {
                    let at = model[k];
                    assert!(w.remove_if_at(k, 1, at as u32, &guard));
                    model.remove(k);
                }
                for k in &fresh {
                    version += 1;
                    w.upsert(k, e(1, version as u32, version));
                    model.insert(k.clone(), version);
                }
                w.clear_hints();
            }
        }
        let guard = crossbeam_epoch::pin();
        let got: Vec<(Vec<u8>, u64)> = index
            .range(Bound::Unbounded, Bound::Unbounded, false, &guard)
            .map(|(k, e)| (k.to_vec(), e.version))
            .collect();
        let want: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(got, want);
        for (k, v) in &model {
            assert_eq!(index.get(k, &guard).map(|e| e.version), Some(*v));
        }
        // Every level is ordered: a reverse walk agrees too.
        let rev: Vec<Vec<u8>> = index
            .range(Bound::Unbounded, Bound::Unbounded, true, &guard)
            .map(|(k, _)| k.to_vec())
            .collect();
        assert_eq!(rev, model.keys().rev().cloned().collect::<Vec<_>>());
        assert_eq!(index.len(), model.len());
    }

    #[test]
    fn matches_btreemap_model_for_inserts_updates_removes_and_ranges() {
        let (index, mut w) = new_index();
        let mut model = BTreeMap::new();
        let mut rng = 12345u64;
        for i in 0..20_000u32 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = format!("k{:05}", (rng >> 33) % 3000).into_bytes();
            if (rng >> 20).is_multiple_of(5) {
                if let Some(old) = model.get(&k).copied() {
                    let old: Entry = old;
                    let guard = crossbeam_epoch::pin();
                    assert!(w.remove_if_at(&k, old.segment, old.offset, &guard));
                    model.remove(&k);
                }
            } else {
                let old = w.upsert(&k, e(1, i, u64::from(i)));
                assert_eq!(old, model.insert(k.clone(), e(1, i, u64::from(i))));
            }
        }
        assert_eq!(index.len(), model.len());
        let guard = crossbeam_epoch::pin();
        let all: Vec<_> = index
            .range(Bound::Unbounded, Bound::Unbounded, false, &guard)
            .map(|(k, e)| (k.to_vec(), e))
            .collect();
        let expect: Vec<_> = model.iter().map(|(k, e)| (k.clone(), *e)).collect();
        assert_eq!(all, expect);
        let rev: Vec<_> = index
            .range(Bound::Unbounded, Bound::Unbounded, true, &guard)
            .map(|(k, _)| k.to_vec())
            .collect();
        let mut expect_rev: Vec<_> = model.keys().cloned().collect();
        expect_rev.reverse();
        assert_eq!(rev, expect_rev);
        for (lo, hi) in [
            (&b"k00100"[..], &b"k00200"[..]),
            (b"k02999", b"k09999"),
            (b"a", b"k00005"),
        ] {
            for reverse in [false, true] {
                let got: Vec<_> = index
                    .range(Bound::Included(lo), Bound::Excluded(hi), reverse, &guard)
                    .map(|(k, _)| k.to_vec())
                    .collect();
                let mut want: Vec<_> = model
                    .range(lo.to_vec()..hi.to_vec())
                    .map(|(k, _)| k.clone())
                    .collect();
                if reverse {
                    want.reverse();
                }
                assert_eq!(got, want, "range {lo:?}..{hi:?} reverse={reverse}");
            }
        }
        for k in model.keys() {
            assert_eq!(index.get(k, &guard), model.get(k).copied());
        }
        assert_eq!(index.get(b"zzz", &guard), None);
        for i in 0..3000 {
            let k = format!("k{i:05}").into_bytes();
            assert_eq!(
                index.get(&k, &guard).is_some(),
                model.contains_key(&k),
                "{i}"
            );
        }
    }

    #[test]
    fn conditional_update_and_remove_respect_location() {
        let (index, mut w) = new_index();
        w.upsert(b"a", e(1, 100, 1));
        assert!(!w.update_if_at(b"a", 1, 999, e(2, 0, 1)));
        assert!(w.update_if_at(b"a", 1, 100, e(2, 0, 1)));
        let guard = crossbeam_epoch::pin();
        assert!(!w.remove_if_at(b"a", 1, 100, &guard));
        assert_eq!(index.get(b"a", &guard), Some(e(2, 0, 1)));
        assert!(w.remove_if_at(b"a", 2, 0, &guard));
        assert_eq!(index.get(b"a", &guard), None);
        assert!(index.is_empty());
    }

    #[test]
    fn bulk_load_builds_a_searchable_list_and_rejects_disorder() {
        let (index, mut w) = new_index();
        {
            let mut b = w.bulk_loader(10_000).unwrap();
            for i in 0..10_000u32 {
                assert!(b.push(format!("{i:08}").as_bytes(), e(1, i, 1)));
            }
            assert!(!b.push(b"00000005", e(1, 0, 1)));
        }
        assert!(w.bulk_loader(0).is_none());
        let guard = crossbeam_epoch::pin();
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.get(b"00004321", &guard).unwrap().offset, 4321);
        w.upsert(b"00004321x", e(2, 0, 2));
        let keys: Vec<_> = index
            .range(
                Bound::Included(&b"00004321"[..]),
                Bound::Unbounded,
                false,
                &guard,
            )
            .take(3)
            .map(|(k, _)| k.to_vec())
            .collect();
        assert_eq!(
            keys,
            vec![
                b"00004321".to_vec(),
                b"00004321x".to_vec(),
                b"00004322".to_vec()
            ]
        );
    }

    /// A load large enough for the hash-filling thread: every key is found
    /// through the hash table once the loader is dropped, and writes after
    /// the load see the loaded keys.
    #[test]
    fn large_bulk_load_fills_the_hash_table_on_a_helper_thread() {
        let n = PARALLEL_HASH_MIN as u32 + 1000;
        let (index, mut w) = new_index();
        {
            let mut b = w.bulk_loader(n as usize).unwrap();
            assert!(b.helper.is_some(), "a load of {n} keys uses the helper");
            for i in 0..n {
                assert!(b.push(&i.to_be_bytes(), e(1, i, 1)));
            }
        }
        let guard = crossbeam_epoch::pin();
        assert_eq!(index.len(), n as usize);
        for i in (0..n).step_by(7).chain([n - 1]) {
            assert_eq!(
                index.get(&i.to_be_bytes(), &guard).map(|e| e.offset),
                Some(i),
                "{i}"
            );
        }
        assert!(index.get(&n.to_be_bytes(), &guard).is_none());
        // The writer's upserts find loaded keys (no duplicates).
        assert!(w.upsert(&5u32.to_be_bytes(), e(2, 0, 2)).is_some());
        assert_eq!(index.len(), n as usize);
    }

    #[test]
    fn tombstones_are_counted() {
        let (index, mut w) = new_index();
        w.upsert(b"a", e(1, 0, 1));
        w.upsert(
            b"a",
            Entry {
                tombstone: true,
                ..e(1, 50, 2)
            },
        );
        assert_eq!(index.tombstones(), 1);
        w.upsert(b"a", e(1, 80, 3));
        assert_eq!(index.tombstones(), 0);
    }

    /// Live entries with an expiry are counted through every way an entry
    /// changes: insert, overwrite, delete (tombstone), merge's move and
    /// removal.
    #[test]
    fn keys_with_an_expiry_are_counted() {
        let (index, mut w) = new_index();
        let x = |seg, off, v| Entry {
            flags: ENTRY_EXPIRES,
            ..e(seg, off, v)
        };
        w.upsert(b"a", x(1, 0, 1));
        w.upsert(b"b", e(1, 10, 2));
        assert_eq!(index.expiring(), 1);
        w.upsert(b"a", x(1, 20, 3)); // a new expiry: still one key
        w.upsert(b"b", x(1, 30, 4));
        assert_eq!(index.expiring(), 2);
        w.upsert(b"a", e(1, 40, 5)); // SET without an expiry (or PERSIST)
        assert_eq!(index.expiring(), 1);
        let dead = Entry {
            tombstone: true,
            ..x(1, 50, 6)
        };
        w.upsert(b"b", dead);
        assert_eq!(index.expiring(), 0, "a tombstone is not a key");
        w.upsert(b"c", x(1, 60, 7));
        assert!(w.update_if_at(b"c", 1, 60, x(2, 0, 7)));
        assert_eq!(index.expiring(), 1, "a merge's move keeps the expiry");
        assert!(w.update_if_at(b"c", 2, 0, e(2, 0, 7)));
        assert_eq!(index.expiring(), 0);
        w.upsert(b"d", x(1, 70, 8));
        assert_eq!(index.expiring(), 1);
        let guard = crossbeam_epoch::pin();
        assert!(w.remove_if_at(b"d", 1, 70, &guard));
        assert_eq!(index.expiring(), 0);
    }

    /// Readers on other threads run while the writer inserts, overwrites and
    /// removes: every read sees a whole entry (version and offset written
    /// together) and keys that are never removed are always found.
    #[test]
    fn concurrent_readers_see_consistent_entries() {
        let (index, mut w) = new_index();
        for i in 0..1000u32 {
            w.upsert(format!("stable{i:04}").as_bytes(), e(1, i, u64::from(i)));
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let index = index.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let guard = crossbeam_epoch::pin();
                        for i in (0..1000u32).step_by(7) {
                            let k = format!("stable{i:04}");
                            let got = match index.get(k.as_bytes(), &guard) {
                                Some(g) => g,
                                None => panic!(
                                    "{k} missing; second try: {:?}",
                                    index.get(k.as_bytes(), &guard)
                                ),
                            };
                            // The writer always stores offset == version as u32.
                            assert_eq!(u64::from(got.offset), got.version % (1 << 32));
                        }
                        let n = index
                            .range(Bound::Unbounded, Bound::Unbounded, false, &guard)
                            .count();
                        assert!(n >= 1000);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for round in 0..200u32 {
            for i in 0..1000u32 {
                let v = u64::from(round * 1000 + i);
                w.upsert(format!("stable{i:04}").as_bytes(), e(1, v as u32, v));
            }
            for i in 0..50u32 {
                let k = format!("churn{i:03}");
                w.upsert(k.as_bytes(), e(2, i, 1));
            }
            let guard = crossbeam_epoch::pin();
            for i in 0..50u32 {
                assert!(w.remove_if_at(format!("churn{i:03}").as_bytes(), 2, i, &guard));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}

/// Shuttle model tests of the version chains: a writer overwrites a key
/// (pushing and trimming old versions as the store does) while readers at
/// an open snapshot and plain readers run, under randomly chosen
/// interleavings of every atomic operation (`make test-shuttle`).
#[cfg(all(test, feature = "shuttle"))]
#[allow(clippy::unwrap_used)]
mod shuttle_tests {
    use super::*;
    use shuttle::sync::Arc as SArc;
    use shuttle::thread;

    fn entry(version: u64) -> Entry {
        // The offset stands for the value: it equals the version.
        Entry {
            segment: 1,
            offset: version as u32,
            value_len: 8,
            version,
            tombstone: false,
            flags: 0,
        }
    }

    fn old(version: u64) -> Box<OldVersion> {
        OldVersion::new(version, Some(version.to_le_bytes().into()), None)
    }

    /// The newest version <= `at` that `key` has, as a reader sees it.
    fn read_at(index: &Index, at: u64) -> Option<u64> {
        let guard = crossbeam_epoch::pin();
        match index.get_at(b"k", at, &guard) {
            At::Current(e) => {
                assert_eq!(u64::from(e.offset), e.version, "a torn entry");
                Some(e.version)
            }
            At::Old(v) => {
                let bytes: [u8; 8] = v.value.as_deref().unwrap().try_into().unwrap();
                assert_eq!(
                    u64::from_le_bytes(bytes),
                    v.version,
                    "an old value of another version"
                );
                Some(v.version)
            }
            At::Absent => None,
        }
    }

    fn chains_under_a_snapshot() {
        const SNAPSHOT: u64 = 2;
        const LAST: u64 = 6;
        let (index, mut w) = new_index();
        w.upsert(b"k", entry(1));
        let index = SArc::new(index);
        let writer = thread::spawn(move || {
            for v in 2..=LAST {
                // What Store::publish does with a snapshot open at SNAPSHOT.
                let guard = crossbeam_epoch::pin();
                let prev = w.get(b"k").unwrap();
                if SNAPSHOT >= v {
                    w.upsert(b"k", entry(v));
                } else if v % 3 == 0 {
                    // The cross-shard path: push and overwrite in one call.
                    w.upsert_keeping(b"k", entry(v), old(prev.version), SNAPSHOT, &guard);
                } else {
                    w.keep_old(b"k", old(prev.version), SNAPSHOT, &guard);
                    w.upsert(b"k", entry(v));
                }
                if v % 2 == 0 {
                    w.trim(b"k", SNAPSHOT, &guard);
                } else if v == 5 {
                    // The exact trim unlinks 4 and 3 from the middle of
                    // [4, 3, 2] under the readers.
                    w.trim_exact(b"k", u64::MAX, &[SNAPSHOT], &guard);
                }
            }
            w
        });
        let mut readers = Vec::new();
        for _ in 0..2 {
            let index = index.clone();
            readers.push(thread::spawn(move || {
                let mut newest = 0;
                for _ in 0..4 {
                    // Plain reads never go back in time.
                    let now = read_at(&index, u64::MAX).unwrap();
                    assert!(now >= newest, "read {now} after {newest}");
                    newest = now;
                    // Once version 2 is there, the snapshot sees exactly it.
                    let seen = read_at(&index, SNAPSHOT).expect("the key exists since version 1");
                    if now >= SNAPSHOT {
                        assert_eq!(seen, SNAPSHOT, "snapshot read after {now} was published");
                    } else {
                        assert!(seen <= SNAPSHOT, "snapshot read version {seen}");
                    }
                }
            }));
        }
        for r in readers {
            r.join().unwrap();
        }
        let mut w = writer.join().unwrap();
        assert_eq!(read_at(&index, SNAPSHOT), Some(SNAPSHOT));
        assert_eq!(read_at(&index, u64::MAX), Some(LAST));
        // The snapshot closes: everything old goes.
        let guard = crossbeam_epoch::pin();
        assert!(!w.trim(b"k", u64::MAX, &guard));
        assert_eq!(read_at(&index, SNAPSHOT), None);
    }

    fn hkey(i: usize) -> Vec<u8> {
        format!("h{i:03}").into_bytes()
    }

    /// The hash table grows (moving its old array a few slots per insert,
    /// several growths) and removes a key halfway through moving an array
    /// while a reader looks keys up: every key present throughout is always
    /// found, and the removed key is never found once its removal returned.
    fn hash_growth_under_a_reader() {
        const N: usize = 48;
        let t = SArc::new(hash::HashTable::new());
        let removed = SArc::new(AtomicU64::new(0));
        let nodes: SArc<Vec<usize>> = SArc::new(
            (0..N)
                .map(|i| Node::alloc(1, &hkey(i), &entry(1)) as usize)
                .collect(),
        );
        {
            let g = crossbeam_epoch::pin();
            for (i, n) in nodes.iter().enumerate().take(8) {
                t.insert(&hkey(i), *n as *const Node, &g);
            }
        }
        let reader = {
            let (t, nodes, removed) = (t.clone(), nodes.clone(), removed.clone());
            thread::spawn(move || {
                for _ in 0..20 {
                    let g = crossbeam_epoch::pin();
                    for (i, n) in nodes.iter().enumerate().take(8).skip(1) {
                        let found = t.find(&hkey(i), &g).map(|f| f as *const Node as usize);
                        assert_eq!(found, Some(*n), "key {i} lost during a growth");
                    }
                    let was_removed = removed.load(Ordering::SeqCst) == 1;
                    let present = t.find(&hkey(0), &g).is_some();
                    assert!(!(was_removed && present), "a removed key was found");
                }
            })
        };
        {
            let g = crossbeam_epoch::pin();
            for (i, n) in nodes.iter().enumerate().skip(8) {
                t.insert(&hkey(i), *n as *const Node, &g);
                // 34 keys: the third growth (at 30) is moving its old array.
                if i == 33 {
                    assert!(t.moving(), "the removal comes halfway through a growth");
                    t.remove(&hkey(0), nodes[0] as *const Node, &g);
                    removed.store(1, Ordering::SeqCst);
                }
            }
        }
        reader.join().unwrap();
        drop(t);
        for n in nodes.iter() {
            // SAFETY: allocated above; the table is gone.
            unsafe { Node::free(*n as *mut Node) };
        }
    }

    #[test]
    fn hash_growth_keeps_keys_findable_under_any_interleaving() {
        shuttle::check_random(hash_growth_under_a_reader, 2000);
    }

    #[test]
    fn hash_growth_under_pct_scheduling() {
        shuttle::check_pct(hash_growth_under_a_reader, 2000, 3);
    }

    #[test]
    fn version_chains_serve_snapshots_under_any_interleaving() {
        shuttle::check_random(chains_under_a_snapshot, 2000);
    }

    #[test]
    fn version_chains_under_pct_scheduling() {
        shuttle::check_pct(chains_under_a_snapshot, 2000, 3);
    }
}
