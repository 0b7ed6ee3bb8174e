//! One shard's storage: the write path (owned by the shard thread) and the
//! read path (any thread).
//!
//! # The write path, step by step
//!
//! [`Store::write_group`] takes the batches that arrived together:
//!
//! 1. Each batch is checked (limits, compare-and-set conditions against the
//!    index and the earlier batches of the group) and gets the next version.
//! 2. Its records are encoded into one buffer. A batch is an atomic group:
//!    every record but the last carries GROUP_CONT, and a group never spans
//!    two segments (the segment is sealed first if the group does not fit).
//! 3. One write puts the buffer at the end of the active segment. If it
//!    fails, the file is cut back to its previous length, so no record of a
//!    failed write can reappear after a restart; if even that fails, the
//!    shard refuses writes until restart.
//! 4. Under `sync=always`, one fdatasync. If it fails the shard refuses every
//!    later write until restart (what reached the disk is unknown).
//!    *Crash guarantee from here: the group is durable.*
//! 5. The index entries are published; readers see the writes from now on.
//! 6. Every batch of the group is answered.
//!
//! # Sealing
//!
//! When a group does not fit, the active segment is sealed (a seal record;
//! it never changes again), a new segment is created under a temporary
//! name with its header, synced, renamed and the directory synced, and a
//! background thread writes the sealed segment's hint.
//!
//! Under `sync=always` the sealed segment is fdatasync'ed before the new
//! one is created. Under `interval` and `none` its fdatasync runs on a
//! helper thread while writes go on into the new segment, whose header
//! names it (see `format` on the unsynced predecessor): waiting for it held
//! every write of the shard 18-40 ms per 128 MiB segment. Everything that
//! claims durability (an fdatasync of the active segment, [`Store::sync`],
//! `close`) waits for that seal first, so a durable write never follows a
//! seal that is not; the hint is built once the seal is durable. A merge
//! may take the segment before: its outputs are synced before it commits,
//! and a committed merge has removed the segment whose tail could be torn.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::index::{At, Entry, Index, IndexWriter, OldVersion, key_prefix};
use crate::storage::fasthash::{FastMap, FastSet};
use crate::storage::format::{
    self, FLAG_EXPIRES, FLAG_GROUP_CONT, RecordKind, RecordSpec, SEGMENT_HEADER_LEN, SegmentHeader,
    SegmentKind,
};
use crate::storage::hint::{self, HintMeta, HintRecord};
use crate::storage::io::{DataFile, Io, tmp_path};
use crate::storage::merge::MergeJob;
use crate::storage::options::{StoreOptions, SyncPolicy};
use crate::storage::segment::{Segment, SegmentSet, hint_file_name, segment_file_name};

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`, optionally expiring at a Unix time in ms.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Expiry, Unix milliseconds.
        expires_at_ms: Option<u64>,
    },
    /// Remove `key`.
    Delete {
        /// Key.
        key: Vec<u8>,
    },
}

impl Op {
    /// The key written.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }

    /// Bytes of the record this op writes.
    pub fn record_len(&self) -> u64 {
        (match self {
            Op::Put {
                key,
                value,
                expires_at_ms,
            } => format::record_len(key.len(), value.len(), expires_at_ms.is_some()),
            Op::Delete { key } => format::record_len(key.len(), 0, false),
        }) as u64
    }
}

/// A precondition of a batch: `key` must be at `expected_version`
/// (0 = the key must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Key to check.
    pub key: Vec<u8>,
    /// Version the key must have; 0 for absent.
    pub expected_version: u64,
}

/// An atomic set of writes with optional preconditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Writes, applied all or none; for a key written twice the last wins.
    pub ops: Vec<Op>,
    /// All must hold or nothing is written.
    pub conditions: Vec<Condition>,
}

impl Batch {
    /// A batch of one put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Batch {
            ops: vec![Op::Put {
                key: key.into(),
                value: value.into(),
                expires_at_ms: None,
            }],
            conditions: vec![],
        }
    }

    /// A batch of one delete.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Batch {
            ops: vec![Op::Delete { key: key.into() }],
            conditions: vec![],
        }
    }
}

/// A key range a transaction scanned: (lower, upper) bounds.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// Whether `k` lies between the bounds `lo` and `hi`.
pub fn key_in_range(k: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    (match lo {
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
        Bound::Unbounded => true,
    }) && (match hi {
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
        Bound::Unbounded => true,
    })
}

/// A borrowed view of an owned bound.
pub fn bound_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The first of `reads` (or key in `ranges`) with a version newer than
/// `start_version`, looking first in `overlay` (writes of the same group,
/// not in the index yet) and then at `version_of` and `index`: what a
/// transaction's validation checks.
fn changed_since(
    index: &crate::index::Index,
    start_version: u64,
    reads: &[Vec<u8>],
    ranges: &[KeyRange],
    overlay: &FastMap<&[u8], (u64, bool)>,
    version_of: impl Fn(&[u8]) -> u64,
) -> Option<(Vec<u8>, u64)> {
    for key in reads {
        let v = match overlay.get(key.as_slice()) {
            Some(&(v, _)) => v,
            None => version_of(key),
        };
        if v > start_version {
            return Some((key.clone(), v));
        }
    }
    if ranges.is_empty() {
        return None;
    }
    let guard = crossbeam_epoch::pin();
    for (lo, hi) in ranges {
        if let Some((k, &(v, _))) = overlay.iter().find(|(k, _)| key_in_range(k, lo, hi)) {
            return Some((k.to_vec(), v));
        }
        for (k, e) in index.range(bound_ref(lo), bound_ref(hi), false, &guard) {
            if e.version > start_version {
                return Some((k.to_vec(), e.version));
            }
        }
    }
    None
}

/// The transaction side of a write: what to validate, the version to
/// commit at, and the redo records a cross-shard commit's part carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnPart {
    /// Transaction id, stored in every record written (0: none).
    pub txn_id: u64,
    /// Snapshot version the transaction read at; the reads and ranges are
    /// validated against it (nothing newer may exist) when no commit
    /// version is given. A failed validation is
    /// [`Outcome::ConditionFailed`] with the key that changed.
    pub start_version: u64,
    /// Keys read.
    pub reads: Vec<Vec<u8>>,
    /// Ranges scanned.
    pub ranges: Vec<KeyRange>,
    /// The commit version of a cross-shard commit (validated when its locks
    /// were taken); `None`: take the next version from the clock.
    pub commit_version: Option<u64>,
    /// Redo records (writes of the other participants), written in the same
    /// atomic group as txn prepare records.
    pub redo: Vec<Op>,
    /// fdatasync before answering whatever the sync policy.
    pub force_sync: bool,
    /// (`Apply`) keep the transaction's locks after writing; the
    /// coordinator releases them once every part is written.
    pub keep_locks: bool,
}

/// A batch with an optional transaction side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReq {
    /// The writes and their conditions.
    pub batch: Batch,
    /// Validation and versioning of a transaction.
    pub txn: Option<Box<TxnPart>>,
}

impl From<Batch> for WriteReq {
    fn from(batch: Batch) -> Self {
        WriteReq { batch, txn: None }
    }
}

/// What happened to a batch. A failed condition is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written (durably, under `sync=always`) at `version`.
    Committed {
        /// Commit version of the batch.
        version: u64,
        /// How many deletes removed a key that existed.
        removed: u32,
    },
    /// A condition did not hold; nothing was written.
    ConditionFailed {
        /// The key whose condition failed.
        key: Vec<u8>,
        /// Its current version (0 = absent).
        current_version: u64,
    },
}

/// A value read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The bytes.
    pub value: Vec<u8>,
    /// Version of the write that stored it.
    pub version: u64,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writer-side facts about one segment.
#[derive(Debug, Clone)]
pub(crate) struct SegState {
    pub kind: SegmentKind,
    pub len: u64,
    pub live_bytes: u64,
    pub min_version: u64,
    pub max_version: u64,
    pub has_hint: bool,
    /// Ends with its seal record (every segment but the active one).
    pub sealed: bool,
}

impl SegState {
    /// The state of a freshly created log segment (header only).
    pub(crate) fn new_log() -> SegState {
        SegState {
            kind: SegmentKind::Log,
            len: SEGMENT_HEADER_LEN as u64,
            live_bytes: 0,
            min_version: 0,
            max_version: 0,
            has_hint: false,
            sealed: false,
        }
    }

    pub(crate) fn dead_bytes(&self) -> u64 {
        let fixed = SEGMENT_HEADER_LEN + if self.sealed { format::SEAL_LEN } else { 0 };
        self.len.saturating_sub(fixed as u64 + self.live_bytes)
    }
}

/// Per-segment figures of [`StoreStats`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SegmentStats {
    /// Segment id.
    pub id: u32,
    /// Whether it is a merge output.
    pub merged: bool,
    /// Whether it is the active (appended) segment.
    pub active: bool,
    /// File length.
    pub len: u64,
    /// Bytes of records the index points to.
    pub live_bytes: u64,
    /// Bytes merge can reclaim.
    pub dead_bytes: u64,
    /// Whether a hint is on disk for it.
    pub has_hint: bool,
}

/// Figures of one shard's storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Live keys (tombstones excluded; expired keys not yet merged included).
    pub keys: u64,
    /// Tombstones in the index.
    pub tombstones: u64,
    /// Bytes allocated by the index (keys included).
    pub index_bytes: u64,
    /// Of `index_bytes`, the old versions kept in memory for open
    /// snapshots (values included).
    pub old_version_bytes: u64,
    /// Segments, by id.
    pub segments: Vec<SegmentStats>,
    /// Sum of live bytes.
    pub live_bytes: u64,
    /// Sum of dead bytes.
    pub dead_bytes: u64,
    /// Write calls to the log.
    pub log_writes: u64,
    /// fdatasync calls on the log.
    pub log_syncs: u64,
    /// Batches committed.
    pub batches: u64,
    /// Bytes appended to the log.
    pub bytes_written: u64,
    /// Merges completed.
    pub merges: u64,
    /// Bytes reclaimed by merges.
    pub bytes_reclaimed: u64,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments whose index came from a hint.
    pub segments_from_hints: usize,
    /// Segments that were scanned.
    pub segments_scanned: usize,
    /// Hints that were present but rejected, with the reason.
    pub rejected_hints: Vec<(u32, String)>,
    /// Bytes cut from the torn tail of the newest log segment.
    pub truncated_tail_bytes: u64,
    /// Damaged ranges skipped under `repair` (segment, offset, length).
    pub dropped_ranges: Vec<(u32, u64, u64)>,
    /// Interrupted merges that were completed.
    pub merges_completed: usize,
    /// Log segments left unsealed by a crash and sealed at start-up (not
    /// appended to again).
    pub segments_sealed: usize,
    /// Temporary files of interrupted merges or seals that were removed.
    pub temp_files_removed: usize,
    /// Index entries after recovery (tombstones included).
    pub index_entries: usize,
    /// Highest version seen.
    pub max_version: u64,
    /// Redo records of cross-shard commits newer than the persisted settled
    /// floor, for the daemon to re-apply where their shard lacks them.
    pub redo: Vec<Redo>,
    /// How log appends are made (see [`crate::storage::io::Io::append_path`]).
    pub write_path: &'static str,
}

/// A redo record found at recovery (see `format` on txn prepare records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redo {
    /// Commit version.
    pub version: u64,
    /// Transaction id.
    pub txn_id: u64,
    /// The write.
    pub op: Op,
}

/// What shard readers share with the writer.
pub(crate) struct Shared {
    pub index: Index,
    pub segments: SegmentSet,
    /// Says which cross-shard commits are still unsettled (hidden).
    pub clock: Arc<Clock>,
    /// When the store makes its writes durable.
    pub sync: SyncPolicy,
    /// Why the store refuses writes, once it does ([`Store::poison`]),
    /// for health checks on other threads.
    pub poisoned: std::sync::OnceLock<String>,
}

/// Keys a multi-get ([`StoreReader::get_many`]) reads ahead together:
/// enough to overlap a batch's misses, few enough that the first key's
/// lines are still cached when it is read.
pub const READ_AHEAD: usize = 16;

/// Takes `keys` (an iterator made afresh for each stage) through the
/// read-ahead stages with `prefetch`, one stage for all of them before the
/// next, so that their misses overlap. Every key goes through every stage:
/// the answer at [`ReadAhead::Node`] is no reason to skip a key's record (a
/// key that linear probing moved past its home slot reads `false` there).
/// The caller holds an epoch pin, so that the stages' own pins nest in it
/// (cheap). Used by the multi-gets, by the RESP server's read-ahead of
/// pipelined GETs and by the gRPC Pipeline's of the gets that arrive
/// together.
pub(crate) fn read_ahead_stages<'a, I: Iterator<Item = &'a [u8]>>(
    keys: impl Fn() -> I,
    prefetch: impl Fn(&[u8], ReadAhead) -> bool,
) {
    for stage in [ReadAhead::Slot, ReadAhead::Node, ReadAhead::Record] {
        for k in keys() {
            prefetch(k, stage);
        }
    }
}

/// Reads `keys` with `get`, [`READ_AHEAD`] at a time, each batch first
/// taken through [`read_ahead_stages`] with `prefetch`, a hint only: the
/// answers are `get`'s whatever it does. Shared by a shard's
/// [`StoreReader::get_many`] and the router's, whose keys span shards.
pub(crate) fn read_ahead_many<K: AsRef<[u8]>>(
    keys: &[K],
    prefetch: impl Fn(&[u8], ReadAhead) -> bool,
    get: impl Fn(&[u8]) -> Result<Option<Value>>,
) -> Result<Vec<Option<Value>>> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(READ_AHEAD) {
        // The stages' and gets' own pins nest in this one (cheap).
        let _guard = crossbeam_epoch::pin();
        if batch.len() > 1 {
            read_ahead_stages(|| batch.iter().map(|k| k.as_ref()), &prefetch);
        }
        for k in batch {
            out.push(get(k.as_ref())?);
        }
    }
    Ok(out)
}

/// The stages of [`StoreReader::prefetch`], in the order to call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAhead {
    /// The key's hash slot.
    Slot,
    /// Its index node (the slot must have landed).
    Node,
    /// Its record in the log (the node must have landed).
    Record,
}

/// The read side of a store: `Send + Sync`, cheap to clone, never blocks on
/// the writer.
#[derive(Clone)]
pub struct StoreReader {
    shared: Arc<Shared>,
}

impl StoreReader {
    /// [`Store::validate_reads`] from any thread: whether any of `reads`
    /// (or a key in `ranges`) has a version newer than `start_version`.
    /// Sees what the storage task has published.
    pub fn validate(
        &self,
        start_version: u64,
        reads: &[Vec<u8>],
        ranges: &[KeyRange],
    ) -> Option<(Vec<u8>, u64)> {
        let guard = crossbeam_epoch::pin();
        let index = &self.shared.index;
        changed_since(
            index,
            start_version,
            reads,
            ranges,
            &FastMap::default(),
            |key| index.get(key, &guard).map_or(0, |e| e.version),
        )
    }

    /// An identity of the store, the same for every reader of it (the
    /// address of its shared state).
    pub fn identity(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// When the store makes its writes durable (the coordinator settles a
    /// cross-shard commit by it).
    pub fn sync_policy(&self) -> SyncPolicy {
        self.shared.sync
    }

    /// Why the store refuses writes until restart (a failed fdatasync, its
    /// files deleted), if it does.
    pub fn poisoned(&self) -> Option<&str> {
        self.shared.poisoned.get().map(String::as_str)
    }

    /// What a plain read of a cross-shard commit's part sees while that
    /// commit is hidden: the value it replaced. `None` if `e` is visible;
    /// `Some(Err(()))` if the chain has moved on since `e` was read (the
    /// commit was revealed and the key written again meanwhile): read again.
    #[allow(clippy::type_complexity)]
    fn hidden(
        &self,
        key: &[u8],
        e: &Entry,
        guard: &crossbeam_epoch::Guard,
    ) -> Option<std::result::Result<Option<Value>, ()>> {
        if e.flags & crate::index::ENTRY_XSHARD == 0 || !self.shared.clock.is_hidden(e.version) {
            return None;
        }
        // A hidden part always has what it replaced in its chain (an
        // "absent" element for a new key); if that is gone, the part was
        // revealed and the key written again since `e` was read.
        let Some(v) = self.shared.index.older_than(key, e.version, guard) else {
            return Some(Err(()));
        };
        let now = now_ms();
        Some(Ok(v.value.as_ref().and_then(|b| {
            if v.expires_at_ms.is_some_and(|t| t <= now) {
                return None;
            }
            Some(Value {
                value: b.to_vec(),
                version: v.version,
                expires_at_ms: v.expires_at_ms,
            })
        })))
    }

    /// The newest value of `key`, unless absent, deleted or expired. A
    /// cross-shard commit becomes visible to these reads all at once, when
    /// it is settled on every shard.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        let guard = crossbeam_epoch::pin();
        for _ in 0..1000 {
            let Some(e) = self.shared.index.get(key, &guard) else {
                return Ok(None);
            };
            if let Some(v) = self.read_current(key, &e, &guard)? {
                return Ok(v);
            }
        }
        Err(gone_segment(key))
    }

    /// Starts fetching what a [`StoreReader::get`] of `key` will read, one
    /// dependent step per stage, so that a batch of gets (a pipeline of
    /// Redis GETs) has its cache misses in flight together instead of one
    /// after another: call stage [`ReadAhead::Slot`] for every key of the
    /// batch, then [`ReadAhead::Node`] for each, then
    /// [`ReadAhead::Record`], then get them. Each stage assumes the one
    /// before it has landed; a hint only, it changes nothing. Returns
    /// whether the key looks present (at [`ReadAhead::Node`]: its home slot
    /// names it; at [`ReadAhead::Record`]: it is in the index), so that a
    /// caller can start on its next lookup of a missing key.
    pub fn prefetch(&self, key: &[u8], stage: ReadAhead) -> bool {
        let guard = crossbeam_epoch::pin();
        let index = &self.shared.index;
        match stage {
            ReadAhead::Slot => {
                index.prefetch_slot(key, &guard);
                true
            }
            ReadAhead::Node => index.prefetch_node(key, &guard),
            ReadAhead::Record => {
                let Some(e) = index.get(key, &guard) else {
                    return false;
                };
                if e.tombstone {
                    return true;
                }
                let table = self.shared.segments.load(&guard);
                if let Some(seg) = table.get(e.segment) {
                    let len = format::record_len(
                        key.len(),
                        e.value_len as usize,
                        e.flags & FLAG_EXPIRES != 0,
                    );
                    let start = e.offset as usize;
                    if let Some(bytes) = seg.bytes().get(start..start + len) {
                        // The record's cache lines, up to the first
                        // 256 bytes (a get reads the whole record; a long
                        // one streams): a byte in each 64 from the start,
                        // and the last, as the record need not start a line.
                        let head = &bytes[..len.min(256)];
                        for line in head.chunks(64) {
                            crate::index::prefetch_line(line.as_ptr());
                        }
                        crate::index::prefetch_line(&head[head.len() - 1]);
                    }
                }
                true
            }
        }
    }

    /// Reads every key of `keys`, answering as [`StoreReader::get`] does for
    /// each, in order, with their cache misses overlapped: [`READ_AHEAD`]
    /// keys at a time go through [`StoreReader::prefetch`]'s stages
    /// together before they are read. A lone get is three dependent misses
    /// (hash slot, index node, record) with nothing to overlap them; a
    /// multi-get has them in flight for many keys at once (in-process,
    /// 16-byte keys and 100-byte values over 1M keys: about 3.5 times the
    /// gets per second, see README.md).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        read_ahead_many(keys, |k, stage| self.prefetch(k, stage), |k| self.get(k))
    }

    /// What a read finds in `key`'s current entry `e`: what a hidden
    /// cross-shard part replaced, else the entry's value (`None` inside:
    /// deleted or expired); or `None` if a merge moved the entry or a
    /// writer moved the key's chain on since `e` was read (read again).
    fn read_current(
        &self,
        key: &[u8],
        e: &Entry,
        guard: &crossbeam_epoch::Guard,
    ) -> Result<Option<Option<Value>>> {
        match self.hidden(key, e, guard) {
            None => self.read_entry(key, e, guard),
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(())) => Ok(None),
        }
    }

    /// The value an index entry points at (`None` inside: deleted or
    /// expired), or `None` if a merge moved the entry since it was read.
    fn read_entry(
        &self,
        key: &[u8],
        e: &Entry,
        guard: &crossbeam_epoch::Guard,
    ) -> Result<Option<Option<Value>>> {
        if e.tombstone {
            return Ok(Some(None));
        }
        let table = self.shared.segments.load(guard);
        let Some(seg) = table.get(e.segment) else {
            return Ok(None);
        };
        let rec = read_record(seg, key, e)?;
        if rec.expires_at_ms.is_some_and(|t| t <= now_ms()) {
            return Ok(Some(None));
        }
        Ok(Some(Some(Value {
            value: rec.value.to_vec(),
            version: rec.version,
            expires_at_ms: rec.expires_at_ms,
        })))
    }

    /// Live keys in the range, in key order (or reverse), at most `limit`,
    /// with values unless `keys_only`. Weakly consistent: a key written during
    /// the scan may or may not appear.
    pub fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
        keys_only: bool,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        let guard = crossbeam_epoch::pin();
        let now = now_ms();
        let mut out = Vec::new();
        for (key, e) in self.shared.index.range(lower, upper, reverse, &guard) {
            if out.len() >= limit {
                break;
            }
            match self.hidden(key, &e, &guard) {
                None => {}
                Some(v) => {
                    // A chain that moved on: a plain get reads it again.
                    let v = match v {
                        Ok(v) => v,
                        Err(()) => self.get(key)?,
                    };
                    if let Some(mut v) = v {
                        if keys_only {
                            v.value.clear();
                        }
                        out.push((key.to_vec(), v));
                    }
                    continue;
                }
            }
            if e.tombstone {
                continue;
            }
            let table = self.shared.segments.load(&guard);
            let v = match table.get(e.segment) {
                Some(seg) => {
                    let rec = read_record(seg, key, &e)?;
                    if rec.expires_at_ms.is_some_and(|t| t <= now) {
                        continue;
                    }
                    Value {
                        value: if keys_only {
                            Vec::new()
                        } else {
                            rec.value.to_vec()
                        },
                        version: rec.version,
                        expires_at_ms: rec.expires_at_ms,
                    }
                }
                // Moved by a merge since the iterator read the entry.
                None => match self.get(key)? {
                    Some(mut v) => {
                        if keys_only {
                            v.value.clear();
                        }
                        v
                    }
                    None => continue,
                },
            };
            out.push((key.to_vec(), v));
        }
        Ok(out)
    }

    /// The value of `key` as of version `at` (a snapshot read), unless
    /// absent, deleted or expired then. Correct for `at` the start of a
    /// snapshot open with the clock (or one newer than every write): the
    /// periodic trim keeps the versions open snapshots read, not those
    /// between them.
    pub fn get_at(&self, key: &[u8], at: u64) -> Result<Option<Value>> {
        let guard = crossbeam_epoch::pin();
        for _ in 0..1000 {
            let found = self.shared.index.get_at(key, at, &guard);
            if let Some(v) = self.read_at(key, found, &guard)? {
                return Ok(v);
            }
        }
        Err(gone_segment(key))
    }

    /// The value a snapshot read finds in `found` (`None` inside: absent,
    /// deleted or expired), or `None` if a merge moved the entry or a
    /// writer moved the key's chain on since it was read.
    fn read_at(
        &self,
        key: &[u8],
        found: At<'_>,
        guard: &crossbeam_epoch::Guard,
    ) -> Result<Option<Option<Value>>> {
        match found {
            At::Absent => Ok(Some(None)),
            At::Old(v) => Ok(Some(v.value.as_ref().and_then(|b| {
                if v.expires_at_ms.is_some_and(|t| t <= now_ms()) {
                    return None;
                }
                Some(Value {
                    value: b.to_vec(),
                    version: v.version,
                    expires_at_ms: v.expires_at_ms,
                })
            }))),
            // A snapshot is never newer than a hidden commit, except one
            // taken after a part of that commit failed: it stays hidden
            // (until a restart completes it) from snapshots as from plain
            // reads.
            At::Current(e) => self.read_current(key, &e, guard),
        }
    }

    /// Keys in the range as of version `at`, in order (or reverse), at most
    /// `limit`: a snapshot scan (see [`StoreReader::get_at`]).
    pub fn scan_at(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
        at: u64,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        let guard = crossbeam_epoch::pin();
        let mut out = Vec::new();
        let mut keys = self.shared.index.range(lower, upper, reverse, &guard);
        while out.len() < limit {
            let Some((key, found)) = keys.next_at(at) else {
                break;
            };
            // The node the walk is on answers first; a merge that moved the
            // entry meanwhile sends the read through the key's lookup.
            let v = match self.read_at(key, found, &guard)? {
                Some(v) => v,
                None => self.get_at(key, at)?,
            };
            if let Some(v) = v {
                out.push((key.to_vec(), v));
            }
        }
        Ok(out)
    }

    /// Index entry of `key` (tombstones included): location and version.
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        let guard = crossbeam_epoch::pin();
        self.shared.index.get(key, &guard)
    }

    /// Live keys (tombstones excluded).
    pub fn len(&self) -> usize {
        self.shared.index.len() - self.shared.index.tombstones()
    }

    /// Whether there are no live keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn gone_segment(key: &[u8]) -> Error {
    Error::Unavailable(format!(
        "index entry of key {key:?} points at a segment that is gone"
    ))
}

fn read_record<'a>(seg: &'a Segment, key: &[u8], e: &Entry) -> Result<format::Record<'a>> {
    let len = format::record_len(key.len(), e.value_len as usize, e.flags & FLAG_EXPIRES != 0);
    let start = e.offset as usize;
    let bytes = seg.bytes().get(start..start + len).ok_or_else(|| {
        Error::corruption(
            &seg.path,
            e.offset.into(),
            "index points past the segment mapping",
        )
    })?;
    let rec = format::decode_record(bytes)
        .map_err(|d| Error::corruption(&seg.path, e.offset.into(), d.to_string()))?;
    if rec.key != key {
        return Err(Error::corruption(
            &seg.path,
            e.offset.into(),
            "record key differs from the index key",
        ));
    }
    Ok(rec)
}

/// The value `o` (the entry `key` has now) as an old version; `None` if its
/// record cannot be read.
fn old_version(
    shared: &Shared,
    key: &[u8],
    o: &Entry,
    guard: &crossbeam_epoch::Guard,
) -> Option<Box<OldVersion>> {
    if o.tombstone {
        return Some(OldVersion::new(o.version, None, None));
    }
    let table = shared.segments.load(guard);
    table
        .get(o.segment)
        .and_then(|seg| read_record(seg, key, o).ok())
        .map(|r| {
            OldVersion::new(
                o.version,
                Some(r.value.to_vec().into_boxed_slice()),
                r.expires_at_ms,
            )
        })
}

pub(crate) struct Active {
    pub id: u32,
    pub file: DataFile,
    pub len: u64,
}

/// A sealed log segment whose fdatasync runs on a helper thread.
pub(crate) struct PendingSeal {
    id: u32,
    started: std::time::Instant,
    done: tokio::sync::oneshot::Receiver<Result<()>>,
}

/// What a background seal's helper thread answered.
pub type SealOutcome = std::result::Result<Result<()>, tokio::sync::oneshot::error::RecvError>;

/// Records written to the active segment and not yet published.
pub(crate) struct Staged {
    buf: Vec<u8>,
    planned: Vec<Planned>,
    segment: u32,
    /// Indexes (in the group) of the batches these records commit.
    pub(crate) committed: Vec<usize>,
    /// Whether anything was written.
    pub(crate) written: bool,
}

/// One shard's storage, owned by the shard thread. See the module docs for
/// the write path.
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) io: Io,
    pub(crate) shared: Arc<Shared>,
    pub(crate) writer: IndexWriter,
    pub(crate) active: Active,
    pub(crate) segs: BTreeMap<u32, SegState>,
    pub(crate) next_id: u32,
    pub(crate) clock: Arc<Clock>,
    pub(crate) unsynced: bool,
    /// A background fdatasync of the active segment is running (see
    /// [`Store::begin_background_sync`]).
    pub(crate) background_sync: bool,
    /// The sealed segment whose fdatasync runs in the background (see
    /// "Sealing" in the module docs).
    pub(crate) pending_seal: Option<PendingSeal>,
    pub(crate) buf: Vec<u8>,
    /// Hint builds queued or running on the hint worker; each receiver
    /// disconnects when its build is over.
    pub(crate) hints_pending: Vec<std::sync::mpsc::Receiver<()>>,
    pub(crate) merge: Option<MergeJob>,
    /// Set when a merge failed after its commit point (the next start-up
    /// completes it) or the shard's files were deleted under it
    /// ([`Store::check_files`]): no merge runs until restart.
    pub(crate) merge_blocked: Option<String>,
    /// Segments with damaged ranges skipped under `repair`, to be rewritten.
    pub(crate) damaged: Vec<u32>,
    pub(crate) stats: StoreStats,
    /// fdatasync latency histogram of this shard (metrics).
    pub(crate) fsync_seconds: prometheus::Histogram,
    /// Batches per group-commit write (metrics).
    pub(crate) group_batches: prometheus::Histogram,
    /// Keys whose index node holds old versions (for trimming): every such
    /// key, added when its chain starts (the index says when); a key may
    /// stay after its chain went, until the next trim drops it.
    pub(crate) chained: FastSet<Vec<u8>>,
    /// Where the active expiry sweep goes on (None: from the start).
    pub(crate) sweep_cursor: Option<Vec<u8>>,
    /// Whether the file system counts links, so that [`Store::check_files`]
    /// can tell a deleted file.
    pub(crate) links_counted: bool,
    pub(crate) _lock: File,
}

/// Groups of at most this many operations prefetch their index entries
/// while they are encoded and written.
const PREFETCH_OPS: usize = 16;

struct Planned {
    key_range: (usize, usize),
    entry: Entry,
    /// Part of a cross-shard commit: hidden from plain reads until settled.
    xshard: bool,
}

/// A store dropped without [`Store::close`] (an error path, a test's
/// simulated crash) still waits for its hint writers: one left running
/// could write a hint file after the directory is opened again.
impl Drop for Store {
    fn drop(&mut self) {
        self.wait_for_hints();
    }
}

impl Store {
    /// The reader handle.
    pub fn reader(&self) -> StoreReader {
        StoreReader {
            shared: self.shared.clone(),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// The data directory of this shard.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The I/O handle (engine and fault injection).
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// The version clock.
    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    /// Why writes are refused until restart, if they are (a failed
    /// fdatasync, the store's files deleted).
    pub fn poisoned(&self) -> Option<&str> {
        self.shared.poisoned.get().map(String::as_str)
    }

    /// The error for a write while [`Store::poisoned`].
    fn refuse_if_poisoned(&self) -> Result<()> {
        match self.poisoned() {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Convenience: one put.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<u64> {
        match self.write(Batch::put(key, value)).await? {
            Outcome::Committed { version, .. } => Ok(version),
            Outcome::ConditionFailed { .. } => {
                unreachable!("a batch without conditions cannot fail one")
            }
        }
    }

    /// Convenience: one delete; returns whether the key existed.
    pub async fn delete(&mut self, key: &[u8]) -> Result<bool> {
        match self.write(Batch::delete(key)).await? {
            Outcome::Committed { removed, .. } => Ok(removed > 0),
            Outcome::ConditionFailed { .. } => {
                unreachable!("a batch without conditions cannot fail one")
            }
        }
    }

    /// Writes one batch.
    pub async fn write(&mut self, batch: Batch) -> Result<Outcome> {
        self.write_group(vec![batch])
            .await
            .pop()
            .expect("one batch in, one outcome out")
    }

    fn check_limits(&self, batch: &Batch) -> Result<()> {
        if batch.ops.is_empty() && batch.conditions.is_empty() {
            return Err(Error::InvalidArgument("empty batch".into()));
        }
        for op in &batch.ops {
            let k = op.key();
            if k.is_empty() {
                return Err(Error::InvalidArgument("empty key".into()));
            }
            if k.len() > self.opts.max_key_size {
                return Err(Error::InvalidArgument(format!(
                    "key of {} bytes exceeds the limit of {} bytes",
                    k.len(),
                    self.opts.max_key_size
                )));
            }
            if let Op::Put { value, .. } = op
                && value.len() > self.opts.max_value_size
            {
                return Err(Error::InvalidArgument(format!(
                    "value of {} bytes exceeds the limit of {} bytes",
                    value.len(),
                    self.opts.max_value_size
                )));
            }
        }
        let total: u64 = batch.ops.iter().map(|op| op.record_len()).sum();
        if total + (SEGMENT_HEADER_LEN + format::SEAL_LEN) as u64 > self.opts.segment_size {
            return Err(Error::InvalidArgument(format!(
                "batch of {total} bytes does not fit in one segment ({} bytes)",
                self.opts.segment_size
            )));
        }
        Ok(())
    }

    /// Group commit: writes the batches with one write and (under
    /// `sync=always`) one fdatasync per segment touched, then publishes them.
    /// Outcomes come back in order.
    pub async fn write_group(&mut self, batches: Vec<Batch>) -> Vec<Result<Outcome>> {
        self.write_requests(batches.into_iter().map(WriteReq::from).collect())
            .await
    }

    /// Group commit of requests, some of them transactional; see
    /// [`Store::write_group`].
    pub async fn write_requests(&mut self, batches: Vec<WriteReq>) -> Vec<Result<Outcome>> {
        let mut results: Vec<Option<Result<Outcome>>> = (0..batches.len()).map(|_| None).collect();
        let mut start = 0;
        while start < batches.len() {
            match self.write_subgroup(&batches, start, &mut results).await {
                Ok(next) => start = next,
                Err(e) => {
                    let msg = e.to_string();
                    let mut first = Some(e);
                    for r in results.iter_mut().skip(start) {
                        if r.is_none() {
                            *r = Some(Err(first
                                .take()
                                .unwrap_or_else(|| Error::Unavailable(msg.clone()))));
                        }
                    }
                    break;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every batch answered"))
            .collect()
    }

    /// Encodes batches from `start` while they fit in the active segment,
    /// writes them, publishes them; returns the index of the first batch not
    /// handled (after sealing the segment if that is why it stopped).
    async fn write_subgroup(
        &mut self,
        batches: &[WriteReq],
        start: usize,
        results: &mut [Option<Result<Outcome>>],
    ) -> Result<usize> {
        // Versions taken from here on are published before the floor drops.
        let clock = self.clock.clone();
        let _floor = clock.enter_writer();
        let (staged, next, need_seal) = self.stage_subgroup(batches, start, results).await?;
        let forced = batches[start..next]
            .iter()
            .any(|r| r.txn.as_ref().is_some_and(|t| t.force_sync));
        if staged.written
            && (self.opts.sync == SyncPolicy::Always || forced)
            && let Err(e) = self.sync_active().await
        {
            for &i in &staged.committed {
                results[i] = None;
            }
            return Err(e);
        }
        self.publish_staged(staged);
        if need_seal {
            self.rotate().await?;
        }
        Ok(next)
    }

    /// Encodes batches from `start` while they fit in the active segment and
    /// writes them (no fdatasync, nothing published yet). Returns the staged
    /// records, the index of the first batch not handled, and whether the
    /// active segment must be sealed before that batch.
    async fn stage_subgroup(
        &mut self,
        batches: &[WriteReq],
        start: usize,
        results: &mut [Option<Result<Outcome>>],
    ) -> Result<(Staged, usize, bool)> {
        self.refuse_if_poisoned()?;
        // The index lookups of a small group (made when it is published)
        // are random cache misses: start them now, in two stages (hash
        // slot, then node), so that encoding and the copy to the log hide
        // them. Large groups search the index together (`prepare`).
        let small = batches[start..]
            .iter()
            .map(|r| r.batch.ops.len())
            .sum::<usize>()
            <= PREFETCH_OPS;
        if small {
            for op in batches[start..].iter().flat_map(|r| &r.batch.ops) {
                self.writer.prefetch_slot(op.key());
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let base = self.active.len;
        let ops = |range: std::ops::Range<usize>| -> usize {
            batches[range].iter().map(|r| r.batch.ops.len()).sum()
        };
        let mut planned: Vec<Planned> = Vec::with_capacity(ops(start..batches.len()));
        let mut committed: Vec<usize> = Vec::new();
        // Only a later batch with a condition or a delete reads the overlay.
        let last_reader = batches.iter().rposition(|r| {
            r.txn.is_some()
                || !r.batch.conditions.is_empty()
                || r.batch.ops.iter().any(|o| matches!(o, Op::Delete { .. }))
        });
        // Versions and liveness as the earlier batches of this group leave
        // them (sized for the batches before the last reader, which it
        // tracks, rather than rehashed as it grows).
        let tracked = last_reader.map_or(0, |r| ops(start..r.max(start)));
        let mut overlay: FastMap<&[u8], (u64, bool)> =
            FastMap::with_capacity_and_hasher(tracked, Default::default());
        let now = now_ms();
        let mut next = start;
        let mut need_seal = false;
        while next < batches.len() {
            let batch = &batches[next].batch;
            let txn = batches[next].txn.as_deref();
            if let Err(e) = self.check_limits(batch) {
                results[next] = Some(Err(e));
                next += 1;
                continue;
            }
            // The deletes of a large batch whose keys all lie in a range
            // the index holds nothing in (a bulk write's deletes of Redis
            // metadata keys, on a shard without collections) are of absent
            // keys, unless an earlier batch of this group wrote them (not
            // in the index yet: the overlay has them). One search tells,
            // instead of a lookup per key.
            let delete_keys = || {
                batch.ops.iter().filter_map(|o| match o {
                    Op::Delete { key } => Some(key.as_slice()),
                    Op::Put { .. } => None,
                })
            };
            let mut deletes = delete_keys();
            let deletes_absent = !small
                && deletes.next().is_some_and(|first| {
                    let (lo, hi) =
                        deletes.fold((first, first), |(lo, hi), k| (lo.min(k), hi.max(k)));
                    self.writer.none_in(lo, hi)
                });
            if !small {
                // The conditions and deletes below look their keys up: in a
                // large group nothing was prefetched, so start those cache
                // misses together.
                let deletes = delete_keys().filter(|_| !deletes_absent);
                for key in batch
                    .conditions
                    .iter()
                    .map(|c| c.key.as_slice())
                    .chain(deletes)
                {
                    self.writer.prefetch_slot(key);
                }
            }
            let current = |key: &[u8], overlay: &FastMap<&[u8], (u64, bool)>| -> (u64, bool) {
                if let Some(&v) = overlay.get(key) {
                    return v;
                }
                match self.writer.get(key) {
                    Some(e) if !e.tombstone => {
                        let expired = e.flags & FLAG_EXPIRES != 0 && self.expired_at(key, &e, now);
                        if expired {
                            (0, false)
                        } else {
                            (e.version, true)
                        }
                    }
                    _ => (0, false),
                }
            };
            if let Some(c) = batch.conditions.iter().find(|c| {
                let (v, live) = current(&c.key, &overlay);
                let v = if live { v } else { 0 };
                v != c.expected_version
            }) {
                let (v, live) = current(&c.key, &overlay);
                results[next] = Some(Ok(Outcome::ConditionFailed {
                    key: c.key.clone(),
                    current_version: if live { v } else { 0 },
                }));
                next += 1;
                continue;
            }
            if let Some(t) = txn
                && t.commit_version.is_none()
                && t.start_version > 0
                && let Some((key, current_version)) = self.validate(t, &overlay)
            {
                results[next] = Some(Ok(Outcome::ConditionFailed {
                    key,
                    current_version,
                }));
                next += 1;
                continue;
            }
            // Last write of a key within the batch wins.
            let ops: Vec<&Op> = if batch.ops.len() > 1 {
                let mut last: FastMap<&[u8], usize> =
                    FastMap::with_capacity_and_hasher(batch.ops.len(), Default::default());
                for (i, op) in batch.ops.iter().enumerate() {
                    last.insert(op.key(), i);
                }
                batch
                    .ops
                    .iter()
                    .enumerate()
                    .filter(|(i, op)| last[op.key()] == *i)
                    .map(|(_, op)| op)
                    .collect()
            } else {
                batch.ops.iter().collect()
            };
            let mut removed = 0u32;
            let writes: Vec<&Op> = ops
                .into_iter()
                .filter(|op| match op {
                    Op::Put { .. } => true,
                    Op::Delete { key }
                        if deletes_absent && !overlay.contains_key(key.as_slice()) =>
                    {
                        false
                    }
                    Op::Delete { key } => {
                        let live = current(key, &overlay).1;
                        removed += u32::from(live);
                        // An expired key still in the index gets its
                        // tombstone too (though it does not count as
                        // removed), so its bytes become garbage for merge.
                        live || (!overlay.contains_key(key.as_slice())
                            && self.writer.get(key).is_some_and(|e| !e.tombstone))
                    }
                })
                .collect();
            let redo: &[Op] = txn.map_or(&[], |t| t.redo.as_slice());
            let size: u64 = writes.iter().map(|op| op.record_len()).sum::<u64>()
                + redo.iter().map(|op| op.record_len()).sum::<u64>();
            // Room is kept for the seal record that will end the segment.
            if base + buf.len() as u64 + size + format::SEAL_LEN as u64 > self.opts.segment_size {
                need_seal = true;
                break;
            }
            let version = match txn.and_then(|t| t.commit_version) {
                Some(v) => v,
                None => self.clock.next(),
            };
            let txn_id = txn.map_or(0, |t| t.txn_id);
            let track_overlay = last_reader.is_some_and(|r| r > next);
            for (i, op) in redo.iter().enumerate() {
                let (key, value, expires_at_ms, flags) = match op {
                    Op::Put {
                        key,
                        value,
                        expires_at_ms,
                    } => (key, value.as_slice(), *expires_at_ms, 0),
                    Op::Delete { key } => (key, &[][..], None, format::FLAG_REDO_DELETE),
                };
                let cont = if i + 1 < redo.len() || !writes.is_empty() {
                    FLAG_GROUP_CONT
                } else {
                    0
                };
                format::encode_record(
                    &mut buf,
                    &RecordSpec {
                        kind: RecordKind::TxnPrepare,
                        flags: flags | cont,
                        version,
                        txn_id,
                        expires_at_ms,
                        key,
                        value,
                    },
                );
            }
            for (i, op) in writes.iter().enumerate() {
                let flags = if i + 1 < writes.len() {
                    FLAG_GROUP_CONT
                } else {
                    0
                };
                let offset = base + buf.len() as u64;
                let (spec, tombstone) = match op {
                    Op::Put {
                        key,
                        value,
                        expires_at_ms,
                    } => (
                        RecordSpec {
                            kind: RecordKind::Put,
                            flags,
                            version,
                            txn_id,
                            expires_at_ms: *expires_at_ms,
                            key,
                            value,
                        },
                        false,
                    ),
                    Op::Delete { key } => (
                        RecordSpec {
                            kind: RecordKind::Delete,
                            flags,
                            version,
                            txn_id,
                            expires_at_ms: None,
                            key,
                            value: &[],
                        },
                        true,
                    ),
                };
                let key_start = buf.len()
                    + format::RECORD_HEADER_LEN
                    + if spec.expires_at_ms.is_some() { 8 } else { 0 };
                format::encode_record(&mut buf, &spec);
                planned.push(Planned {
                    xshard: txn.is_some_and(|t| t.commit_version.is_some()),
                    key_range: (key_start, key_start + spec.key.len()),
                    entry: Entry {
                        segment: self.active.id,
                        offset: offset as u32,
                        value_len: spec.value.len() as u32,
                        version,
                        tombstone,
                        flags: if spec.expires_at_ms.is_some() {
                            FLAG_EXPIRES
                        } else {
                            0
                        },
                    },
                });
                if track_overlay {
                    overlay.insert(op.key(), (version, !tombstone));
                }
            }
            results[next] = Some(Ok(Outcome::Committed { version, removed }));
            committed.push(next);
            next += 1;
        }

        if small {
            for p in &planned {
                self.writer
                    .prefetch_node(&buf[p.key_range.0..p.key_range.1]);
            }
        }
        let written = !buf.is_empty();
        if written {
            let (r, b) = self.append(std::mem::take(&mut buf)).await;
            buf = b;
            if let Err(e) = r {
                for &i in &committed {
                    results[i] = None;
                }
                self.buf = buf;
                return Err(e);
            }
        }
        Ok((
            Staged {
                buf,
                planned,
                segment: self.active.id,
                committed,
                written,
            },
            next,
            need_seal,
        ))
    }

    /// Publishes staged records to the index (after they are durable under
    /// `sync=always`).
    fn publish_staged(&mut self, staged: Staged) {
        if let Some(v) = staged.planned.iter().map(|p| p.entry.version).max() {
            self.clock.publishing(v);
        }
        if self.clock.feed.is_on() {
            let changes = staged
                .planned
                .iter()
                .map(|p| {
                    let (k0, k1) = p.key_range;
                    let expires_at_ms = (p.entry.flags & FLAG_EXPIRES != 0).then(|| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&staged.buf[k0 - 8..k0]);
                        u64::from_le_bytes(b)
                    });
                    crate::storage::feed::Change {
                        version: p.entry.version,
                        key: staged.buf[k0..k1].to_vec(),
                        value: (!p.entry.tombstone)
                            .then(|| staged.buf[k1..k1 + p.entry.value_len as usize].to_vec()),
                        expires_at_ms,
                    }
                })
                .collect();
            self.clock.feed.record(changes);
        }
        // Groups search the index for all their keys at once (interleaved
        // walks); one write alone gains nothing from it.
        let prepared = staged.planned.len() >= 4;
        if prepared {
            let keys: Vec<&[u8]> = staged
                .planned
                .iter()
                .map(|p| &staged.buf[p.key_range.0..p.key_range.1])
                .collect();
            self.writer.prepare(&keys);
        }
        let key_of = |p: &Planned| &staged.buf[p.key_range.0..p.key_range.1];
        if prepared {
            // Each upsert looks its key up in the hash table first: fetch
            // the slots ahead (in a large group, those prepare touched
            // are no longer cached).
            for p in staged.planned.iter().take(crate::index::SLOTS_AHEAD) {
                self.writer.prefetch_slot(key_of(p));
            }
        }
        for (i, p) in staged.planned.iter().enumerate() {
            if prepared && let Some(ahead) = staged.planned.get(i + crate::index::SLOTS_AHEAD) {
                self.writer.prefetch_slot(key_of(ahead));
            }
            self.publish(key_of(p), p.entry, staged.segment, p.xshard);
        }
        if prepared {
            self.writer.clear_hints();
        }
        self.stats.batches += staged.committed.len() as u64;
        if !staged.committed.is_empty() {
            self.group_batches.observe(staged.committed.len() as f64);
        }
        self.buf = staged.buf;
    }

    fn expired_at(&self, key: &[u8], e: &Entry, now: u64) -> bool {
        let guard = crossbeam_epoch::pin();
        let table = self.shared.segments.load(&guard);
        table
            .get(e.segment)
            .and_then(|seg| read_record(seg, key, e).ok())
            .and_then(|r| r.expires_at_ms)
            .is_some_and(|t| t <= now)
    }

    /// Appends `buf` to the active segment (no fdatasync); returns the buffer.
    async fn append(&mut self, buf: Vec<u8>) -> (Result<()>, Vec<u8>) {
        let pos = self.active.len;
        let (r, buf) = self.active.file.write_all_at(buf, pos).await;
        self.stats.log_writes += 1;
        if let Err(e) = r {
            // Cut the file back so that no part of this failed write can be
            // read back at recovery.
            if let Err(te) = self.active.file.set_len(pos) {
                self.poison(format!(
                    "write failed ({e}) and truncating it away failed ({te})"
                ));
            }
            return (Err(e), buf);
        }
        self.unsynced = true;
        self.active.len = pos + buf.len() as u64;
        self.stats.bytes_written += buf.len() as u64;
        let st = self
            .segs
            .get_mut(&self.active.id)
            .expect("active segment has a state");
        st.len = self.active.len;
        (Ok(()), buf)
    }

    /// Cuts the space preallocated for appends off the active
    /// segment's file and makes its length durable (before a seal is
    /// final, or at close), so a sealed segment ends with its records.
    async fn release_preallocated(&mut self) -> Result<()> {
        let r = match self.cut_preallocated()? {
            true => self.active.file.sync_data().await,
            false => Ok(()),
        };
        if let Err(e) = &r {
            self.poison_unknown(e);
        }
        r
    }

    /// Cuts the space preallocated for appends off the active
    /// segment's file, without syncing; whether there was any. A failure
    /// leaves the file's length unknown: the store refuses writes.
    fn cut_preallocated(&mut self) -> Result<bool> {
        let r = self.active.file.release_preallocated(self.active.len);
        if let Err(e) = &r {
            self.poison_unknown(e);
        }
        r
    }

    async fn sync_active(&mut self) -> Result<()> {
        // Durable writes in the active segment must not follow a seal that
        // is not: a crash would cut them off with the predecessor's tail.
        self.await_pending_seal().await?;
        self.stats.log_syncs += 1;
        let started = std::time::Instant::now();
        let synced = self.active.file.sync_data().await;
        self.fsync_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(e) = synced {
            // What reached the disk is unknown: refuse writes until restart.
            self.poison_unknown(&e);
            return Err(e);
        }
        // Durable only if the file still has its name: no acknowledgement
        // of a write into a data directory removed under the daemon.
        self.check_files()?;
        self.unsynced = false;
        Ok(())
    }

    /// Checks that the files this store writes still have their names: the
    /// active segment and the directory's lock file. If the data directory
    /// was removed (or its files deleted) under the running daemon, they
    /// stay writable, but all that is written to them is gone at the next
    /// start, and a second daemon could lock the directory's path anew; so
    /// the store refuses writes from then on (poisoned, as after a failed
    /// fdatasync) and starts no merge. Runs after every fdatasync of the
    /// active segment (so `sync=always` acknowledges nothing written to a
    /// deleted file) and once a second from the storage task; not on a file
    /// system that reports no link counts. An error means it found such a
    /// file now (or could not look).
    pub fn check_files(&mut self) -> Result<()> {
        if self.poisoned().is_some() || !self.links_counted {
            return Ok(());
        }
        use std::os::unix::fs::MetadataExt;
        let lock_linked = || match self._lock.metadata() {
            Ok(m) => Ok(m.nlink() > 0),
            Err(e) => Err(Error::io("fstat", self.dir.join("LOCK"), e)),
        };
        let gone = if !self.active.file.linked()? {
            self.active.file.path().to_path_buf()
        } else if !lock_linked()? {
            self.dir.join("LOCK")
        } else {
            return Ok(());
        };
        let cause = format!(
            "{} was deleted while the shard had it open (the data directory {} was removed or changed under the running daemon; writes to a deleted file would be lost)",
            gone.display(),
            self.dir.display()
        );
        tracing::error!(shard = self.opts.shard_id, %cause, "the shard refuses writes until restart");
        self.poison(cause.clone());
        self.merge_blocked.get_or_insert_with(|| cause.clone());
        Err(Error::Poisoned { cause })
    }

    /// Makes the store refuse writes until restart after the I/O failure
    /// `e` of its log, which leaves what reached the disk unknown.
    fn poison_unknown(&mut self, e: &Error) {
        self.poison(format!(
            "{e}; what reached the disk is unknown, and a restart recovers from the log"
        ));
    }

    /// Makes the store refuse writes until restart, for `cause` (the first
    /// cause is kept); readers on other threads see it through
    /// [`StoreReader::poisoned`].
    pub(crate) fn poison(&mut self, cause: String) {
        let _ = self.shared.poisoned.set(cause);
    }

    /// Whether some key has an expiry time (expired or not).
    pub fn has_expiring_keys(&self) -> bool {
        self.shared.index.expiring() > 0
    }

    /// Active expiry: examines up to `budget` index entries from where the
    /// last sweep stopped (wrapping around at the end) and deletes the keys
    /// whose expiry has passed, each on the condition that it is still
    /// expired (a key rewritten meanwhile is kept). Lazy expiry already hides
    /// expired keys from reads; this reclaims them without a read. Returns
    /// how many keys it deleted.
    pub async fn sweep_expired(&mut self, budget: usize) -> Result<usize> {
        if self.poisoned().is_some() {
            return Ok(0);
        }
        // No key has an expiry: nothing to walk (the walk costs a cache
        // miss or more per entry examined).
        if !self.has_expiring_keys() {
            self.sweep_cursor = None;
            return Ok(0);
        }
        let now = now_ms();
        let mut expired = Vec::new();
        let (mut examined, mut last) = (0usize, None);
        {
            let guard = crossbeam_epoch::pin();
            let lower = match &self.sweep_cursor {
                Some(k) => std::ops::Bound::Excluded(k.as_slice()),
                None => std::ops::Bound::Unbounded,
            };
            for (key, e) in
                self.shared
                    .index
                    .range(lower, std::ops::Bound::Unbounded, false, &guard)
            {
                examined += 1;
                if !e.tombstone && e.flags & FLAG_EXPIRES != 0 && self.expired_at(key, &e, now) {
                    expired.push(key.to_vec());
                }
                if examined >= budget {
                    last = Some(key.to_vec());
                    break;
                }
            }
        }
        self.sweep_cursor = last;
        if expired.is_empty() {
            return Ok(0);
        }
        // An expired key reads as absent (version 0) to a condition.
        let batches = expired
            .into_iter()
            .map(|key| Batch {
                ops: vec![Op::Delete { key: key.clone() }],
                conditions: vec![Condition {
                    key,
                    expected_version: 0,
                }],
            })
            .collect();
        let mut deleted = 0;
        for r in self.write_group(batches).await {
            if let Outcome::Committed { .. } = r? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// fdatasync of the active segment if anything was written since the last
    /// one (the `interval` policy's timer calls this).
    pub async fn sync(&mut self) -> Result<()> {
        self.refuse_if_poisoned()?;
        // A background sync in flight has not made anything durable yet.
        if self.unsynced || self.background_sync || self.pending_seal.is_some() {
            self.sync_active().await
        } else {
            Ok(())
        }
    }

    /// Starts syncing what is unsynced without waiting for it (the
    /// `interval` policy's tick): the fdatasync runs on a helper thread
    /// while the storage task serves requests. Awaited on the storage task,
    /// a tick's fdatasync held every request of the shard for as long as
    /// the disk took (Redis' `everysec` fsync runs on a background thread).
    /// `None` if nothing is unsynced. Writes from now on count as unsynced
    /// again; pass the receiver's result to
    /// [`Store::finish_background_sync`]. An error means none was started
    /// (nothing changed: sync in the foreground instead).
    pub fn begin_background_sync(
        &mut self,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<Result<()>>>> {
        self.refuse_if_poisoned()?;
        if !self.unsynced || self.background_sync {
            return Ok(None);
        }
        let rx = self.active.file.sync_data_in_background()?;
        self.unsynced = false;
        self.background_sync = true;
        Ok(Some(rx))
    }

    /// Takes the result of a background sync begun at `started`: a failure
    /// poisons the store, as a failed fdatasync on the storage task does.
    pub fn finish_background_sync(
        &mut self,
        started: std::time::Instant,
        result: std::result::Result<Result<()>, tokio::sync::oneshot::error::RecvError>,
    ) -> Result<()> {
        self.background_sync = false;
        self.stats.log_syncs += 1;
        self.fsync_seconds.observe(started.elapsed().as_secs_f64());
        let r = result.unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "the background fdatasync thread ended without a result".into(),
            ))
        });
        if let Err(e) = &r {
            // What reached the disk is unknown: refuse writes until restart.
            self.poison_unknown(e);
        }
        r
    }

    /// Checks a transaction's reads and scanned ranges against its start
    /// version: returns the first key with a newer version (deletes
    /// included), or `None` if nothing it read has changed.
    fn validate(
        &self,
        t: &TxnPart,
        overlay: &FastMap<&[u8], (u64, bool)>,
    ) -> Option<(Vec<u8>, u64)> {
        changed_since(
            &self.shared.index,
            t.start_version,
            &t.reads,
            &t.ranges,
            overlay,
            |key| self.writer.get(key).map_or(0, |e| e.version),
        )
    }

    /// Redo records newer than `above` in every segment that may hold one.
    pub(crate) fn redo_records(&self, above: u64) -> Result<Vec<Redo>> {
        let guard = crossbeam_epoch::pin();
        let table = self.shared.segments.load(&guard);
        let mut out = Vec::new();
        for (id, st) in &self.segs {
            if st.max_version <= above && st.max_version != 0 {
                continue;
            }
            let Some(seg) = table.get(*id) else { continue };
            let bytes = &seg.bytes()[..(st.len as usize).min(seg.bytes().len())];
            let mut pos = SEGMENT_HEADER_LEN;
            while pos < bytes.len() {
                let Ok(rec) = format::decode_record(&bytes[pos..]) else {
                    break;
                };
                if rec.kind == RecordKind::TxnPrepare && rec.version > above {
                    let key = rec.key.to_vec();
                    out.push(Redo {
                        version: rec.version,
                        txn_id: rec.txn_id,
                        op: if rec.flags & format::FLAG_REDO_DELETE != 0 {
                            Op::Delete { key }
                        } else {
                            Op::Put {
                                key,
                                value: rec.value.to_vec(),
                                expires_at_ms: rec.expires_at_ms,
                            }
                        },
                    });
                }
                pos += rec.len;
            }
        }
        Ok(out)
    }

    /// Validates a transaction's reads and ranges against the index (see
    /// [`TxnPart::start_version`]): the first key that changed, if any.
    pub fn validate_reads(&self, t: &TxnPart) -> Option<(Vec<u8>, u64)> {
        self.validate(t, &FastMap::default())
    }

    /// Drops old versions no open snapshot can read any more (all of them
    /// once no snapshot is open), including those between the starts of
    /// two open snapshots: a transaction left open (up to its idle
    /// timeout) keeps one version of each key it may read, not every
    /// version written since it began.
    pub fn trim_versions(&mut self) {
        if self.chained.is_empty() {
            return;
        }
        let readers = self.clock.readers();
        // Plain reads of a hidden cross-shard part read what it replaced.
        let floor = readers.floor.min(self.clock.min_hidden().saturating_sub(1));
        let guard = crossbeam_epoch::pin();
        let writer = &mut self.writer;
        self.chained
            .retain(|k| writer.trim_exact(k, floor, &readers.points, &guard));
    }

    /// What old versions must stay readable: those of open snapshots and
    /// those that unsettled cross-shard commits hide from plain reads.
    fn keep_horizon(&self) -> u64 {
        self.clock
            .horizon()
            .min(self.clock.min_hidden().saturating_sub(1))
    }

    fn publish(&mut self, key: &[u8], mut entry: Entry, seg: u32, xshard: bool) {
        let len = format::record_len(
            key.len(),
            entry.value_len as usize,
            entry.flags & FLAG_EXPIRES != 0,
        ) as u64;
        let horizon = self.keep_horizon();
        let shared = &self.shared;
        let old = if xshard || horizon < entry.version {
            // An open snapshot may read what this write replaces. A part of
            // a cross-shard commit keeps it (absent: version 0) in any case:
            // plain readers see it until the commit is settled on every
            // shard, so the commit becomes visible all at once. (Other plain
            // writes do not pin the epoch.)
            let horizon = if xshard {
                entry.flags |= crate::index::ENTRY_XSHARD;
                horizon.min(entry.version - 1)
            } else {
                horizon
            };
            let guard = crossbeam_epoch::pin();
            let keep = |cur: Option<&Entry>| {
                let old = cur.and_then(|o| old_version(shared, key, o, &guard));
                if xshard {
                    Some(old.unwrap_or_else(|| OldVersion::new(0, None, None)))
                } else {
                    old
                }
            };
            let (old, fresh) = self
                .writer
                .upsert_keeping_with(key, entry, keep, horizon, &guard);
            // A key with a chain is listed already; a set lookup of every
            // key a cross-shard part wrote was 6% of a profile of them.
            if fresh {
                self.chained.insert(key.to_vec());
            }
            old
        } else {
            if horizon == u64::MAX && !self.chained.is_empty() && self.chained.contains(key) {
                self.writer.trim(key, horizon, &crossbeam_epoch::pin());
                self.chained.remove(key);
            }
            self.writer.upsert(key, entry)
        };
        let st = self.segs.get_mut(&seg).expect("active segment has a state");
        st.live_bytes += len;
        if st.min_version == 0 {
            st.min_version = entry.version;
        }
        st.max_version = st.max_version.max(entry.version);
        if let Some(o) = old {
            let olen =
                format::record_len(key.len(), o.value_len as usize, o.flags & FLAG_EXPIRES != 0)
                    as u64;
            if let Some(os) = self.segs.get_mut(&o.segment) {
                os.live_bytes = os.live_bytes.saturating_sub(olen);
            }
        }
    }

    /// Seals the active segment and starts a new one.
    pub(crate) async fn rotate(&mut self) -> Result<()> {
        // One seal in the background at a time: a segment's header names
        // its own predecessor only.
        self.await_pending_seal().await?;
        // The seal record ends the segment for good; then make it durable.
        let mut seal = std::mem::take(&mut self.buf);
        seal.clear();
        format::encode_seal(&mut seal);
        let (r, b) = self.append(seal).await;
        self.buf = b;
        r?;
        // The room preallocated for appends goes first, so that one
        // fdatasync makes both the records and the length durable (two,
        // the second for the length alone, held the shard 15-70 ms per seal
        // under redis-benchmark SET -P 16 with sync=interval:1000). A crash
        // before that fdatasync ends leaves this segment's tail torn: as
        // the newest segment, or as the predecessor the next one names.
        self.cut_preallocated()?;
        let sealed = self.active.id;
        let mut background = self.opts.sync != SyncPolicy::Always;
        if !background {
            self.sync_active().await?;
        }
        // The next segment is created (its header and the directory
        // synced) before the sealed one's fdatasync starts: behind that
        // fdatasync's writeback, these small syncs took up to 20 ms.
        let id = self.alloc_id();
        let (file, seg) = self
            .create_segment(id, SegmentKind::Log, background.then_some(sealed))
            .await?;
        if background {
            match self.active.file.sync_data_in_background() {
                Ok(done) => {
                    self.pending_seal = Some(PendingSeal {
                        id: sealed,
                        started: std::time::Instant::now(),
                        done,
                    });
                }
                Err(e) => {
                    // The new header names a predecessor that is durable
                    // once this returns: start-up finds it whole.
                    tracing::warn!(segment = sealed, error = %e, "could not sync the sealed segment in the background; syncing here");
                    self.sync_active().await?;
                    background = false;
                }
            }
        }
        if let Some(st) = self.segs.get_mut(&sealed) {
            st.sealed = true;
        }
        let old = std::mem::replace(
            &mut self.active,
            Active {
                id,
                file,
                len: SEGMENT_HEADER_LEN as u64,
            },
        );
        old.file.close_in_background();
        self.segs.insert(id, SegState::new_log());
        let guard = crossbeam_epoch::pin();
        let table = self.shared.segments.load(&guard).with(Arc::new(seg));
        self.shared.segments.replace(table, &guard);
        drop(guard);
        if !background {
            self.spawn_hint_writer(sealed);
        }
        Ok(())
    }

    /// Whether a sealed segment's fdatasync runs in the background.
    pub fn seal_pending(&self) -> bool {
        self.pending_seal.is_some()
    }

    /// Waits until the background seal's fdatasync ends (forever if there
    /// is none); pass the outcome to [`Store::finish_seal`]. The storage
    /// task selects on this beside its requests.
    pub async fn seal_done(&mut self) -> SealOutcome {
        match self.pending_seal.as_mut() {
            Some(p) => (&mut p.done).await,
            None => std::future::pending().await,
        }
    }

    /// Takes the outcome of the background seal: a failure poisons the
    /// store (what reached the disk is unknown); success queues the
    /// segment's hint and rewrites the active segment's header without its
    /// name.
    pub async fn finish_seal(&mut self, outcome: SealOutcome) -> Result<()> {
        let Some(p) = self.pending_seal.take() else {
            return Ok(());
        };
        self.stats.log_syncs += 1;
        self.fsync_seconds
            .observe(p.started.elapsed().as_secs_f64());
        let r = outcome.unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "the background fdatasync thread ended without a result".into(),
            ))
        });
        if let Err(e) = &r {
            self.poison_unknown(e);
            return r;
        }
        self.spawn_hint_writer(p.id);
        if self.poisoned().is_some() {
            // No more writes; the name only loosens start-up's check of a
            // predecessor that is whole.
            return Ok(());
        }
        // Not synced here: the next fdatasync of the active segment makes
        // it durable, and until then the header only names a predecessor
        // that is whole.
        let header = SegmentHeader {
            kind: SegmentKind::Log,
            segment_id: self.active.id,
            shard_id: self.opts.shard_id,
            unsynced_predecessor: None,
        };
        let w = write_header(&self.active.file, &header).await;
        if let Err(e) = &w {
            self.poison_unknown(e);
        }
        self.unsynced = true;
        w
    }

    /// Waits for the background seal, if one runs, and takes its outcome.
    async fn await_pending_seal(&mut self) -> Result<()> {
        if self.pending_seal.is_none() {
            return Ok(());
        }
        let outcome = self.seal_done().await;
        self.finish_seal(outcome).await
    }

    pub(crate) fn alloc_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(crate) async fn create_segment(
        &self,
        id: u32,
        kind: SegmentKind,
        unsynced_predecessor: Option<u32>,
    ) -> Result<(DataFile, Segment)> {
        create_segment(
            &self.dir,
            &self.io,
            &self.opts,
            id,
            kind,
            unsynced_predecessor,
        )
        .await
    }

    /// Queues the hint of sealed segment `id` for the hint worker (a hint
    /// is only a cache: failure leaves the segment to be scanned at start-up).
    pub(crate) fn spawn_hint_writer(&mut self, id: u32) {
        let guard = crossbeam_epoch::pin();
        let Some(seg) = self.shared.segments.load(&guard).get(id).cloned() else {
            return;
        };
        drop(guard);
        let Some(st) = self.segs.get(&id) else { return };
        let (done, pending) = std::sync::mpsc::channel();
        let job = HintJob {
            seg,
            len: st.len,
            min_version: st.min_version,
            max_version: st.max_version,
            dir: self.dir.clone(),
            _done: done,
        };
        self.hints_pending
            .retain(|p| matches!(p.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)));
        match hint_worker().map(|w| w.send(job)) {
            Some(Ok(())) => {
                self.hints_pending.push(pending);
                if let Some(st) = self.segs.get_mut(&id) {
                    st.has_hint = true;
                }
            }
            _ => tracing::warn!(
                segment = id,
                "no hint worker thread; the segment will be scanned at start-up"
            ),
        }
    }

    /// Waits for this store's queued and running hint builds.
    pub fn wait_for_hints(&mut self) {
        for p in self.hints_pending.drain(..) {
            // Disconnected once the build is over (or dropped unrun).
            let _ = p.recv();
        }
    }

    /// Figures for monitoring.
    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats.clone();
        s.keys = (self.shared.index.len() - self.shared.index.tombstones()) as u64;
        s.tombstones = self.shared.index.tombstones() as u64;
        s.index_bytes = self.shared.index.memory_bytes() as u64;
        s.old_version_bytes = self.shared.index.old_version_bytes() as u64;
        s.segments = self
            .segs
            .iter()
            .map(|(&id, st)| SegmentStats {
                id,
                merged: st.kind == SegmentKind::Merged,
                active: id == self.active.id,
                len: st.len,
                live_bytes: st.live_bytes,
                dead_bytes: st.dead_bytes(),
                has_hint: st.has_hint,
            })
            .collect();
        s.live_bytes = s.segments.iter().map(|x| x.live_bytes).sum();
        s.dead_bytes = s.segments.iter().map(|x| x.dead_bytes).sum();
        s
    }

    /// Writes a consistent copy of this shard's data into `target` (which
    /// must not exist): hard links of sealed segments and their hints (copies
    /// across file systems) and a copy of the active segment up to its
    /// published end. The copy opens as a data directory.
    pub async fn checkpoint(&mut self, target: &Path) -> Result<()> {
        if target.exists() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint target {} already exists",
                target.display()
            )));
        }
        self.sync().await?;
        create_private_dir(target)?;
        for (&id, _) in self.segs.iter().filter(|(id, _)| **id != self.active.id) {
            for name in [segment_file_name(id), hint_file_name(id)] {
                let src = self.dir.join(&name);
                if !src.exists() {
                    continue;
                }
                let dst = target.join(&name);
                if std::fs::hard_link(&src, &dst).is_err() {
                    std::fs::copy(&src, &dst).map_err(|e| Error::io("copy", &src, e))?;
                    File::open(&dst)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| Error::io("fsync", &dst, e))?;
                }
            }
        }
        // A merge past its commit point has victims and outputs both in
        // the table until its index moves are applied: its commit record
        // makes the copy's start-up finish it, as after a crash.
        if let Some(src) = self.merge.as_ref().and_then(|m| m.commit_path()) {
            let dst = target.join(src.file_name().expect("commit record has a name"));
            std::fs::copy(src, &dst).map_err(|e| Error::io("copy", src, e))?;
            File::open(&dst)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("fsync", &dst, e))?;
        }
        let src = self.dir.join(segment_file_name(self.active.id));
        let dst = target.join(segment_file_name(self.active.id));
        copy_prefix(&src, &dst, self.active.len)?;
        File::open(target)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", target, e))?;
        Ok(())
    }

    /// Syncs what is unsynced and waits for background work; the store can be
    /// dropped after this without losing anything acknowledged.
    pub async fn close(mut self) -> Result<()> {
        let r = if self.poisoned().is_none() {
            match self.sync().await {
                Ok(()) => self.release_preallocated().await,
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        self.wait_for_hints();
        r
    }

    /// Starts a merge now if none is running: `force` takes every sealed
    /// segment, otherwise the configured triggers choose. Returns whether one
    /// started.
    pub fn start_merge(&mut self, force: bool) -> Result<bool> {
        if self.merge.is_some() {
            return Ok(false);
        }
        if let Some(why) = &self.merge_blocked {
            return Err(Error::Unavailable(format!(
                "merge is blocked until restart: {why}"
            )));
        }
        let victims = self.pick_victims(force);
        if victims.is_empty() {
            return Ok(false);
        }
        self.merge = Some(MergeJob::new(self, victims));
        Ok(true)
    }

    /// Whether the dead bytes of the sealed segments have reached the
    /// reclaimable-bytes trigger (which also makes a merge take every
    /// sealed segment with garbage): merge must not fall further behind.
    pub fn merge_urgent(&self) -> bool {
        let dead: u64 = self
            .segs
            .iter()
            .filter(|(id, _)| **id != self.active.id)
            .map(|(_, s)| s.dead_bytes())
            .sum();
        dead >= self.opts.merge.min_reclaimable_bytes
    }

    /// Whether a merge is in progress.
    pub fn merge_running(&self) -> bool {
        self.merge.is_some()
    }

    /// Runs the merge in progress for up to `budget` bytes of victim data.
    /// Returns true when it finished (or there is none).
    pub async fn merge_step(&mut self, budget: u64) -> Result<bool> {
        let Some(mut job) = self.merge.take() else {
            return Ok(true);
        };
        match job.step(self, budget).await {
            Ok(true) => {
                self.stats.merges += 1;
                self.stats.bytes_reclaimed += job.reclaimed();
                Ok(true)
            }
            Ok(false) => {
                self.merge = Some(job);
                Ok(false)
            }
            Err(e) => {
                job.abort(self);
                Err(e)
            }
        }
    }

    /// Runs a whole merge now, unthrottled (tests, tools, the Compact call
    /// waits on the throttled path instead). Returns whether one ran.
    pub async fn merge_now(&mut self, force: bool) -> Result<bool> {
        if !self.start_merge(force)? {
            return Ok(false);
        }
        while !self.merge_step(u64::MAX).await? {}
        Ok(true)
    }

    fn pick_victims(&self, force: bool) -> Vec<u32> {
        let sealed: Vec<(u32, &SegState)> = self
            .segs
            .iter()
            .filter(|(id, _)| **id != self.active.id)
            .map(|(id, s)| (*id, s))
            .collect();
        if force {
            return sealed.iter().map(|(id, _)| *id).collect();
        }
        if self.merge_urgent() {
            return sealed
                .iter()
                .filter(|(_, s)| s.dead_bytes() > 0)
                .map(|(id, _)| *id)
                .collect();
        }
        sealed
            .iter()
            .filter(|(_, s)| {
                s.len > 0
                    && s.dead_bytes() as f64 / s.len as f64 >= self.opts.merge.min_garbage_ratio
                    && s.dead_bytes() > 0
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Starts a merge if a configured trigger fires (garbage ratio or
    /// reclaimable bytes). Returns whether one started.
    pub fn maybe_start_merge(&mut self) -> Result<bool> {
        if self.merge.is_some() || self.merge_blocked.is_some() {
            return Ok(false);
        }
        self.start_merge(false)
    }

    /// Starts a merge of every sealed segment with garbage (the schedule).
    pub fn start_scheduled_merge(&mut self) -> Result<bool> {
        if self.merge.is_some() || self.merge_blocked.is_some() {
            return Ok(false);
        }
        let any = self
            .segs
            .iter()
            .any(|(id, s)| *id != self.active.id && s.dead_bytes() > 0);
        if !any {
            return Ok(false);
        }
        let victims: Vec<u32> = self
            .segs
            .iter()
            .filter(|(id, s)| **id != self.active.id && s.dead_bytes() > 0)
            .map(|(id, _)| *id)
            .collect();
        self.merge = Some(MergeJob::new(self, victims));
        Ok(true)
    }
}

/// Creates segment `id` durably: temp name, header, fdatasync, rename,
/// directory fsync. Returns the open file and its mapping.
pub(crate) async fn create_segment(
    dir: &Path,
    io: &Io,
    opts: &StoreOptions,
    id: u32,
    kind: SegmentKind,
    unsynced_predecessor: Option<u32>,
) -> Result<(DataFile, Segment)> {
    let path = dir.join(segment_file_name(id));
    let tmp = tmp_path(&path);
    let _ = std::fs::remove_file(&tmp);
    let file = io.create(&tmp)?;
    let header = SegmentHeader {
        kind,
        segment_id: id,
        shard_id: opts.shard_id,
        unsynced_predecessor,
    };
    let r = async {
        write_header(&file, &header).await?;
        file.sync_data().await?;
        io.rename(&tmp, &path)?;
        io.sync_dir(dir)
    }
    .await;
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let mut file = file.renamed(&path);
    if kind == SegmentKind::Log {
        file.prepare_appends(opts.sync, opts.segment_size)?;
    }
    let seg = Segment::map(id, kind, &path, opts.segment_size)?;
    Ok((file, seg))
}

/// Writes `header` at the start of `file` (not synced).
pub(crate) async fn write_header(file: &DataFile, header: &SegmentHeader) -> Result<()> {
    file.write_all_at(header.encode().to_vec(), 0).await.0
}

/// A sealed segment's hint to build and write.
struct HintJob {
    seg: Arc<Segment>,
    len: u64,
    min_version: u64,
    max_version: u64,
    dir: PathBuf,
    /// Dropped when the job is over: [`Store::wait_for_hints`] waits for it.
    _done: std::sync::mpsc::Sender<()>,
}

impl HintJob {
    fn run(self) {
        // A merge retired the segment while the job waited: no hint.
        if self.seg.retired() {
            return;
        }
        let id = self.seg.id;
        let path = self.dir.join(hint_file_name(id));
        match build_log_hint(&self.seg, self.len, self.min_version, self.max_version) {
            Ok(bytes) => {
                if let Err(e) = write_file_atomic_std(&path, &bytes) {
                    tracing::warn!(segment = id, error = %e, "writing hint failed; the segment will be scanned at start-up");
                } else if self.seg.retired() {
                    // Retired while the hint was written: the merge may
                    // have removed the files before this one appeared.
                    let _ = std::fs::remove_file(&path);
                }
            }
            Err(e) => tracing::warn!(segment = id, error = %e, "building hint failed"),
        }
    }
}

/// The hint worker: one thread for every store of the process, started on
/// first use, building sealed segments' hints one at a time at idle
/// priority (`SCHED_IDLE`: it runs when a core has nothing else to do, and
/// a waking shard thread preempts it at once). `None` if it could not be
/// started.
///
/// Until session 14 each sealed segment had a thread of its own at normal
/// priority. Under sustained writes those threads took about 18% of the
/// daemon's samples on the two cores the shard thread and its clients
/// need: redis-benchmark SET -P 16 over 3M requests (one shard) measured
/// 381k-415k/s with p99 10.6-13.3 ms, against 487k-544k/s with p99
/// 5.0-6.7 ms with the builds on this worker (six and nine runs). One
/// worker also bounds the memory of builds that wait for a core to one
/// build's sort array.
fn hint_worker() -> Option<&'static std::sync::mpsc::Sender<HintJob>> {
    static WORKER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<HintJob>>> =
        std::sync::OnceLock::new();
    WORKER
        .get_or_init(|| crate::storage::io::job_threads("flashkv-hint", 1, true, HintJob::run))
        .as_ref()
}

/// Builds the hint of a sealed log segment: the last record of every key.
///
/// Records are collected in log order, sorted by key (the newest first
/// among equal keys) and reduced to the first of each key. The sort array
/// holds, per record, the first 16 key bytes as two integers, the key's
/// length and the record's offset: keys of up to 16 bytes are ordered by
/// these alone, longer ones that tie are read from the mapped segment. A
/// hash map of keys (an earlier way) paid a random memory access per
/// record and still had to sort afterwards.
///
/// The hint's entries are then read back from the segment by offset
/// rather than kept beside the sort array: a seal runs while writes go
/// on, and every fresh page a builder allocates is a page fault and a
/// page of zeroing (a copy of every record was 40% of what a bulk load's
/// seals allocated).
pub(crate) fn build_log_hint(
    seg: &Segment,
    len: u64,
    min_version: u64,
    max_version: u64,
) -> Result<Vec<u8>> {
    let bytes = &seg.bytes()[..len as usize];
    let mut pos = SEGMENT_HEADER_LEN;
    // Records are about 100 bytes and more: a capacity that rarely grows.
    let mut order: Vec<SortEntry> = Vec::with_capacity(bytes.len() / 128);
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    while pos < bytes.len() {
        let rec = format::decode_record(&bytes[pos..])
            .map_err(|d| Error::corruption(&seg.path, pos as u64, d.to_string()))?;
        if matches!(rec.kind, RecordKind::Put | RecordKind::Delete) {
            order.push(sort_entry(rec.key, pos as u32));
            lo = lo.min(rec.version);
        }
        if matches!(
            rec.kind,
            RecordKind::Put | RecordKind::Delete | RecordKind::TxnPrepare
        ) {
            hi = hi.max(rec.version);
        }
        pos += rec.len;
    }
    // Every record was decoded (CRC checked) above.
    let record_at = |at: u32| {
        let h =
            format::decode_header(&bytes[at as usize..]).expect("a record decoded in this scan");
        let k0 = at as usize + format::record_len(0, 0, h.flags & FLAG_EXPIRES != 0);
        (h, &bytes[k0..k0 + h.key_len])
    };
    let newest = newest_per_key(order, |at| record_at(at).1);
    let meta = HintMeta {
        segment_id: seg.id,
        segment_len: len,
        min_version: if newest.is_empty() {
            min_version
        } else {
            lo.min(min_version.max(1))
        },
        max_version: hi.max(max_version),
    };
    let records = newest.iter().map(|&at| {
        let (h, key) = record_at(at);
        HintRecord {
            key,
            offset: at,
            value_len: h.value_len as u32,
            version: h.version,
            kind: h.kind as u8,
            flags: h.flags & FLAG_EXPIRES,
        }
    });
    Ok(hint::encode_sorted_iter(meta, records))
}

/// The ids of `order` (built by [`sort_entry`]; a higher id is a newer
/// record) reduced to the newest record of each key, in key order;
/// `key_at` gives an id's key. Sorted by [`sort_newest_first`], so keys
/// that share long prefixes cost no random reads per comparison.
pub(crate) fn newest_per_key<'k>(
    mut order: Vec<SortEntry>,
    key_at: impl Fn(u32) -> &'k [u8],
) -> Vec<u32> {
    sort_newest_first(&mut order, 0, &key_at);
    order
        .into_iter()
        .filter(|e| e.2 != SUPERSEDED)
        .map(|e| e.3)
        .collect()
}

/// The sort entry of record `id` with key `key`.
pub(crate) fn sort_entry(key: &[u8], id: u32) -> SortEntry {
    let (p0, p1) = sort_prefixes(key);
    (p0, p1, key.len() as u32, id)
}

/// A hint sort entry: key bytes `depth..depth + 16` as two big-endian
/// integers (zero-padded), key length, record offset.
pub(crate) type SortEntry = (u64, u64, u32, u32);

/// The length mark of an entry whose key a newer record of the segment has.
const SUPERSEDED: u32 = u32::MAX;

/// Sorts `order` (entries whose keys agree on bytes `0..depth`, with bytes
/// `depth..depth + 16` in their prefixes) into key order, each key's
/// newest record (highest offset) first, and marks the older records of a
/// key [`SUPERSEDED`].
///
/// Most-significant-digit first: a sort by the 16 prefix bytes, then each
/// run of entries equal there is refined on its next 16 bytes, read from
/// the segment once per entry. Comparing whole keys on ties instead read
/// two keys at random per comparison: for a segment of one Redis
/// collection, whose element keys share their first 20-40 bytes, that was
/// every comparison (about 1.7 s of a core for one segment of a hot
/// sorted set, 1.07 s this way).
fn sort_newest_first<'k>(order: &mut [SortEntry], depth: usize, key_at: &impl Fn(u32) -> &'k [u8]) {
    order.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then(a.2.cmp(&b.2))
            .then(b.3.cmp(&a.3))
    });
    let end = depth + 16;
    let mut i = 0;
    while i < order.len() {
        let run = order[i..]
            .iter()
            .position(|e| (e.0, e.1) != (order[i].0, order[i].1))
            .map_or(order.len(), |n| i + n);
        // Equal on bytes 0..end: a key that ends by `end` is a prefix of
        // every longer key here, so the short ones come first, by length;
        // equal lengths among them are equal keys.
        let long = i + order[i..run].partition_point(|e| e.2 as usize <= end);
        let mut kept = None;
        for e in &mut order[i..long] {
            if kept == Some(e.2) {
                e.2 = SUPERSEDED;
            } else {
                kept = Some(e.2);
            }
        }
        if run - long > 1 {
            for e in &mut order[long..run] {
                (e.0, e.1) = sort_prefixes(&key_at(e.3)[end..]);
            }
            sort_newest_first(&mut order[long..run], end, key_at);
        }
        i = run;
    }
}

/// Bytes 0..8 and 8..16 of a key as big-endian integers (zero-padded):
/// ordering by them, then by the whole key, is the index's key order.
fn sort_prefixes(key: &[u8]) -> (u64, u64) {
    (
        key_prefix(key),
        key_prefix(key.get(8..).unwrap_or_default()),
    )
}

/// Creates a directory (and its parents) readable by the owner only.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("create directory", dir, e))
}

/// Takes the exclusive lock (`flock` on `LOCK`) of a directory, creating it
/// if needed; another holder makes this fail with [`Error::Locked`].
pub fn lock_dir(dir: &Path) -> Result<File> {
    create_private_dir(dir)?;
    let lock_path = dir.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .mode(0o600)
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &lock_path, e)),
    }
}

/// Temp file, write, fsync, rename, directory fsync — with std I/O, for the
/// background hint writer.
pub(crate) fn write_file_atomic_std(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_path(path);
    let mut f = std::fs::OpenOptions::new()
        .mode(0o600)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_data().map_err(|e| Error::io("fdatasync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

fn copy_prefix(src: &Path, dst: &Path, len: u64) -> Result<()> {
    use std::io::{Read, Write};
    let f = File::open(src).map_err(|e| Error::io("open", src, e))?;
    let mut out = std::fs::OpenOptions::new()
        .mode(0o600)
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| Error::io("create", dst, e))?;
    let mut take = f.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = take.read(&mut buf).map_err(|e| Error::io("read", src, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", dst, e))?;
    }
    out.sync_all().map_err(|e| Error::io("fsync", dst, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::IoEngine;
    use proptest::prelude::*;

    /// Keys that share long prefixes, end inside and beyond each 16-byte
    /// step, and end in zero bytes (which the zero-padded prefixes hide).
    fn key() -> impl Strategy<Value = Vec<u8>> {
        (
            0usize..4,
            0usize..40,
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'z')], 0..4),
        )
            .prop_map(|(shared, len, tail)| {
                let mut k = vec![b'p'; [0, 15, 16, 33][shared]];
                k.extend((0..len % 20).map(|i| b'a' + (i % 3) as u8));
                k.extend(tail);
                k
            })
    }

    /// Segments of `segment_size` bytes (small, so that a test seals a
    /// few), values up to `max_value_size`, keys up to 1 KiB.
    fn small_segments(segment_size: u64, max_value_size: usize) -> StoreOptions {
        StoreOptions {
            segment_size,
            max_value_size,
            max_key_size: 1024,
            ..Default::default()
        }
    }

    /// Opens a store in `dir` on the plain I/O backend.
    async fn open_plain(dir: &Path, opts: StoreOptions) -> Store {
        let io = Io::new(IoEngine::Plain);
        Store::open(dir, opts, io, Arc::new(Clock::new()))
            .await
            .unwrap()
            .0
    }

    /// The periodic trim keeps, of the versions written under two open
    /// snapshots, only the one each reads (and every version above a
    /// snapshot still opening); closing them frees the rest.
    #[test]
    fn the_trim_keeps_what_open_snapshots_read_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        IoEngine::Plain.block_on(async {
            let clock = Arc::new(Clock::new());
            let opts = small_segments(1 << 20, 1024);
            let (mut s, _) = Store::open(dir.path(), opts, Io::new(IoEngine::Plain), clock.clone())
                .await
                .unwrap();
            let put = async |s: &mut Store, i: u32| {
                s.put(b"k", format!("v{i}").as_bytes()).await.unwrap()
            };
            let read = |s: &Store, at: u64| s.reader().get_at(b"k", at).unwrap().unwrap().value;
            put(&mut s, 0).await;
            let base = s.stats().index_bytes;
            let (first, at1) = clock.open_snapshot().fixed().await;
            for i in 1..=100 {
                put(&mut s, i).await;
            }
            let (second, at2) = clock.open_snapshot().fixed().await;
            for i in 101..=200 {
                put(&mut s, i).await;
            }
            let version = size_of::<OldVersion>() as u64;
            let before = s.stats().index_bytes;
            assert!(before >= base + 200 * version, "200 versions kept");
            s.trim_versions();
            let after = s.stats().index_bytes;
            assert!(after < base + 3 * version, "{} bytes kept", after - base);
            assert_eq!(read(&s, at1), b"v0");
            assert_eq!(read(&s, at2), b"v100");
            // A snapshot still opening may read anything written since it
            // registered.
            let opening = clock.open_snapshot();
            for i in 201..=210 {
                put(&mut s, i).await;
            }
            s.trim_versions();
            assert!(s.stats().index_bytes >= after + 10 * version);
            drop(opening);
            s.trim_versions();
            assert!(s.stats().index_bytes < base + 3 * version);
            assert_eq!(read(&s, at1), b"v0");
            drop(first);
            s.trim_versions();
            assert_eq!(read(&s, at2), b"v100");
            drop(second);
            s.trim_versions();
            assert_eq!(s.stats().index_bytes, base, "no old version left");
            assert_eq!(s.stats().old_version_bytes, 0);
            s.close().await.unwrap();
        });
    }

    /// On this file system link counts work: the check is on, and finds a
    /// deleted lock file. Where a file system reports none (`links_counted`
    /// false, as open sets it there), the check stays quiet rather than
    /// taking every file for deleted.
    #[test]
    fn the_file_check_needs_link_counts() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("s");
        IoEngine::Plain.block_on(async {
            let mut s = open_plain(&dir, small_segments(64 << 10, 1024)).await;
            assert!(s.links_counted);
            std::fs::remove_file(dir.join("LOCK")).unwrap();
            s.links_counted = false;
            s.check_files().unwrap();
            s.put(b"a", b"1").await.unwrap();
            s.links_counted = true;
            assert!(s.check_files().is_err());
            assert!(s.put(b"b", b"2").await.is_err());
        });
    }

    /// The read-ahead stages tell present keys from absent ones (exactly
    /// at the record stage, by the home slot at the node stage) and leave
    /// the gets that follow them unchanged, in sealed and active segments.
    #[test]
    fn read_ahead_reports_presence_and_changes_no_read() {
        let dir = tempfile::tempdir().unwrap();
        IoEngine::Plain.block_on(async {
            let mut s = open_plain(dir.path(), small_segments(16 << 10, 1024)).await;
            for i in 0..2000u32 {
                s.put(format!("k{i:05}").as_bytes(), format!("v{i}").as_bytes())
                    .await
                    .unwrap();
            }
            s.delete(b"k00007").await.unwrap();
            assert!(
                s.stats().segments.len() > 2,
                "sealed segments and an active one"
            );
            let r = s.reader();
            let key = |i: u32| format!("k{i:05}").into_bytes();
            let (mut node_hits, mut node_false_hits) = (0, 0);
            for i in 0..4000u32 {
                let k = key(i);
                assert!(r.prefetch(&k, ReadAhead::Slot));
                let node = r.prefetch(&k, ReadAhead::Node);
                let present = i < 2000;
                if present {
                    node_hits += node as u32;
                } else {
                    node_false_hits += node as u32;
                }
                // A tombstone is in the index: the record stage says so.
                assert_eq!(r.prefetch(&k, ReadAhead::Record), present, "key {i}");
                let want = (present && i != 7).then(|| format!("v{i}").into_bytes());
                assert_eq!(r.get(&k).unwrap().map(|v| v.value), want, "key {i}");
            }
            // Most keys sit in their home slot; an absent key's home slot
            // names it only on a 16-bit tag collision.
            assert!(
                node_hits > 1000,
                "{node_hits} of 2000 present keys in their home slot"
            );
            assert!(
                node_false_hits < 10,
                "{node_false_hits} of 2000 absent keys matched"
            );
            s.close().await.unwrap();
        });
    }

    /// A multi-get answers what a get of each key answers, in the order
    /// asked: present, overwritten, deleted, expired and absent keys, in
    /// sealed segments and the active one, repeated, in batches that are
    /// not whole read-ahead batches.
    #[test]
    fn get_many_answers_as_a_get_of_each_key_does() {
        let dir = tempfile::tempdir().unwrap();
        IoEngine::Plain.block_on(async {
            let mut s = open_plain(dir.path(), small_segments(16 << 10, 1024)).await;
            let key = |i: u32| format!("k{i:05}").into_bytes();
            for i in 0..1000u32 {
                s.put(&key(i), format!("v{i}").as_bytes()).await.unwrap();
            }
            for i in (0..1000u32).step_by(3) {
                s.put(&key(i), format!("w{i}").as_bytes()).await.unwrap();
            }
            for i in (0..1000u32).step_by(7) {
                s.delete(&key(i)).await.unwrap();
            }
            for i in (1..1000u32).step_by(11) {
                let expired = Batch {
                    ops: vec![Op::Put {
                        key: key(i),
                        value: b"gone".to_vec(),
                        expires_at_ms: Some(1),
                    }],
                    conditions: vec![],
                };
                s.write(expired).await.unwrap();
            }
            assert!(
                s.stats().segments.len() > 2,
                "sealed segments and an active one"
            );
            let r = s.reader();
            // Keys 0..1200 (200 absent) in a scrambled order, some twice.
            let mut keys: Vec<Vec<u8>> = (0..1200u32).map(|i| key(i * 7 % 1200)).collect();
            keys.extend((0..40u32).map(|i| key(i * 13)));
            let mut seen = [0usize; 4];
            for len in [0, 1, 2, 15, 16, 17, 33, keys.len()] {
                let got = r.get_many(&keys[..len]).unwrap();
                assert_eq!(got.len(), len);
                for (k, v) in keys[..len].iter().zip(got) {
                    let want = r.get(k).unwrap();
                    assert_eq!(v, want, "key {}", String::from_utf8_lossy(k));
                    if len == keys.len() {
                        let i: u32 = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
                        let class = match (&v, i) {
                            (_, 1000..) => 0,
                            (None, _) => 1,
                            (Some(v), _) if v.value[0] == b'w' => 2,
                            (Some(_), _) => 3,
                        };
                        seen[class] += 1;
                    }
                }
            }
            // Every kind of answer came up (absent, deleted or expired,
            // overwritten, written once).
            assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
            s.close().await.unwrap();
        });
    }

    /// The active expiry sweep walks the index only while some key has an
    /// expiry, and stops walking once none has.
    #[test]
    fn the_expiry_sweep_walks_only_while_a_key_has_an_expiry() {
        let dir = tempfile::tempdir().unwrap();
        IoEngine::Plain.block_on(async {
            let opts = small_segments(16 << 10, 1024);
            let mut s = open_plain(dir.path(), opts.clone()).await;
            for i in 0..100u32 {
                s.put(format!("k{i:03}").as_bytes(), b"v").await.unwrap();
            }
            assert_eq!(s.sweep_expired(10).await.unwrap(), 0);
            assert_eq!(s.sweep_cursor, None, "no key has an expiry: no walk");
            let later = now_ms() + 3_600_000;
            let ttl = |key: &[u8], expires_at_ms| Batch {
                ops: vec![Op::Put {
                    key: key.to_vec(),
                    value: b"t".to_vec(),
                    expires_at_ms,
                }],
                conditions: vec![],
            };
            s.write(ttl(b"k050", Some(later))).await.unwrap();
            assert_eq!(s.sweep_expired(10).await.unwrap(), 0);
            assert_eq!(
                s.sweep_cursor.as_deref(),
                Some(&b"k009"[..]),
                "walked 10 keys"
            );
            // PERSIST-like: the key keeps its value and loses its expiry.
            s.write(ttl(b"k050", None)).await.unwrap();
            assert_eq!(s.sweep_expired(10).await.unwrap(), 0);
            assert_eq!(s.sweep_cursor, None, "none has an expiry again");
            // The count is rebuilt at start-up, from sealed segments (their
            // hints or a scan) and the active one.
            s.write(ttl(b"e1", Some(later))).await.unwrap();
            let sealed = s.stats().segments.len();
            for i in 0..400u32 {
                s.put(format!("f{i:03}").as_bytes(), &[1u8; 64])
                    .await
                    .unwrap();
            }
            assert!(s.stats().segments.len() > sealed, "e1's segment is sealed");
            s.write(ttl(b"e2", Some(later))).await.unwrap();
            s.close().await.unwrap();
            let s = open_plain(dir.path(), opts).await;
            assert_eq!(s.shared.index.expiring(), 2);
            s.close().await.unwrap();
        });
    }

    /// Sealed segments' hints are built by the hint worker at idle
    /// priority; a hint whose segment a merge retired meanwhile is not
    /// written (it would be a stray file).
    #[test]
    fn hints_are_built_at_idle_priority_and_not_for_retired_segments() {
        let dir = tempfile::tempdir().unwrap();
        IoEngine::Plain.block_on(async {
            let mut s = open_plain(dir.path(), small_segments(64 << 10, 16 << 10)).await;
            for i in 0..1000u32 {
                s.put(format!("k{i:05}").as_bytes(), &[7u8; 100])
                    .await
                    .unwrap();
            }
            s.wait_for_hints();
            crate::storage::io::assert_thread_runs_at_idle_priority("flashkv-hint");
            let sealed: Vec<u32> = s
                .stats()
                .segments
                .iter()
                .filter(|g| !g.active)
                .map(|g| g.id)
                .collect();
            assert!(sealed.len() >= 2, "{sealed:?}");
            for id in &sealed {
                assert!(
                    dir.path().join(hint_file_name(*id)).exists(),
                    "hint of {id}"
                );
            }
            // Queue each sealed segment's hint again after removing it,
            // the first one retired as a merge retires its victims.
            let guard = crossbeam_epoch::pin();
            let first = s
                .shared
                .segments
                .load(&guard)
                .get(sealed[0])
                .unwrap()
                .clone();
            drop(guard);
            first.retire();
            for id in &sealed {
                std::fs::remove_file(dir.path().join(hint_file_name(*id))).unwrap();
                s.spawn_hint_writer(*id);
            }
            s.wait_for_hints();
            assert!(!dir.path().join(hint_file_name(sealed[0])).exists());
            assert!(dir.path().join(hint_file_name(sealed[1])).exists());
        });
    }

    proptest! {
        /// The hint sort keeps exactly the newest record of each key, in
        /// key order, as sorting whole keys would.
        #[test]
        fn hint_sort_keeps_the_newest_record_of_each_key_in_key_order(
            keys in proptest::collection::vec(key(), 0..200)
        ) {
            let order = keys
                .iter()
                .enumerate()
                .map(|(at, k)| sort_entry(k, at as u32))
                .collect();
            let key_at = |at: u32| keys[at as usize].as_slice();
            let got = newest_per_key(order, key_at);
            let mut want: Vec<u32> = (0..keys.len() as u32).collect();
            want.sort_by(|&a, &b| key_at(a).cmp(key_at(b)).then(b.cmp(&a)));
            want.dedup_by(|later, first| key_at(*later) == key_at(*first));
            prop_assert_eq!(got, want);
        }
    }
}
