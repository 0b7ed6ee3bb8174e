//! The version clock of a daemon, shared by every shard: commit versions,
//! the visibility watermark snapshots start at, the registry of open
//! snapshots, and the cross-shard settlement floor.
//!
//! * Every committed write takes the next version. At start-up the clock is
//!   moved past the highest version found in any shard's log, so versions
//!   only ever grow across restarts.
//! * A version is *visible* once everything at or below it is published in
//!   the index. Writers announce a floor (the lowest version they may still
//!   publish) before taking versions and withdraw it after publishing; the
//!   watermark is the clock minus anything still in flight. A snapshot
//!   started at the watermark therefore never sees a write appear later at
//!   a version it already covers.
//! * Open snapshots are registered so that the index keeps the old versions
//!   they may read ([`Clock::horizon`] for writers, [`Clock::readers`] for
//!   the periodic exact trim), and merge keeps what they need.
//! * Cross-shard commits stay in flight until every participant has its part
//!   durably; the [`Clock::settled`] floor (everything at or below it is
//!   settled everywhere) is what recovery and merge rely on once persisted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonic version counter with visibility tracking.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicU64,
    /// Writers in flight, unsettled and hidden cross-shard commits: one
    /// lock, as a cross-shard commit enters all three at once and leaves
    /// them together under `sync=none`.
    versions: Mutex<Versions>,
    /// Open snapshots.
    snapshots: Mutex<Snapshots>,
    /// Oldest open snapshot (u64::MAX: none). Read by writers on every
    /// overwrite, so it is kept apart from the map.
    horizon: AtomicU64,
    /// The settled floor last made durable (recovery and merge use it).
    persisted_settled: AtomicU64,
    /// Whether cross-shard commits are tracked (a daemon with a floor file).
    tracked: std::sync::atomic::AtomicBool,
    /// The change feed of every shard (Watch); ordered by these versions.
    pub feed: crate::storage::feed::Feed,
    /// Tasks waiting for the watermark to reach a version (that version ->
    /// their wake-ups). Each is woken once, when the watermark passes its
    /// version. (Until session 19 a `Notify` woke every waiter whenever the
    /// watermark may have moved: in the cross-shard commit benchmark a
    /// snapshot's start polled the watermark 6.6 times on average, woken
    /// across threads each time.)
    visible: Mutex<BTreeMap<u64, Vec<tokio::sync::oneshot::Sender<()>>>>,
    /// The lowest version waited for in `visible` (u64::MAX: none), so that
    /// a writer that moves the watermark looks at the waiters only when one
    /// may be due.
    visible_min: AtomicU64,
    /// Highest version any writer has started to publish.
    publishing: AtomicU64,
    /// Lowest hidden version (u64::MAX: none), kept in step with
    /// `Versions::hidden` so plain reads check it without a lock.
    min_hidden: AtomicU64,
    /// Woken whenever a cross-shard commit is revealed (its participants
    /// then release its locks).
    revealed: tokio::sync::Notify,
    /// Cross-shard commits revealed so far (counted after each leaves
    /// `hidden`), so a participant looks at `hidden` only after a reveal.
    reveals: AtomicU64,
}

/// Open snapshots (version -> count): those whose start is fixed, and
/// those still opening, at a lower bound of their start.
#[derive(Debug, Default)]
struct Snapshots {
    fixed: BTreeMap<u64, usize>,
    opening: BTreeMap<u64, usize>,
}

impl Snapshots {
    fn oldest(&self) -> u64 {
        let first = |m: &BTreeMap<u64, usize>| m.keys().next().copied().unwrap_or(u64::MAX);
        first(&self.fixed).min(first(&self.opening))
    }
}

/// What old versions open snapshots can read (see [`Clock::readers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readers {
    /// Versions newer than this may be read by a snapshot still opening
    /// (u64::MAX: none), so what they replaced stays.
    pub floor: u64,
    /// The starts of the open snapshots whose start is fixed, ascending:
    /// each reads the newest version at or below its start.
    pub points: Vec<u64>,
}

