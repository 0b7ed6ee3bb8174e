//! The lock table of one shard: the 2PL half of FlashKV's transactions.
//!
//! Owned by the shard's storage task (one thread, so no latch is needed).
//! Two levels, as in a classic multiple-granularity scheme:
//!
//! * the shard: intention locks IS and IX, taken by every transaction that
//!   locks keys here, and S and X for shard-wide operations (a checkpoint
//!   takes S, so it waits for prepared writers and keeps them out);
//! * keys: S (a key read) and X (a key written), plus S on key ranges (the
//!   ranges a transaction scanned, so no phantom can appear in them before
//!   it commits).
//!
//! Requests are all-or-nothing: either every lock of a request is granted or
//! none is, and the caller learns which transaction is in the way. Waiting
//! is the storage task's business (it queues blocked requests and retries
//! them after a release); a transaction locks one shard at a time in
//! ascending shard order, with all its keys in one request, so waits cannot
//! form a cycle. Writers that take no locks (plain writes and single-shard
//! transactions, which run whole inside the storage task) ask
//! [`LockManager::blocks`] first and wait while it says yes.

use crate::storage::fasthash::FastMap;
use crate::storage::store::{KeyRange, key_in_range};

/// A lock mode on the shard level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardMode {
    /// Intention to read keys.
    IS,
    /// Intention to write keys.
    IX,
    /// Read the whole shard.
    S,
    /// Write the whole shard.
    X,
}

impl ShardMode {
    fn compatible(self, other: ShardMode) -> bool {
        use ShardMode::*;
        matches!(
            (self, other),
            (IS, IS) | (IS, IX) | (IS, S) | (IX, IS) | (IX, IX) | (S, IS) | (S, S)
        )
    }
}

/// What a transaction asks to lock on this shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockRequest {
    /// Keys to write (X).
    pub write: Vec<Vec<u8>>,
    /// Keys read (S).
    pub read: Vec<Vec<u8>>,
    /// Ranges scanned (S on the range).
    pub ranges: Vec<KeyRange>,
}

impl LockRequest {
    fn shard_mode(&self) -> ShardMode {
        if self.write.is_empty() {
            ShardMode::IS
        } else {
            ShardMode::IX
        }
    }
}

#[derive(Debug, Default)]
struct KeyLock {
    x: Option<u64>,
    s: Vec<u64>,
}

#[derive(Debug, Default)]
struct Held {
    shard: Option<ShardMode>,
    keys: Vec<Vec<u8>>,
}

/// The lock table; see the module docs.
#[derive(Debug, Default)]
pub struct LockManager {
    shard: Vec<(u64, ShardMode)>,
    keys: FastMap<Vec<u8>, KeyLock>,
    ranges: Vec<(u64, KeyRange)>,
    held: FastMap<u64, Held>,
}

fn in_range(k: &[u8], r: &KeyRange) -> bool {
    key_in_range(k, &r.0, &r.1)
}

impl LockManager {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Transactions holding locks.
    pub fn holders(&self) -> usize {
        self.held.len()
    }

    fn shard_blocker(&self, txn: u64, mode: ShardMode) -> Option<u64> {
        self.shard
            .iter()
            .find(|(t, m)| *t != txn && !mode.compatible(*m))
            .map(|(t, _)| *t)
    }

    /// Grants every lock of `req` to `txn`, or none: `Err` names a
    /// transaction in the way.
    pub fn try_lock(&mut self, txn: u64, req: &LockRequest) -> Result<(), u64> {
        if let Some(t) = self.shard_blocker(txn, req.shard_mode()) {
            return Err(t);
        }
        for k in &req.write {
            if let Some(l) = self.keys.get(k) {
                if let Some(t) = l.x.filter(|t| *t != txn) {
                    return Err(t);
                }
                if let Some(t) = l.s.iter().find(|t| **t != txn) {
                    return Err(*t);
                }
            }
            if let Some((t, _)) = self
                .ranges
                .iter()
                .find(|(t, r)| *t != txn && in_range(k, r))
            {
                return Err(*t);
            }
        }
        for k in &req.read {
            if let Some(t) = self.keys.get(k).and_then(|l| l.x).filter(|t| *t != txn) {
                return Err(t);
            }
        }
        for r in &req.ranges {
            if let Some(t) = self
                .keys
                .iter()
                .find(|(k, l)| l.x.is_some_and(|t| t != txn) && in_range(k, r))
                .and_then(|(_, l)| l.x)
            {
                return Err(t);
            }
        }
        // Granted: record everything.
        let held = self.held.entry(txn).or_default();
        let mode = req.shard_mode();
        match held.shard {
            Some(ShardMode::IX) => {}
            Some(_) if mode == ShardMode::IS => {}
            _ => {
                self.shard.retain(|(t, _)| *t != txn);
                self.shard.push((txn, mode));
                held.shard = Some(mode);
            }
        }
        for k in &req.write {
            let l = self.keys.entry(k.clone()).or_default();
            if l.x.is_none() {
                l.x = Some(txn);
                held.keys.push(k.clone());
            }
        }
        for k in &req.read {
            let l = self.keys.entry(k.clone()).or_default();
            if l.x != Some(txn) && !l.s.contains(&txn) {
                l.s.push(txn);
                held.keys.push(k.clone());
            }
        }
        for r in &req.ranges {
            self.ranges.push((txn, r.clone()));
        }
        Ok(())
    }

