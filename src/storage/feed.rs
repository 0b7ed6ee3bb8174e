//! The change feed behind `Watch`: every write published by any shard,
//! with its version, while someone watches.
//!
//! * Off by default: a write checks one atomic flag and records nothing.
//!   The first watcher turns it on; it stays on for [`LINGER`] after the
//!   last watcher leaves, so a client that reconnects can resume.
//! * Recorded changes go to a bounded history (by count and bytes; the
//!   oldest are dropped first) and to a broadcast channel for live
//!   watchers. [`Feed::complete_after`] says from which version on the
//!   history is complete; a watch that asks to start at or below it is
//!   refused with the version it could start from.
//! * Shards publish out of version order (a cross-shard commit's version
//!   is taken before its parts are applied), so a watcher delivers only up
//!   to the clock's watermark, in version order: nothing at or below the
//!   watermark can still appear. A change is recorded before its writer
//!   drops its floor, so once the watermark passes a version, its changes
//!   are in the channel. [`Ordered`] keeps a watcher's changes until then.
//! * A cross-shard commit one of whose parts failed to apply passes the
//!   watermark still hidden (a restart completes it): a watcher stops
//!   there with an error rather than deliver the parts that were applied.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::clock::Clock;

/// How long the feed keeps recording after the last watcher left.
pub const LINGER: Duration = Duration::from_secs(300);
/// Most changes kept in the history.
pub const HISTORY_CHANGES: usize = 100_000;
/// Most bytes (keys and values) kept in the history.
pub const HISTORY_BYTES: usize = 64 << 20;
/// Changes a live watcher may fall behind before it is cut off.
pub const LAG: usize = 16_384;

/// One published write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Commit version.
    pub version: u64,
    /// Key.
    pub key: Vec<u8>,
    /// New value; `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: Option<u64>,
}

impl Change {
    fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, |v| v.len()) + 64
    }
}

struct History {
    changes: VecDeque<Arc<Change>>,
    bytes: usize,
    /// Every change with a higher version is in `changes` (u64::MAX: off).
    complete_after: u64,
}

/// The feed; one per daemon (it lives in the clock, which every shard
/// shares).
pub struct Feed {
    on: AtomicBool,
    watchers: AtomicUsize,
    left_at_ms: AtomicU64,
    history: Mutex<History>,
    tx: broadcast::Sender<Arc<Change>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("on", &self.on.load(Ordering::Relaxed))
            .field("watchers", &self.watchers.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            on: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            left_at_ms: AtomicU64::new(0),
            history: Mutex::new(History {
                changes: VecDeque::new(),
                bytes: 0,
                complete_after: u64::MAX,
            }),
            tx: broadcast::channel(LAG).0,
        }
    }
}

/// A watcher's registration; dropping it leaves.
pub struct Watcher<'f> {
    feed: &'f Feed,
    /// Live changes.
    pub rx: broadcast::Receiver<Arc<Change>>,
}

impl Drop for Watcher<'_> {
    fn drop(&mut self) {
        if self.feed.watchers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.feed
                .left_at_ms
                .store(crate::storage::store::now_ms(), Ordering::SeqCst);
        }
    }
}

impl Feed {
    /// Whether writes are being recorded.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Records published writes (called by the shard that published them,
    /// before it withdraws its writer floor).
    pub fn record(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut h = self.history.lock().expect("feed lock");
        for c in changes {
            let c = Arc::new(c);
            h.bytes += c.bytes();
            h.changes.push_back(c.clone());
            let _ = self.tx.send(c);
        }
        while h.changes.len() > HISTORY_CHANGES || h.bytes > HISTORY_BYTES {
            let Some(old) = h.changes.pop_front() else {
                break;
            };
            h.bytes -= old.bytes();
            h.complete_after = h.complete_after.max(old.version);
        }
    }

    /// Joins as a watcher, turning the feed on if it is off. Once this
    /// returns, every change with a version above [`Feed::complete_after`]
    /// is in the history or will come through the receiver.
    pub async fn watch(&self, clock: &crate::clock::Clock) -> Watcher<'_> {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        let rx = self.tx.subscribe();
        if !self.on.swap(true, Ordering::SeqCst) {
            // Writers that checked the flag before it was set took versions
            // up to `c` at most; once those are published, the history is
            // complete above `c`.
            let c = clock.current();
            clock.visible(c).await;
            let mut h = self.history.lock().expect("feed lock");
            h.complete_after = h.complete_after.min(c);
            if h.complete_after == u64::MAX {
                h.complete_after = c;
            }
        } else {
            // Another watcher may be turning it on right now.
            while self.complete_after() == u64::MAX {
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        }
        Watcher { feed: self, rx }
    }

    /// The version above which the history is complete (u64::MAX: off).
    pub fn complete_after(&self) -> u64 {
        self.history.lock().expect("feed lock").complete_after
    }

    /// The recorded changes with a version >= `from`, in recording order.
    pub fn history_from(&self, from: u64) -> Vec<Arc<Change>> {
        let h = self.history.lock().expect("feed lock");
        h.changes
            .iter()
            .filter(|c| c.version >= from)
            .cloned()
            .collect()
    }

