//! Storage engine tests: model checks, recovery from damage, merge crash
//! points, fault injection and concurrency, on both I/O backends.

// Test helpers unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flashkv::clock::Clock;
use flashkv::storage::io::LogAppend;
use flashkv::storage::store::now_ms;
use flashkv::storage::{
    Batch, Condition, FaultAction, FaultInjector, FaultOp, FaultRule, Io, IoEngine, Op, Outcome,
    Store, StoreOptions, SyncPolicy,
};
use flashkv::{Error, ErrorCode};
use proptest::prelude::*;

/// Every backend this machine can run.
fn engines() -> Vec<IoEngine> {
    let mut v = vec![IoEngine::Plain];
    if flashkv::storage::io::uring_available() {
        v.push(IoEngine::Uring);
    } else {
        eprintln!("io_uring unavailable: testing the plain backend only");
    }
    v
}

/// How these tests append to the log: through a mapped segment whatever
/// the sync policy, or with `FLASHKV_TEST_LOG_APPEND=write` through the
/// backend's writes (`make test` runs this file both ways).
fn log_append() -> LogAppend {
    if std::env::var("FLASHKV_TEST_LOG_APPEND").is_ok_and(|v| v == "write") {
        LogAppend::Write
    } else {
        LogAppend::Mmap
    }
}

/// An I/O handle on `engine`, appending as [`log_append`] says.
fn io(engine: IoEngine) -> Io {
    Io::new(engine).with_log_append(log_append())
}

fn small_opts() -> StoreOptions {
    StoreOptions {
        segment_size: 64 << 10,
        max_value_size: 16 << 10,
        max_key_size: 1024,
        ..Default::default()
    }
}

/// A store served by its storage task on its own thread.
fn store_thread(dir: &Path, opts: StoreOptions, engine: IoEngine) -> flashkv::storage::StoreThread {
    flashkv::storage::StoreThread::spawn(
        dir.to_path_buf(),
        opts,
        io(engine),
        Arc::new(Clock::new()),
    )
    .unwrap()
}

/// A current-thread runtime for a test's client side of a store thread.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn open(dir: &Path, opts: &StoreOptions, engine: IoEngine) -> flashkv::Result<Store> {
    Ok(
        Store::open(dir, opts.clone(), io(engine), Arc::new(Clock::new()))
            .await?
            .0,
    )
}

/// Opens a store and returns what recovery reported.
async fn open_with_report(
    dir: &Path,
    opts: &StoreOptions,
    engine: IoEngine,
) -> (Store, flashkv::storage::RecoveryReport) {
    Store::open(dir, opts.clone(), io(engine), Arc::new(Clock::new()))
        .await
        .unwrap()
}

/// An I/O handle through `faults`. On io_uring, data writes go through
/// the ring even where the file system makes the backend prefer `pwrite`
/// (see `storage::io`), so that the fault tests cover the ring's writes.
fn faulty_io(engine: IoEngine, faults: &Arc<FaultInjector>) -> Io {
    Io::with_faults(engine, faults.clone())
        .with_ring_writes(engine == IoEngine::Uring)
        .with_log_append(log_append())
}

/// Opens a store whose I/O goes through `faults`.
async fn open_faulty(
    dir: &Path,
    opts: &StoreOptions,
    engine: IoEngine,
    faults: &Arc<FaultInjector>,
) -> Store {
    Store::open(
        dir,
        opts.clone(),
        faulty_io(engine, faults),
        Arc::new(Clock::new()),
    )
    .await
    .unwrap()
    .0
}

/// Closes the store, opens the directory again and checks it against the model.
async fn reopen_and_check(
    store: Store,
    dir: &Path,
    opts: &StoreOptions,
    engine: IoEngine,
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    store.close().await.unwrap();
    let store = open(dir, opts, engine).await.unwrap();
    check_model(&store, model);
}

/// Full contents of a store (live keys and values).
fn contents(store: &Store) -> BTreeMap<Vec<u8>, Vec<u8>> {
    store
        .reader()
        .scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX, false)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect()
}

fn check_model(store: &Store, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    assert_eq!(&contents(store), model);
    let r = store.reader();
    for (k, v) in model {
        assert_eq!(
            r.get(k).unwrap().map(|x| x.value).as_ref(),
            Some(v),
            "key {k:?}"
        );
    }
    assert_eq!(r.len(), model.len());
}

#[derive(Debug, Clone)]
enum Step {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Reopen,
    Merge,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| Step::Put(k % 64, v)),
        3 => any::<u8>().prop_map(|k| Step::Delete(k % 64)),
        2 => prop::collection::vec((any::<u8>(), prop::option::of(prop::collection::vec(any::<u8>(), 0..50))), 1..6)
            .prop_map(|ops| Step::Batch(ops.into_iter().map(|(k, v)| (k % 64, v)).collect())),
        1 => Just(Step::Reopen),
        1 => Just(Step::Merge),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random puts, deletes, atomic batches, reopens and merges agree with a
    /// BTreeMap, on every backend, with segments small enough to rotate often.
    #[test]
    fn random_operations_match_a_btreemap(steps in prop::collection::vec(step(), 1..120)) {
        for engine in engines() {
            let dir = tempfile::tempdir().unwrap();
            let mut opts = small_opts();
            opts.segment_size = 8 << 10;
            opts.max_value_size = 2 << 10;
            opts.sync = SyncPolicy::None;
            let steps = steps.clone();
            engine.block_on(async {
                let mut store = open(dir.path(), &opts, engine).await.unwrap();
                let mut model = BTreeMap::new();
                for s in steps {
                    match s {
                        Step::Put(k, v) => {
                            store.put(&key(k), &v).await.unwrap();
                            model.insert(key(k), v);
                        }
                        Step::Delete(k) => {
                            let existed = store.delete(&key(k)).await.unwrap();
                            assert_eq!(existed, model.remove(&key(k)).is_some());
                        }
                        Step::Batch(ops) => {
                            let batch = Batch {
                                ops: ops.iter().map(|(k, v)| match v {
                                    Some(v) => Op::Put { key: key(*k), value: v.clone(), expires_at_ms: None },
                                    None => Op::Delete { key: key(*k) },
                                }).collect(),
                                conditions: vec![],
                            };
                            store.write(batch).await.unwrap();
                            for (k, v) in ops {
                                match v {
                                    Some(v) => { model.insert(key(k), v); }
                                    None => { model.remove(&key(k)); }
                                }
                            }
                        }
                        Step::Reopen => {
                            store.close().await.unwrap();
                            store = open(dir.path(), &opts, engine).await.unwrap();
                        }
                        Step::Merge => {
                            store.merge_now(true).await.unwrap();
                        }
                    }
                    check_model(&store, &model);
                }
                reopen_and_check(store, dir.path(), &opts, engine, &model).await;
            });
        }
    }
}

/// The predecessor lost deletes after restart: put, delete, reopen (with and
/// without merges of the segment holding the put) must leave the key absent.
#[test]
fn deleted_keys_stay_deleted_across_reopen_and_merge() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            s.put(b"k", b"v1").await.unwrap();
            // Fill the segment so the put is sealed in an older segment.
            for i in 0..600u32 {
                s.put(format!("filler{i}").as_bytes(), &[7u8; 100])
                    .await
                    .unwrap();
            }
            assert!(s.delete(b"k").await.unwrap());
            for i in 0..600u32 {
                s.put(format!("filler{i}").as_bytes(), &[8u8; 100])
                    .await
                    .unwrap();
            }
            s.close().await.unwrap();
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            assert_eq!(s.reader().get(b"k").unwrap(), None);
            // Merge: the tombstone may only go once no older put can resurface.
            assert!(s.merge_now(true).await.unwrap());
            assert_eq!(s.reader().get(b"k").unwrap(), None);
            s.close().await.unwrap();
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            assert_eq!(s.reader().get(b"k").unwrap(), None);
            assert!(s.merge_now(true).await.unwrap());
            s.close().await.unwrap();
            let s = open(dir.path(), &opts, engine).await.unwrap();
            assert_eq!(s.reader().get(b"k").unwrap(), None);
            assert_eq!(
                s.reader().get(b"filler5").unwrap().unwrap().value,
                vec![8u8; 100]
            );
        });
    }
}