    /// Takes a shard-wide lock (checkpoint: S), or names who is in the way.
    pub fn try_lock_shard(&mut self, txn: u64, mode: ShardMode) -> Result<(), u64> {
        if let Some(t) = self.shard_blocker(txn, mode) {
            return Err(t);
        }
        self.shard.retain(|(t, _)| *t != txn);
        self.shard.push((txn, mode));
        self.held.entry(txn).or_default().shard = Some(mode);
        Ok(())
    }

    /// Releases everything `txn` holds (the shrinking phase, all at once).
    pub fn release(&mut self, txn: u64) {
        let Some(held) = self.held.remove(&txn) else {
            return;
        };
        self.shard.retain(|(t, _)| *t != txn);
        self.ranges.retain(|(t, _)| *t != txn);
        for k in held.keys {
            if let Some(l) = self.keys.get_mut(&k) {
                if l.x == Some(txn) {
                    l.x = None;
                }
                l.s.retain(|t| *t != txn);
                if l.x.is_none() && l.s.is_empty() {
                    self.keys.remove(&k);
                }
            }
        }
    }

    /// Whether a writer that takes no locks must wait: it writes `write`
    /// and read `read`, which must not touch what a lock holder read or
    /// writes. A shard-wide S or X blocks every writer.
    pub fn blocks<'a>(
        &self,
        write: impl IntoIterator<Item = &'a [u8]>,
        read: impl IntoIterator<Item = &'a [u8]>,
    ) -> bool {
        if self.held.is_empty() {
            return false;
        }
        if self
            .shard
            .iter()
            .any(|(_, m)| matches!(m, ShardMode::S | ShardMode::X))
        {
            return true;
        }
        for k in write {
            if self.keys.contains_key(k) || self.ranges.iter().any(|(_, r)| in_range(k, r)) {
                return true;
            }
        }
        for k in read {
            if self.keys.get(k).is_some_and(|l| l.x.is_some()) {
                return true;
            }
        }
        false
    }

    /// Whether a key some holder writes lies in one of `ranges`.
    pub fn blocks_ranges(&self, ranges: &[KeyRange]) -> bool {
        self.keys
            .iter()
            .any(|(k, l)| l.x.is_some() && ranges.iter().any(|r| in_range(k, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    fn w(keys: &[&str]) -> LockRequest {
        LockRequest {
            write: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            ..Default::default()
        }
    }

    fn r(keys: &[&str]) -> LockRequest {
        LockRequest {
            read: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn exclusive_locks_exclude_and_shared_locks_share() {
        let mut m = LockManager::new();
        m.try_lock(1, &w(&["a", "b"])).unwrap();
        assert_eq!(m.try_lock(2, &w(&["b"])), Err(1));
        assert_eq!(m.try_lock(2, &r(&["a"])), Err(1));
        m.try_lock(2, &r(&["c"])).unwrap();
        m.try_lock(3, &r(&["c"])).unwrap();
        assert_eq!(m.try_lock(4, &w(&["c"])), Err(2));
        m.release(2);
        assert_eq!(m.try_lock(4, &w(&["c"])), Err(3));
        m.release(3);
        m.try_lock(4, &w(&["c"])).unwrap();
        m.release(1);
        m.release(4);
        assert!(m.is_empty());
        assert!(m.keys.is_empty() && m.ranges.is_empty() && m.shard.is_empty());
    }

    #[test]
    fn requests_are_all_or_nothing() {
        let mut m = LockManager::new();
        m.try_lock(1, &w(&["b"])).unwrap();
        assert_eq!(m.try_lock(2, &w(&["a", "b"])), Err(1));
        // Nothing of the refused request is held: "a" is free.
        m.try_lock(3, &w(&["a"])).unwrap();
        assert_eq!(m.holders(), 2);
    }

    #[test]
    fn a_transaction_does_not_block_itself() {
        let mut m = LockManager::new();
        m.try_lock(1, &r(&["a"])).unwrap();
        // Upgrading S to X is granted when no one else shares the key.
        assert_eq!(m.try_lock(1, &w(&["a"])), Ok(()));
        m.try_lock(1, &w(&["b"])).unwrap();
        m.try_lock(1, &r(&["b"])).unwrap();
        m.release(1);
        assert!(m.keys.is_empty());
    }

    #[test]
    fn range_locks_stop_phantoms() {
        let mut m = LockManager::new();
        let range = (
            Bound::Included(b"k1".to_vec()),
            Bound::Excluded(b"k5".to_vec()),
        );
        m.try_lock(
            1,
            &LockRequest {
                ranges: vec![range.clone()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.try_lock(2, &w(&["k3"])), Err(1));
        m.try_lock(2, &w(&["k5"])).unwrap();
        assert!(m.blocks([b"k2".as_slice()], []));
        assert!(!m.blocks([b"k9".as_slice()], []));
        // A range over a key someone writes waits for it.
        assert_eq!(
            m.try_lock(
                3,
                &LockRequest {
                    ranges: vec![(Bound::Included(b"k5".to_vec()), Bound::Unbounded)],
                    ..Default::default()
                }
            ),
            Err(2)
        );
    }

    #[test]
    fn intention_locks_conflict_with_shard_locks() {
        let mut m = LockManager::new();
        m.try_lock(1, &w(&["a"])).unwrap(); // IX
        assert_eq!(m.try_lock_shard(9, ShardMode::S), Err(1));
        m.release(1);
        m.try_lock(2, &r(&["a"])).unwrap(); // IS
        m.try_lock_shard(9, ShardMode::S).unwrap();
        assert_eq!(m.try_lock(3, &w(&["z"])), Err(9));
        assert!(m.blocks([b"z".as_slice()], []));
        m.try_lock(4, &r(&["z"])).unwrap();
        m.release(9);
        m.try_lock(3, &w(&["z"])).unwrap_err();
        m.release(4);
        m.try_lock(3, &w(&["z"])).unwrap();
        assert_eq!(m.try_lock_shard(9, ShardMode::X), Err(2));
    }

    #[test]
    fn plain_writers_wait_only_for_what_they_touch() {
        let mut m = LockManager::new();
        assert!(!m.blocks([b"a".as_slice()], [b"a".as_slice()]));
        m.try_lock(1, &r(&["a"])).unwrap();
        assert!(m.blocks([b"a".as_slice()], []));
        assert!(!m.blocks([], [b"a".as_slice()]));
        m.try_lock(2, &w(&["b"])).unwrap();
        assert!(m.blocks([], [b"b".as_slice()]));
        assert!(!m.blocks([b"c".as_slice()], [b"d".as_slice()]));
    }
}

/// Shuttle model tests of the locking protocol the coordinator follows:
/// transactions lock shards in ascending order (all of one shard's keys in
/// one all-or-nothing request), waiting while a request is refused. Under
/// randomly chosen interleavings no two transactions ever hold conflicting
/// locks and no one waits forever; locking in any other order deadlocks
/// (`make test-shuttle`).
#[cfg(all(test, feature = "shuttle"))]
#[allow(clippy::unwrap_used)]
mod shuttle_tests {
    use super::*;
    use shuttle::sync::{Arc, Mutex};
    use shuttle::thread;
    use std::collections::HashMap;

    /// Waits this many turns for a refused request before calling it a
    /// deadlock (the scheduler runs the holder long before that).
    const PATIENCE: usize = 2000;

    fn run(orders: Vec<Vec<(usize, &'static str)>>) {
        let shards: Arc<Vec<Mutex<LockManager>>> =
            Arc::new((0..2).map(|_| Mutex::new(LockManager::new())).collect());
        // Who holds X on each key, checked on every grant.
        let owners: Arc<Mutex<HashMap<&'static str, u64>>> = Arc::default();
        let mut threads = Vec::new();
        for (t, order) in orders.into_iter().enumerate() {
            let shards = shards.clone();
            let owners = owners.clone();
            threads.push(thread::spawn(move || {
                let txn = t as u64 + 1;
                for &(shard, key) in &order {
                    let req = LockRequest {
                        write: vec![key.as_bytes().to_vec()],
                        ..Default::default()
                    };
                    let mut waited = 0;
                    while shards[shard].lock().unwrap().try_lock(txn, &req).is_err() {
                        waited += 1;
                        assert!(
                            waited < PATIENCE,
                            "transaction {txn} waits forever: a deadlock"
                        );
                        thread::yield_now();
                    }
                    let prev = owners.lock().unwrap().insert(key, txn);
                    assert!(
                        prev.is_none(),
                        "{key} granted to {txn} while {prev:?} holds it"
                    );
                }
                // Commit, then the shrinking phase: everything goes.
                for &(shard, key) in &order {
                    owners.lock().unwrap().remove(key);
                    shards[shard].lock().unwrap().release(txn);
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        for s in shards.iter() {
            assert!(s.lock().unwrap().is_empty());
        }
    }

    #[test]
    fn ascending_shard_order_is_exclusive_and_deadlock_free() {
        shuttle::check_random(
            || {
                run(vec![
                    vec![(0, "a"), (1, "b")],
                    vec![(0, "a"), (1, "c")],
                    vec![(0, "d"), (1, "b")],
                ])
            },
            2000,
        );
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn any_other_order_can_deadlock() {
        shuttle::check_random(
            || run(vec![vec![(0, "a"), (1, "b")], vec![(1, "b"), (0, "a")]]),
            2000,
        );
    }
}
