//! The storage task of a shard: group commit, background sync, merge
//! scheduling — and the `Send` handle other threads use to reach it.
//!
//! The task owns the [`Store`] on the shard thread. Requests arrive on a
//! bounded channel (backpressure: senders wait when it is full). Each turn of
//! the loop takes one write and every other write already queued (up to
//! [`MAX_GROUP`]), and commits them with one write and one fdatasync: while
//! an fdatasync is in flight, the next group queues up behind it, so
//! throughput grows with the number of concurrent writers.
//!
//! Timers in the same loop run the `interval` sync policy, merge steps (every
//! [`MERGE_TICK`], each the bytes the configured rate allows for the time
//! since the last one, so merge runs at its rate and foreground requests
//! interleave with it in between short pauses; a quarter of that while
//! requests keep the shard thread busy, as `Pace` measures), and the merge
//! trigger checks (once a second), and the active expiry sweep (a step
//! every 100 ms, only while some key has an expiry).
//!
//! The task is also the participant side of transactions: it owns the
//! shard's [`LockManager`]. A cross-shard transaction locks its keys here
//! ([`Command::Lock`], validated against its snapshot once granted), then
//! applies its part at the commit version ([`Command::Apply`]), which
//! releases the locks; or gives them up ([`Command::Release`]). A blocked
//! lock request waits here until a release lets it through or its deadline
//! passes. Writes that take no locks (plain batches and single-shard
//! transactions, [`Command::Txn`]) wait, in arrival order, while they touch
//! a locked key. A coordinator on the task's own thread may take its locks
//! without a message while the task waits for requests
//! ([`StoreHandle::try_lock_here`]): the lock table is shared with it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::storage::io::{Io, IoEngine};
use crate::storage::lock::{LockManager, LockRequest, ShardMode};
use crate::storage::options::{StoreOptions, SyncPolicy};
use crate::storage::store::{
    Batch, KeyRange, Outcome, RecoveryReport, Store, StoreReader, StoreStats, TxnPart, WriteReq,
};

/// Most batches committed together.
pub const MAX_GROUP: usize = 1024;
/// Interval between merge steps. A step holds the storage task (2.5-3 ms
/// per MiB of victims on the development host), so steps are small: at
/// 10 ms (1.3 MiB each at the default rate) they set the p99 of pipelined
/// SETs while a merge ran.
pub const MERGE_TICK: Duration = Duration::from_millis(1);
/// The most time one merge step makes up for: a tick that comes late (the
/// task was busy) does not become a long step.
const MERGE_CATCH_UP: Duration = Duration::from_millis(4);
const TRIGGER_CHECK: Duration = Duration::from_secs(1);
/// How often the active expiry sweep takes a step.
const SWEEP_TICK: Duration = Duration::from_millis(100);
/// Index entries the active expiry sweep examines per step (20,000 a
/// second, as before session 18 in one step a second). Each is a cache
/// miss or more: with 1M keys, a step of 2,000 holds the storage task
/// 0.37 ms, one of 20,000 held it 3.5-3.9 ms.
const SWEEP_BUDGET: usize = 2_000;

/// Where a write's outcome goes.
pub type Reply = oneshot::Sender<Result<Outcome>>;

/// The answer to a [`Command::Lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// Every lock is held and nothing read has changed since the snapshot.
    Locked,
    /// Granted, but `key` changed after the snapshot (now at `version`):
    /// the locks were released again.
    Changed {
        /// The key.
        key: Vec<u8>,
        /// Its version now.
        version: u64,
    },
    /// The deadline passed while transaction `holder` held a lock in the way.
    Timeout {
        /// The holder.
        holder: u64,
    },
}

/// The answer to a [`Command::LockApply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockApplied {
    /// Locked, validated, and written at `version`, the commit version it
    /// took; the locks stay until that version is revealed.
    Applied {
        /// The commit version.
        version: u64,
    },
    /// Nothing written and nothing kept: transaction `holder` holds a lock
    /// in the way. The request, the part and its writes come back, for the
    /// caller's waiting pass.
    Busy {
        /// The holder.
        holder: u64,
        /// The lock request, as sent.
        req: LockRequest,
        /// The part, as sent.
        part: Box<TxnPart>,
        /// Its writes, as sent.
        batch: Batch,
    },
    /// Nothing written and nothing kept: `key` changed after the snapshot
    /// (now at `version`).
    Changed {
        /// The key.
        key: Vec<u8>,
        /// Its version now.
        version: u64,
    },
}

/// Where the outcome of a write in a group goes.
enum Answer {
    /// A batch, a single-shard transaction or an applied part.
    Write(Reply),
    /// A part locked and applied in one step, at this commit version.
    LockApply(oneshot::Sender<Result<LockApplied>>, u64),
}

/// Transaction id the checkpoint uses for its shard lock.
const CHECKPOINT_TXN: u64 = u64::MAX;

/// A request to the storage task.
pub enum Command {
    /// Commit a batch.
    Write(Batch, Reply),
    /// Validate and commit a single-shard transaction in one step.
    Txn(Box<TxnPart>, Batch, Reply),
    /// Lock keys for cross-shard transaction `txn` and validate its reads
    /// against `start_version` once granted.
    Lock {
        /// Transaction id.
        txn: u64,
        /// Snapshot version of its reads.
        start_version: u64,
        /// What to lock (reads and ranges are also validated).
        req: LockRequest,
        /// Give up waiting at this time.
        deadline: Instant,
        /// The answer.
        reply: oneshot::Sender<LockOutcome>,
    },
    /// Apply transaction `txn`'s part (its `commit_version` set), then
    /// release its locks.
    Apply(u64, Box<TxnPart>, Batch, Reply),
    /// Lock keys for cross-shard transaction `txn` without waiting,
    /// validate its reads against `start_version`, and if both hold, take
    /// a commit version (hidden and unsettled until the coordinator reveals
    /// it) and write the part at it, keeping the locks until the reveal.
    /// The last participant of a commit whose other participants are
    /// locked: one message instead of a lock and an apply.
    LockApply {
        /// Transaction id.
        txn: u64,
        /// Snapshot version of its reads.
        start_version: u64,
        /// What to lock (reads and ranges are also validated).
        req: LockRequest,
        /// The part (its redo records set).
        part: Box<TxnPart>,
        /// Its writes.
        batch: Batch,
        /// The answer, once written.
        reply: oneshot::Sender<Result<LockApplied>>,
    },
    /// Release the locks of transaction `txn` (abort).
    Release(u64),
    /// Take a shard-wide lock for `txn`, waiting as long as it takes
    /// (answered once granted).
    LockShard(u64, ShardMode, oneshot::Sender<()>),
    /// Merge every sealed segment now (at the configured rate); answered
    /// when it is done with whether a merge ran.
    Compact(oneshot::Sender<Result<bool>>),
    /// Write a consistent copy into a new directory.
    Checkpoint(PathBuf, oneshot::Sender<Result<()>>),
    /// Storage figures.
    Stats(oneshot::Sender<StoreStats>),
    /// fdatasync anything unsynced.
    Sync(oneshot::Sender<Result<()>>),
    /// Stop now, as if every handle were gone: the writes queued so far
    /// run, then the store syncs and closes; later requests find the task
    /// gone. For a shutdown whose connections outlive its drain period
    /// (they hold handles, so the inbox would never close).
    Close,
}