/// A merge's outputs get their hints from a background thread after the
/// merge is installed (not on the shard thread before its commit): after
/// a close every merged segment has one and the reopen loads from it.
#[test]
fn merged_segments_get_hints_in_the_background() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for round in 0..3u8 {
                for i in 0..600u32 {
                    s.put(format!("k{i}").as_bytes(), &[round; 100])
                        .await
                        .unwrap();
                }
            }
            let before = segment_files(dir.path());
            assert!(s.merge_now(true).await.unwrap());
            s.close().await.unwrap();
            let outputs: Vec<_> = segment_files(dir.path())
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            assert!(!outputs.is_empty(), "the merge wrote no segment");
            for seg in &outputs {
                assert!(seg.with_extension("hint").exists(), "{seg:?} has no hint");
            }
            let (s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert!(report.segments_from_hints >= 1, "{report:?}");
            assert!(report.rejected_hints.is_empty(), "{report:?}");
            for i in (0..600u32).step_by(97) {
                let v = s.reader().get(format!("k{i}").as_bytes()).unwrap().unwrap();
                assert_eq!(v.value, vec![2u8; 100]);
            }
        });
    }
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Cutting the newest segment at every byte offset inside its last record
/// recovers exactly the records before it, and later writes land right after.
#[test]
fn torn_tail_is_truncated_at_every_offset_of_the_last_record() {
    let engine = IoEngine::Plain;
    let src = tempfile::tempdir().unwrap();
    let opts = small_opts();
    engine.block_on(async {
        let mut s = open(src.path(), &opts, engine).await.unwrap();
        s.put(b"a", b"first").await.unwrap();
        s.write(Batch {
            ops: vec![
                Op::Put {
                    key: b"b".to_vec(),
                    value: b"second".to_vec(),
                    expires_at_ms: None,
                },
                Op::Put {
                    key: b"c".to_vec(),
                    value: b"third".to_vec(),
                    expires_at_ms: None,
                },
            ],
            conditions: vec![],
        })
        .await
        .unwrap();
        s.close().await.unwrap();
    });
    let seg = segment_files(src.path()).pop().unwrap();
    let full = std::fs::read(&seg).unwrap();
    // The last atomic group is the batch (two records); cut anywhere in it.
    let group_len = 2 * flashkv::storage::format::record_len(1, 6, false) - 1;
    let group_start = full.len() - group_len;
    for cut in group_start..full.len() {
        for engine in engines() {
            let dir = tempfile::tempdir().unwrap();
            for f in std::fs::read_dir(src.path()).unwrap() {
                let f = f.unwrap().path();
                if f.file_name().unwrap() != "LOCK" {
                    std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
                }
            }
            let copy = dir.path().join(seg.file_name().unwrap());
            std::fs::write(&copy, &full[..cut]).unwrap();
            engine.block_on(async {
                let (mut s, report) = open_with_report(dir.path(), &opts, engine).await;
                assert_eq!(
                    report.truncated_tail_bytes,
                    (cut - group_start) as u64,
                    "cut at {cut}"
                );
                let r = s.reader();
                assert_eq!(r.get(b"a").unwrap().unwrap().value, b"first");
                // The batch is all or nothing.
                assert_eq!(r.get(b"b").unwrap(), None, "cut at {cut}");
                assert_eq!(r.get(b"c").unwrap(), None, "cut at {cut}");
                s.put(b"d", b"after").await.unwrap();
                s.close().await.unwrap();
                assert_eq!(
                    std::fs::metadata(&copy).unwrap().len() as usize,
                    group_start + flashkv::storage::format::record_len(1, 5, false)
                );
                let s = open(dir.path(), &opts, engine).await.unwrap();
                assert_eq!(s.reader().get(b"d").unwrap().unwrap().value, b"after");
                assert_eq!(s.reader().len(), 2);
            });
        }
    }
}

/// Appends (mapped, or written under `interval` and `none`) preallocate
/// the newest segment ahead of its records. A
/// crash (the store dropped without `close`) leaves that room as zeros:
/// start-up drops them without calling them a torn tail and keeps every
/// record; a torn record before the zeros is still a torn tail. Sealed
/// segments, and the newest one after `close`, end at their last record.
#[test]
fn preallocated_zeros_are_not_a_torn_tail_and_sealed_segments_end_at_their_records() {
    let rec = flashkv::storage::format::record_len(6, 100, false);
    for (engine, sync) in engines()
        .into_iter()
        .flat_map(|e| [(e, SyncPolicy::Always), (e, SyncPolicy::None)])
    {
        // Written appends get room ahead of them too, except under `always`.
        let preallocated = log_append() == LogAppend::Mmap || sync != SyncPolicy::Always;
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            sync,
            ..small_opts()
        };
        let n = 1500u32; // about three 64 KiB segments
        let key = |i: u32| format!("k{i:05}");
        let newest = engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for i in 0..n {
                s.put(key(i).as_bytes(), &[7u8; 100]).await.unwrap();
            }
            s.wait_for_hints();
            // Every seal finished (under `none` the last one may still be
            // in the background, and start-up would rewrite the newest
            // segment's header, a write that allocates room again).
            s.sync().await.unwrap();
            let newest = s.stats().segments.iter().find(|g| g.active).unwrap().len;
            drop(s); // no close: as after a crash
            newest
        });
        let segs = segment_files(dir.path());
        assert!(segs.len() >= 3, "{segs:?}");
        let check = flashkv::storage::check::check_dir(dir.path(), false).unwrap();
        assert!(!check.damaged(), "{check:?}");
        for (i, (path, c)) in segs.iter().zip(&check.segments).enumerate() {
            let file_len = std::fs::metadata(path).unwrap().len();
            assert_eq!(c.torn_tail, 0, "{path:?}");
            if i + 1 < segs.len() {
                assert_eq!(c.unwritten_tail, 0, "sealed {path:?}");
                let bytes = std::fs::read(path).unwrap();
                let seal = &bytes[bytes.len() - flashkv::storage::format::SEAL_LEN..];
                let last = flashkv::storage::format::decode_record(seal).unwrap();
                assert_eq!(last.kind, flashkv::storage::format::RecordKind::Seal);
            } else if preallocated {
                assert_eq!(file_len, opts.segment_size, "preallocated ahead");
                assert_eq!(c.unwritten_tail, file_len - newest);
            } else {
                assert_eq!(file_len, newest);
            }
        }
        let last = segs.last().unwrap().clone();
        engine.block_on(async {
            let (mut s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert_eq!(report.truncated_tail_bytes, 0, "{report:?}");
            assert_eq!(std::fs::metadata(&last).unwrap().len(), newest);
            assert_eq!(s.reader().len(), n as usize);
            assert_eq!(
                s.reader()
                    .get(key(n - 1).as_bytes())
                    .unwrap()
                    .unwrap()
                    .value,
                [7u8; 100]
            );
            s.put(b"after", b"reopen").await.unwrap();
            s.close().await.unwrap();
        });
        // Closed: the newest segment ends at its last record too.
        let closed_len = std::fs::metadata(&last).unwrap().len();
        assert_eq!(
            closed_len,
            newest + flashkv::storage::format::record_len(5, 6, false) as u64
        );
        // A torn record followed by zeros (a crash part-way through a page
        // written back): cut as a torn tail, the records before it kept.
        let mut bytes = std::fs::read(&last).unwrap();
        bytes.extend_from_within(bytes.len() - rec..bytes.len() - rec / 2);
        bytes.resize(bytes.len() + 3000, 0);
        std::fs::write(&last, &bytes).unwrap();
        engine.block_on(async {
            let (s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert_eq!(
                report.truncated_tail_bytes,
                (rec - rec / 2 + 3000) as u64,
                "{report:?}"
            );
            assert_eq!(s.reader().get(b"after").unwrap().unwrap().value, b"reopen");
            assert_eq!(s.reader().len(), n as usize + 1);
            s.close().await.unwrap();
        });
        assert_eq!(std::fs::metadata(&last).unwrap().len(), closed_len);
    }
}