/// Version sets of [`Clock`] (version -> count).
#[derive(Debug, Default)]
struct Versions {
    /// Floors of writers in flight.
    inflight: BTreeMap<u64, usize>,
    /// Cross-shard commits not yet durable on every participant.
    unsettled: BTreeMap<u64, usize>,
    /// Cross-shard commits whose parts are not all applied yet: hidden
    /// from plain reads.
    hidden: BTreeMap<u64, usize>,
}

/// A registered writer floor; dropping it withdraws the floor.
#[must_use]
pub struct Floor<'c> {
    clock: &'c Clock,
    at: u64,
}

impl Drop for Floor<'_> {
    fn drop(&mut self) {
        take_one(&mut self.clock.versions().inflight, self.at);
        self.clock.wake_visible();
    }
}

fn take_one(m: &mut BTreeMap<u64, usize>, at: u64) {
    if let Some(n) = m.get_mut(&at) {
        *n -= 1;
        if *n == 0 {
            m.remove(&at);
        }
    }
}

fn add_one(m: &mut BTreeMap<u64, usize>, at: u64) {
    *m.entry(at).or_insert(0) += 1;
}

impl Clock {
    /// A clock whose next version is 1.
    pub fn new() -> Self {
        Clock {
            horizon: AtomicU64::new(u64::MAX),
            min_hidden: AtomicU64::new(u64::MAX),
            visible_min: AtomicU64::new(u64::MAX),
            ..Default::default()
        }
    }