/// The outcome of a submitted batch, to be awaited.
pub struct PendingWrite(oneshot::Receiver<Result<Outcome>>);

impl PendingWrite {
    /// Waits for the outcome.
    pub async fn wait(self) -> Result<Outcome> {
        self.0.await.map_err(|_| gone())?
    }
}

thread_local! {
    /// The storage task running on this thread, if any.
    static HOME: RefCell<Option<HomeTask>> = const { RefCell::new(None) };
}

/// What coordinators on a storage task's thread know of it.
struct HomeTask {
    /// The [`StoreReader::identity`] of its store.
    identity: usize,
    /// Its lock table.
    locks: SharedLocks,
    /// Whether it waits for its next request (see
    /// [`StoreHandle::try_lock_here`]).
    idle: Rc<Cell<bool>>,
}

/// Marks this thread as the home of a storage task while it runs.
struct Home;

impl Home {
    fn set(task: HomeTask) -> Home {
        HOME.set(Some(task));
        Home
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        HOME.set(None);
    }
}

/// The lock table of a storage task, shared with the coordinators on its
/// thread ([`StoreHandle::try_lock_here`]). Each call borrows it briefly;
/// no borrow is held across an await.
#[derive(Clone, Default)]
struct SharedLocks(Rc<RefCell<LockManager>>);

impl SharedLocks {
    fn try_lock(&self, txn: u64, req: &LockRequest) -> std::result::Result<(), u64> {
        self.0.borrow_mut().try_lock(txn, req)
    }

    fn try_lock_shard(&self, txn: u64, mode: ShardMode) -> std::result::Result<(), u64> {
        self.0.borrow_mut().try_lock_shard(txn, mode)
    }

    fn release(&self, txn: u64) {
        self.0.borrow_mut().release(txn);
    }

    fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    fn blocks(&self, write: Vec<&[u8]>, read: Vec<&[u8]>) -> bool {
        self.0.borrow().blocks(write, read)
    }

    fn blocks_ranges(&self, ranges: &[KeyRange]) -> bool {
        self.0.borrow().blocks_ranges(ranges)
    }
}

/// A handle to a shard's storage task; `Send + Clone`.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Command>,
    reader: StoreReader,
}

fn gone() -> Error {
    Error::Unavailable("the shard's storage task has stopped".into())
}

impl StoreHandle {
    /// A handle over an existing channel (the shard runtime wires it).
    pub fn new(tx: mpsc::Sender<Command>, reader: StoreReader) -> Self {
        StoreHandle { tx, reader }
    }

    /// The lock-free read side (no hop to the shard thread).
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// Whether the storage task runs on the calling thread: a request to it
    /// wakes no other thread.
    pub fn is_here(&self) -> bool {
        HOME.with_borrow(|home| home.as_ref().map(|h| h.identity)) == Some(self.reader.identity())
    }

    /// [`StoreHandle::lock`] without waiting and without a message, where
    /// the storage task runs on this thread and waits for its next request
    /// (so nothing it admitted is unpublished, and validation sees every
    /// write before the lock): takes the locks at once and validates.
    /// `None` where it cannot, and where a lock is held (the task may not
    /// have seen the reveal that releases it yet): ask the task.
    pub fn try_lock_here(
        &self,
        txn: u64,
        start_version: u64,
        req: &LockRequest,
    ) -> Option<LockOutcome> {
        HOME.with_borrow(|home| {
            let HomeTask {
                identity,
                locks,
                idle,
            } = home.as_ref()?;
            if *identity != self.reader.identity() || !idle.get() {
                return None;
            }
            locks.try_lock(txn, req).ok()?;
            Some(
                match self.reader.validate(start_version, &req.read, &req.ranges) {
                    None => LockOutcome::Locked,
                    Some((key, version)) => {
                        locks.release(txn);
                        LockOutcome::Changed { key, version }
                    }
                },
            )
        })
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Sends a command (waiting for room in the inbox).
    pub async fn send(&self, cmd: Command) -> Result<()> {
        self.tx.send(cmd).await.map_err(|_| gone())
    }

    /// Runs a single-shard transaction: validates `txn`'s reads against its
    /// snapshot and writes `batch`, in one step.
    pub async fn commit_local(&self, txn: TxnPart, batch: Batch) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Txn(Box::new(txn), batch, tx)).await?;
        rx.await.map_err(|_| gone())?
    }

    /// Locks keys of a cross-shard transaction and validates its reads.
    pub async fn lock(
        &self,
        txn: u64,
        start_version: u64,
        req: LockRequest,
        deadline: Instant,
    ) -> Result<LockOutcome> {
        self.call(|reply| Command::Lock {
            txn,
            start_version,
            req,
            deadline,
            reply,
        })
        .await
    }

    /// Applies a locked cross-shard transaction's part and releases its locks.
    pub async fn apply(&self, txn: u64, part: TxnPart, batch: Batch) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Apply(txn, Box::new(part), batch, tx))
            .await?;
        rx.await.map_err(|_| gone())?
    }

    /// Locks, validates and writes a cross-shard transaction's part in one
    /// step, without waiting for a lock; see [`Command::LockApply`].
    pub async fn lock_apply(
        &self,
        txn: u64,
        start_version: u64,
        req: LockRequest,
        part: TxnPart,
        batch: Batch,
    ) -> Result<LockApplied> {
        self.call(|reply| Command::LockApply {
            txn,
            start_version,
            req,
            part: Box::new(part),
            batch,
            reply,
        })
        .await?
    }

    /// Takes a shard-wide lock (a consistent checkpoint of every shard
    /// takes S everywhere); waits until granted. Release it with
    /// [`StoreHandle::release`].
    pub async fn lock_shard(&self, txn: u64, mode: ShardMode) -> Result<()> {
        self.call(|reply| Command::LockShard(txn, mode, reply))
            .await
    }

    /// Releases a transaction's locks.
    pub async fn release(&self, txn: u64) -> Result<()> {
        self.send(Command::Release(txn)).await
    }

    /// Commits a batch.
    pub async fn write(&self, batch: Batch) -> Result<Outcome> {
        self.submit(batch).await?.wait().await
    }

    /// Queues a batch (waiting only for room in the inbox) and returns its
    /// pending outcome. Batches submitted one after another commit in that
    /// order, so a caller can queue several before waiting for any.
    pub async fn submit(&self, batch: Batch) -> Result<PendingWrite> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Write(batch, tx))
            .await
            .map_err(|_| gone())?;
        Ok(PendingWrite(rx))
    }

    /// One put; returns its version.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<u64> {
        match self.write(Batch::put(key, value)).await? {
            Outcome::Committed { version, .. } => Ok(version),
            Outcome::ConditionFailed { .. } => unreachable!("no conditions"),
        }
    }

    /// One delete; returns whether the key existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool> {
        match self.write(Batch::delete(key)).await? {
            Outcome::Committed { removed, .. } => Ok(removed > 0),
            Outcome::ConditionFailed { .. } => unreachable!("no conditions"),
        }
    }

    /// Merges every sealed segment (rate-limited); waits until done.
    pub async fn compact(&self) -> Result<bool> {
        self.call(Command::Compact).await?
    }

    /// Writes a checkpoint into `target`.
    pub async fn checkpoint(&self, target: PathBuf) -> Result<()> {
        self.call(|tx| Command::Checkpoint(target, tx)).await?
    }

    /// Storage figures.
    pub async fn stats(&self) -> Result<StoreStats> {
        self.call(Command::Stats).await
    }

    /// Makes everything acknowledged so far durable.
    pub async fn sync(&self) -> Result<()> {
        self.call(Command::Sync).await?
    }

    /// A way to stop the storage task that does not keep it running (as a
    /// handle does): see [`Command::Close`].
    pub fn closer(&self) -> StoreCloser {
        StoreCloser(self.tx.downgrade())
    }

    /// Requests waiting in the storage task's inbox.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Stops a storage task, without keeping it running until dropped.