/// A flipped byte in the middle of a segment (valid records after it) refuses
/// start-up naming the file and offset; `repair` salvages the rest.
#[test]
fn corruption_mid_segment_refuses_start_and_repair_salvages() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for i in 0..1000u32 {
                s.put(format!("key{i:04}").as_bytes(), &[i as u8; 100])
                    .await
                    .unwrap();
            }
            s.close().await.unwrap();
        });
        let segs = segment_files(dir.path());
        assert!(segs.len() >= 2, "needs a sealed segment and the newest");
        // Remove hints so that the damaged sealed segment is scanned.
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "hint") {
                std::fs::remove_file(p).unwrap();
            }
        }
        for target in [&segs[0], segs.last().unwrap()] {
            let orig = std::fs::read(target).unwrap();
            let mut bad = orig.clone();
            let off = orig.len() / 3;
            bad[off] ^= 0x5a;
            std::fs::write(target, &bad).unwrap();
            engine.block_on(async {
                let err = open(dir.path(), &opts, engine)
                    .await
                    .err()
                    .expect("damaged segment must refuse start-up");
                assert_eq!(err.code(), ErrorCode::Corruption, "{err}");
                let msg = err.to_string();
                assert!(
                    msg.contains(target.file_name().unwrap().to_str().unwrap()),
                    "{msg}"
                );
            });
            std::fs::write(target, &orig).unwrap();
        }
        // Repair: damage the first sealed segment, salvage, then reopen without repair.
        let orig = std::fs::read(&segs[0]).unwrap();
        let mut bad = orig.clone();
        let off = orig.len() / 2;
        bad[off] ^= 0x5a;
        std::fs::write(&segs[0], &bad).unwrap();
        engine.block_on(async {
            let mut ropts = opts.clone();
            ropts.repair = true;
            let (s, report) = Store::open(dir.path(), ropts, io(engine), Arc::new(Clock::new()))
                .await
                .unwrap();
            assert_eq!(report.dropped_ranges.len(), 1, "{report:?}");
            let present = (0..1000u32)
                .filter(|i| {
                    s.reader()
                        .get(format!("key{i:04}").as_bytes())
                        .unwrap()
                        .is_some()
                })
                .count();
            assert!(
                (990..1000).contains(&present),
                "repair kept {present} of 1000"
            );
            s.close().await.unwrap();
            let s = open(dir.path(), &opts, engine)
                .await
                .expect("repaired directory opens without repair");
            assert_eq!(s.reader().len(), present);
        });
    }
}

/// Hints keep the newest record of every key: keys overwritten and deleted
/// within one segment, sharing 8- and 16-byte prefixes (with equal and
/// with different lengths), shorter than 8 bytes and ending in zero bytes
/// all come back from hints as written.
#[test]
fn hints_keep_the_newest_record_of_every_key() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            let mut model = BTreeMap::new();
            let keys: Vec<Vec<u8>> = (0..300u32)
                .map(|i| match i % 5 {
                    0 => format!("user:0000000000{i:04}").into_bytes(),
                    1 => format!("user:000{i:04}").into_bytes(),
                    2 => vec![b'k', (i % 7) as u8, 0, 0][..1 + (i as usize % 4)].to_vec(),
                    // Longer than 16 bytes with equal first 16 bytes, of
                    // one length and of several (where length order is not
                    // key order).
                    3 if i % 2 == 0 => [&b"sixteen-byte-pre"[..], &i.to_be_bytes()].concat(),
                    3 => [&b"sixteen-byte-pre"[..], i.to_string().as_bytes()].concat(),
                    _ => i.to_le_bytes().to_vec(),
                })
                .collect();
            for round in 0..6u32 {
                for (i, k) in keys.iter().enumerate() {
                    if (i as u32 + round).is_multiple_of(4) {
                        s.delete(k).await.unwrap();
                        model.remove(k);
                    } else {
                        let v =
                            format!("value-{round}-{i}-{}", "x".repeat(100 + i % 50)).into_bytes();
                        s.put(k, &v).await.unwrap();
                        model.insert(k.clone(), v);
                    }
                }
            }
            // Filler, so that the last rounds sit in sealed, hinted segments
            // rather than in the scanned active one.
            for i in 0..800u32 {
                let (k, v) = (format!("zz-filler-{i}"), "f".repeat(150));
                s.put(k.as_bytes(), v.as_bytes()).await.unwrap();
                model.insert(k.into_bytes(), v.into_bytes());
            }
            s.wait_for_hints();
            check_model(&s, &model);
            s.close().await.unwrap();
            let (s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert!(report.segments_from_hints >= 3, "{report:?}");
            assert!(report.rejected_hints.is_empty(), "{report:?}");
            check_model(&s, &model);
        });
    }
}

/// A damaged hint is reported and ignored; the segment is scanned instead.
#[test]
fn damaged_hint_falls_back_to_scanning() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        let mut model = BTreeMap::new();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for i in 0..1500u32 {
                let k = format!("key{:04}", i % 700).into_bytes();
                let v = format!("value{i}").into_bytes();
                s.put(&k, &v).await.unwrap();
                model.insert(k, v);
            }
            s.close().await.unwrap();
            let (s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert!(report.segments_from_hints >= 1, "{report:?}");
            assert!(report.rejected_hints.is_empty());
            check_model(&s, &model);
            s.close().await.unwrap();
        });
        let hints: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "hint"))
            .collect();
        let h = &hints[0];
        let mut b = std::fs::read(h).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(h, &b).unwrap();
        engine.block_on(async {
            let (s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert_eq!(report.rejected_hints.len(), 1, "{report:?}");
            check_model(&s, &model);
        });
    }
}

/// Kills a merge at every one of its I/O operations (a simulated crash: that
/// operation and all later ones fail), reopens, and checks the contents.
#[test]
fn crash_at_every_step_of_merge_leaves_old_or_new_state() {
    for engine in engines() {
        crash_at_every_step_of_merge_on(engine);
    }
}

fn crash_at_every_step_of_merge_on(engine: IoEngine) {
    let src = tempfile::tempdir().unwrap();
    let opts = small_opts();
    let mut model = BTreeMap::new();
    engine.block_on(async {
        let mut s = open(src.path(), &opts, engine).await.unwrap();
        for i in 0..2000u32 {
            let k = format!("key{:04}", i % 500).into_bytes();
            if i % 7 == 3 {
                s.delete(&k).await.unwrap();
                model.remove(&k);
            } else {
                let v = format!("value{i}-{}", "x".repeat((i % 50) as usize)).into_bytes();
                s.put(&k, &v).await.unwrap();
                model.insert(k, v);
            }
        }
        s.close().await.unwrap();
    });
    // Count the merge's operations once.
    let total_ops = {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let faults = FaultInjector::new();
        engine.block_on(async {
            let mut s = open_faulty(dir.path(), &opts, engine, &faults).await;
            let before = faults.ops();
            assert!(s.merge_now(true).await.unwrap());
            check_model(&s, &model);
            faults.ops() - before
        })
    };
    assert!(total_ops > 5, "merge did {total_ops} operations");
    for n in 1..=total_ops {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src.path(), dir.path());
        let faults = FaultInjector::new();
        engine.block_on(async {
            let mut s = open_faulty(dir.path(), &opts, engine, &faults).await;
            faults.add(FaultRule {
                op: None,
                nth: n,
                action: FaultAction::Crash,
            });
            let r = s.merge_now(true).await;
            // Either the crash hit the merge or only its clean-up (which
            // start-up completes); both must recover.
            assert!(r.is_err() || faults.crashed(), "op {n}: {r:?}");
            drop(s);
            let s = open(dir.path(), &opts, engine).await.unwrap();
            check_model(&s, &model);
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".tmp") || n.ends_with(".commit")),
                "leftovers after op {n}: {names:?}"
            );
        });
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap() != "LOCK" {
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// Merge runs (in small steps, as the storage task runs it) while writers
/// overwrite keys and reader threads read them: no write is lost, readers
/// always find every key, nothing deadlocks.
#[test]
fn merge_concurrent_with_readers_and_writers_loses_nothing() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = small_opts();
        opts.sync = SyncPolicy::None;
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            let mut model = BTreeMap::new();
            for i in 0..3000u32 {
                let k = format!("key{:04}", i % 400).into_bytes();
                let v = format!("v{i}").into_bytes();
                s.put(&k, &v).await.unwrap();
                model.insert(k, v);
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let r = s.reader();
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            for i in 0..400u32 {
                                let v = r.get(format!("key{i:04}").as_bytes()).unwrap();
                                assert!(v.is_some(), "key{i:04} vanished during merge");
                                n += 1;
                            }
                            assert_eq!(
                                r.scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX, true)
                                    .unwrap()
                                    .len(),
                                400
                            );
                        }
                        n
                    })
                })
                .collect();
            for round in 0..5u32 {
                assert!(s.start_merge(true).unwrap());
                let mut i = 0u32;
                loop {
                    let done = s.merge_step(16 << 10).await.unwrap();
                    for _ in 0..20 {
                        let k = format!("key{:04}", (i * 7 + round) % 400).into_bytes();
                        let v = format!("r{round}-{i}").into_bytes();
                        s.put(&k, &v).await.unwrap();
                        model.insert(k, v);
                        i += 1;
                    }
                    if done {
                        break;
                    }
                }
                check_model(&s, &model);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for r in readers {
                assert!(r.join().unwrap() > 0);
            }
            reopen_and_check(s, dir.path(), &opts, engine, &model).await;
        });
    }
}

