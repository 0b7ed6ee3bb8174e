//! The router: sends each request to the shard that owns its key.
//!
//! Reads never hop: the owning shard's index and segments are read directly
//! from the calling thread (lock-free). Writes go to the owner's storage task
//! through its bounded inbox (a request for a key of the local shard goes to
//! the same task, on the same thread). Scans merge the shards' ordered
//! streams by key.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::shard::partition::Partitioner;
use crate::storage::lock::ShardMode;
use crate::storage::service::PendingWrite;
use crate::storage::store::bound_ref;
use crate::storage::{Batch, Outcome, StoreHandle, StoreStats, Value};

/// Lock ids of checkpoints count down from here (below the storage task's
/// own checkpoint id, u64::MAX).
const CHECKPOINT_LOCK: u64 = u64::MAX - 1;
static CHECKPOINTS: AtomicU64 = AtomicU64::new(0);

/// Routes requests to shards. `Send + Sync`; shared by every listener.
pub struct Router {
    partitioner: Partitioner,
    shards: Vec<StoreHandle>,
    clock: Arc<Clock>,
}

impl Router {
    /// A router over the storage handles of every shard, in shard order.
    pub fn new(partitioner: Partitioner, shards: Vec<StoreHandle>, clock: Arc<Clock>) -> Self {
        assert_eq!(
            partitioner.shards() as usize,
            shards.len(),
            "one handle per shard"
        );
        Router {
            partitioner,
            shards,
            clock,
        }
    }

