//! Serializable transactions: the coordinator side (DESIGN.md §3).
//!
//! A transaction reads at a snapshot (its start version, fixed by the clock
//! once everything up to it is visible) through the lock-free index's
//! version chains, and records its read set and the ranges it scanned;
//! writes are buffered (its own reads see them). At commit:
//!
//! * A read-only transaction commits at once: its reads were a consistent
//!   snapshot.
//! * If every key it read or wrote lives on one shard (and it scanned no
//!   range, or there is one shard), the *fast path*: one message to that
//!   shard's storage task, which validates the reads and writes the batch in
//!   one step (no other write can come between), without any cross-core
//!   traffic beyond the request itself.
//! * Otherwise two-phase locking: the coordinator locks its keys on every
//!   participant shard (X on keys written, S on keys read and on scanned
//!   ranges, IX/IS on the shard), each shard validating the reads against
//!   the snapshot once its locks are granted (the growing phase). Every
//!   part it writes carries *redo records of all the other parts*, so any
//!   one part on disk decides the commit: recovery completes the rest.
//!   - First without waiting: it locks every participant but the last
//!     writing one (one on another thread, where there is one) at once
//!     (its own thread's shard without a message when that shard's task
//!     is waiting for requests); then the last locks, validates, takes
//!     the commit version and writes its part in one step (`LockApply`),
//!     and the other writing shards write theirs at that version, at
//!     once.
//!   - If a lock is held elsewhere, it gives back what it got, locks the
//!     shards one at a time in ascending order, waiting, takes a commit
//!     version and has every writing shard write its part, at once.
//!
//!   Each part is synced by its shard's policy. Once every part is written
//!   the commit is revealed to plain reads, all at once, and the shards
//!   release its locks when they see the reveal (the shrinking phase). The
//!   commit counts as *settled* (the floor recovery and merge use may pass
//!   it) once every part is durable: at once under `sync=always`, else
//!   after the participants' next fdatasync, which the coordinator asks
//!   for in rounds (`Settler`).
//!
//! Waits cannot form a cycle (only the ordered pass waits, each shard's
//! keys in one request), and a lock wait past the lock timeout aborts the
//! transaction, retryably. After a crash, recovery re-applies the redo
//! records of every commit not yet known to be settled on every shard
//! ([`apply_redo`]), so a cross-shard commit is all-or-nothing.
//!
//! A commit that fails after any part was written is reported committed
//! (a restart completes it); one that fails with no part known written is
//! an error whose outcome is unknown, never an abort.

pub mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SnapshotReg};
use crate::error::{Error, Result};
use crate::shard::router::Router;
use crate::storage::lock::LockRequest;
use crate::storage::service::{LockApplied, LockOutcome};
use crate::storage::store::{KeyRange, Redo, TxnPart, bound_ref, key_in_range};
use crate::storage::{Batch, Op, Outcome, SyncPolicy, Value};

/// Why a transaction was aborted. Every reason is retryable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// Something it read (or a range it scanned) changed after its snapshot:
    /// `key` is now at `version`.
    Conflict {
        /// The key that changed.
        key: Vec<u8>,
        /// Its version now.
        version: u64,
    },
    /// A lock it needed stayed held by another transaction past the lock
    /// timeout (a deadlock victim would end here too).
    LockTimeout,
    /// A compare-and-set condition of a batch did not hold.
    ConditionFailed {
        /// The key.
        key: Vec<u8>,
        /// Its version now (0: absent).
        current_version: u64,
    },
}

impl Abort {
    /// A stable name for metrics and error bodies.
    pub fn as_str(&self) -> &'static str {
        match self {
            Abort::Conflict { .. } => "conflict",
            Abort::LockTimeout => "lock_timeout",
            Abort::ConditionFailed { .. } => "condition_failed",
        }
    }
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abort::Conflict { key, version } => write!(
                f,
                "conflict: key {:?} changed after the transaction's snapshot (now at version {version}); retry the transaction",
                String::from_utf8_lossy(key)
            ),
            Abort::LockTimeout => write!(
                f,
                "lock timeout: another transaction held a needed lock too long; retry the transaction"
            ),
            Abort::ConditionFailed {
                key,
                current_version,
            } => write!(
                f,
                "condition failed on key {:?} (current version {current_version})",
                String::from_utf8_lossy(key)
            ),
        }
    }
}