#[test]
fn second_opener_is_refused() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let s = open(dir.path(), &opts, engine).await.unwrap();
            let err = open(dir.path(), &opts, engine).await.err().unwrap();
            assert_eq!(err.code(), ErrorCode::Locked);
            assert!(err.to_string().contains("locked by another process"));
            drop(s);
            assert!(open(dir.path(), &opts, engine).await.is_ok());
        });
    }
}

#[test]
fn limits_and_conditions_are_enforced() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            let e = s.put(&vec![b'k'; 1025], b"v").await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidArgument);
            assert!(
                e.to_string()
                    .contains("key of 1025 bytes exceeds the limit of 1024")
            );
            let e = s.put(b"k", &vec![0; (16 << 10) + 1]).await.unwrap_err();
            assert!(e.to_string().contains("value of 16385 bytes exceeds"));
            assert_eq!(
                s.put(b"", b"v").await.unwrap_err().code(),
                ErrorCode::InvalidArgument
            );
            // Compare-and-set: 0 means "must not exist".
            let create = |v: &str| Batch {
                ops: vec![Op::Put {
                    key: b"cas".to_vec(),
                    value: v.as_bytes().to_vec(),
                    expires_at_ms: None,
                }],
                conditions: vec![Condition {
                    key: b"cas".to_vec(),
                    expected_version: 0,
                }],
            };
            let v1 = match s.write(create("one")).await.unwrap() {
                Outcome::Committed { version, .. } => version,
                o => panic!("{o:?}"),
            };
            assert_eq!(
                s.write(create("two")).await.unwrap(),
                Outcome::ConditionFailed {
                    key: b"cas".to_vec(),
                    current_version: v1
                }
            );
            let upd = Batch {
                ops: vec![Op::Put {
                    key: b"cas".to_vec(),
                    value: b"two".to_vec(),
                    expires_at_ms: None,
                }],
                conditions: vec![Condition {
                    key: b"cas".to_vec(),
                    expected_version: v1,
                }],
            };
            assert!(matches!(
                s.write(upd.clone()).await.unwrap(),
                Outcome::Committed { .. }
            ));
            assert!(matches!(
                s.write(upd).await.unwrap(),
                Outcome::ConditionFailed { .. }
            ));
            assert_eq!(s.reader().get(b"cas").unwrap().unwrap().value, b"two");
            // The failed batches and invalid writes left nothing behind.
            assert_eq!(s.reader().len(), 1);
            // Expiry: an expired key reads as absent and can be created again.
            s.write(Batch {
                ops: vec![Op::Put {
                    key: b"ttl".to_vec(),
                    value: b"x".to_vec(),
                    expires_at_ms: Some(now_ms() - 1),
                }],
                conditions: vec![],
            })
            .await
            .unwrap();
            assert_eq!(s.reader().get(b"ttl").unwrap(), None);
            assert!(matches!(
                s.write(create_key(b"ttl")).await.unwrap(),
                Outcome::Committed { .. }
            ));
        });
    }
}

fn create_key(k: &[u8]) -> Batch {
    Batch {
        ops: vec![Op::Put {
            key: k.to_vec(),
            value: b"new".to_vec(),
            expires_at_ms: None,
        }],
        conditions: vec![Condition {
            key: k.to_vec(),
            expected_version: 0,
        }],
    }
}

/// ENOSPC during writes: the write fails with a clear error, reads go on,
/// nothing written before is lost, writes work again once space returns.
#[test]
fn disk_full_fails_writes_cleanly_and_recovers() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        let faults = FaultInjector::new();
        engine.block_on(async {
            let mut s = open_faulty(dir.path(), &opts, engine, &faults).await;
            for i in 0..100u32 {
                s.put(format!("k{i}").as_bytes(), b"before").await.unwrap();
            }
            faults.set_disk_full(true);
            for i in 0..1000u32 {
                let e = s
                    .put(format!("k{i}").as_bytes(), b"during")
                    .await
                    .unwrap_err();
                assert!(e.is_disk_full(), "{e}");
            }
            assert_eq!(s.reader().get(b"k5").unwrap().unwrap().value, b"before");
            faults.set_disk_full(false);
            s.put(b"k5", b"after").await.unwrap();
            s.close().await.unwrap();
            let s = open(dir.path(), &opts, engine).await.unwrap();
            assert_eq!(s.reader().get(b"k5").unwrap().unwrap().value, b"after");
            assert_eq!(s.reader().get(b"k6").unwrap().unwrap().value, b"before");
            assert_eq!(s.reader().len(), 100);
        });
    }
}

/// A torn write (part of the buffer reached the file, then EIO) is cut away:
/// no part of it reappears after a restart.
#[test]
fn failed_write_leaves_nothing_behind() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        let faults = FaultInjector::new();
        engine.block_on(async {
            let mut s = open_faulty(dir.path(), &opts, engine, &faults).await;
            s.put(b"a", b"1").await.unwrap();
            faults.add(FaultRule {
                op: Some(FaultOp::Write),
                nth: 1,
                action: FaultAction::TornWrite(60),
            });
            let big = Batch {
                ops: (0..5)
                    .map(|i| Op::Put {
                        key: format!("b{i}").into_bytes(),
                        value: vec![1; 10],
                        expires_at_ms: None,
                    })
                    .collect(),
                conditions: vec![],
            };
            assert!(s.write(big).await.is_err());
            assert_eq!(s.reader().get(b"b0").unwrap(), None);
            s.put(b"c", b"3").await.unwrap();
            drop(s);
            let s = open(dir.path(), &opts, engine).await.unwrap();
            assert_eq!(
                contents(&s).keys().cloned().collect::<Vec<_>>(),
                vec![b"a".to_vec(), b"c".to_vec()]
            );
        });
    }
}

/// After a failed fdatasync the store refuses writes until reopened.
#[test]
fn failed_fsync_poisons_the_store() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        let faults = FaultInjector::new();
        engine.block_on(async {
            let mut s = open_faulty(dir.path(), &opts, engine, &faults).await;
            s.put(b"a", b"1").await.unwrap();
            faults.add(FaultRule {
                op: Some(FaultOp::Sync),
                nth: 1,
                action: FaultAction::Fail(libc_eio()),
            });
            assert!(s.put(b"b", b"2").await.is_err());
            let e = s.put(b"c", b"3").await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::Poisoned, "{e}");
            assert!(
                e.to_string()
                    .contains("until the daemon restarts: fdatasync")
                    && e.to_string().contains("what reached the disk is unknown"),
                "{e}"
            );
            assert!(s.poisoned().is_some());
            assert_eq!(s.reader().get(b"a").unwrap().unwrap().value, b"1");
            drop(s);
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            s.put(b"c", b"3").await.unwrap();
        });
    }
}

