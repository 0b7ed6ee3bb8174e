//! Transactions, in process: the classic isolation anomalies (each with its
//! keys on one shard and on two), snapshot reads against concurrent writers
//! (and held through the periodic version trims),
//! lock waits and timeouts, a concurrent bank-transfer run, and redo of
//! cross-shard commits after a restart.
//!
//! Every anomaly test drives a fixed interleaving through the coordinator
//! and asserts that only a serializable outcome comes out: the second
//! committer aborts, or a reader sees one consistent snapshot.

#![allow(clippy::unwrap_used)]

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flashkv::clock::Clock;
use flashkv::shard::{Partitioner, Router};
use flashkv::storage::io::{FaultAction, FaultInjector, FaultOp, FaultRule};
use flashkv::storage::{Io, IoEngine, StoreOptions, StoreThread, SyncPolicy};
use flashkv::txn::{Abort, Commit, Coordinator, Txn, TxnOptions};

struct Db {
    coord: Arc<Coordinator>,
    threads: Vec<StoreThread>,
}

impl Db {
    fn open(dir: &Path, shards: u32, sync: SyncPolicy) -> Db {
        Self::open_with_faults(dir, shards, sync, &[])
    }

    /// As [`Db::open`], with a fault injector on each shard in `faults`.
    fn open_with_faults(
        dir: &Path,
        shards: u32,
        sync: SyncPolicy,
        faults: &[(u32, Arc<FaultInjector>)],
    ) -> Db {
        let clock = Arc::new(Clock::new());
        clock.track_settlement(flashkv::shard::floor::read(dir).unwrap());
        // make test runs this file again with FLASHKV_TEST_IO_ENGINE=plain.
        let engine = std::env::var("FLASHKV_TEST_IO_ENGINE")
            .ok()
            .and_then(|e| IoEngine::parse(&e))
            .unwrap_or_else(IoEngine::detect);
        let threads: Vec<StoreThread> = (0..shards)
            .map(|i| {
                StoreThread::spawn(
                    dir.join(format!("shard-{i}")),
                    StoreOptions {
                        shard_id: i,
                        sync,
                        segment_size: 1 << 20,
                        max_value_size: 64 << 10,
                        ..Default::default()
                    },
                    match faults.iter().find(|(s, _)| *s == i) {
                        Some((_, f)) => Io::with_faults(engine, f.clone()),
                        None => Io::new(engine),
                    },
                    clock.clone(),
                )
                .unwrap()
            })
            .collect();
        let redo: Vec<_> = threads.iter().flat_map(|t| t.report.redo.clone()).collect();
        let router = Arc::new(Router::new(
            Partitioner::hash(shards).unwrap(),
            threads.iter().map(|t| t.handle.clone()).collect(),
            clock.clone(),
        ));
        futures::executor::block_on(flashkv::txn::apply_redo(&router, redo)).unwrap();
        let coord = Arc::new(Coordinator::new(
            router,
            clock,
            TxnOptions {
                lock_timeout: Duration::from_millis(300),
                ..Default::default()
            },
        ));
        Db { coord, threads }
    }