    /// Turns the feed off once no one has watched for [`LINGER`] (the
    /// storage tasks call this now and then).
    pub fn maybe_off(&self) {
        if !self.is_on() || self.watchers.load(Ordering::SeqCst) > 0 {
            return;
        }
        let left = self.left_at_ms.load(Ordering::SeqCst);
        if crate::storage::store::now_ms().saturating_sub(left) < LINGER.as_millis() as u64 {
            return;
        }
        let mut h = self.history.lock().expect("feed lock");
        if self.watchers.load(Ordering::SeqCst) > 0 {
            return;
        }
        self.on.store(false, Ordering::SeqCst);
        h.changes.clear();
        h.bytes = 0;
        h.complete_after = u64::MAX;
    }
}

/// A watcher's changes between the feed and its client: kept from the
/// start version on, released in version order once the watermark passes
/// them (the delivery rule in the module docs).
#[derive(Debug)]
pub struct Ordered {
    pending: BTreeMap<(u64, Vec<u8>), Arc<Change>>,
    next: u64,
}

impl Ordered {
    /// Delivers changes from version `start` on.
    pub fn new(start: u64) -> Self {
        Ordered {
            pending: BTreeMap::new(),
            next: start,
        }
    }

    /// The lowest version not yet released: where a resumed watch starts.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Keeps `c` if it is not older than what was already released (the
    /// caller filters by key).
    pub fn offer(&mut self, c: Arc<Change>) {
        if c.version >= self.next {
            self.pending.insert((c.version, c.key.clone()), c);
        }
    }

    /// The kept changes at or below the watermark `mark`, in version
    /// order, and the version it stopped at if one belongs to a
    /// cross-shard commit that stays hidden past the watermark: a part of
    /// it failed to apply, so its other parts must not go out alone (a
    /// restart completes it).
    pub fn release(&mut self, mark: u64, clock: &Clock) -> (Vec<Arc<Change>>, Option<u64>) {
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let v = entry.key().0;
            if v > mark {
                break;
            }
            if clock.is_hidden(v) {
                self.next = v;
                return (out, Some(v));
            }
            out.push(entry.remove());
        }
        self.next = self.next.max(mark + 1);
        (out, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_go_out_in_version_order_below_the_watermark_and_stop_at_a_failed_commit() {
        let clock = Clock::new();
        let a = clock.next();
        let floor = clock.enter_writer();
        let b = clock.next();
        let mut o = Ordered::new(1);
        o.offer(Arc::new(ch(b, "b")));
        o.offer(Arc::new(ch(a, "a")));
        let (out, stop) = o.release(clock.watermark(), &clock);
        assert_eq!(
            (out.iter().map(|c| c.version).collect::<Vec<_>>(), stop),
            (vec![a], None),
            "b is still being published"
        );
        drop(floor);
        let x = clock.next_unsettled();
        o.offer(Arc::new(ch(x, "x")));
        let (out, stop) = o.release(clock.watermark(), &clock);
        assert_eq!(out.iter().map(|c| c.version).collect::<Vec<_>>(), vec![b]);
        assert_eq!(stop, None, "x is in flight: not past the watermark");
        assert_eq!(o.next(), x, "resume point");
        o.offer(Arc::new(ch(a, "a")));
        // A part of x failed: x leaves the in-flight set but stays hidden.
        clock.unpublished(x);
        let y = clock.next();
        o.offer(Arc::new(ch(y, "y")));
        let (out, stop) = o.release(clock.watermark(), &clock);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(stop, Some(x));
        assert_eq!(o.next(), x);
        clock.reveal(x);
        let (out, stop) = o.release(clock.watermark(), &clock);
        assert_eq!(
            (out.iter().map(|c| c.version).collect::<Vec<_>>(), stop),
            (vec![x, y], None)
        );
        assert_eq!(o.next(), y + 1);
    }

    fn ch(v: u64, k: &str) -> Change {
        Change {
            version: v,
            key: k.as_bytes().to_vec(),
            value: Some(vec![0; 10]),
            expires_at_ms: None,
        }
    }

    #[test]
    fn the_feed_records_only_while_watched_and_bounds_its_history() {
        let clock = crate::clock::Clock::new();
        let feed = Feed::default();
        assert!(!feed.is_on());
        clock.observe(5);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut w = rt.block_on(feed.watch(&clock));
        assert!(feed.is_on());
        assert_eq!(feed.complete_after(), 5);
        feed.record(vec![ch(6, "a"), ch(7, "b")]);
        assert_eq!(w.rx.try_recv().unwrap().version, 6);
        assert_eq!(feed.history_from(7).len(), 1);
        feed.record(
            (8..8 + HISTORY_CHANGES as u64)
                .map(|v| ch(v, "k"))
                .collect(),
        );
        assert!(
            feed.complete_after() >= 7,
            "evicting moves the complete point"
        );
        drop(w);
        feed.maybe_off();
        assert!(feed.is_on(), "it lingers after the last watcher");
    }
}