/// A data directory removed under a running store: under `sync=always` the
/// first write after it fails (nothing written to a deleted file is
/// acknowledged) and every later one is refused; under `none` the check
/// the storage task runs every second finds it, and so does a deleted lock
/// file (a second daemon could lock the path anew). Reads go on, and no
/// merge starts.
#[test]
fn deleted_data_directory_refuses_writes() {
    for engine in engines() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("shard");
        engine.block_on(async {
            let opts = small_opts();
            assert_eq!(opts.sync, SyncPolicy::Always);
            let mut s = open(&dir, &opts, engine).await.unwrap();
            s.put(b"a", b"1").await.unwrap();
            s.check_files().unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            let e = s.put(b"b", b"2").await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::Poisoned, "{e}");
            assert!(
                e.to_string()
                    .contains("was deleted while the shard had it open"),
                "{e}"
            );
            let e = s.put(b"c", b"3").await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::Poisoned, "{e}");
            assert_eq!(s.reader().get(b"a").unwrap().unwrap().value, b"1");
            assert!(
                s.merge_now(true).await.is_err(),
                "no merge into a deleted directory"
            );
            assert!(!s.maybe_start_merge().unwrap());
            drop(s);

            let opts = StoreOptions {
                sync: SyncPolicy::None,
                ..small_opts()
            };
            for victim in ["segment", "LOCK"] {
                let mut s = open(&dir, &opts, engine).await.unwrap();
                s.put(b"a", b"1").await.unwrap();
                s.check_files().unwrap();
                let path = if victim == "LOCK" {
                    dir.join("LOCK")
                } else {
                    std::fs::read_dir(&dir)
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                        .max()
                        .expect("an active segment")
                };
                std::fs::remove_file(&path).unwrap();
                let e = s.check_files().unwrap_err();
                assert_eq!(e.code(), ErrorCode::Poisoned, "{victim}: {e}");
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
                let e = s.put(b"b", b"2").await.unwrap_err();
                assert_eq!(e.code(), ErrorCode::Poisoned, "{victim}: {e}");
                // Found once: later checks have nothing new to say.
                s.check_files().unwrap();
                drop(s);
                std::fs::remove_dir_all(&dir).unwrap();
            }
        });
    }
}

/// The `interval` policy's background fdatasync: it covers what was
/// written before it began; writes after it count as unsynced again; a
/// sync asked for meanwhile does not count on it; a failure poisons the
/// store as a failed foreground fdatasync does.
#[test]
fn background_sync_covers_earlier_writes_and_poisons_on_failure() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = small_opts();
        opts.sync = SyncPolicy::Interval(Duration::from_secs(3600));
        let faults = FaultInjector::new();
        engine.block_on(async {
            let mut s = open_faulty(dir.path(), &opts, engine, &faults).await;
            assert!(
                s.begin_background_sync().unwrap().is_none(),
                "nothing to sync"
            );
            s.put(b"a", b"1").await.unwrap();
            let syncs = s.stats().log_syncs;
            let started = std::time::Instant::now();
            let rx = s.begin_background_sync().unwrap().expect("a write to sync");
            // One at a time.
            assert!(s.begin_background_sync().unwrap().is_none());
            // Asked for now, a sync does its own fdatasync.
            s.sync().await.unwrap();
            assert_eq!(s.stats().log_syncs, syncs + 1);
            // The store goes on writing meanwhile.
            s.put(b"b", b"2").await.unwrap();
            s.finish_background_sync(started, rx.await).unwrap();
            assert_eq!(s.stats().log_syncs, syncs + 2);
            // Written after the first began: synced by the next.
            let rx = s.begin_background_sync().unwrap().expect("b is unsynced");
            s.finish_background_sync(started, rx.await).unwrap();
            assert!(s.begin_background_sync().unwrap().is_none(), "all synced");
            s.put(b"c", b"3").await.unwrap();
            faults.add(FaultRule {
                op: Some(FaultOp::Sync),
                nth: 1,
                action: FaultAction::Fail(libc_eio()),
            });
            let rx = s.begin_background_sync().unwrap().expect("c is unsynced");
            assert!(s.finish_background_sync(started, rx.await).is_err());
            let e = s.put(b"d", b"4").await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::Poisoned, "{e}");
        });
    }
}

/// Under `interval`, the storage task syncs on its tick in the background:
/// writes keep being served, and the tick's fdatasyncs are counted.
#[test]
fn interval_policy_syncs_on_the_tick() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = small_opts();
        opts.sync = SyncPolicy::Interval(Duration::from_millis(5));
        let t = store_thread(dir.path(), opts, engine);
        let rt = current_thread();
        let h = t.handle.clone();
        rt.block_on(async move {
            for i in 0..50u32 {
                h.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let st = h.stats().await.unwrap();
            assert!(st.log_syncs >= 2, "{} syncs", st.log_syncs);
            assert!(st.log_syncs <= 50, "{} syncs", st.log_syncs);
        });
        t.shutdown().unwrap();
    }
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn checkpoint_opens_as_a_data_directory_with_the_same_contents() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("cp");
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for i in 0..1500u32 {
                s.put(
                    format!("k{:04}", i % 900).as_bytes(),
                    format!("v{i}").as_bytes(),
                )
                .await
                .unwrap();
            }
            s.delete(b"k0001").await.unwrap();
            s.wait_for_hints();
            let before = contents(&s);
            s.checkpoint(&target).await.unwrap();
            // Changes after the checkpoint are not in it.
            s.put(b"k0002", b"later").await.unwrap();
            assert!(matches!(
                s.checkpoint(&target).await,
                Err(Error::InvalidArgument(_))
            ));
            let cp = open(&target, &opts, engine).await.unwrap();
            assert_eq!(contents(&cp), before);
        });
    }
}

/// Start-up by scanning (no hints) keeps the newest record of each key
/// when keys share long prefixes, as a Redis collection's element keys
/// do: overwrites and deletes within one segment and across segments.
#[test]
fn scanning_start_up_keeps_the_newest_of_keys_with_long_shared_prefixes() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            let mut model = BTreeMap::new();
            let prefix = "z".repeat(40);
            for i in 0..3000u32 {
                // Keys of 40..=44 bytes: some end inside the shared part's
                // next 16-byte window, some are prefixes of others.
                let n = (i * 7919) % 700;
                let k = format!("{prefix}{}", n % 10u32.pow(n % 5)).into_bytes();
                if i % 5 == 4 {
                    s.delete(&k).await.unwrap();
                    model.remove(&k);
                } else {
                    let v = format!("v{i}").into_bytes();
                    s.put(&k, &v).await.unwrap();
                    model.insert(k, v);
                }
            }
            s.close().await.unwrap();
            for e in std::fs::read_dir(dir.path()).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "hint") {
                    std::fs::remove_file(p).unwrap();
                }
            }
            let (s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert!(report.segments_scanned > 1, "{report:?}");
            check_model(&s, &model);
        });
    }
}

