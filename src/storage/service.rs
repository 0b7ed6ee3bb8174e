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
//! Timers in the same loop run the `interval` sync policy, merge steps (a
//! bounded number of bytes every [`MERGE_TICK`], so merge runs at its
//! configured rate and foreground requests interleave with it), and the
//! merge trigger checks, and the active expiry sweep (once a second).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::storage::io::{Io, IoEngine};
use crate::storage::options::{StoreOptions, SyncPolicy};
use crate::storage::store::{Batch, Outcome, RecoveryReport, Store, StoreReader, StoreStats};

/// Most batches committed together.
pub const MAX_GROUP: usize = 1024;
/// Interval between merge steps.
pub const MERGE_TICK: Duration = Duration::from_millis(10);
const TRIGGER_CHECK: Duration = Duration::from_secs(1);
/// Index entries the active expiry sweep examines per second.
const SWEEP_BUDGET: usize = 20_000;

/// A request to the storage task.
pub enum Command {
    /// Commit a batch.
    Write(Batch, oneshot::Sender<Result<Outcome>>),
    /// Merge every sealed segment now (at the configured rate); answered
    /// when it is done with whether a merge ran.
    Compact(oneshot::Sender<Result<bool>>),
    /// Write a consistent copy into a new directory.
    Checkpoint(PathBuf, oneshot::Sender<Result<()>>),
    /// Storage figures.
    Stats(oneshot::Sender<StoreStats>),
    /// fdatasync anything unsynced.
    Sync(oneshot::Sender<Result<()>>),
}

/// The outcome of a submitted batch, to be awaited.
pub struct PendingWrite(oneshot::Receiver<Result<Outcome>>);

impl PendingWrite {
    /// Waits for the outcome.
    pub async fn wait(self) -> Result<Outcome> {
        self.0.await.map_err(|_| gone())?
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

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
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

    /// Requests waiting in the storage task's inbox.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Runs the storage task until every handle is dropped, then closes the
/// store (syncing what is unsynced).
pub async fn serve(mut store: Store, mut rx: mpsc::Receiver<Command>) -> Result<()> {
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
    let merge_budget = (store.options().merge.rate_bytes_per_sec as u128 * MERGE_TICK.as_millis()
        / 1000)
        .max(4096) as u64;
    let schedule = store.options().merge.interval;
    let mut last_scheduled = Instant::now();
    let mut compact_waiters: Vec<oneshot::Sender<Result<bool>>> = Vec::new();
    let mut compact_ran = false;

    let mut batches = Vec::with_capacity(MAX_GROUP);
    let mut replies = Vec::with_capacity(MAX_GROUP);
    let mut others = Vec::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let mut next = Some(cmd);
                while let Some(cmd) = next.take() {
                    match cmd {
                        Command::Write(b, reply) => {
                            batches.push(b);
                            replies.push(reply);
                        }
                        other => others.push(other),
                    }
                    if batches.len() < MAX_GROUP {
                        next = rx.try_recv().ok();
                    }
                }
                if !batches.is_empty() {
                    let outcomes = store.write_group(std::mem::take(&mut batches)).await;
                    for (reply, outcome) in replies.drain(..).zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                for cmd in others.drain(..) {
                    match cmd {
                        Command::Write(..) => unreachable!("writes are grouped above"),
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
                            let _ = reply.send(store.checkpoint(&path).await);
                        }
                        Command::Stats(reply) => {
                            let _ = reply.send(store.stats());
                        }
                        Command::Sync(reply) => {
                            let _ = reply.send(store.sync().await);
                        }
                    }
                }
            }
            _ = sync_tick.tick(), if sync_every.is_some() => {
                if let Err(e) = store.sync().await {
                    tracing::error!(error = %e, "background fdatasync failed; the shard now refuses writes");
                }
            }
            _ = merge_tick.tick(), if store.merge_running() => {
                match store.merge_step(merge_budget).await {
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
            _ = trigger_tick.tick() => {
                let started = if schedule.is_some_and(|d| last_scheduled.elapsed() >= d) {
                    last_scheduled = Instant::now();
                    store.start_scheduled_merge()
                } else {
                    store.maybe_start_merge()
                };
                if let Err(e) = started {
                    tracing::warn!(error = %e, "merge trigger");
                }
                if let Err(e) = store.sweep_expired(SWEEP_BUDGET).await {
                    tracing::warn!(error = %e, "expiry sweep");
                }
            }
        }
    }
    store.close().await
}

/// A storage task running on its own thread (tests, benchmarks, tools; the
/// daemon runs the task on its shard threads instead).
pub struct StoreThread {
    /// Handle to the task.
    pub handle: StoreHandle,
    /// What recovery did.
    pub report: RecoveryReport,
    join: std::thread::JoinHandle<Result<()>>,
}

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
                    serve(store, rx).await
                })
            })
            .map_err(|e| Error::io("spawn thread", "flashkv-store", e))?;
        match ready_rx.recv() {
            Ok(Ok((handle, report))) => Ok(StoreThread {
                handle,
                report,
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

    /// Drops this handle and waits for the task to close the store (other
    /// clones of the handle must be gone too).
    pub fn shutdown(self) -> Result<()> {
        drop(self.handle);
        self.join
            .join()
            .map_err(|_| Error::Unavailable("storage thread panicked".into()))?
    }
}