pub struct StoreCloser(mpsc::WeakSender<Command>);

impl StoreCloser {
    /// Tells the task to close (see [`Command::Close`]); false if it has
    /// stopped already.
    pub async fn close(&self) -> bool {
        match self.0.upgrade() {
            Some(tx) => tx.send(Command::Close).await.is_ok(),
            None => false,
        }
    }
}

/// Runs the storage task until every handle is dropped (or it is told to
/// close, [`Command::Close`]), then closes the store (syncing what is
/// unsynced).
pub async fn serve(mut store: Store, mut rx: mpsc::Receiver<Command>) -> Result<()> {
    let mut p = Participant::default();
    // Whether the task waits for its next request: set before each wait,
    // cleared first thing in every branch that ends it.
    let idle = Rc::new(Cell::new(false));
    let _home = Home::set(HomeTask {
        identity: store.reader().identity(),
        locks: p.locks.clone(),
        idle: idle.clone(),
    });
    let sync_every = match store.options().sync {
        SyncPolicy::Interval(d) => Some(d),
        _ => None,
    };
    let mut sync_tick = tokio::time::interval(sync_every.unwrap_or(Duration::from_secs(3600)));
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut merge_tick = tokio::time::interval(MERGE_TICK);
    merge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trigger_tick = tokio::time::interval(TRIGGER_CHECK);
    trigger_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep_tick = tokio::time::interval(SWEEP_TICK);
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let merge_rate = store.options().merge.rate_bytes_per_sec;
    let mut last_merge_step = Instant::now();
    let schedule = store.options().merge.interval;
    let mut last_scheduled = Instant::now();
    let mut compact_waiters: Vec<oneshot::Sender<Result<bool>>> = Vec::new();
    let mut compact_ran = false;
    // The `interval` policy's fdatasync in flight on its helper thread.
    let mut syncing: Option<(Instant, oneshot::Receiver<Result<()>>)> = None;

    let mut pace = Pace::new();
    let mut lock_tick = tokio::time::interval(Duration::from_millis(5));
    lock_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut others = Vec::new();
    let durable = store.options().sync == SyncPolicy::Always;
    let mut gather = Gather::default();
    let clock = store.clock().clone();
    let mut closing = false;
    loop {
        // Locks of revealed cross-shard commits go first; a reveal while
        // something waits for them wakes the task. A `Notified` receives
        // every reveal from its creation on (no `enable`, which would take
        // the Notify's lock each turn), and it is created before the check,
        // so none is missed.
        let revealed = clock.next_reveal();
        tokio::pin!(revealed);
        if p.release_revealed(&clock) {
            p.wake(&mut store).await;
        }
        // Whether the next write was already queued when the last group
        // ended (another cohort of writers, not a new arrival).
        let queued = !rx.is_empty();
        idle.set(true);
        tokio::select! {
            _ = &mut revealed, if p.waits_on_held() => idle.set(false),
            cmd = rx.recv() => {
                idle.set(false);
                let Some(cmd) = cmd else { break };
                // A reveal while the task slept: the locks go before the
                // requests that came after it are looked at.
                if p.release_revealed(&clock) {
                    p.wake(&mut store).await;
                }
                let mut next = Some(cmd);
                while let Some(cmd) = next.take() {
                    match cmd {
                        Command::Write(b, reply) => p.admit(WriteReq::from(b), reply),
                        Command::Txn(t, b, reply) => p.admit(WriteReq { batch: b, txn: Some(t) }, reply),
                        Command::Apply(txn, t, b, reply) => {
                            // A cross-shard part keeps its locks until its
                            // commit is revealed (every part written).
                            let release = (!t.keep_locks).then_some(txn);
                            if let (true, Some(v)) = (t.keep_locks, t.commit_version) {
                                p.hold(txn, v);
                            }
                            p.ready.push(WriteReq { batch: b, txn: Some(t) });
                            p.replies.push((Answer::Write(reply), release));
                        }
                        other => others.push(other),
                    }
                    if p.ready.len() < MAX_GROUP {
                        next = rx.try_recv().ok();
                    }
                    while next.is_none() && durable && gather.wait_for_more(p.ready.len(), queued) {
                        tokio::task::yield_now().await;
                        std::thread::yield_now();
                        next = rx.try_recv().ok();
                    }
                }
                let (n, started) = (p.ready.len(), Instant::now());
                p.run(&mut store).await;
                gather.ran(n, started.elapsed());
                for cmd in others.drain(..) {
                    match cmd {
                        Command::Write(..) | Command::Txn(..) | Command::Apply(..) => {
                            unreachable!("writes are grouped above")
                        }
                        Command::Lock { txn, start_version, req, deadline, reply } => {
                            p.waiting.push_back(LockWait { txn, start_version, req, deadline, reply });
                            p.retry_locks(&store, Instant::now());
                        }
                        Command::LockApply { txn, start_version, req, part, batch, reply } => {
                            p.lock_apply(&store, txn, start_version, req, part, batch, reply);
                        }
                        Command::Release(txn) => {
                            p.held.retain(|(t, _)| *t != txn);
                            p.locks.release(txn);
                            p.wake(&mut store).await;
                        }
                        Command::LockShard(txn, mode, reply) => {
                            p.shard_waits.push_back((txn, mode, reply));
                            p.retry_locks(&store, Instant::now());
                        }
                        Command::Compact(reply) => match store.start_merge(true) {
                            Ok(started) => {
                                compact_ran |= started;
                                if store.merge_running() {
                                    compact_waiters.push(reply);
                                } else {
                                    let _ = reply.send(Ok(false));
                                }
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        },
                        Command::Checkpoint(path, reply) => {
                            p.checkpoints.push_back((path, reply));
                            p.wake(&mut store).await;
                        }
                        Command::Stats(reply) => {
                            let _ = reply.send(store.stats());
                        }
                        Command::Sync(reply) => {
                            let _ = reply.send(store.sync().await);
                        }
                        Command::Close => closing = true,
                    }
                }
                // Parts locked and applied above.
                p.run(&mut store).await;
                if closing {
                    break;
                }
            }
            _ = lock_tick.tick(), if !p.waiting.is_empty() => {
                idle.set(false);
                p.retry_locks(&store, Instant::now());
            }
            _ = sync_tick.tick(), if sync_every.is_some() && syncing.is_none() => {
                idle.set(false);
                match store.begin_background_sync() {
                    Ok(rx) => syncing = rx.map(|rx| (Instant::now(), rx)),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not start a background fdatasync; syncing here");
                        if let Err(e) = store.sync().await {
                            tracing::error!(error = %e, "fdatasync failed; the shard now refuses writes");
                        }
                    }
                }
            }
            r = async { (&mut syncing.as_mut().expect("a sync is running").1).await }, if syncing.is_some() => {
                idle.set(false);
                let (started, _) = syncing.take().expect("a sync is running");
                if let Err(e) = store.finish_background_sync(started, r) {
                    tracing::error!(error = %e, "background fdatasync failed; the shard now refuses writes");
                }
            }
            outcome = store.seal_done(), if store.seal_pending() => {
                idle.set(false);
                if let Err(e) = store.finish_seal(outcome).await {
                    tracing::error!(error = %e, "the background fdatasync of a sealed segment failed; the shard now refuses writes");
                }
            }
            _ = merge_tick.tick(), if store.merge_running() => {
                idle.set(false);
                let mut budget = merge_budget(merge_rate, last_merge_step.elapsed());
                last_merge_step = Instant::now();
                if pace.busy() && compact_waiters.is_empty() && !store.merge_urgent() {
                    budget = (budget / BUSY_MERGE_SHARE).max(MIN_MERGE_STEP);
                }
                let step = pace.merge_step(store.merge_step(budget)).await;
                match step {
                    Ok(false) => {}
                    Ok(true) => {
                        for w in compact_waiters.drain(..) {
                            let _ = w.send(Ok(compact_ran));
                        }
                        compact_ran = false;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "merge failed");
                        let msg = e.to_string();
                        for w in compact_waiters.drain(..) {
                            let _ = w.send(Err(Error::Unavailable(format!("merge failed: {msg}"))));
                        }
                        compact_ran = false;
                    }
                }
            }
            // (No key with an expiry: no step, and no wake-up for one.)
            _ = sweep_tick.tick(), if store.has_expiring_keys() => {
                idle.set(false);
                // The sweep writes deletes without asking the lock table: it
                // waits for a moment when no transaction holds a lock here
                // (a tombstone newer than a prepared commit's version would
                // hide that commit's write of the key).
                if p.locks.is_empty()
                    && p.deferred.is_empty()
                    && let Err(e) = store.sweep_expired(SWEEP_BUDGET).await
                {
                    tracing::warn!(error = %e, "expiry sweep");
                }
            }
            _ = trigger_tick.tick() => {
                idle.set(false);
                let started = if schedule.is_some_and(|d| last_scheduled.elapsed() >= d) {
                    last_scheduled = Instant::now();
                    store.start_scheduled_merge()
                } else {
                    store.maybe_start_merge()
                };
                if let Err(e) = started {
                    tracing::warn!(error = %e, "merge trigger");
                }
                store.trim_versions();
                store.clock().feed.maybe_off();
                // (A deleted file is logged where it is found.)
                if let Err(e @ Error::Io { .. }) = store.check_files() {
                    tracing::warn!(error = %e, "could not check the shard's files");
                }
            }
        }
    }
    store.close().await
}