    fn close(self) {
        let Db { coord, threads } = self;
        drop(coord);
        for t in threads {
            t.shutdown().unwrap();
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two keys with a common prefix: on the same shard or on different ones.
fn keys(router: &Router, tag: &str, same: bool) -> (Vec<u8>, Vec<u8>) {
    let x = format!("{tag}/x").into_bytes();
    let sx = router.shard_of(&x);
    for i in 0.. {
        let y = format!("{tag}/y{i}").into_bytes();
        if (router.shard_of(&y) == sx) == same {
            return (x, y);
        }
    }
    unreachable!()
}

fn int(v: Option<flashkv::storage::Value>) -> i64 {
    v.map_or(0, |v| String::from_utf8(v.value).unwrap().parse().unwrap())
}

async fn get_i(c: &Coordinator, t: &mut Txn, k: &[u8]) -> i64 {
    int(c.get(t, k).unwrap())
}

fn put_i(t: &mut Txn, k: &[u8], v: i64) {
    t.put(k.to_vec(), v.to_string().into_bytes(), None);
}

async fn set(c: &Arc<Coordinator>, pairs: &[(&[u8], i64)]) {
    let mut t = c.begin().await;
    for (k, v) in pairs {
        put_i(&mut t, k, *v);
    }
    assert!(matches!(
        c.commit(t).await.unwrap(),
        Commit::Committed { .. }
    ));
}

/// Moves `amount` between two of `accounts` accounts picked by `seed`
/// (advanced), in one transaction; whether it committed.
async fn transfer(
    c: &Arc<Coordinator>,
    seed: &mut u64,
    accounts: usize,
    acct: &impl Fn(usize) -> Vec<u8>,
    amount: i64,
) -> bool {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let a = (*seed >> 33) as usize % accounts;
    let b = (a + 1 + (*seed >> 40) as usize % (accounts - 1)) % accounts;
    let mut t = c.begin().await;
    let va = get_i(c, &mut t, &acct(a)).await;
    let vb = get_i(c, &mut t, &acct(b)).await;
    put_i(&mut t, &acct(a), va - amount);
    put_i(&mut t, &acct(b), vb + amount);
    matches!(c.commit(t).await.unwrap(), Commit::Committed { .. })
}

fn aborted(c: &Commit) -> bool {
    matches!(c, Commit::Aborted(Abort::Conflict { .. }))
}

/// Runs `f` twice: keys on one shard, then on two.
fn both(
    f: impl Fn(&Arc<Coordinator>, bool) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>,
) {
    for same in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 2, SyncPolicy::None);
        rt().block_on(f(&db.coord, same));
        db.close();
    }
}

#[test]
fn dirty_write_g0_never_interleaves_two_writers() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "g0", same);
            let mut t1 = c.begin().await;
            let mut t2 = c.begin().await;
            put_i(&mut t1, &x, 1);
            put_i(&mut t2, &x, 2);
            put_i(&mut t2, &y, 2);
            put_i(&mut t1, &y, 1);
            c.commit(t1).await.unwrap();
            c.commit(t2).await.unwrap();
            let mut r = c.begin().await;
            let (vx, vy) = (get_i(c, &mut r, &x).await, get_i(c, &mut r, &y).await);
            assert_eq!(vx, vy, "x and y come from one transaction");
        })
    });
}

#[test]
fn aborted_read_g1a_is_never_seen() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "g1a", same);
            set(c, &[(&x, 1), (&y, 1)]).await;
            let mut t1 = c.begin().await;
            put_i(&mut t1, &x, 99);
            put_i(&mut t1, &y, 99);
            drop(t1); // rolled back
            // A conflicting writer makes a second one abort for real.
            let mut t2 = c.begin().await;
            let _ = get_i(c, &mut t2, &x).await;
            put_i(&mut t2, &x, 50);
            set(c, &[(&x, 7)]).await;
            assert!(aborted(&c.commit(t2).await.unwrap()));
            let mut r = c.begin().await;
            assert_eq!(get_i(c, &mut r, &x).await, 7);
            assert_eq!(get_i(c, &mut r, &y).await, 1);
        })
    });
}

#[test]
fn intermediate_read_g1b_is_never_seen() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "g1b", same);
            let mut t1 = c.begin().await;
            put_i(&mut t1, &x, 1);
            put_i(&mut t1, &y, 1);
            put_i(&mut t1, &x, 2);
            // Own writes are visible inside, the last one wins.
            assert_eq!(get_i(c, &mut t1, &x).await, 2);
            let mut r0 = c.begin().await;
            assert_eq!(get_i(c, &mut r0, &x).await, 0);
            c.commit(t1).await.unwrap();
            let mut r = c.begin().await;
            assert_eq!(get_i(c, &mut r, &x).await, 2);
            // The snapshot taken before the commit still sees nothing.
            assert_eq!(get_i(c, &mut r0, &y).await, 0);
        })
    });
}