/// The result of a commit: conflicts are outcomes, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Committed at `version` (a read-only transaction: its snapshot).
    Committed {
        /// Commit version.
        version: u64,
    },
    /// Nothing was written.
    Aborted(Abort),
}

/// Settings of the coordinator.
#[derive(Debug, Clone, Copy)]
pub struct TxnOptions {
    /// How long a commit waits for a lock before it aborts.
    pub lock_timeout: Duration,
    /// How long an idle transaction (gRPC `Txn`) lives before it is rolled back.
    pub idle_timeout: Duration,
}

impl Default for TxnOptions {
    fn default() -> Self {
        TxnOptions {
            lock_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs transactions over a router. `Send + Sync`; one per daemon.
pub struct Coordinator {
    router: Arc<Router>,
    clock: Arc<Clock>,
    settler: Arc<Settler>,
    next_id: AtomicU64,
    opts: TxnOptions,
    /// Open transactions of clients that hold them across requests.
    pub registry: registry::Registry,
}

/// A write buffered by a transaction: `None` deletes.
type Buffered = Option<(Vec<u8>, Option<u64>)>;

/// An open transaction. Dropping it rolls it back (it holds no lock until
/// commit; dropping releases its snapshot).
pub struct Txn {
    id: u64,
    start: u64,
    _snapshot: SnapshotReg,
    reads: BTreeSet<Vec<u8>>,
    ranges: Vec<KeyRange>,
    writes: BTreeMap<Vec<u8>, Buffered>,
    _open: crate::metrics::TransactionGuard,
}

impl Txn {
    /// The transaction id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The snapshot version its reads see.
    pub fn read_version(&self) -> u64 {
        self.start
    }

    /// Buffers a put (seen by this transaction's later reads).
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>, expires_at_ms: Option<u64>) {
        self.writes.insert(key, Some((value, expires_at_ms)));
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }
}

fn op_of(key: Vec<u8>, w: Buffered) -> Op {
    match w {
        Some((value, expires_at_ms)) => Op::Put {
            key,
            value,
            expires_at_ms,
        },
        None => Op::Delete { key },
    }
}

impl Coordinator {
    /// A coordinator over `router`, taking versions from `clock`.
    pub fn new(router: Arc<Router>, clock: Arc<Clock>, opts: TxnOptions) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let settler = Arc::new(Settler {
            router: router.clone(),
            clock: clock.clone(),
            queue: Default::default(),
        });
        Coordinator {
            router,
            clock,
            settler,
            // Ids differ across restarts: the high bits come from the time.
            next_id: AtomicU64::new((seed << 20) | 1),
            opts,
            registry: registry::Registry::new(opts.idle_timeout),
        }
    }

    /// The router.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    fn new_id(&self) -> u64 {
        // Never 0 (no transaction) nor u64::MAX (the checkpoint's lock).
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 && id != u64::MAX {
                return id;
            }
        }
    }

    /// Starts a transaction at the newest visible version.
    pub async fn begin(&self) -> Txn {
        let (snapshot, start) = self.clock.open_snapshot().fixed().await;
        Txn {
            id: self.new_id(),
            start,
            _snapshot: snapshot,
            reads: BTreeSet::new(),
            ranges: Vec::new(),
            writes: BTreeMap::new(),
            _open: crate::metrics::metrics().transaction(),
        }
    }

    /// Reads `key` in `txn`: its own write if any, else the snapshot.
    pub fn get(&self, txn: &mut Txn, key: &[u8]) -> Result<Option<Value>> {
        if let Some(w) = txn.writes.get(key) {
            return Ok(w.as_ref().map(|(v, exp)| Value {
                value: v.clone(),
                version: 0,
                expires_at_ms: *exp,
            }));
        }
        let shard = self.router.shard_of(key) as usize;
        let v = self.router.shard(shard).reader().get_at(key, txn.start)?;
        if !txn.reads.contains(key) {
            txn.reads.insert(key.to_vec());
        }
        Ok(v)
    }

    /// Scans `[lower, upper]` in `txn` (own writes merged in), at most
    /// `limit` keys, skipping the reserved namespace of the Redis
    /// collections; records the range read so a later insert into it
    /// conflicts (no phantoms).
    pub fn scan(
        &self,
        txn: &mut Txn,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        use crate::keyspace::{RESERVED, RESERVED_END};
        let below = match &lower {
            Bound::Unbounded => true,
            Bound::Included(l) | Bound::Excluded(l) => l.as_slice() < RESERVED,
        };
        let above = match &upper {
            Bound::Unbounded => true,
            Bound::Included(u) => u.as_slice() >= RESERVED_END,
            Bound::Excluded(u) => u.as_slice() > RESERVED_END,
        };
        let mut pieces = Vec::with_capacity(2);
        if below {
            let hi = match &upper {
                Bound::Included(u) | Bound::Excluded(u) if u.as_slice() < RESERVED => upper.clone(),
                _ => Bound::Excluded(RESERVED.to_vec()),
            };
            pieces.push((lower.clone(), hi));
        }
        if above {
            let lo = match &lower {
                Bound::Included(l) | Bound::Excluded(l) if l.as_slice() >= RESERVED_END => {
                    lower.clone()
                }
                _ => Bound::Included(RESERVED_END.to_vec()),
            };
            pieces.push((lo, upper.clone()));
        }
        if reverse {
            pieces.reverse();
        }
        let mut out = Vec::new();
        for (lo, hi) in pieces {
            if out.len() >= limit {
                break;
            }
            let got = self.scan_raw(txn, lo, hi, reverse, limit - out.len())?;
            out.extend(got);
        }
        Ok(out)
    }

    /// [`Coordinator::scan`] over any range, the reserved namespace
    /// included.
    pub fn scan_raw(
        &self,
        txn: &mut Txn,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Value)>> {
        let own_deletes = txn
            .writes
            .iter()
            .filter(|(k, w)| w.is_none() && key_in_range(k, &lower, &upper))
            .count();
        let fetch = limit.saturating_add(own_deletes);
        let mut merged: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        for i in 0..self.router.shard_count() {
            for (k, v) in self.router.shard(i).reader().scan_at(
                bound_ref(&lower),
                bound_ref(&upper),
                reverse,
                fetch,
                txn.start,
            )? {
                merged.insert(k, v);
            }
        }
        for (k, w) in txn
            .writes
            .iter()
            .filter(|(k, _)| key_in_range(k, &lower, &upper))
        {
            match w {
                Some((v, exp)) => {
                    merged.insert(
                        k.clone(),
                        Value {
                            value: v.clone(),
                            version: 0,
                            expires_at_ms: *exp,
                        },
                    );
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        let mut out: Vec<(Vec<u8>, Value)> = if reverse {
            merged.into_iter().rev().take(limit).collect()
        } else {
            merged.into_iter().take(limit).collect()
        };
        out.truncate(limit);
        // The range read ends where the result was cut short.
        let (mut lo, mut hi) = (lower, upper);
        if out.len() == limit
            && let Some((last, _)) = out.last()
        {
            if reverse {
                lo = Bound::Included(last.clone());
            } else {
                hi = Bound::Included(last.clone());
            }
        }
        txn.ranges.push((lo, hi));
        Ok(out)
    }

    /// Commits `txn`; see the module docs. The commit runs to its end even
    /// if the caller stops waiting.
    pub async fn commit(self: &Arc<Self>, txn: Txn) -> Result<Commit> {
        if txn.writes.is_empty() {
            return Ok(Commit::Committed { version: txn.start });
        }
        let me = self.clone();
        RunToEnd(Some(Box::pin(async move { me.commit_inner(txn).await }))).await
    }

    async fn commit_inner(&self, mut txn: Txn) -> Result<Commit> {
        let n = self.router.shard_count();
        // The buffered writes and the read set move into the requests.
        let mut writes: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
        for (k, w) in std::mem::take(&mut txn.writes) {
            writes
                .entry(self.router.shard_of(&k) as usize)
                .or_default()
                .push(op_of(k, w));
        }
        let mut reads: BTreeMap<usize, Vec<Vec<u8>>> = BTreeMap::new();
        for k in std::mem::take(&mut txn.reads) {
            reads
                .entry(self.router.shard_of(&k) as usize)
                .or_default()
                .push(k);
        }
        let mut shards: BTreeSet<usize> = writes.keys().chain(reads.keys()).copied().collect();
        if !txn.ranges.is_empty() {
            shards.extend(0..n);
        }
        let outcome = if shards.len() == 1 {
            let s = *shards.iter().next().expect("one shard");
            let part = TxnPart {
                txn_id: txn.id,
                start_version: txn.start,
                reads: reads.remove(&s).unwrap_or_default(),
                ranges: std::mem::take(&mut txn.ranges),
                ..Default::default()
            };
            let batch = Batch {
                ops: writes.remove(&s).unwrap_or_default(),
                conditions: vec![],
            };
            match self.router.shard(s).commit_local(part, batch).await? {
                Outcome::Committed { version, .. } => Commit::Committed { version },
                Outcome::ConditionFailed {
                    key,
                    current_version,
                } => Commit::Aborted(Abort::Conflict {
                    key,
                    version: current_version,
                }),
            }
        } else {
            self.commit_cross(&txn, shards, writes, reads).await?
        };
        if let Commit::Aborted(a) = &outcome {
            crate::metrics::metrics().abort(a.as_str());
        }
        Ok(outcome)
    }

    async fn commit_cross(
        &self,
        txn: &Txn,
        shards: BTreeSet<usize>,
        writes: BTreeMap<usize, Vec<Op>>,
        mut reads: BTreeMap<usize, Vec<Vec<u8>>>,
    ) -> Result<Commit> {
        let mut requests: Vec<(usize, LockRequest)> = shards
            .iter()
            .map(|&s| {
                let req = LockRequest {
                    write: writes
                        .get(&s)
                        .map(|ops| ops.iter().map(|o| o.key().to_vec()).collect())
                        .unwrap_or_default(),
                    read: reads.remove(&s).unwrap_or_default(),
                    ranges: txn.ranges.clone(),
                };
                (s, req)
            })
            .collect();
        // Every part carries redo records of all the others, so whichever
        // parts reach the disk before a crash, recovery completes the rest.
        let mut parts: BTreeMap<usize, (Vec<Op>, Vec<Op>)> = writes
            .keys()
            .map(|&s| {
                let redo = writes
                    .iter()
                    .filter(|(o, _)| **o != s)
                    .flat_map(|(_, ops)| ops.iter().cloned())
                    .collect();
                (s, (Vec::new(), redo))
            })
            .collect();
        for (s, ops) in writes {
            parts.get_mut(&s).expect("a part per writing shard").0 = ops;
        }
        let (locked, version, written) = match self.lock_fast(txn, &mut requests, &mut parts).await
        {
            Fast::Written {
                locked,
                version,
                last,
            } => (locked, version, Some(last)),
            Fast::Aborted(a) => return a.map(Commit::Aborted),
            Fast::Busy => match self.lock_ordered(txn, requests).await {
                Ok(locked) => (locked, self.clock.next_unsettled(), None),
                Err(a) => return a.map(Commit::Aborted),
            },
        };
        let writes_on: Vec<usize> = written.into_iter().chain(parts.keys().copied()).collect();
        let applies = parts.into_iter().map(|(s, (ops, redo))| {
            let h = self.router.shard(s).clone();
            let id = txn.id;
            async move {
                h.apply(
                    id,
                    TxnPart {
                        txn_id: id,
                        commit_version: Some(version),
                        redo,
                        keep_locks: true,
                        ..Default::default()
                    },
                    Batch {
                        ops,
                        conditions: vec![],
                    },
                )
                .await
                .map(|_| ())
            }
        });
        let results = futures::future::join_all(applies).await;
        let applied = results.iter().filter(|r| r.is_ok()).count() + usize::from(written.is_some());
        let failed = results.into_iter().find_map(|r| r.err());
        if let Some(e) = &failed {
            // A part that is written decides the commit (its redo completes
            // the rest at the next start-up); until then the version stays
            // hidden and unsettled.
            self.clock.unpublished(version);
            tracing::error!(txn = txn.id, error = %e, applied, "a part of a cross-shard commit failed to apply; a restart completes it from the redo records of any part written");
        } else {
            self.clock.reveal(version);
        }
        // Shrinking phase: every lock goes after the reveal, so no later
        // write to these keys is visible before this commit. A shard that
        // applied a part releases its locks when it sees the reveal (no
        // message); the others, and all of them after a failure, are told.
        let tell: Vec<usize> = locked
            .iter()
            .copied()
            .filter(|s| failed.is_some() || !writes_on.contains(s))
            .collect();
        self.release(txn, &tell).await;
        match failed {
            None => {
                self.settle(version, &writes_on);
                Ok(Commit::Committed { version })
            }
            // Not known to be written anywhere: the outcome is unknown.
            Some(e) if applied == 0 => Err(Error::Unavailable(format!(
                "commit of transaction {} failed; its outcome is unknown until restart: {e}",
                txn.id
            ))),
            // Written (by its shard's policy) on at least one shard: the
            // restart completes it.
            Some(_) => Ok(Commit::Committed { version }),
        }
    }

    /// The growing phase without waiting: locks every participant but the
    /// last writing one (one whose storage task runs on another thread,
    /// where there is one) at once (on this thread's shard without a
    /// message, [`StoreHandle::try_lock_here`], where its task is waiting),
    /// then has the last lock, validate and
    /// write its part in one step ([`StoreHandle::lock_apply`]), taking the
    /// commit version (its part is removed from `parts`). Every lock is
    /// then held and every read validated. If a lock is held elsewhere,
    /// gives back what it got ([`Fast::Busy`]).
    ///
    /// [`StoreHandle::lock_apply`]: crate::storage::StoreHandle::lock_apply
    /// [`StoreHandle::try_lock_here`]: crate::storage::StoreHandle::try_lock_here
    async fn lock_fast(
        &self,
        txn: &Txn,
        requests: &mut [(usize, LockRequest)],
        parts: &mut BTreeMap<usize, (Vec<Op>, Vec<Op>)>,
    ) -> Fast {
        // The last participant is one on another thread where there is
        // one: the others are then locked and written with no thread
        // woken, and the commit crosses threads once, there and back.
        let last = parts
            .keys()
            .rev()
            .find(|&&s| !self.router.shard(s).is_here())
            .or_else(|| parts.keys().next_back())
            .copied()
            .expect("a writing transaction");
        let now = Instant::now();
        // A shard whose storage task is on this thread and waiting is
        // locked here and now (at the first poll); the others are asked.
        let tries = futures::future::join_all(requests.iter().filter(|(s, _)| *s != last).map(
            |(s, req)| async move {
                let h = self.router.shard(*s);
                match h.try_lock_here(txn.id, txn.start, req) {
                    Some(outcome) => Ok(outcome),
                    None => h.lock(txn.id, txn.start, req.clone(), now).await,
                }
            },
        ))
        .await;
        let mut locked = Vec::with_capacity(requests.len());
        let mut busy = false;
        let mut abort = None;
        for ((s, _), outcome) in requests.iter().filter(|(s, _)| *s != last).zip(tries) {
            match outcome {
                Ok(LockOutcome::Locked) => locked.push(*s),
                Ok(LockOutcome::Timeout { .. }) => busy = true,
                Ok(LockOutcome::Changed { key, version }) => {
                    abort.get_or_insert(Ok(Abort::Conflict { key, version }));
                }
                Err(e) => abort = Some(Err(e)),
            }
        }
        if abort.is_none() && !busy {
            // Moved out, and back if it comes back busy.
            let req = requests
                .iter_mut()
                .find(|(s, _)| *s == last)
                .map(|(_, r)| std::mem::take(r))
                .expect("the last writer has a request");
            let (ops, redo) = parts.remove(&last).expect("the last writer has a part");
            let part = TxnPart {
                txn_id: txn.id,
                redo,
                ..Default::default()
            };
            let batch = Batch {
                ops,
                conditions: vec![],
            };
            match self
                .router
                .shard(last)
                .lock_apply(txn.id, txn.start, req, part, batch)
                .await
            {
                Ok(LockApplied::Applied { version }) => {
                    locked.push(last);
                    return Fast::Written {
                        locked,
                        version,
                        last,
                    };
                }
                Ok(LockApplied::Busy {
                    req, part, batch, ..
                }) => {
                    busy = true;
                    if let Some((_, r)) = requests.iter_mut().find(|(s, _)| *s == last) {
                        *r = req;
                    }
                    parts.insert(last, (batch.ops, part.redo));
                }
                Ok(LockApplied::Changed { key, version }) => {
                    abort = Some(Ok(Abort::Conflict { key, version }));
                }
                // Its write failed (the shard hides the version it took;
                // bytes may still have reached the disk, so the outcome is
                // unknown), or the shard is gone. Its locks may be held:
                // released below.
                Err(e) => {
                    locked.push(last);
                    abort = Some(Err(Error::Unavailable(format!(
                        "commit of transaction {} failed; its outcome is unknown until restart: {e}",
                        txn.id
                    ))));
                }
            }
        }
        self.release(txn, &locked).await;
        match abort {
            Some(a) => Fast::Aborted(a),
            None => {
                debug_assert!(busy);
                Fast::Busy
            }
        }
    }

    /// The growing phase with waiting: locks one shard at a time in
    /// ascending order, waiting up to the lock timeout (one order for every
    /// waiting transaction: no deadlock), each validating the reads.
    /// Returns the shards locked, or the abort (or error), with nothing
    /// left locked.
    async fn lock_ordered(
        &self,
        txn: &Txn,
        requests: Vec<(usize, LockRequest)>,
    ) -> std::result::Result<Vec<usize>, Result<Abort>> {
        let deadline = Instant::now() + self.opts.lock_timeout;
        let mut locked = Vec::with_capacity(requests.len());
        for (s, req) in requests {
            let outcome = self
                .router
                .shard(s)
                .lock(txn.id, txn.start, req, deadline)
                .await;
            let abort = match outcome {
                Ok(LockOutcome::Locked) => {
                    locked.push(s);
                    continue;
                }
                Ok(LockOutcome::Changed { key, version }) => Ok(Abort::Conflict { key, version }),
                Ok(LockOutcome::Timeout { .. }) => Ok(Abort::LockTimeout),
                Err(e) => Err(e),
            };
            self.release(txn, &locked).await;
            return Err(abort);
        }
        Ok(locked)
    }

    /// Releases `txn`'s locks on `shards` (a message each, not waited
    /// for; a shard that is gone holds nothing).
    async fn release(&self, txn: &Txn, shards: &[usize]) {
        for &s in shards {
            let _ = self.router.shard(s).release(txn.id).await;
        }
    }

    /// Counts cross-shard commit `version` settled once its parts on
    /// `shards` are durable: at once where every one of them syncs each
    /// write (`sync=always`); otherwise after the next fdatasync of each,
    /// which [`Settler`] asks for in batches.
    fn settle(&self, version: u64, shards: &[usize]) {
        let mut wait = Duration::ZERO;
        for &s in shards {
            wait = wait.max(match self.router.shard(s).reader().sync_policy() {
                SyncPolicy::Always => Duration::ZERO,
                SyncPolicy::Interval(d) => d.min(SETTLE_AFTER_MAX),
                SyncPolicy::None => SETTLE_AFTER_MAX,
            });
        }
        if wait.is_zero() {
            self.clock.settle_durable(version);
        } else {
            self.settler.add(version, shards, wait);
        }
    }

    /// Commits a batch of writes with compare-and-set conditions atomically,
    /// across shards if it must (the `Write` RPC, HTTP `/v1/batch`).
    pub async fn write_batch(self: &Arc<Self>, batch: Batch) -> Result<Outcome> {
        if self.router.batch_shard(&batch)?.is_some() {
            return self.router.write(batch).await;
        }
        for _ in 0..16 {
            let mut txn = self.begin().await;
            for c in &batch.conditions {
                let v = self.get(&mut txn, &c.key)?.map_or(0, |v| v.version);
                if v != c.expected_version {
                    crate::metrics::metrics().abort("condition_failed");
                    return Ok(Outcome::ConditionFailed {
                        key: c.key.clone(),
                        current_version: v,
                    });
                }
            }
            let mut removed = 0;
            for op in &batch.ops {
                match op {
                    Op::Put {
                        key,
                        value,
                        expires_at_ms,
                    } => txn.put(key.clone(), value.clone(), *expires_at_ms),
                    Op::Delete { key } => {
                        if !txn.writes.contains_key(key.as_slice())
                            && self
                                .router
                                .shard(self.router.shard_of(key) as usize)
                                .reader()
                                .get_at(key, txn.start)?
                                .is_some()
                        {
                            removed += 1;
                        }
                        txn.delete(key.clone())
                    }
                }
            }
            // Without conditions the batch read nothing: it cannot conflict
            // on a read, only wait for locks; with conditions, retry on a
            // conflict like any client would (the conditions are re-read).
            match self.commit(txn).await? {
                Commit::Committed { version } => {
                    return Ok(Outcome::Committed { version, removed });
                }
                Commit::Aborted(_) => continue,
            }
        }
        Err(Error::Unavailable(
            "the batch kept meeting conflicting transactions; retry it".into(),
        ))
    }
}

/// How the growing phase without waiting ended.
enum Fast {
    /// Every lock held; the last writing shard's part written at `version`.
    Written {
        locked: Vec<usize>,
        version: u64,
        last: usize,
    },
    /// A read changed (or an error): nothing held, nothing written.
    Aborted(Result<Abort>),
    /// A lock was held elsewhere: nothing held, nothing written.
    Busy,
}

/// The longest a cross-shard commit under `sync=none` (or a longer
/// `interval:<ms>`) waits to count as settled: its participants are asked
/// to fdatasync at most this often while such commits arrive.
const SETTLE_AFTER_MAX: Duration = Duration::from_secs(1);

/// Cross-shard commits whose parts are written but not known to be durable
/// on every participant (shards that do not sync each write). They are
/// settled in rounds: one fdatasync request per shard per round, not one
/// per commit.
struct Settler {
    router: Arc<Router>,
    clock: Arc<Clock>,
    queue: std::sync::Mutex<SettleQueue>,
}

#[derive(Default)]
struct SettleQueue {
    versions: Vec<u64>,
    shards: BTreeSet<usize>,
    /// A round is scheduled (its task drains the queue until it is empty).
    round: bool,
}

impl Settler {
    /// Queues `version` (parts on `shards`); starts a round `wait` from now
    /// unless one is scheduled.
    fn add(self: &Arc<Self>, version: u64, shards: &[usize], wait: Duration) {
        {
            let mut q = self.queue.lock().expect("settle queue is never poisoned");
            q.versions.push(version);
            q.shards.extend(shards.iter().copied());
            if q.round {
                return;
            }
            q.round = true;
        }
        let mut round = Round {
            settler: self.clone(),
            running: true,
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                let Some((versions, shards)) = round.take() else {
                    return;
                };
                let router = &round.settler.router;
                let synced =
                    futures::future::join_all(shards.iter().map(|&s| router.shard(s).sync())).await;
                match synced.into_iter().find_map(|r| r.err()) {
                    None => {
                        for v in versions {
                            round.settler.clock.settle_durable(v);
                        }
                    }
                    // They stay unsettled: a restart re-applies whatever
                    // redo records they left.
                    Some(e) => {
                        tracing::warn!(error = %e, commits = versions.len(), "cross-shard parts could not be synced; their redo stays until a restart");
                    }
                }
            }
        });
    }
}