/// A merge with more index moves than one step applies: between its
/// commit and its last move, every key reads back (moved or not), writes
/// and deletes racing with the moves win, live bytes add up, and a
/// checkpoint taken then opens with the same contents.
#[test]
fn merge_applies_its_index_moves_in_steps() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("cp");
        let mut opts = small_opts();
        opts.sync = SyncPolicy::None;
        opts.segment_size = 256 << 10;
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            let mut model = BTreeMap::new();
            let keys = 50_000u32;
            for round in 0..2u32 {
                for i in 0..keys {
                    let k = format!("key{i:06}").into_bytes();
                    let v = format!("v{round}-{i}").into_bytes();
                    s.put(&k, &v).await.unwrap();
                    model.insert(k, v);
                }
            }
            let victims: Vec<u32> = s
                .stats()
                .segments
                .iter()
                .filter(|x| !x.active)
                .map(|x| x.id)
                .collect();
            assert!(s.start_merge(true).unwrap());
            let committed = |dir: &Path| {
                std::fs::read_dir(dir).unwrap().any(|e| {
                    e.unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".commit")
                })
            };
            let (mut steps_installed, mut i) = (0u32, 0u32);
            let mut checkpointed = None;
            let mut deleted = std::collections::BTreeSet::new();
            loop {
                let done = s.merge_step(256 << 10).await.unwrap();
                if done {
                    break;
                }
                if !committed(dir.path()) {
                    continue;
                }
                steps_installed += 1;
                check_model(&s, &model);
                // Overwrite and delete keys the moves have and have not
                // reached yet.
                for _ in 0..50 {
                    let k = format!("key{:06}", (i * 7919) % keys).into_bytes();
                    if i % 3 == 0 {
                        s.delete(&k).await.unwrap();
                        model.remove(&k);
                        deleted.insert(k);
                    } else {
                        let v = format!("racing-{i}").into_bytes();
                        s.put(&k, &v).await.unwrap();
                        model.insert(k, v);
                    }
                    i += 1;
                }
                if steps_installed == 2 {
                    s.checkpoint(&target).await.unwrap();
                    checkpointed = Some(model.clone());
                }
            }
            assert!(
                steps_installed >= 3,
                "the moves took {steps_installed} steps"
            );
            assert!(!committed(dir.path()));
            check_model(&s, &model);
            let st = s.stats();
            // Live bytes: each model key's record plus each deleted key's
            // tombstone.
            let len = flashkv::storage::format::record_len;
            let live: u64 = model
                .iter()
                .map(|(k, v)| len(k.len(), v.len(), false) as u64)
                .chain(
                    deleted
                        .iter()
                        .filter(|k| !model.contains_key(*k))
                        .map(|k| len(k.len(), 0, false) as u64),
                )
                .sum();
            assert_eq!(st.live_bytes, live);
            let cp = open(&target, &opts, engine).await.unwrap();
            check_model(&cp, &checkpointed.expect("a checkpoint mid-moves"));
            // The copy's start-up finished the merge: no victim is left.
            let left: Vec<u32> = cp.stats().segments.iter().map(|x| x.id).collect();
            assert!(victims.iter().all(|v| !left.contains(v)), "{left:?}");
            drop(cp);
            reopen_and_check(s, dir.path(), &opts, engine, &model).await;
        });
    }
}

#[test]
fn stats_account_live_and_dead_bytes() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for round in 0..4u32 {
                for i in 0..400u32 {
                    s.put(
                        format!("k{i:04}").as_bytes(),
                        format!("value-{round}-{i:04}").as_bytes(),
                    )
                    .await
                    .unwrap();
                }
            }
            let st = s.stats();
            assert_eq!(st.keys, 400);
            let rec = flashkv::storage::format::record_len(5, 12, false) as u64;
            assert_eq!(st.live_bytes, 400 * rec);
            assert_eq!(st.dead_bytes, 1200 * rec);
            assert!(st.segments.len() >= 2);
            assert!(st.index_bytes > 400 * 5);
            assert_eq!(st.batches, 1600);
            assert!(s.merge_now(true).await.unwrap());
            let st = s.stats();
            assert_eq!(st.keys, 400);
            assert_eq!(st.merges, 1);
            assert!(st.bytes_reclaimed > 0);
            let sealed_dead: u64 = st
                .segments
                .iter()
                .filter(|x| !x.active)
                .map(|x| x.dead_bytes)
                .sum();
            assert_eq!(sealed_dead, 0, "{:?}", st.segments);
            s.close().await.unwrap();
            // Recovery computes the same accounting from hints.
            let s = open(dir.path(), &opts, engine).await.unwrap();
            let again = s.stats();
            assert_eq!(again.live_bytes, st.live_bytes);
            assert_eq!(
                again.dead_bytes, st.dead_bytes,
                "{:?}\n{:?}",
                st.segments, again.segments
            );
        });
    }
}

#[test]
fn scans_are_ordered_bounded_and_reversible() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for k in ["a", "b/1", "b/2", "b/3", "c"] {
                s.put(k.as_bytes(), k.as_bytes()).await.unwrap();
            }
            s.delete(b"b/2").await.unwrap();
            let r = s.reader();
            let keys = |v: Vec<(Vec<u8>, flashkv::storage::Value)>| {
                v.into_iter()
                    .map(|(k, _)| String::from_utf8(k).unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                keys(
                    r.scan(
                        Bound::Included(b"b/"),
                        Bound::Excluded(b"b0"),
                        false,
                        10,
                        false
                    )
                    .unwrap()
                ),
                ["b/1", "b/3"]
            );
            assert_eq!(
                keys(
                    r.scan(Bound::Unbounded, Bound::Unbounded, true, 3, true)
                        .unwrap()
                ),
                ["c", "b/3", "b/1"]
            );
            assert_eq!(
                keys(
                    r.scan(
                        Bound::Excluded(b"a"),
                        Bound::Included(b"c"),
                        false,
                        100,
                        false
                    )
                    .unwrap()
                ),
                ["b/1", "b/3", "c"]
            );
        });
    }
}

/// Concurrent writers through the storage task are committed in groups:
/// fewer fdatasyncs than writes, every write acknowledged and present.
#[test]
fn group_commit_batches_concurrent_writers() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let t = store_thread(dir.path(), small_opts(), engine);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = t.handle.clone();
        rt.block_on(async move {
            let tasks: Vec<_> = (0..32u32)
                .map(|w| {
                    let h = h.clone();
                    tokio::spawn(async move {
                        for i in 0..50u32 {
                            h.put(format!("w{w}-{i}").as_bytes(), b"v").await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let st = h.stats().await.unwrap();
            assert_eq!(st.batches, 1600);
            assert!(
                st.log_syncs < 1600,
                "{} syncs for 1600 writes",
                st.log_syncs
            );
            assert_eq!(h.reader().len(), 1600);
        });
        t.shutdown().unwrap();
    }
}

/// The storage task starts merges by itself: on the garbage ratio of a
/// sealed segment, and on a schedule.
#[test]
fn merge_triggers_fire_without_being_asked() {
    use flashkv::storage::MergePolicy;
    let policies = [
        (
            "garbage ratio",
            MergePolicy {
                min_garbage_ratio: 0.3,
                ..MergePolicy::default()
            },
        ),
        (
            "schedule",
            MergePolicy {
                min_garbage_ratio: 1.0,
                min_reclaimable_bytes: u64::MAX,
                interval: Some(std::time::Duration::from_secs(1)),
                ..MergePolicy::default()
            },
        ),
    ];
    for engine in engines() {
        for (what, merge) in policies.clone() {
            let dir = tempfile::tempdir().unwrap();
            let opts = StoreOptions {
                merge,
                sync: SyncPolicy::None,
                ..small_opts()
            };
            let t = store_thread(dir.path(), opts, engine);
            let rt = current_thread();
            let h = t.handle.clone();
            let merged = rt.block_on(async move {
                // Overwrite the same keys so that sealed segments fill with garbage.
                for round in 0..6u32 {
                    for i in 0..300u32 {
                        h.put(
                            format!("k{i:03}").as_bytes(),
                            format!("round {round} {}", "x".repeat(80)).as_bytes(),
                        )
                        .await
                        .unwrap();
                    }
                }
                for _ in 0..60 {
                    let st = h.stats().await.unwrap();
                    if st.merges > 0 {
                        assert_eq!(h.reader().len(), 300);
                        assert_eq!(
                            h.reader().get(b"k007").unwrap().unwrap().value,
                            format!("round 5 {}", "x".repeat(80)).into_bytes()
                        );
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                false
            });
            assert!(merged, "{what}: no merge within 6 s on {engine:?}");
            t.shutdown().unwrap();
        }
    }
}

/// A crash leaves the newest segment without its seal record. If start-up
/// does not append to it again (it is over half full), it is sealed then:
/// a second crash before its hint is written must not leave an unsealed
/// segment that is no longer the newest, which start-up refuses.
#[test]
fn a_crashed_segment_that_is_not_reused_is_sealed_at_start_up() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        let key = |i: u32| format!("k{i:05}");
        // About 40 KiB: over half of a 64 KiB segment, within one.
        let n = 300u32;
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for i in 0..n {
                s.put(key(i).as_bytes(), &[5u8; 100]).await.unwrap();
            }
            drop(s); // no close: as after a crash
        });
        assert_eq!(segment_files(dir.path()).len(), 1);
        engine.block_on(async {
            let (s, report) = open_with_report(dir.path(), &opts, engine).await;
            assert_eq!(report.segments_sealed, 1, "{report:?}");
            drop(s); // a second crash, before any hint is written
        });
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "hint") {
                std::fs::remove_file(f).unwrap();
            }
        }
        let segs = segment_files(dir.path());
        assert_eq!(segs.len(), 2, "{segs:?}");
        let bytes = std::fs::read(&segs[0]).unwrap();
        let seal = &bytes[bytes.len() - flashkv::storage::format::SEAL_LEN..];
        assert_eq!(
            flashkv::storage::format::decode_record(seal).unwrap().kind,
            flashkv::storage::format::RecordKind::Seal
        );
        engine.block_on(async {
            let s = open(dir.path(), &opts, engine).await.unwrap();
            assert_eq!(s.reader().len(), n as usize);
            assert_eq!(
                s.reader()
                    .get(key(n - 1).as_bytes())
                    .unwrap()
                    .unwrap()
                    .value,
                [5u8; 100]
            );
        });
    }
}