#[test]
fn lost_update_p4_aborts_the_second_committer() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "p4", same);
            set(c, &[(&x, 10), (&y, 0)]).await;
            let mut t1 = c.begin().await;
            let mut t2 = c.begin().await;
            let a = get_i(c, &mut t1, &x).await;
            let b = get_i(c, &mut t2, &x).await;
            put_i(&mut t1, &x, a + 1);
            put_i(&mut t1, &y, 1);
            put_i(&mut t2, &x, b + 1);
            put_i(&mut t2, &y, 2);
            assert!(matches!(
                c.commit(t1).await.unwrap(),
                Commit::Committed { .. }
            ));
            assert!(aborted(&c.commit(t2).await.unwrap()));
            let mut r = c.begin().await;
            assert_eq!(get_i(c, &mut r, &x).await, 11);
        })
    });
}

#[test]
fn read_skew_g_single_sees_one_snapshot() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "rs", same);
            set(c, &[(&x, 50), (&y, 50)]).await;
            let mut t1 = c.begin().await;
            let vx = get_i(c, &mut t1, &x).await;
            // Transfer 30 from x to y, committed between t1's two reads.
            set(c, &[(&x, 20), (&y, 80)]).await;
            let vy = get_i(c, &mut t1, &y).await;
            assert_eq!(vx + vy, 100, "t1 read {vx} + {vy}");
            // Read-only: commits at its snapshot.
            assert!(matches!(
                c.commit(t1).await.unwrap(),
                Commit::Committed { .. }
            ));
            // A read-write transaction with the same reads must abort.
            let mut t2 = c.begin().await;
            let _ = get_i(c, &mut t2, &x).await;
            set(c, &[(&x, 10), (&y, 90)]).await;
            let _ = get_i(c, &mut t2, &y).await;
            put_i(&mut t2, &x, 0);
            assert!(aborted(&c.commit(t2).await.unwrap()));
        })
    });
}

#[test]
fn write_skew_g2_item_aborts_one_of_the_two() {
    both(|c, same| {
        Box::pin(async move {
            // Invariant: x + y >= 1 (one doctor on call).
            let (x, y) = keys(c.router(), "ws", same);
            set(c, &[(&x, 1), (&y, 1)]).await;
            let mut t1 = c.begin().await;
            let mut t2 = c.begin().await;
            let s1 = get_i(c, &mut t1, &x).await + get_i(c, &mut t1, &y).await;
            let s2 = get_i(c, &mut t2, &x).await + get_i(c, &mut t2, &y).await;
            assert_eq!((s1, s2), (2, 2));
            put_i(&mut t1, &x, 0);
            put_i(&mut t2, &y, 0);
            let r1 = c.commit(t1).await.unwrap();
            let r2 = c.commit(t2).await.unwrap();
            assert!(matches!(r1, Commit::Committed { .. }));
            assert!(aborted(&r2), "write skew let both commit: {r2:?}");
            let mut r = c.begin().await;
            assert!(get_i(c, &mut r, &x).await + get_i(c, &mut r, &y).await >= 1);
        })
    });
}

#[test]
fn phantom_write_skew_g2_aborts_the_second_inserter() {
    both(|c, same| {
        Box::pin(async move {
            // Invariant: at most one key under the prefix. x and y decide
            // which shards the two inserts land on.
            let (x, y) = keys(c.router(), "ph", same);
            let lo = Bound::Included(b"ph/".to_vec());
            let hi = Bound::Excluded(b"ph0".to_vec());
            let mut t1 = c.begin().await;
            let mut t2 = c.begin().await;
            assert!(
                c.scan(&mut t1, lo.clone(), hi.clone(), false, 100)
                    .unwrap()
                    .is_empty()
            );
            assert!(
                c.scan(&mut t2, lo.clone(), hi.clone(), false, 100)
                    .unwrap()
                    .is_empty()
            );
            put_i(&mut t1, &x, 1);
            put_i(&mut t2, &y, 1);
            assert!(matches!(
                c.commit(t1).await.unwrap(),
                Commit::Committed { .. }
            ));
            assert!(aborted(&c.commit(t2).await.unwrap()));
            let mut r = c.begin().await;
            assert_eq!(c.scan(&mut r, lo, hi, false, 100).unwrap().len(), 1);
        })
    });
}