    /// The partitioner.
    pub fn partitioner(&self) -> &Partitioner {
        &self.partitioner
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard owning `key`.
    pub fn shard_of(&self, key: &[u8]) -> u32 {
        self.partitioner.shard_of(crate::keyspace::routing_key(key))
    }

    /// The storage handle of shard `i`.
    pub fn shard(&self, i: usize) -> &StoreHandle {
        &self.shards[i]
    }

    /// The shards that refuse writes until restart, with why (a failed
    /// fdatasync, their files deleted), in shard order.
    pub fn refusing_writes(&self) -> Vec<(usize, String)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.reader().poisoned().map(|c| (i, c.to_string())))
            .collect()
    }

    /// Storage figures of every shard, in shard order.
    pub async fn stats(&self) -> Result<Vec<StoreStats>> {
        let mut all = Vec::with_capacity(self.shards.len());
        for h in &self.shards {
            all.push(h.stats().await?);
        }
        Ok(all)
    }

    /// Merges every shard's sealed segments (rate-limited), one shard after
    /// the other; returns how many shards merged and the bytes reclaimed.
    pub async fn compact(&self) -> Result<(u32, u64)> {
        let (mut merged, mut reclaimed) = (0, 0);
        for h in &self.shards {
            let before = h.stats().await?.bytes_reclaimed;
            if h.compact().await? {
                merged += 1;
            }
            reclaimed += h.stats().await?.bytes_reclaimed - before;
        }
        Ok((merged, reclaimed))
    }

    /// Writes a consistent copy of every shard, with the manifest, into the
    /// new directory `target` (which must not exist).
    pub async fn checkpoint(&self, target: &Path) -> Result<()> {
        if target.as_os_str().is_empty() {
            return Err(Error::InvalidArgument(
                "checkpoint path must not be empty".into(),
            ));
        }
        if target.exists() {
            return Err(Error::AlreadyExists(format!(
                "checkpoint target {} already exists",
                target.display()
            )));
        }
        crate::storage::store::create_private_dir(target)?;
        crate::shard::manifest::write(target, &self.partitioner)?;
        // S on every shard (in shard order, like transactions lock): no
        // cross-shard commit is half-way while the shards are copied, so
        // the copies agree with each other.
        let id = CHECKPOINT_LOCK - CHECKPOINTS.fetch_add(1, Ordering::Relaxed) % 1024;
        let mut locked = 0;
        let mut r = Ok(());
        for h in &self.shards {
            if let Err(e) = h.lock_shard(id, ShardMode::S).await {
                r = Err(e);
                break;
            }
            locked += 1;
        }
        if r.is_ok() {
            for (i, h) in self.shards.iter().enumerate() {
                r = h
                    .checkpoint(crate::shard::runtime::shard_dir(target, i as u32))
                    .await;
                if r.is_err() {
                    break;
                }
            }
        }
        if r.is_ok() && self.clock.persisted_settled() != u64::MAX {
            // Nothing is half-way: everything up to now is settled.
            r = crate::shard::floor::write(target, self.clock.settled());
        }
        for h in &self.shards[..locked] {
            let _ = h.release(id).await;
        }
        r
    }

    /// The version clock.
    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    /// Reads `key` on its shard (no hop).
    pub fn get(&self, key: &[u8]) -> Result<Option<Value>> {
        self.shards[self.shard_of(key) as usize].reader().get(key)
    }

    /// Reads `keys`, each on its shard, as [`Router::get`] would one by one,
    /// with their cache misses overlapped (see
    /// [`crate::storage::StoreReader::get_many`]).
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Value>>> {
        crate::storage::store::read_ahead_many(
            keys,
            |k, stage| self.prefetch(k, stage),
            |k| self.get(k),
        )
    }

    /// One stage of the read-ahead of a get of `key` on its shard (see
    /// [`crate::storage::StoreReader::prefetch`]).
    pub fn prefetch(&self, key: &[u8], stage: crate::storage::ReadAhead) -> bool {
        self.shards[self.shard_of(key) as usize]
            .reader()
            .prefetch(key, stage)
    }

    /// Commits a batch on the shard that owns all of its keys. A batch whose
    /// keys live on more than one shard is refused whole.
    pub async fn write(&self, batch: Batch) -> Result<Outcome> {
        let outcome = self.submit(batch).await?.wait().await?;
        if matches!(outcome, Outcome::ConditionFailed { .. }) {
            crate::metrics::metrics().abort("condition_failed");
        }
        Ok(outcome)
    }

    /// Queues a batch on its shard without waiting for its outcome (see
    /// [`StoreHandle::submit`]): batches submitted in order commit in order.
    pub async fn submit(&self, batch: Batch) -> Result<PendingWrite> {
        let Some(shard) = self.batch_shard(&batch)? else {
            return Err(Error::InvalidArgument(
                "batch spans shards; a batch across shards commits through the transaction \
                 coordinator"
                    .into(),
            ));
        };
        self.shards[shard as usize].submit(batch).await
    }

    /// The one shard every key of `batch` (writes and conditions) lives on,
    /// or `None` if they span shards; an empty batch is an error.
    pub fn batch_shard(&self, batch: &Batch) -> Result<Option<u32>> {
        let mut keys = batch
            .ops
            .iter()
            .map(|o| o.key())
            .chain(batch.conditions.iter().map(|c| c.key.as_slice()));
        let Some(first) = keys.next() else {
            return Err(Error::InvalidArgument("empty batch".into()));
        };
        let shard = self.shard_of(first);
        Ok(keys.all(|k| self.shard_of(k) == shard).then_some(shard))
    }

    /// A scan over every shard, merged in key order (or reverse). Keys of
    /// the reserved namespace (the Redis collections, see
    /// [`crate::keyspace`]) are skipped.
    pub fn scan(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        keys_only: bool,
    ) -> Scan<'_> {
        self.scan_with(lower, upper, reverse, keys_only, true)
    }

    /// A scan like [`Router::scan`] that includes the reserved namespace
    /// (internal keys route by their Redis key, so every shard is visited).
    pub fn scan_raw(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        keys_only: bool,
    ) -> Scan<'_> {
        self.scan_with(lower, upper, reverse, keys_only, false)
    }

    fn scan_with(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        keys_only: bool,
        hide_reserved: bool,
    ) -> Scan<'_> {
        let mut shards: Vec<usize> = (0..self.shards.len()).collect();
        if self.partitioner.is_ordered() && hide_reserved {
            // Range partitioning: only shards that can hold keys of the range.
            shards.retain(|&i| self.range_may_hit(i, &lower, &upper));
        }
        Scan {
            router: self,
            cursors: shards
                .into_iter()
                .map(|s| ShardCursor {
                    shard: s,
                    buf: Vec::new().into_iter(),
                    lower: lower.clone(),
                    upper: upper.clone(),
                    done: false,
                })
                .collect(),
            heap: BinaryHeap::new(),
            started: false,
            reverse,
            keys_only,
            hide_reserved,
        }
    }

    fn range_may_hit(&self, shard: usize, lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
        let Partitioner::Ranges { splits } = &self.partitioner else {
            return true;
        };
        let lo = if shard == 0 {
            None
        } else {
            Some(&splits[shard - 1])
        };
        let hi = splits.get(shard);
        let below_upper = match (lo, upper) {
            (Some(lo), Bound::Excluded(u)) => lo < u,
            (Some(lo), Bound::Included(u)) => lo <= u,
            _ => true,
        };
        let above_lower = match (hi, lower) {
            (Some(hi), Bound::Included(l)) | (Some(hi), Bound::Excluded(l)) => l < hi,
            _ => true,
        };
        below_upper && above_lower
    }
}