/// The header of `path`, as written.
fn header_of(path: &Path) -> flashkv::storage::format::SegmentHeader {
    let bytes = std::fs::read(path).unwrap();
    flashkv::storage::format::SegmentHeader::decode(&bytes).unwrap()
}

/// Under `interval` and `none` a sealed segment's fdatasync runs in the
/// background and the next segment's header names it until it is durable.
/// A crash in that window may tear the predecessor: start-up cuts its tail
/// and drops the newer segment's records, so what is left is a prefix of
/// the writes; a second start-up finds a clean directory. Without the name
/// in the header the same damage refuses start-up.
#[test]
fn a_crash_before_a_background_seal_is_durable_leaves_a_prefix() {
    let key = |i: u32| format!("k{i:05}");
    let n = 1500u32; // about three and a half 64 KiB segments
    for engine in engines() {
        for sync in [
            SyncPolicy::None,
            SyncPolicy::Interval(Duration::from_secs(60)),
        ] {
            for named in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let opts = StoreOptions {
                    sync,
                    ..small_opts()
                };
                engine.block_on(async {
                    let mut s = open(dir.path(), &opts, engine).await.unwrap();
                    for i in 0..n {
                        s.put(key(i).as_bytes(), &[9u8; 100]).await.unwrap();
                    }
                    drop(s); // no close: as after a crash
                });
                let segs = segment_files(dir.path());
                assert!(segs.len() >= 3, "{segs:?}");
                let (pred, newest) = (&segs[segs.len() - 2], &segs[segs.len() - 1]);
                let h = header_of(newest);
                assert_eq!(h.unsynced_predecessor, Some(header_of(pred).segment_id));
                if !named {
                    let mut bytes = std::fs::read(newest).unwrap();
                    let cleared = flashkv::storage::format::SegmentHeader {
                        unsynced_predecessor: None,
                        ..h
                    };
                    bytes[..32].copy_from_slice(&cleared.encode());
                    std::fs::write(newest, bytes).unwrap();
                }
                // The predecessor's last pages never reached the disk: its
                // seal record and part of the record before it are gone.
                let pred_len = std::fs::metadata(pred).unwrap().len();
                let torn_at = pred_len - flashkv::storage::format::SEAL_LEN as u64 - 50;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(pred)
                    .unwrap()
                    .set_len(torn_at)
                    .unwrap();
                // The offline checker agrees with start-up, and reports
                // the name.
                let check = flashkv::storage::check::check_dir(dir.path(), false).unwrap();
                assert_eq!(check.damaged(), !named, "{check:?}");
                assert_eq!(
                    check.segments[segs.len() - 1].unsynced_predecessor,
                    named.then_some(header_of(pred).segment_id)
                );
                if named {
                    let p = &check.segments[segs.len() - 2];
                    assert!(p.torn_tail > 0, "{p:?}");
                }
                engine.block_on(async {
                    let opened =
                        Store::open(dir.path(), opts.clone(), io(engine), Arc::new(Clock::new()))
                            .await;
                    if !named {
                        let e = opened
                            .err()
                            .expect("damage in a sealed segment refuses start-up");
                        assert!(e.to_string().contains(&pred.display().to_string()), "{e}");
                        return;
                    }
                    let (mut s, report) = opened.unwrap();
                    assert!(report.truncated_tail_bytes > 0, "{report:?}");
                    assert_eq!(report.segments_sealed, 1, "{report:?}");
                    // A prefix: every key below some cut, none above it.
                    let r = s.reader();
                    let present: Vec<bool> = (0..n)
                        .map(|i| r.get(key(i).as_bytes()).unwrap().is_some())
                        .collect();
                    let cut = present.iter().position(|p| !p).expect("the tail was lost");
                    assert!(
                        present[cut..].iter().all(|p| !p),
                        "not a prefix: cut at {cut}"
                    );
                    assert!(cut > 0);
                    assert_eq!(s.reader().len(), cut);
                    assert_eq!(header_of(newest).unsynced_predecessor, None);
                    s.put(b"after", b"crash").await.unwrap();
                    s.close().await.unwrap();
                    let check = flashkv::storage::check::check_dir(dir.path(), false).unwrap();
                    assert!(!check.damaged(), "{check:?}");
                    let (s, report) = open_with_report(dir.path(), &opts, engine).await;
                    assert_eq!(report.truncated_tail_bytes, 0, "{report:?}");
                    assert_eq!(s.reader().len(), cut + 1);
                });
            }
        }
    }
}

/// A background seal, once durable, gets its hint and stops being named by
/// the active segment's header; an intact predecessor that is still named
/// after a crash costs nothing at start-up.
#[test]
fn a_durable_background_seal_gets_its_hint_and_leaves_the_header() {
    let key = |i: u32| format!("k{i:05}");
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            sync: SyncPolicy::None,
            ..small_opts()
        };
        let n = 700u32; // one seal
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            for i in 0..n {
                s.put(key(i).as_bytes(), &[3u8; 100]).await.unwrap();
            }
            let segs = segment_files(dir.path());
            assert_eq!(segs.len(), 2, "{segs:?}");
            assert_eq!(header_of(&segs[1]).unsynced_predecessor, Some(1));
            assert!(!dir.path().join("0000000001.hint").exists());
            // A crash now finds the predecessor whole: nothing is dropped.
            let copy = tempfile::tempdir().unwrap();
            for f in &segs {
                std::fs::copy(f, copy.path().join(f.file_name().unwrap())).unwrap();
            }
            s.sync().await.unwrap();
            assert_eq!(header_of(&segs[1]).unsynced_predecessor, None);
            s.wait_for_hints();
            assert!(dir.path().join("0000000001.hint").exists());
            drop(s);
            let (s, report) = open_with_report(copy.path(), &opts, engine).await;
            assert_eq!(report.truncated_tail_bytes, 0, "{report:?}");
            assert_eq!(s.reader().len(), n as usize);
        });
    }
}

/// The storage task finishes a background seal as soon as its fdatasync
/// ends, with no request after it: the hint is written and the active
/// segment's header stops naming the sealed one.
#[test]
fn the_storage_task_finishes_a_background_seal_on_its_own() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            sync: SyncPolicy::None,
            ..small_opts()
        };
        let t = store_thread(dir.path(), opts, engine);
        let rt = current_thread();
        let h = t.handle.clone();
        rt.block_on(async move {
            for i in 0..700u32 {
                h.put(format!("k{i:05}").as_bytes(), &[1u8; 100])
                    .await
                    .unwrap();
            }
        });
        let hint = dir.path().join("0000000001.hint");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(hint.exists()
            && header_of(&dir.path().join("0000000002.seg"))
                .unsynced_predecessor
                .is_none())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the seal was not finished"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A sealed segment cut exactly between two records scans cleanly, so