#[test]
fn observed_transaction_vanishes_otv_never_happens() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "otv", same);
            set(c, &[(&x, 1), (&y, 1)]).await;
            let mut r = c.begin().await;
            set(c, &[(&x, 2), (&y, 2)]).await;
            let mut r2 = c.begin().await;
            assert_eq!(get_i(c, &mut r2, &x).await, 2);
            set(c, &[(&x, 3), (&y, 3)]).await;
            // r2 saw the second writer: it must keep seeing all of it.
            assert_eq!(get_i(c, &mut r2, &y).await, 2);
            assert_eq!(get_i(c, &mut r, &y).await, 1);
            assert_eq!(get_i(c, &mut r, &x).await, 1);
        })
    });
}

#[test]
fn snapshot_scans_and_own_writes_merge() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "sc", same);
            set(c, &[(&x, 1), (&y, 2)]).await;
            let mut t = c.begin().await;
            set(c, &[(&x, 5)]).await;
            t.delete(y.clone());
            put_i(&mut t, b"sc/a", 3);
            let lo = Bound::Included(b"sc/".to_vec());
            let hi = Bound::Excluded(b"sc0".to_vec());
            let got = c.scan(&mut t, lo.clone(), hi.clone(), false, 10).unwrap();
            let got: Vec<(Vec<u8>, i64)> =
                got.into_iter().map(|(k, v)| (k, int(Some(v)))).collect();
            assert_eq!(got, vec![(b"sc/a".to_vec(), 3), (x.clone(), 1)]);
            let rev = c.scan(&mut t, lo, hi, true, 1).unwrap();
            assert_eq!(rev[0].0, x);
        })
    });
}

#[test]
fn a_blocked_lock_times_out_as_a_retryable_abort() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 2, SyncPolicy::None);
    let c = db.coord.clone();
    rt().block_on(async move {
        let (x, y) = keys(c.router(), "lk", false);
        // Hold x's lock by hand, as a prepared transaction would.
        let s = c.router().shard_of(&x) as usize;
        let h = c.router().shard(s).clone();
        let req = flashkv::storage::lock::LockRequest {
            write: vec![x.clone()],
            ..Default::default()
        };
        let out = h
            .lock(
                7,
                0,
                req,
                std::time::Instant::now() + Duration::from_secs(1),
            )
            .await
            .unwrap();
        assert_eq!(out, flashkv::storage::service::LockOutcome::Locked);
        let mut t = c.begin().await;
        put_i(&mut t, &x, 1);
        put_i(&mut t, &y, 1);
        assert_eq!(
            c.commit(t).await.unwrap(),
            Commit::Aborted(Abort::LockTimeout)
        );
        // A plain write of x waits for the lock, then goes through.
        let c2 = c.clone();
        let x2 = x.clone();
        let w = tokio::spawn(async move {
            c2.router()
                .write(flashkv::storage::Batch::put(x2, b"9".to_vec()))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!w.is_finished(), "a plain write went past a held lock");
        h.release(7).await.unwrap();
        w.await.unwrap().unwrap();
        assert_eq!(c.router().get(&x).unwrap().unwrap().value, b"9");
    });
    db.close();
}