struct ShardCursor {
    shard: usize,
    buf: std::vec::IntoIter<(Vec<u8>, Value)>,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    done: bool,
}

const PAGE: usize = 256;

/// A merged scan over shards; pulls a page of keys per shard at a time.
pub struct Scan<'r> {
    router: &'r Router,
    cursors: Vec<ShardCursor>,
    heap: BinaryHeap<HeapItem>,
    started: bool,
    reverse: bool,
    keys_only: bool,
    hide_reserved: bool,
}

struct HeapItem {
    key: Vec<u8>,
    value: Value,
    cursor: usize,
    reverse: bool,
}

impl PartialEq for HeapItem {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for HeapItem {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // BinaryHeap is a max-heap: forward scans pop the smallest key.
        if self.reverse {
            self.key.cmp(&o.key)
        } else {
            Reverse(&self.key).cmp(&Reverse(&o.key))
        }
    }
}

impl Scan<'_> {
    fn pull(&mut self, c: usize) -> Result<Option<(Vec<u8>, Value)>> {
        let cur = &mut self.cursors[c];
        loop {
            if let Some(item) = cur.buf.next() {
                return Ok(Some(item));
            }
            if cur.done {
                return Ok(None);
            }
            let lower = bound_ref(&cur.lower);
            let upper = bound_ref(&cur.upper);
            let mut page = self.router.shards[cur.shard].reader().scan(
                lower,
                upper,
                self.reverse,
                PAGE,
                self.keys_only,
            )?;
            if page.len() < PAGE {
                cur.done = true;
            }
            if let Some((last, _)) = page.last() {
                let jump = self.hide_reserved && crate::keyspace::is_reserved(last);
                // A page that ends inside the reserved namespace jumps over
                // the rest of it.
                if self.reverse {
                    cur.upper = if jump {
                        Bound::Excluded(crate::keyspace::RESERVED.to_vec())
                    } else {
                        Bound::Excluded(last.clone())
                    };
                } else {
                    cur.lower = if jump {
                        Bound::Included(crate::keyspace::RESERVED_END.to_vec())
                    } else {
                        Bound::Excluded(last.clone())
                    };
                }
            }
            if self.hide_reserved {
                page.retain(|(k, _)| !crate::keyspace::is_reserved(k));
            }
            cur.buf = page.into_iter();
        }
    }

    /// The next key in order.
    pub fn next_item(&mut self) -> Result<Option<(Vec<u8>, Value)>> {
        if !self.started {
            self.started = true;
            for c in 0..self.cursors.len() {
                if let Some((key, value)) = self.pull(c)? {
                    self.heap.push(HeapItem {
                        key,
                        value,
                        cursor: c,
                        reverse: self.reverse,
                    });
                }
            }
        }
        let Some(top) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some((key, value)) = self.pull(top.cursor)? {
            self.heap.push(HeapItem {
                key,
                value,
                cursor: top.cursor,
                reverse: self.reverse,
            });
        }
        Ok(Some((top.key, top.value)))
    }
}

/// The bounds of a scan request: `[start, end)` intersected with the keys
/// that have `prefix`.
pub fn scan_bounds(start: &[u8], end: &[u8], prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let mut lower = if start.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Included(start.to_vec())
    };
    let mut upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end.to_vec())
    };
    if !prefix.is_empty() {
        if start.is_empty() || start < prefix {
            lower = Bound::Included(prefix.to_vec());
        }
        if let Some(succ) = prefix_successor(prefix)
            && (end.is_empty() || end > succ.as_slice())
        {
            upper = Bound::Excluded(succ);
        }
    }
    (lower, upper)
}

/// The smallest key greater than every key with `prefix` (None: no bound).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        let (l, u) = scan_bounds(b"", b"", b"user/");
        assert_eq!(l, Bound::Included(b"user/".to_vec()));
        assert_eq!(u, Bound::Excluded(b"user0".to_vec()));
        let (l, u) = scan_bounds(b"user/5", b"user/7", b"user/");
        assert_eq!(l, Bound::Included(b"user/5".to_vec()));
        assert_eq!(u, Bound::Excluded(b"user/7".to_vec()));
    }
}