/// without its seal record recovery would silently lose its tail while
/// newer segments survive. It must refuse to start instead (hint or not).
#[test]
fn sealed_segment_cut_at_a_record_boundary_refuses_start() {
    for engine in engines() {
        for drop_hint in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let opts = small_opts();
            engine.block_on(async {
                let mut s = open(dir.path(), &opts, engine).await.unwrap();
                for i in 0..1500u32 {
                    s.put(format!("k{i:04}").as_bytes(), &[9u8; 100])
                        .await
                        .unwrap();
                }
                s.close().await.unwrap();
            });
            let segs = segment_files(dir.path());
            assert!(segs.len() >= 2);
            let sealed = &segs[0];
            if drop_hint {
                std::fs::remove_file(sealed.with_extension("hint")).unwrap();
            }
            // Cut off the seal record: what remains ends on a record boundary.
            let len = std::fs::metadata(sealed).unwrap().len();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(sealed)
                .unwrap();
            f.set_len(len - flashkv::storage::format::SEAL_LEN as u64)
                .unwrap();
            engine.block_on(async {
                let err = open(dir.path(), &opts, engine)
                    .await
                    .err()
                    .expect("a cut sealed segment must refuse start-up");
                assert_eq!(err.code(), ErrorCode::Corruption, "{err}");
                assert!(err.to_string().contains("seal"), "{err}");
            });
        }
    }
}

/// ENOSPC in the middle of a merge: the merge fails cleanly (no temporary
/// files left, nothing lost), reads keep working, and once space returns
/// both writes and the merge succeed.
#[test]
fn disk_full_during_merge_loses_nothing_and_recovers() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        let faults = FaultInjector::new();
        engine.block_on(async {
            let mut s = open_faulty(dir.path(), &opts, engine, &faults).await;
            let mut model = BTreeMap::new();
            for i in 0..2000u32 {
                let k = format!("key{:04}", i % 600).into_bytes();
                let v = format!("value {i}").into_bytes();
                s.put(&k, &v).await.unwrap();
                model.insert(k, v);
            }
            assert!(s.start_merge(true).unwrap());
            // Let the merge copy part of its input, then fill the disk.
            assert!(!s.merge_step(8 << 10).await.unwrap());
            faults.set_disk_full(true);
            let mut failed = false;
            for _ in 0..10_000 {
                match s.merge_step(8 << 10).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        assert!(e.is_disk_full(), "{e}");
                        failed = true;
                        break;
                    }
                }
            }
            assert!(failed, "the merge should have hit the full disk");
            check_model(&s, &model);
            assert!(s.put(b"new", b"x").await.unwrap_err().is_disk_full());
            let names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n.ends_with(".tmp") || n.ends_with(".commit")),
                "{names:?}"
            );
            faults.set_disk_full(false);
            s.put(b"new", b"x").await.unwrap();
            model.insert(b"new".to_vec(), b"x".to_vec());
            assert!(s.merge_now(true).await.unwrap());
            check_model(&s, &model);
            reopen_and_check(s, dir.path(), &opts, engine, &model).await;
        });
    }
}

/// A failing open or read at start-up (segment headers, hints, segments to
/// scan, the active segment reopened for appending): the store refuses to
/// open with an I/O error naming the file, and opens intact once the fault
/// is gone. Every such operation of the start-up is failed in turn.
#[test]
fn failed_open_or_read_at_start_up_refuses_and_loses_nothing() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        let mut model = BTreeMap::new();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            // Several sealed segments (with hints) and an active one.
            for i in 0..600u32 {
                let (k, v) = (format!("k{i:04}").into_bytes(), vec![i as u8; 300]);
                s.put(&k, &v).await.unwrap();
                model.insert(k, v);
            }
            s.close().await.unwrap();
        });
        for op in [FaultOp::Open, FaultOp::Read] {
            let mut failed = 0;
            for nth in 1.. {
                let faults = FaultInjector::new();
                faults.add(FaultRule {
                    op: Some(op),
                    nth,
                    action: FaultAction::Fail(libc_eio()),
                });
                let opened = engine.block_on(Store::open(
                    dir.path(),
                    opts.clone(),
                    faulty_io(engine, &faults),
                    Arc::new(Clock::new()),
                ));
                match opened {
                    Err(e) => {
                        assert_eq!(e.code(), ErrorCode::Io, "{op:?} #{nth}: {e}");
                        assert!(e.to_string().contains(dir.path().to_str().unwrap()), "{e}");
                        failed += 1;
                        // Nothing was lost: a clean open sees everything.
                        engine.block_on(async {
                            let s = open(dir.path(), &opts, engine).await.unwrap();
                            check_model(&s, &model);
                        });
                    }
                    // The fault's turn never came: every operation was tried.
                    Ok((s, _)) => {
                        check_model(&s, &model);
                        break;
                    }
                }
            }
            assert!(failed >= 1, "{op:?}: start-up did no such operation");
        }
    }
}

/// The active expiry sweep deletes keys whose expiry passed (a tombstone
/// each, so they stay gone after a restart), a budget at a time with a
/// cursor that wraps around, and leaves live keys and rewritten ones alone.
#[test]
fn active_sweep_deletes_expired_keys() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            let soon = flashkv::storage::store::now_ms() + 50;
            let mut model = BTreeMap::new();
            for i in 0..200u32 {
                let key = format!("k{i:03}").into_bytes();
                let expires = (i % 2 == 0).then_some(soon);
                s.write(Batch {
                    ops: vec![Op::Put {
                        key: key.clone(),
                        value: b"v".to_vec(),
                        expires_at_ms: expires,
                    }],
                    conditions: vec![],
                })
                .await
                .unwrap();
                if expires.is_none() {
                    model.insert(key, b"v".to_vec());
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            // Rewritten after it expired, without expiry: it stays.
            s.put(b"k000", b"again").await.unwrap();
            model.insert(b"k000".to_vec(), b"again".to_vec());
            assert_eq!(
                s.stats().keys,
                200,
                "expired keys still in the index before the sweep"
            );
            let mut deleted = 0;
            for _ in 0..20 {
                deleted += s.sweep_expired(30).await.unwrap();
            }
            assert_eq!(deleted, 99);
            let stats = s.stats();
            assert_eq!((stats.keys, stats.tombstones), (101, 99));
            assert_eq!(
                s.sweep_expired(1000).await.unwrap(),
                0,
                "nothing left to sweep"
            );
            reopen_and_check(s, dir.path(), &opts, engine, &model).await;
        });
    }
}

/// The deletes of a large batch are skipped without lookups when the index
/// holds nothing in their key range, but not when an earlier batch of the
/// same group wrote one of their keys, nor when the range holds a key.
#[test]
fn large_batches_delete_what_earlier_batches_of_their_group_wrote() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small_opts();
        engine.block_on(async {
            let mut s = open(dir.path(), &opts, engine).await.unwrap();
            let put = |k: &str| Op::Put {
                key: k.as_bytes().to_vec(),
                value: b"v".to_vec(),
                expires_at_ms: None,
            };
            let del = |k: &str| Op::Delete {
                key: k.as_bytes().to_vec(),
            };
            let batch = |ops: Vec<Op>| Batch {
                ops,
                conditions: vec![],
            };
            // Deletes of z-keys after 40 puts of a-keys (a large group).
            let large = |tag: &str, deleted: &[&str]| {
                let mut ops: Vec<Op> = (0..40).map(|i| put(&format!("a-{tag}-{i:02}"))).collect();
                ops.extend(deleted.iter().map(|k| del(k)));
                batch(ops)
            };
            // 1. An earlier batch of the group writes z-1; a later one deletes
            //    it (with z-0 and z-2, absent): z-1 must be gone.
            let r = s
                .write_group(vec![
                    batch(vec![put("z-1")]),
                    large("1", &["z-0", "z-1", "z-2"]),
                ])
                .await;
            assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
            assert!(s.reader().get(b"z-1").unwrap().is_none());
            assert_eq!(s.stats().tombstones, 1, "one tombstone, for z-1");
            // 2. The range holds a key (z-1's tombstone and z-5): z-5 is
            //    deleted, the absent z-4 gets no tombstone.
            s.put(b"z-5", b"v").await.unwrap();
            let r = s.write_group(vec![large("2", &["z-4", "z-5"])]).await;
            assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
            assert!(s.reader().get(b"z-5").unwrap().is_none());
            assert_eq!(s.stats().tombstones, 2);
            // 3. An empty range: nothing is written for absent keys.
            let r = s.write_group(vec![large("3", &["y-0", "y-1"])]).await;
            assert!(r.iter().all(|r| r.is_ok()), "{r:?}");
            assert_eq!(s.stats().tombstones, 2);
            assert_eq!(s.stats().keys, 120);
        });
    }
}