#[test]
fn concurrent_transfers_keep_the_total_on_one_and_two_shards() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 2, SyncPolicy::None);
    let c = db.coord.clone();
    const ACCOUNTS: usize = 8;
    rt().block_on(async move {
        let acct = |i: usize| format!("bank/{i:03}").into_bytes();
        let init: Vec<(Vec<u8>, i64)> = (0..ACCOUNTS).map(|i| (acct(i), 100)).collect();
        let refs: Vec<(&[u8], i64)> = init.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
        set(&c, &refs).await;
        let mut tasks = Vec::new();
        for w in 0..8usize {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                let (mut done, mut aborts) = (0, 0);
                let mut seed = w as u64 * 7919 + 1;
                while done < 40 {
                    match transfer(&c, &mut seed, ACCOUNTS, &acct, 3).await {
                        true => done += 1,
                        false => aborts += 1,
                    }
                    tokio::task::yield_now().await;
                }
                aborts
            }));
        }
        let reader = {
            let c = c.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let mut t = c.begin().await;
                    let lo = Bound::Included(b"bank/".to_vec());
                    let hi = Bound::Excluded(b"bank0".to_vec());
                    let all = c.scan(&mut t, lo, hi, false, 100).unwrap();
                    let sum: i64 = all.into_iter().map(|(_, v)| int(Some(v))).sum();
                    assert_eq!(sum, 100 * ACCOUNTS as i64, "a snapshot saw a half transfer");
                    tokio::task::yield_now().await;
                }
            })
        };
        for t in tasks {
            t.await.unwrap();
        }
        reader.await.unwrap();
        let mut t = c.begin().await;
        let mut sum = 0;
        for i in 0..ACCOUNTS {
            sum += get_i(&c, &mut t, &acct(i)).await;
        }
        assert_eq!(sum, 100 * ACCOUNTS as i64);
    });
    db.close();
}

/// Two snapshots held open while cross-shard transfers run through
/// several of the shards' once-a-second version trims: each still reads
/// what it read first, and once the transfers stop the shards keep only
/// the version each snapshot reads of each account, not every version
/// written since the first began.
#[test]
fn held_snapshots_read_the_same_through_trims_that_keep_only_their_versions() {
    const ACCOUNTS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 2, SyncPolicy::None);
    let c = db.coord.clone();
    let handles: Vec<_> = db.threads.iter().map(|t| t.handle.clone()).collect();
    rt().block_on(async move {
        let acct = |i: usize| format!("held/{i:03}").into_bytes();
        let init: Vec<(Vec<u8>, i64)> = (0..ACCOUNTS).map(|i| (acct(i), 100)).collect();
        let refs: Vec<(&[u8], i64)> = init.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
        set(&c, &refs).await;
        let old_version_bytes = async || {
            let mut sum = 0;
            for h in &handles {
                sum += h.stats().await.unwrap().old_version_bytes;
            }
            sum
        };
        let read_all = async |t: &mut Txn| {
            let mut vals = Vec::new();
            for i in 0..ACCOUNTS {
                vals.push(get_i(&c, t, &acct(i)).await);
            }
            vals
        };
        let mut first = c.begin().await;
        let first_saw = read_all(&mut first).await;
        assert_eq!(first_saw, vec![100; ACCOUNTS]);
        let started = std::time::Instant::now();
        let transfers = |w: u64, until: Duration| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut seed = w * 7919 + 1;
                let mut done = 0;
                while started.elapsed() < until {
                    done += u32::from(transfer(&c, &mut seed, ACCOUNTS, &acct, 1).await);
                }
                done
            })
        };
        // The second snapshot starts between two trims, mid-run.
        let early: Vec<_> = (0..4)
            .map(|w| transfers(w, Duration::from_millis(1300)))
            .collect();
        let mut done = 0;
        for t in early {
            done += t.await.unwrap();
        }
        let mut second = c.begin().await;
        let second_saw = read_all(&mut second).await;
        assert_eq!(second_saw.iter().sum::<i64>(), 100 * ACCOUNTS as i64);
        let late: Vec<_> = (4..8)
            .map(|w| transfers(w, Duration::from_millis(2600)))
            .collect();
        for t in late {
            done += t.await.unwrap();
        }
        assert!(done > 100, "{done} transfers committed");
        // Past one more trim, with no snapshot opening or commit hidden.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(read_all(&mut first).await, first_saw);
        assert_eq!(read_all(&mut second).await, second_saw);
        // Two old versions an account at most (with their 2-4 byte values).
        let kept = old_version_bytes().await;
        let most = (2 * ACCOUNTS * (size_of::<flashkv::index::OldVersion>() + 4)) as u64;
        assert!(
            kept <= most,
            "{kept} bytes of old versions after {done} transfers, at most {most}"
        );
        drop((first, second));
    });
    db.close();
}