/// Bytes of victims a merge step may copy: what `rate` (bytes per second)
/// allows for `since` the last step, at most [`MERGE_CATCH_UP`]'s worth,
/// at least [`MIN_MERGE_STEP`] (a step always gets somewhere).
fn merge_budget(rate: u64, since: Duration) -> u64 {
    let bytes = u128::from(rate) * since.min(MERGE_CATCH_UP).as_nanos() / 1_000_000_000;
    u64::try_from(bytes).unwrap_or(u64::MAX).max(MIN_MERGE_STEP)
}

/// The least a merge step copies.
const MIN_MERGE_STEP: u64 = 4096;
/// While the shard thread is busy with foreground work, merge runs at this
/// fraction of its rate (1/4), unless its garbage has reached the
/// reclaimable-bytes trigger or a client asked for the merge (Compact).
const BUSY_MERGE_SHARE: u64 = 4;
/// How often [`Pace`] measures the shard thread's load.
const PACE_WINDOW: Duration = Duration::from_millis(10);

/// Whether the shard thread is busy with foreground work (requests, not
/// merge), from its CPU time: a merge step runs on this thread, and under
/// a saturating load (pipelined GETs and SETs) each step's time comes out
/// of the requests' (a redis-benchmark GET -P 16 run of 1M requests while
/// a merge ran: 590k-640k/s and p99 2.1-2.3 ms, against 640k-770k/s and
/// 1.4-1.6 ms with merge off). Busy: foreground work took at least 70% of
/// the last [`PACE_WINDOW`]; merge then slows down, and catches up when
/// the load eases.
struct Pace {
    since: Instant,
    cpu_since: Duration,
    /// Time spent in merge steps since `since`.
    merging: Duration,
    busy: bool,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            since: Instant::now(),
            cpu_since: thread_cpu_time(),
            merging: Duration::ZERO,
            busy: false,
        }
    }

    /// Whether the thread is busy with foreground work, as of the last
    /// full window.
    fn busy(&mut self) -> bool {
        let wall = self.since.elapsed();
        if wall >= PACE_WINDOW {
            let cpu = thread_cpu_time();
            let foreground = cpu
                .saturating_sub(self.cpu_since)
                .saturating_sub(self.merging);
            self.busy = foreground * 10 >= wall * 7;
            self.since = Instant::now();
            self.cpu_since = cpu;
            self.merging = Duration::ZERO;
        }
        self.busy
    }

    /// Runs a merge step, counting its time (the step is CPU work on this
    /// thread: its reads are of mapped memory, its writes synchronous).
    async fn merge_step<T>(&mut self, step: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = step.await;
        self.merging += started.elapsed();
        out
    }
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Group commit under `sync=always`: when fewer writers are ready than
/// took part in the last group, wait a little for the rest to come back.
///
/// Writers that wait for a group's fdatasync return together when it ends,
/// but one at a time, so the first few form a group of their own and the
/// rest queue behind its fdatasync: 64 writers settle into two cohorts of
/// about 32, and each fdatasync covers half of them (measured in-process:
/// 32.1 batches per sync with 64 writers). Waiting briefly for the writers
/// of the last group (and, when the first write was already queued, for
/// the cohort that queued) merges the cohorts. The wait is bounded by the
/// last group's write-and-sync time (a straggler left out would wait that
/// long behind the group anyway, and then cost an fdatasync of its own)
/// and by [`GATHER_MAX`], and is skipped when no more writers are expected
/// (one writer never waits).
///
/// Until session 21 the bound was half that time and at most 200 us: under
/// redis-benchmark `-t set -P 1 -c 50` (fdatasync 0.2-0.4 ms here) a
/// quarter of the groups had 8 writes or fewer, stragglers with an
/// fdatasync of their own; bounded by the whole time, almost none.
#[derive(Default)]
struct Gather {
    /// Writes in the last group.
    last: usize,
    /// How long the last group took to write and sync.
    last_took: Duration,
    /// The group being gathered: how many to expect, until when.
    expect: usize,
    deadline: Option<Instant>,
}