    /// Takes the next version.
    pub fn next(&self) -> u64 {
        self.last.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The last version handed out.
    pub fn current(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }

    /// Moves the clock to at least `version` (recovery).
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::SeqCst);
        self.publishing.fetch_max(version, Ordering::SeqCst);
    }

    /// Announces a writer that will take versions from the clock and
    /// publish them before dropping the returned floor.
    pub fn enter_writer(&self) -> Floor<'_> {
        let mut m = self.versions();
        let at = self.current() + 1;
        add_one(&mut m.inflight, at);
        Floor { clock: self, at }
    }

    /// Takes a version for a cross-shard commit: in flight and hidden until
    /// [`Clock::reveal`], unsettled until [`Clock::settle_durable`].
    pub fn next_unsettled(&self) -> u64 {
        let mut m = self.versions();
        let v = self.next();
        add_one(&mut m.inflight, v);
        add_one(&mut m.unsettled, v);
        add_one(&mut m.hidden, v);
        self.min_hidden.store(
            *m.hidden.keys().next().expect("just added"),
            Ordering::SeqCst,
        );
        v
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, Versions> {
        self.versions.lock().expect("clock maps are never poisoned")
    }

    /// Every part of cross-shard commit `v` is applied: it becomes visible
    /// to plain reads, all at once.
    pub fn reveal(&self, v: u64) {
        self.reveal_settling(v, false);
    }

    /// [`Clock::reveal`], and [`Clock::settle_durable`] if `durable`, under
    /// one lock.
    fn reveal_settling(&self, v: u64, durable: bool) {
        {
            let mut m = self.versions();
            take_one(&mut m.hidden, v);
            self.min_hidden.store(
                m.hidden.keys().next().copied().unwrap_or(u64::MAX),
                Ordering::SeqCst,
            );
            // Counted after it leaves `hidden` (see `reveals`), and before
            // the watermark can pass it.
            self.reveals.fetch_add(1, Ordering::SeqCst);
            take_one(&mut m.inflight, v);
            if durable {
                take_one(&mut m.unsettled, v);
            }
        }
        self.wake_visible();
        self.revealed.notify_waiters();
    }

    /// A future that completes at the next [`Clock::reveal`] after its
    /// creation (`notify_waiters` semantics: no need to poll or enable it
    /// first).
    pub fn next_reveal(&self) -> tokio::sync::futures::Notified<'_> {
        self.revealed.notified()
    }

    /// Every part of cross-shard commit `v` is durable: the settled floor
    /// may pass it.
    pub fn settle_durable(&self, v: u64) {
        take_one(&mut self.versions().unsettled, v);
    }

    /// [`Clock::reveal`] and [`Clock::settle_durable`] at once.
    pub fn settle(&self, v: u64) {
        self.reveal_settling(v, true);
    }

    /// The lowest hidden cross-shard commit version (u64::MAX: none).
    pub fn min_hidden(&self) -> u64 {
        let m = self.min_hidden.load(Ordering::SeqCst);
        if m == 0 { u64::MAX } else { m }
    }

    /// How many cross-shard commits have been revealed: a commit hidden
    /// when this read `n` can have been revealed since only if it reads
    /// more now.
    pub fn reveals(&self) -> u64 {
        self.reveals.load(Ordering::SeqCst)
    }

    /// Runs `f` with a test of whether a cross-shard commit is still
    /// hidden from plain reads, taking the lock once for all its tests.
    pub fn with_hidden<R>(&self, f: impl FnOnce(&dyn Fn(u64) -> bool) -> R) -> R {
        let min = self.min_hidden();
        let m = self.versions();
        f(&|v| v >= min && m.hidden.contains_key(&v))
    }

    /// Whether cross-shard commit `v` is still hidden from plain reads.
    pub fn is_hidden(&self, v: u64) -> bool {
        // Below the lowest hidden version without taking the lock.
        v >= self.min_hidden() && self.with_hidden(|hidden| hidden(v))
    }

    /// Marks cross-shard commit `v` published but not settled (a part
    /// failed to apply; a restart re-applies it from its redo records).
    pub fn unpublished(&self, v: u64) {
        take_one(&mut self.versions().inflight, v);
        self.wake_visible();
    }

    /// Waits until the watermark reaches `v`.
    pub async fn visible(&self, v: u64) {
        loop {
            if self.watermark() >= v {
                return;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            {
                let mut m = self.visible.lock().expect("clock maps are never poisoned");
                m.entry(v).or_default().push(tx);
                self.visible_min.fetch_min(v, Ordering::SeqCst);
            }
            // Either a writer that moved the watermark past `v` saw this
            // registration (and wakes it), or this check sees the move:
            // each side publishes before it looks at the other's.
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.watermark() >= v {
                // (The registration goes at the next wake-up.)
                return;
            }
            let _ = rx.await;
        }
    }

    /// Wakes the tasks waiting for versions the watermark has reached (a
    /// writer calls it after it moved the watermark).
    fn wake_visible(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        let min = self.visible_min.load(Ordering::SeqCst);
        if min == u64::MAX {
            return;
        }
        let w = self.watermark();
        if w < min {
            return;
        }
        let due = {
            let mut m = self.visible.lock().expect("clock maps are never poisoned");
            let later = match w.checked_add(1) {
                Some(next) => m.split_off(&next),
                None => BTreeMap::new(),
            };
            let due = std::mem::replace(&mut *m, later);
            self.visible_min.store(
                m.keys().next().copied().unwrap_or(u64::MAX),
                Ordering::SeqCst,
            );
            due
        };
        for tx in due.into_values().flatten() {
            let _ = tx.send(());
        }
    }

    /// Announces that versions up to `v` are being published (call before
    /// checking [`Clock::horizon`] for them).
    pub fn publishing(&self, v: u64) {
        self.publishing.fetch_max(v, Ordering::SeqCst);
    }

    /// The highest version below which everything is published.
    pub fn watermark(&self) -> u64 {
        let c = self.current();
        let m = self.versions();
        match m.inflight.keys().next() {
            Some(&low) => c.min(low - 1),
            None => c,
        }
    }

    /// The highest version at or below which every cross-shard commit is
    /// durable on all its participants.
    pub fn settled(&self) -> u64 {
        let c = self.current();
        let m = self.versions();
        match m.unsettled.keys().next() {
            Some(&low) => c.min(low - 1),
            None => c,
        }
    }

    /// The settled floor as last persisted; u64::MAX where no cross-shard
    /// commit can exist (a store opened on its own, not by a daemon).
    pub fn persisted_settled(&self) -> u64 {
        if self.tracked.load(Ordering::SeqCst) {
            self.persisted_settled.load(Ordering::SeqCst)
        } else {
            u64::MAX
        }
    }

    /// Turns on settlement tracking with the floor read from disk.
    pub fn track_settlement(&self, persisted: u64) {
        self.persisted_settled.store(persisted, Ordering::SeqCst);
        self.tracked.store(true, Ordering::SeqCst);
    }

    /// Records that `v` is now the durable settled floor.
    pub fn set_persisted_settled(&self, v: u64) {
        self.persisted_settled.fetch_max(v, Ordering::SeqCst);
    }

    /// Registers a snapshot; its start version (the highest version a
    /// writer had begun to publish when it registered) is fixed by
    /// [`SnapshotReg::fix`] once everything up to it is visible.
    ///
    /// Until then it is registered at a lower bound of that start: what
    /// writers had begun to publish just before. A writer that sees the
    /// registration keeps the newest version at or below the bound and all
    /// above it, so also what the start will need. (Until session 24 the
    /// provisional start was 0: with 128 transactions in flight some
    /// snapshot was nearly always at 0, version chains grew without bound,
    /// and walking them was half of a profile.)
    pub fn open_snapshot(self: &Arc<Self>) -> SnapshotReg {
        let at = self.publishing.load(Ordering::SeqCst);
        let mut m = self.snapshot_maps();
        add_one(&mut m.opening, at);
        self.horizon.store(m.oldest(), Ordering::SeqCst);
        drop(m);
        // A writer announces what it publishes before it checks the
        // horizon, so everything published without seeing the registration
        // has a version at most `target` (and `target >= at`: `publishing`
        // only grows).
        let target = self.publishing.load(Ordering::SeqCst);
        SnapshotReg {
            clock: self.clone(),
            at,
            target,
            fixed: false,
        }
    }

    fn snapshot_maps(&self) -> std::sync::MutexGuard<'_, Snapshots> {
        self.snapshots
            .lock()
            .expect("clock maps are never poisoned")
    }

    /// Moves a snapshot registered at `from` (fixed or opening) to its fixed
    /// start `to` (u64::MAX: closes it).
    fn move_snapshot(&self, from: (u64, bool), to: u64) {
        let mut m = self.snapshot_maps();
        take_one(if from.1 { &mut m.fixed } else { &mut m.opening }, from.0);
        if to != u64::MAX {
            add_one(&mut m.fixed, to);
        }
        self.horizon.store(m.oldest(), Ordering::SeqCst);
    }

    /// What open snapshots can read, for trimming version chains exactly
    /// (a version no snapshot reads goes even while an older snapshot
    /// stays open). Snapshots opened after this call read none of the old
    /// versions of keys published before it.
    pub fn readers(&self) -> Readers {
        let m = self.snapshot_maps();
        Readers {
            floor: m.opening.keys().next().copied().unwrap_or(u64::MAX),
            points: m.fixed.keys().copied().collect(),
        }
    }

    /// The oldest open snapshot's start version (u64::MAX: none). Writers
    /// keep the old versions of keys they overwrite while it is below the
    /// new version.
    pub fn horizon(&self) -> u64 {
        self.horizon.load(Ordering::SeqCst)
    }

    /// Open snapshots.
    pub fn open_snapshots(&self) -> usize {
        let m = self.snapshot_maps();
        m.fixed.values().chain(m.opening.values()).sum()
    }
}