#[test]
fn a_cross_shard_commit_is_completed_from_either_part_after_a_restart() {
    // Each part carries redo records of the other: whichever part is lost
    // in a crash, the one left completes the commit.
    for lost in 0..2usize {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 2, SyncPolicy::Always);
        let (x, y) = keys(db.coord.router(), "redo", false);
        let c = db.coord.clone();
        let version = rt().block_on(async {
            let mut t = c.begin().await;
            put_i(&mut t, &x, 1);
            put_i(&mut t, &y, 2);
            match c.commit(t).await.unwrap() {
                Commit::Committed { version } => version,
                other => panic!("{other:?}"),
            }
        });
        drop(c);
        db.close();
        // Simulate the crash window: shard `lost`'s part never reached its
        // log. Cut its segment back to the header.
        let seg_dir = dir.path().join(format!("shard-{lost}"));
        let seg = std::fs::read_dir(&seg_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(32)
            .unwrap();
        // The floor on disk (written only by a daemon) is 0: everything is
        // redone.
        let db = Db::open(dir.path(), 2, SyncPolicy::Always);
        for (key, want) in [(&x, 1), (&y, 2)] {
            let got = db.coord.router().get(key).unwrap().unwrap_or_else(|| {
                panic!(
                    "shard {lost} lost its part: {:?} absent",
                    String::from_utf8_lossy(key)
                )
            });
            assert_eq!(got.version, version, "shard {lost} lost its part");
            assert_eq!(got.value, want.to_string().into_bytes());
        }
        db.close();
    }
}

#[test]
fn a_cross_shard_commit_with_a_failed_part_stays_invisible_until_a_restart_completes_it() {
    // Shard 1 (the last writing shard) writes its part (a delete) first;
    // shard 0's write then fails. The commit is reported committed (a restart
    // completes it), and until then no read, plain or at a snapshot taken
    // afterwards, may see shard 1's half.
    let dir = tempfile::tempdir().unwrap();
    let faults = FaultInjector::new();
    let db = Db::open_with_faults(dir.path(), 2, SyncPolicy::Always, &[(0, faults.clone())]);
    let c = db.coord.clone();
    let (x, y) = keys(c.router(), "half", false);
    assert_eq!(
        (c.router().shard_of(&x), c.router().shard_of(&y)),
        (0, 1),
        "x on shard 0, y on shard 1"
    );
    rt().block_on(async {
        set(&c, &[(&x, 1), (&y, 1)]).await;
        faults.add(FaultRule {
            op: Some(FaultOp::Write),
            nth: 1,
            action: FaultAction::Fail(libc::EIO),
        });
        let mut t = c.begin().await;
        put_i(&mut t, &x, 2);
        t.delete(y.clone());
        let outcome = c.commit(t).await;
        assert!(
            matches!(outcome, Ok(Commit::Committed { .. })),
            "a part is on disk, so the commit is committed: {outcome:?}"
        );
        assert_eq!(int(c.router().get(&x).unwrap()), 1);
        assert_eq!(int(c.router().get(&y).unwrap()), 1, "plain read of y");
        let mut t = c.begin().await;
        let (vx, vy) = (get_i(&c, &mut t, &x).await, get_i(&c, &mut t, &y).await);
        assert_eq!((vx, vy), (1, 1), "a snapshot saw half a commit");
        let scan = c
            .scan(
                &mut t,
                Bound::Included(b"half/".to_vec()),
                Bound::Excluded(b"half0".to_vec()),
                false,
                10,
            )
            .unwrap();
        let values: Vec<i64> = scan.into_iter().map(|(_, v)| int(Some(v))).collect();
        assert_eq!(values, vec![1, 1], "a snapshot scan saw half a commit");
    });
    drop(c);
    db.close();
    let db = Db::open(dir.path(), 2, SyncPolicy::Always);
    let c = db.coord.clone();
    assert_eq!(
        int(c.router().get(&x).unwrap()),
        2,
        "the restart completed x"
    );
    assert_eq!(c.router().get(&y).unwrap(), None, "and deleted y");
    drop(c);
    db.close();
}