/// Longest wait for a group's writers to come back.
const GATHER_MAX: Duration = Duration::from_millis(1);

impl Gather {
    /// Whether to wait for another write to join a group of `ready`
    /// (`queued`: the group's first write was waiting before it started).
    fn wait_for_more(&mut self, ready: usize, queued: bool) -> bool {
        if self.deadline.is_none() {
            self.expect = if queued { self.last + ready } else { self.last }.min(MAX_GROUP);
            self.deadline = Some(Instant::now() + self.last_took.min(GATHER_MAX));
        }
        ready > 0 && ready < self.expect && self.deadline.is_some_and(|d| Instant::now() < d)
    }

    /// A group of `n` writes was written and synced in `took`.
    fn ran(&mut self, n: usize, took: Duration) {
        self.last = n;
        self.last_took = took;
        self.deadline = None;
    }
}

/// A lock request waiting for a holder to release.
struct LockWait {
    txn: u64,
    start_version: u64,
    req: LockRequest,
    deadline: Instant,
    reply: oneshot::Sender<LockOutcome>,
}

/// The participant state of the storage task: lock table and the requests
/// waiting on it.
#[derive(Default)]
struct Participant {
    locks: SharedLocks,
    /// Applied cross-shard parts holding their locks until their commit
    /// (transaction id, commit version) is revealed.
    held: Vec<(u64, u64)>,
    /// [`Clock::reveals`] when `held` was last looked at (None: look).
    seen_reveals: Option<u64>,
    /// Scratch room for the transactions whose locks go at a reveal.
    gone: Vec<u64>,
    /// Writes to run in the next group, with their replies (and the
    /// transaction whose locks to release after an apply).
    ready: Vec<WriteReq>,
    replies: Vec<(Answer, Option<u64>)>,
    /// Lock-free writers waiting for locks to go, in arrival order.
    deferred: VecDeque<(WriteReq, Reply)>,
    /// Lock requests waiting, in arrival order.
    waiting: VecDeque<LockWait>,
    /// Shard-wide lock requests waiting, in arrival order.
    shard_waits: VecDeque<(u64, ShardMode, oneshot::Sender<()>)>,
    /// Checkpoints waiting for prepared writers to finish.
    checkpoints: VecDeque<(PathBuf, oneshot::Sender<Result<()>>)>,
}

fn touches(req: &WriteReq) -> (Vec<&[u8]>, Vec<&[u8]>) {
    let write = req.batch.ops.iter().map(|o| o.key()).collect();
    let mut read: Vec<&[u8]> = req
        .batch
        .conditions
        .iter()
        .map(|c| c.key.as_slice())
        .collect();
    if let Some(t) = &req.txn {
        read.extend(t.reads.iter().map(|k| k.as_slice()));
    }
    (write, read)
}