/// A scheduled settle round. If its task is dropped unfinished (its
/// runtime shut down), the next commit schedules a new one.
struct Round {
    settler: Arc<Settler>,
    running: bool,
}

impl Round {
    /// Takes the queued commits and the shards to sync; with none queued,
    /// ends the round (under the queue's lock, so a commit queued after it
    /// schedules a new one).
    fn take(&mut self) -> Option<(Vec<u64>, BTreeSet<usize>)> {
        let mut q = self
            .settler
            .queue
            .lock()
            .expect("settle queue is never poisoned");
        if q.versions.is_empty() {
            q.round = false;
            self.running = false;
            return None;
        }
        Some((
            std::mem::take(&mut q.versions),
            std::mem::take(&mut q.shards),
        ))
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        if self.running
            && let Ok(mut q) = self.settler.queue.lock()
        {
            q.round = false;
        }
    }
}

/// A future run in the caller's task that, if the caller drops it before
/// it ends, finishes on a task of its own: a commit goes to its end even
/// when its client goes away. Running it in place saves a commit the two
/// hand-offs of a task of its own (start, and the wake of the caller).
struct RunToEnd<T: Send + 'static>(
    Option<std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>>,
);

impl<T: Send + 'static> std::future::Future for RunToEnd<T> {
    type Output = T;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<T> {
        let fut = self.0.as_mut().expect("polled after it ended");
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(out)
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        let Some(rest) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    rest.await;
                });
            }
            // Dropped outside any runtime: finish on a thread of its own.
            Err(_) => {
                std::thread::spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            rt.block_on(rest);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "no runtime to finish a dropped commit on; its outcome is settled at the next start-up");
                        }
                    }
                });
            }
        }
    }
}