#[test]
fn plain_reads_see_a_cross_shard_commit_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 2, SyncPolicy::Always);
    let c = db.coord.clone();
    let (x, y) = keys(c.router(), "vis", false);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (c, x, y, stop) = (c.clone(), x.clone(), y.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Read in both orders: whichever shard applies first, the
                // second read must not be older than the first.
                let (a, b) = if checks.is_multiple_of(2) {
                    (&x, &y)
                } else {
                    (&y, &x)
                };
                let va = int(c.router().get(a).unwrap());
                let vb = int(c.router().get(b).unwrap());
                assert!(
                    vb >= va,
                    "read {va} then {vb}: a cross-shard commit was half visible"
                );
                checks += 1;
            }
            checks
        })
    };
    rt().block_on(async {
        for i in 1..=150 {
            set(&c, &[(&x, i), (&y, i)]).await;
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    drop(c);
    db.close();
}

#[test]
fn the_expiry_sweep_waits_while_a_transaction_holds_locks() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 1, SyncPolicy::None);
    let c = db.coord.clone();
    rt().block_on(async {
        let h = c.router().shard(0).clone();
        // Any lock on the shard holds the sweep back; taken first, so no
        // sweep can come between the expired write and the lock.
        let req = flashkv::storage::lock::LockRequest {
            write: vec![b"held".to_vec()],
            ..Default::default()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let locked = h.lock(7, 0, req, deadline).await.unwrap();
        assert_eq!(locked, flashkv::storage::service::LockOutcome::Locked);
        h.write(flashkv::storage::Batch {
            ops: vec![flashkv::storage::Op::Put {
                key: b"exp".to_vec(),
                value: b"v".to_vec(),
                expires_at_ms: Some(1),
            }],
            conditions: vec![],
        })
        .await
        .unwrap();
        // The sweep runs every second; with the lock held it must not
        // write the expired key's tombstone.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert!(
            !h.reader().entry(b"exp").unwrap().tombstone,
            "the sweep wrote under a lock"
        );
        h.release(7).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2300)).await;
        assert!(
            h.reader().entry(b"exp").unwrap().tombstone,
            "the sweep did not resume"
        );
    });
    drop(c);
    db.close();
}