impl Participant {
    /// Releases the locks of applied parts whose commit is revealed;
    /// whether any went. Looks only after a reveal since it last looked
    /// (a part is held before it is written, so before its reveal).
    fn release_revealed(&mut self, clock: &Clock) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let reveals = clock.reveals();
        if self.seen_reveals == Some(reveals) {
            return false;
        }
        self.seen_reveals = Some(reveals);
        let mut gone = std::mem::take(&mut self.gone);
        let held = &mut self.held;
        clock.with_hidden(|hidden| {
            held.retain(|&(txn, v)| {
                let keep = hidden(v);
                if !keep {
                    gone.push(txn);
                }
                keep
            })
        });
        let any = !gone.is_empty();
        for txn in gone.drain(..) {
            self.locks.release(txn);
        }
        self.gone = gone;
        any
    }

    /// Keeps transaction `txn`'s locks until commit `version` is revealed.
    fn hold(&mut self, txn: u64, version: u64) {
        self.held.push((txn, version));
        self.seen_reveals = None;
    }

    /// [`Command::LockApply`]: locks without waiting, validates, and queues
    /// the part at a new commit version (answered when written); or
    /// answers why not. Runs between groups, so every write admitted
    /// before it is published and validation sees it.
    #[allow(clippy::too_many_arguments)]
    fn lock_apply(
        &mut self,
        store: &Store,
        txn: u64,
        start_version: u64,
        req: LockRequest,
        mut part: Box<TxnPart>,
        batch: Batch,
        reply: oneshot::Sender<Result<LockApplied>>,
    ) {
        if let Err(holder) = self.locks.try_lock(txn, &req) {
            let _ = reply.send(Ok(LockApplied::Busy {
                holder,
                req,
                part,
                batch,
            }));
            return;
        }
        let check = TxnPart {
            start_version,
            reads: req.read,
            ranges: req.ranges,
            ..Default::default()
        };
        if let Some((key, version)) = store.validate_reads(&check) {
            self.locks.release(txn);
            let _ = reply.send(Ok(LockApplied::Changed { key, version }));
            return;
        }
        let version = store.clock().next_unsettled();
        part.commit_version = Some(version);
        part.keep_locks = true;
        self.hold(txn, version);
        self.ready.push(WriteReq {
            batch,
            txn: Some(part),
        });
        self.replies.push((Answer::LockApply(reply, version), None));
    }

    /// Whether something queued here may be waiting for a held part's locks.
    fn waits_on_held(&self) -> bool {
        let queued = !self.waiting.is_empty()
            || !self.deferred.is_empty()
            || !self.shard_waits.is_empty()
            || !self.checkpoints.is_empty();
        queued && !self.held.is_empty()
    }

    fn blocked(&self, req: &WriteReq) -> bool {
        if self.locks.is_empty() {
            return false;
        }
        let (write, read) = touches(req);
        if self.locks.blocks(write, read) {
            return true;
        }
        // A single-shard transaction's scanned ranges must not hold a key
        // a prepared transaction writes.
        req.txn
            .as_ref()
            .is_some_and(|t| !t.ranges.is_empty() && self.locks.blocks_ranges(&t.ranges))
    }

    /// Queues a lock-free write, behind earlier waiting ones.
    fn admit(&mut self, req: WriteReq, reply: Reply) {
        if !self.deferred.is_empty() || self.blocked(&req) {
            self.deferred.push_back((req, reply));
        } else {
            self.ready.push(req);
            self.replies.push((Answer::Write(reply), None));
        }
    }

    /// Writes the ready group, answers it, releases applied transactions'
    /// locks, and lets through whatever that unblocks; repeats while
    /// anything is ready.
    async fn run(&mut self, store: &mut Store) {
        while !self.ready.is_empty() {
            let outcomes = store.write_requests(std::mem::take(&mut self.ready)).await;
            let mut released = false;
            for ((answer, txn), outcome) in self.replies.drain(..).zip(outcomes) {
                if let Some(t) = txn {
                    self.locks.release(t);
                    released = true;
                }
                match answer {
                    Answer::Write(reply) => {
                        let _ = reply.send(outcome);
                    }
                    Answer::LockApply(reply, version) => {
                        if outcome.is_err() {
                            // Not written: the version it took stays hidden
                            // (the coordinator releases the locks).
                            store.clock().unpublished(version);
                        }
                        let _ = reply.send(outcome.map(|_| LockApplied::Applied { version }));
                    }
                }
            }
            if released {
                self.unblock(store).await;
            }
        }
    }

    /// After a release: checkpoints, lock requests and deferred writes that
    /// can go now.
    async fn wake(&mut self, store: &mut Store) {
        self.unblock(store).await;
        self.run(store).await;
    }

    async fn unblock(&mut self, store: &mut Store) {
        while let Some((path, _)) = self.checkpoints.front() {
            // Shard-wide S: waits for every prepared writer (IX) to finish.
            if self
                .locks
                .try_lock_shard(CHECKPOINT_TXN, ShardMode::S)
                .is_err()
            {
                break;
            }
            let path = path.clone();
            let r = store.checkpoint(&path).await;
            self.locks.release(CHECKPOINT_TXN);
            if let Some((_, reply)) = self.checkpoints.pop_front() {
                let _ = reply.send(r);
            }
        }
        self.retry_locks(store, Instant::now());
        while let Some((req, _)) = self.deferred.front() {
            if self.blocked(req) {
                break;
            }
            let (req, reply) = self.deferred.pop_front().expect("front exists");
            self.ready.push(req);
            self.replies.push((Answer::Write(reply), None));
        }
    }

    /// Tries every waiting lock request in order; answers those granted or
    /// past their deadline.
    fn retry_locks(&mut self, store: &Store, now: Instant) {
        while let Some((txn, mode, _)) = self.shard_waits.front() {
            if self.locks.try_lock_shard(*txn, *mode).is_err() {
                break;
            }
            let (txn, _, reply) = self.shard_waits.pop_front().expect("front exists");
            if reply.send(()).is_err() {
                self.locks.release(txn);
            }
        }
        let mut still = VecDeque::new();
        while let Some(w) = self.waiting.pop_front() {
            match self.locks.try_lock(w.txn, &w.req) {
                Ok(()) => {
                    let part = TxnPart {
                        start_version: w.start_version,
                        reads: w.req.read.clone(),
                        ranges: w.req.ranges.clone(),
                        ..Default::default()
                    };
                    let answer = match store.validate_reads(&part) {
                        None => LockOutcome::Locked,
                        Some((key, version)) => {
                            self.locks.release(w.txn);
                            LockOutcome::Changed { key, version }
                        }
                    };
                    if w.reply.send(answer).is_err() {
                        // The coordinator is gone: it can never commit.
                        self.locks.release(w.txn);
                    }
                }
                Err(holder) if now >= w.deadline => {
                    let _ = w.reply.send(LockOutcome::Timeout { holder });
                }
                Err(_) => still.push_back(w),
            }
        }
        self.waiting = still;
    }
}

/// A storage task running on its own thread (tests, benchmarks, tools; the
/// daemon runs the task on its shard threads instead).
pub struct StoreThread {
    /// Handle to the task.
    pub handle: StoreHandle,
    /// What recovery did.
    pub report: RecoveryReport,
    jobs: mpsc::UnboundedSender<LocalJob>,
    join: std::thread::JoinHandle<Result<()>>,
}

/// Work handed to a store thread's runtime (see [`StoreThread::run_local`]).
type LocalJob = Box<dyn FnOnce() + Send>;