/// Re-applies the redo records found at recovery to the shards that lack
/// them (their index holds an older version of the key, or none), synced.
/// Every part of a cross-shard commit carries the redo of all the others,
/// so one write may be found on several shards: it is applied once.
/// Returns how many writes were re-applied.
pub async fn apply_redo(router: &Router, found: Vec<Redo>) -> Result<usize> {
    // Per shard and transaction, in version order; one op per key.
    let mut by: BTreeMap<(usize, u64, u64), BTreeMap<Vec<u8>, Op>> = BTreeMap::new();
    for r in found {
        let s = router.shard_of(r.op.key()) as usize;
        let have = router.shard(s).reader().entry(r.op.key());
        if have.is_some_and(|e| e.version >= r.version) {
            continue;
        }
        by.entry((s, r.version, r.txn_id))
            .or_default()
            .insert(r.op.key().to_vec(), r.op);
    }
    let mut n = 0;
    for ((s, version, txn_id), ops) in by {
        let ops: Vec<Op> = ops.into_values().collect();
        n += ops.len();
        let part = TxnPart {
            txn_id,
            commit_version: Some(version),
            force_sync: true,
            ..Default::default()
        };
        router
            .shard(s)
            .apply(
                txn_id,
                part,
                Batch {
                    ops,
                    conditions: vec![],
                },
            )
            .await?;
    }
    Ok(n)
}