#[test]
fn an_applied_part_gives_up_its_locks_when_its_commit_is_revealed() {
    use flashkv::storage::lock::LockRequest;
    use flashkv::storage::service::LockOutcome;
    use flashkv::storage::store::TxnPart;
    use flashkv::storage::{Batch, Op};
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 1, SyncPolicy::None);
    let shard = db.coord.router().shard(0).clone();
    let clock = db.coord.clock().clone();
    let key = b"held/k".to_vec();
    let lock = |txn: u64, wait: Duration| {
        let shard = shard.clone();
        let key = key.clone();
        async move {
            let req = LockRequest {
                write: vec![key],
                ..Default::default()
            };
            shard
                .lock(txn, 0, req, Instant::now() + wait)
                .await
                .unwrap()
        }
    };
    rt().block_on(async {
        // T1 locks the key and applies a part of a cross-shard commit that
        // keeps its locks.
        assert_eq!(lock(1, Duration::ZERO).await, LockOutcome::Locked);
        let v = clock.next_unsettled();
        let part = TxnPart {
            txn_id: 1,
            commit_version: Some(v),
            keep_locks: true,
            ..Default::default()
        };
        let ops = vec![Op::Put {
            key: key.clone(),
            value: b"1".to_vec(),
            expires_at_ms: None,
        }];
        shard
            .apply(
                1,
                part,
                Batch {
                    ops,
                    conditions: vec![],
                },
            )
            .await
            .unwrap();
        // Until the commit is revealed its locks stay.
        assert!(matches!(
            lock(2, Duration::ZERO).await,
            LockOutcome::Timeout { holder: 1 }
        ));
        // T3 waits for them; the reveal alone (no release message) lets
        // it in.
        let waiter = tokio::spawn(lock(3, Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the lock went before the reveal");
        clock.settle(v);
        assert_eq!(waiter.await.unwrap(), LockOutcome::Locked);
        shard.release(3).await.unwrap();
    });
    // The handle keeps the storage task's inbox open.
    drop(shard);
    db.close();
}

#[test]
fn cross_shard_commits_settle_under_sync_none_even_after_a_runtime_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 2, SyncPolicy::None);
    let c = db.coord.clone();
    let (x, y) = keys(c.router(), "settle", false);
    let commit = |n: i64| {
        let (c, x, y) = (c.clone(), x.clone(), y.clone());
        async move {
            let mut t = c.begin().await;
            put_i(&mut t, &x, n);
            put_i(&mut t, &y, n);
            match c.commit(t).await.unwrap() {
                Commit::Committed { version } => version,
                other => panic!("{other:?}"),
            }
        }
    };
    // The settle round of the first commit dies with its runtime, before
    // the participants are synced.
    let first = rt().block_on(commit(1));
    assert!(c.clock().settled() < first, "settled before any fdatasync");
    // A later commit on a runtime that lives on settles both.
    let second = rt().block_on(async {
        let v = commit(2).await;
        for _ in 0..1000 {
            if c.clock().settled() >= v {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        v
    });
    assert!(second > first);
    assert!(
        c.clock().settled() >= second,
        "the settled floor stayed at {} (commits {first} and {second})",
        c.clock().settled()
    );
    drop(c);
    db.close();
}

#[test]
fn a_cross_shard_commit_meeting_a_held_lock_waits_for_it_in_shard_order() {
    use flashkv::storage::lock::LockRequest;
    use flashkv::storage::service::LockOutcome;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 2, SyncPolicy::None);
    let c = db.coord.clone();
    let (x, y) = keys(c.router(), "busy", false);
    // Hold a lock on the key of the last writing shard (the one that locks
    // and writes in one step), then on the first one.
    let last = c.router().shard_of(&x).max(c.router().shard_of(&y));
    for held in [last as usize, 1 - last as usize] {
        let shard = c.router().shard(held).clone();
        let key = if c.router().shard_of(&x) as usize == held {
            x.clone()
        } else {
            y.clone()
        };
        let holder = 900 + held as u64;
        rt().block_on(async {
            let req = LockRequest {
                write: vec![key.clone()],
                ..Default::default()
            };
            assert_eq!(
                shard.lock(holder, 0, req, Instant::now()).await.unwrap(),
                LockOutcome::Locked
            );
            let commit = {
                let c = c.clone();
                let (x, y) = (x.clone(), y.clone());
                tokio::spawn(async move {
                    let mut t = c.begin().await;
                    put_i(&mut t, &x, held as i64 + 10);
                    put_i(&mut t, &y, held as i64 + 20);
                    c.commit(t).await.unwrap()
                })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!commit.is_finished(), "committed past a held lock");
            shard.release(holder).await.unwrap();
            assert!(matches!(commit.await.unwrap(), Commit::Committed { .. }));
        });
        assert_eq!(int(c.router().get(&x).unwrap()), held as i64 + 10);
        assert_eq!(int(c.router().get(&y).unwrap()), held as i64 + 20);
        drop(shard);
    }
    drop(c);
    db.close();
}

/// A commit whose caller stops waiting after its first step (a client
/// that disconnects mid-commit) still goes to its end, on one shard and
/// across two.
#[test]
fn a_commit_its_caller_drops_still_commits() {
    both(|c, same| {
        Box::pin(async move {
            let (x, y) = keys(c.router(), "dropped", same);
            let mut t = c.begin().await;
            put_i(&mut t, &x, 7);
            put_i(&mut t, &y, 8);
            let mut commit = Box::pin(c.commit(t));
            // One poll sends its first message; then the caller goes away.
            let _ = futures::poll!(commit.as_mut());
            drop(commit);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let mut r = c.begin().await;
                if (get_i(c, &mut r, &x).await, get_i(c, &mut r, &y).await) == (7, 8) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the dropped commit never finished"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    });
}