impl StoreThread {
    /// Opens `dir` on a new thread running the runtime of `engine` (with
    /// optional fault injection through `io`) and starts the task there.
    pub fn spawn(
        dir: PathBuf,
        opts: StoreOptions,
        io: Io,
        clock: Arc<Clock>,
    ) -> Result<StoreThread> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (jobs, mut jobs_rx) = mpsc::unbounded_channel::<LocalJob>();
        let engine: IoEngine = io.engine();
        let join = std::thread::Builder::new()
            .name(format!("flashkv-store-{}", opts.shard_id))
            .spawn(move || {
                engine.block_on(async move {
                    let (store, report) = match Store::open(&dir, opts, io, clock).await {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    let (tx, rx) = mpsc::channel(4 * MAX_GROUP);
                    let handle = StoreHandle::new(tx, store.reader());
                    let _ = ready_tx.send(Ok((handle, report)));
                    tokio::task::spawn_local(async move {
                        while let Some(job) = jobs_rx.recv().await {
                            job();
                        }
                    });
                    serve(store, rx).await
                })
            })
            .map_err(|e| Error::io("spawn thread", "flashkv-store", e))?;
        match ready_rx.recv() {
            Ok(Ok((handle, report))) => Ok(StoreThread {
                handle,
                report,
                jobs,
                join,
            }),
            Ok(Err(e)) => {
                let _ = join.join();
                Err(e)
            }
            Err(_) => Err(Error::Unavailable(
                "storage thread died while opening".into(),
            )),
        }
    }