/// An open snapshot registration; dropping it closes the snapshot.
pub struct SnapshotReg {
    clock: Arc<Clock>,
    at: u64,
    target: u64,
    /// Whether `at` is the fixed start (else a lower bound of it).
    fixed: bool,
}

impl SnapshotReg {
    /// Whether every version up to the snapshot's target is visible, so that
    /// [`SnapshotReg::fix`] may be called.
    pub fn ready(&self) -> bool {
        self.clock.watermark() >= self.target
    }

    /// Waits (yielding) until ready, then fixes the start version.
    pub async fn fixed(mut self) -> (Self, u64) {
        self.clock.visible(self.target).await;
        let v = self.fix();
        (self, v)
    }

    /// Fixes the start version (call once [`SnapshotReg::ready`]); returns it.
    pub fn fix(&mut self) -> u64 {
        debug_assert!(self.ready());
        if !self.fixed {
            self.clock.move_snapshot((self.at, false), self.target);
            (self.at, self.fixed) = (self.target, true);
        }
        self.at
    }
}

impl Drop for SnapshotReg {
    fn drop(&mut self) {
        self.clock.move_snapshot((self.at, self.fixed), u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_and_observe_moves_forward_only() {
        let c = Clock::new();
        assert_eq!(c.next(), 1);
        c.observe(10);
        c.observe(5);
        assert_eq!(c.next(), 11);
        assert_eq!(c.current(), 11);
    }

    #[test]
    fn watermark_stops_below_writers_in_flight() {
        let c = Clock::new();
        c.next();
        let f = c.enter_writer();
        let v = c.next();
        assert_eq!(v, 2);
        assert_eq!(c.watermark(), 1);
        let x = c.next_unsettled();
        assert_eq!(c.watermark(), 1);
        drop(f);
        assert_eq!(c.watermark(), x - 1);
        assert_eq!(c.settled(), x - 1);
        c.settle(x);
        assert_eq!(c.watermark(), x);
        assert_eq!(c.settled(), x);
    }

    /// A task waiting for a version is woken once the watermark reaches
    /// it, and not by moves of the watermark that leave it short.
    #[test]
    fn a_waiter_is_woken_when_the_watermark_reaches_its_version_only() {
        use futures::task::ArcWake;
        use std::future::Future;
        use std::task::{Context, Poll};

        #[derive(Default)]
        struct Count(AtomicU64);
        impl ArcWake for Count {
            fn wake_by_ref(arc: &Arc<Self>) {
                arc.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let c = Arc::new(Clock::new());
        let versions = [c.next_unsettled(), c.next_unsettled(), c.next_unsettled()];
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::new(Count::default())).collect();
        type Wait<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;
        let mut waits: Vec<Wait<'_>> = versions
            .iter()
            .map(|&v| Box::pin(c.visible(v)) as Wait<'_>)
            .collect();
        let poll = |i: usize, waits: &mut Vec<Wait<'_>>| {
            let waker = futures::task::waker(counts[i].clone());
            waits[i].as_mut().poll(&mut Context::from_waker(&waker)) == Poll::Ready(())
        };
        for i in 0..3 {
            assert!(!poll(i, &mut waits), "waiter {i} ready too early");
        }
        let woken = || {
            counts
                .iter()
                .map(|n| n.0.load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        };
        // The second commit revealed: the first still holds the watermark.
        c.reveal(versions[1]);
        assert_eq!(woken(), [0, 0, 0]);
        c.reveal(versions[0]);
        assert_eq!(woken(), [1, 1, 0]);
        assert!(poll(0, &mut waits) && poll(1, &mut waits));
        assert!(!poll(2, &mut waits));
        c.reveal(versions[2]);
        assert_eq!(woken(), [1, 1, 1]);
        assert!(poll(2, &mut waits));
        assert_eq!(c.visible.lock().unwrap().len(), 0, "no waiter left behind");
    }

    #[test]
    fn snapshots_set_the_horizon() {
        let c = Arc::new(Clock::new());
        c.observe(5);
        assert_eq!(c.horizon(), u64::MAX);
        let mut s = c.open_snapshot();
        assert_eq!(c.horizon(), 5);
        let opening = Readers {
            floor: 5,
            points: vec![],
        };
        assert_eq!(c.readers(), opening);
        assert!(s.ready());
        assert_eq!(s.fix(), 5);
        assert_eq!(c.horizon(), 5);
        let fixed = Readers {
            floor: u64::MAX,
            points: vec![5],
        };
        assert_eq!(c.readers(), fixed);
        c.observe(9);
        let mut t = c.open_snapshot();
        t.fix();
        assert_eq!(c.horizon(), 5);
        drop(s);
        assert_eq!(c.horizon(), 9);
        drop(t);
        assert_eq!(c.horizon(), u64::MAX);
        assert_eq!(c.open_snapshots(), 0);
        assert_eq!(c.readers().points, Vec::<u64>::new());
    }

    #[test]
    fn a_snapshot_waits_for_writers_that_publish_before_it() {
        let c = Arc::new(Clock::new());
        let f = c.enter_writer();
        let v = c.next();
        // Taken but not being published: the snapshot starts below it.
        let mut early = c.open_snapshot();
        assert!(early.ready());
        assert_eq!(early.fix(), 0);
        c.publishing(v);
        let mut s = c.open_snapshot();
        assert!(!s.ready(), "a writer may have published without seeing it");
        drop(f);
        assert!(s.ready());
        assert_eq!(s.fix(), v);
    }
}