    /// Runs the future `make` returns on this store's thread, beside its
    /// storage task, as the daemon runs request handlers beside theirs: a
    /// request from there to this shard crosses no thread. The receiver
    /// gets its output (or closes if the store shuts down first).
    pub fn run_local<F, Fut>(&self, make: F) -> oneshot::Receiver<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future + 'static,
        Fut::Output: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let _ = self.jobs.send(Box::new(move || {
            tokio::task::spawn_local(async move {
                let _ = tx.send(make().await);
            });
        }));
        rx
    }

    /// Drops this handle and waits for the task to close the store (other
    /// clones of the handle must be gone too).
    pub fn shutdown(self) -> Result<()> {
        drop(self.jobs);
        drop(self.handle);
        self.join
            .join()
            .map_err(|_| Error::Unavailable("storage thread panicked".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::store::Op;

    /// A storage task on a thread of its own, plain I/O, over `dir`.
    fn store_thread(dir: &std::path::Path, opts: StoreOptions, clock: Arc<Clock>) -> StoreThread {
        StoreThread::spawn(dir.into(), opts, Io::new(IoEngine::Plain), clock).unwrap()
    }

    /// Spins until this thread has used `cpu` more CPU time.
    fn spin_for(cpu: Duration) {
        let until = thread_cpu_time() + cpu;
        while thread_cpu_time() < until {
            std::hint::spin_loop();
        }
    }

    /// Merge slows down only for foreground work: a thread that sleeps is
    /// not busy, nor one whose time goes to merge steps; one that computes
    /// is (given the CPU: other tests share it, so a few windows may pass).
    #[test]
    fn pace_counts_foreground_cpu_time_and_not_merge_steps() {
        let window = PACE_WINDOW + PACE_WINDOW / 2;
        let mut pace = Pace::new();
        std::thread::sleep(window);
        assert!(!pace.busy(), "asleep");
        for _ in 0..5 {
            futures::executor::block_on(pace.merge_step(async { spin_for(window) }));
            assert!(!pace.busy(), "merging");
        }
        let busy = (0..50).any(|_| {
            spin_for(window);
            pace.busy()
        });
        assert!(busy, "computing");
        std::thread::sleep(window);
        assert!(!pace.busy(), "asleep again");
    }

    #[test]
    fn run_local_runs_futures_that_are_not_send_on_the_store_thread() {
        let dir = tempfile::tempdir().unwrap();
        let t = store_thread(
            dir.path(),
            StoreOptions {
                shard_id: 7,
                ..Default::default()
            },
            Arc::new(Clock::new()),
        );
        let got = futures::executor::block_on(t.run_local(|| async {
            let held_across_await = std::rc::Rc::new(3);
            tokio::task::yield_now().await;
            (
                std::thread::current().name().map(str::to_owned),
                *held_across_await,
            )
        }))
        .unwrap();
        assert_eq!(got, (Some("flashkv-store-7".to_owned()), 3));
        t.shutdown().unwrap();
    }

    /// A storage task told to close stops although handles to it remain
    /// (a shutdown's drain period is over), with what it acknowledged
    /// written; the remaining handles then find it gone.
    #[test]
    fn a_closed_storage_task_stops_while_handles_remain() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(Clock::new());
        let t = store_thread(
            dir.path(),
            StoreOptions {
                sync: SyncPolicy::None,
                ..Default::default()
            },
            clock.clone(),
        );
        let kept = t.handle.clone();
        futures::executor::block_on(kept.put(b"k", b"v")).unwrap();
        assert!(futures::executor::block_on(kept.closer().close()));
        // The thread ends with a handle still held.
        t.join.join().unwrap().unwrap();
        assert!(matches!(
            futures::executor::block_on(kept.put(b"k", b"w")),
            Err(Error::Unavailable(_))
        ));
        assert!(!futures::executor::block_on(kept.closer().close()));
        drop(kept);
        let t = store_thread(dir.path(), StoreOptions::default(), clock);
        assert_eq!(t.handle.reader().get(b"k").unwrap().unwrap().value, b"v");
        t.shutdown().unwrap();
    }

    /// A handle knows whether its storage task runs on the calling thread
    /// (a cross-shard commit picks its last participant by it).
    #[test]
    fn a_handle_knows_the_thread_of_its_storage_task() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let clock = Arc::new(Clock::new());
        let ts: Vec<StoreThread> = dirs
            .iter()
            .map(|d| store_thread(d.path(), StoreOptions::default(), clock.clone()))
            .collect();
        let handles = [ts[0].handle.clone(), ts[1].handle.clone()];
        assert!(!handles[0].is_here() && !handles[1].is_here());
        let on_first = futures::executor::block_on(
            ts[0].run_local(move || async move { handles.map(|h| h.is_here()) }),
        )
        .unwrap();
        assert_eq!(on_first, [true, false]);
        for t in ts {
            t.shutdown().unwrap();
        }
    }

    /// A coordinator on a storage task's thread locks there without a
    /// message while the task waits: the locks are the task's (a request
    /// it is sent finds them held), validation sees the store's writes, a
    /// failed validation leaves nothing locked; off the task's thread, or
    /// where a lock is held, it declines.
    #[test]
    fn a_lock_taken_on_the_storage_tasks_thread_is_in_its_lock_table() {
        let dir = tempfile::tempdir().unwrap();
        let t = store_thread(dir.path(), StoreOptions::default(), Arc::new(Clock::new()));
        let h = t.handle.clone();
        let v1 = futures::executor::block_on(h.put(b"k", b"1")).unwrap();
        let req = LockRequest {
            write: vec![b"k".to_vec()],
            read: vec![b"k".to_vec()],
            ranges: vec![],
        };
        assert_eq!(
            h.try_lock_here(1, v1, &req),
            None,
            "not on the task's thread"
        );
        let got = futures::executor::block_on(t.run_local(move || async move {
            // A round trip: the task has run and waits for requests again.
            h.stats().await.unwrap();
            let first = h.try_lock_here(7, v1, &req);
            let asked = h.lock(8, v1, req.clone(), Instant::now()).await.unwrap();
            let held = h.try_lock_here(11, v1, &req);
            h.release(7).await.unwrap();
            h.stats().await.unwrap();
            let stale = h.try_lock_here(9, v1 - 1, &req);
            let after = h.try_lock_here(10, v1, &req);
            (first, asked, stale, after, held)
        }))
        .unwrap();
        assert_eq!(got.4, None, "a held lock: the task is asked");
        assert_eq!(got.0, Some(LockOutcome::Locked));
        assert_eq!(
            got.1,
            LockOutcome::Timeout { holder: 7 },
            "the task sees the lock"
        );
        assert_eq!(
            got.2,
            Some(LockOutcome::Changed {
                key: b"k".to_vec(),
                version: v1
            })
        );
        assert_eq!(
            got.3,
            Some(LockOutcome::Locked),
            "a failed validation keeps no lock"
        );
        t.shutdown().unwrap();
    }

    /// The lock table is shared only while the task waits for requests: a
    /// write the task has taken in (here one it holds while it gathers a
    /// group under `sync=always`) is never passed over by a lock taken on
    /// its thread. The lock is declined, or validation sees the write, or
    /// the write waits for the lock; it is never written under it.
    #[test]
    fn a_lock_taken_on_the_tasks_thread_never_passes_over_a_write_it_took_in() {
        let dir = tempfile::tempdir().unwrap();
        let t = store_thread(
            dir.path(),
            StoreOptions {
                sync: SyncPolicy::Always,
                ..Default::default()
            },
            Arc::new(Clock::new()),
        );
        let h = t.handle.clone();
        let rounds = futures::executor::block_on(t.run_local(move || async move {
            let put = |k: &[u8]| Batch {
                ops: vec![Op::Put {
                    key: k.to_vec(),
                    value: b"v".to_vec(),
                    expires_at_ms: None,
                }],
                conditions: vec![],
            };
            let req = LockRequest {
                write: vec![b"k".to_vec()],
                read: vec![b"k".to_vec()],
                ranges: vec![],
            };
            let mut rounds = Vec::new();
            for txn in 1..=10 {
                // A group of two, so that the task waits for a second
                // write to join the next one.
                let a = h.submit(put(b"a")).await.unwrap();
                let b = h.submit(put(b"b")).await.unwrap();
                a.wait().await.unwrap();
                let start = match b.wait().await.unwrap() {
                    Outcome::Committed { version, .. } => version,
                    other => panic!("{other:?}"),
                };
                let mut c = h.submit(put(b"k")).await.unwrap();
                tokio::task::yield_now().await;
                let got = h.try_lock_here(txn, start, &req);
                let mut written_under_lock = false;
                if got == Some(LockOutcome::Locked) {
                    let until = Instant::now() + Duration::from_millis(100);
                    while Instant::now() < until && !written_under_lock {
                        written_under_lock = c.0.try_recv().is_ok();
                        tokio::task::yield_now().await;
                    }
                    h.release(txn).await.unwrap();
                }
                if !written_under_lock {
                    c.wait().await.unwrap();
                }
                rounds.push((got, written_under_lock));
            }
            rounds
        }))
        .unwrap();
        for (got, written_under_lock) in &rounds {
            assert!(
                !written_under_lock,
                "written under a lock taken after it: {rounds:?}"
            );
            assert!(
                !matches!(got, Some(LockOutcome::Timeout { .. })),
                "{rounds:?}"
            );
        }
        t.shutdown().unwrap();
    }

    #[test]
    fn a_merge_step_copies_what_the_rate_allows_since_the_last_one() {
        let rate = 128 << 20;
        // One tick at the default rate: about 131 KiB.
        assert_eq!(merge_budget(rate, MERGE_TICK), 134_217);
        assert_eq!(merge_budget(rate, 2 * MERGE_TICK), 268_435);
        // A late tick makes up for at most MERGE_CATCH_UP.
        assert_eq!(
            merge_budget(rate, Duration::from_secs(5)),
            merge_budget(rate, MERGE_CATCH_UP)
        );
        assert_eq!(merge_budget(rate, MERGE_CATCH_UP), 536_870);
        // A slow rate or no time still copies something.
        assert_eq!(merge_budget(1024, MERGE_TICK), 4096);
        assert_eq!(merge_budget(rate, Duration::ZERO), 4096);
    }

    #[test]
    fn one_writer_never_waits() {
        let mut g = Gather::default();
        assert!(!g.wait_for_more(1, false), "nothing known yet");
        g.ran(1, Duration::from_millis(1));
        assert!(!g.wait_for_more(1, false));
        assert!(!g.wait_for_more(1, true));
    }

    #[test]
    fn waits_for_the_last_groups_writers_and_a_queued_cohort() {
        let mut g = Gather::default();
        g.ran(64, Duration::from_millis(1));
        assert!(g.wait_for_more(10, false));
        assert!(g.wait_for_more(63, false));
        assert!(!g.wait_for_more(64, false), "all back");
        // Two cohorts of 32: the queued one waits for the other as well.
        g.ran(32, Duration::from_millis(1));
        assert!(g.wait_for_more(32, true));
        assert_eq!(g.expect, 64);
        assert!(!g.wait_for_more(64, true));
        // Nothing ready: nothing to gather for.
        g.ran(64, Duration::from_millis(1));
        assert!(!g.wait_for_more(0, false));
    }

    #[test]
    fn the_wait_ends_at_the_last_sync_or_the_cap() {
        let mut g = Gather::default();
        g.ran(64, Duration::from_micros(100));
        let t = Instant::now();
        while g.wait_for_more(1, false) {
            std::hint::spin_loop();
        }
        let waited = t.elapsed();
        assert!(waited >= Duration::from_micros(100), "{waited:?}");
        assert!(waited < Duration::from_millis(50), "{waited:?}");
        g.ran(64, Duration::from_secs(1));
        assert!(g.wait_for_more(1, false));
        assert!(g.deadline.unwrap() <= Instant::now() + GATHER_MAX);
    }
}
