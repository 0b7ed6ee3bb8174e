//! Transaction benchmarks, in process, `sync=none`, two shards (one storage
//! thread each):
//!
//! - `commit/single_shard` and `commit/cross_shard`: read-write
//!   transactions of 2 reads and 2 writes (keys on one shard, or one key on
//!   each), 64 in flight (`FLASHKV_BENCH_INFLIGHT` sets another count),
//!   uniform over 100k keys, coordinated on the bench thread, so that
//!   every commit is a message to another thread; throughput is commits/s;
//! - `commit/single_shard_local` and `commit/cross_shard_local`: the same,
//!   coordinated on the store threads themselves, half the clients on
//!   each, as the daemon runs its request handlers on the shard threads (DESIGN.md
//!   §1). A single-shard transaction there uses its own shard's keys and
//!   commits without any cross-thread message (the fast path of DESIGN.md
//!   §3); a cross-shard one has one key on each shard;
//! - `commit/contended_zipf`: the single-shard shape with zipfian keys
//!   (s = 0.99) over 1000 keys; the abort rate is printed;
//! - `read/snapshot_get` versus `read/plain_get`: the cost of reading at a
//!   snapshot (with an open snapshot and old versions to skip) against a
//!   plain get.
//!
//! The abort rate of 64 clients on uniform keys is printed with the commit
//! benchmarks, and so is the process's CPU time per commit with the CPUs
//! it kept busy (steadier than the rate where other machines share the
//! host). Run: `make bench-txn` (or `cargo bench --bench txn`);
//! `FLASHKV_BENCH_ENGINE=plain` forces the plain I/O engine.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flashkv::clock::Clock;
use flashkv::shard::{Partitioner, Router};
use flashkv::storage::{Batch, Io, IoEngine, Op, StoreOptions, StoreThread, SyncPolicy};
use flashkv::txn::{Commit, Coordinator, TxnOptions};

#[cfg(feature = "jemalloc")]
flashkv::jemalloc_global_allocator!(huge_pages);

const KEYS: u64 = 100_000;
/// Transactions in flight: `FLASHKV_BENCH_INFLIGHT`, else 64.
fn inflight() -> usize {
    std::env::var("FLASHKV_BENCH_INFLIGHT")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(64)
}

struct Db {
    coord: Arc<Coordinator>,
    threads: Vec<StoreThread>,
    /// Keys of each shard, for picking keys on one shard or on two.
    by_shard: Arc<Vec<Vec<Vec<u8>>>>,
}

/// The I/O engine: `FLASHKV_BENCH_ENGINE` (io_uring or plain), else what
/// the kernel allows.
fn engine() -> IoEngine {
    std::env::var("FLASHKV_BENCH_ENGINE")
        .ok()
        .and_then(|e| IoEngine::parse(&e))
        .unwrap_or_else(IoEngine::detect)
}

fn key(i: u64) -> Vec<u8> {
    format!(
        "k{:012}",
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000_000_000
    )
    .into_bytes()
}

fn open(dir: &Path, keys: u64) -> Db {
    let clock = Arc::new(Clock::new());
    let threads: Vec<StoreThread> = (0..2)
        .map(|i| {
            StoreThread::spawn(
                dir.join(format!("s{i}")),
                StoreOptions {
                    shard_id: i,
                    sync: SyncPolicy::None,
                    ..Default::default()
                },
                Io::new(engine()),
                clock.clone(),
            )
            .expect("open shard")
        })
        .collect();
    let router = Arc::new(Router::new(
        Partitioner::hash(2).expect("two shards"),
        threads.iter().map(|t| t.handle.clone()).collect(),
        clock.clone(),
    ));
    let mut by_shard = vec![Vec::new(), Vec::new()];
    let rt = rt();
    rt.block_on(async {
        for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
            for s in 0..2 {
                let ops: Vec<Op> = chunk
                    .iter()
                    .map(|i| key(*i))
                    .filter(|k| router.shard_of(k) == s)
                    .map(|k| Op::Put {
                        key: k,
                        value: b"100".to_vec(),
                        expires_at_ms: None,
                    })
                    .collect();
                for op in &ops {
                    by_shard[s as usize].push(op.key().to_vec());
                }
                if !ops.is_empty() {
                    router
                        .shard(s as usize)
                        .write(Batch {
                            ops,
                            conditions: vec![],
                        })
                        .await
                        .expect("load");
                }
            }
        }
    });
    let coord = Arc::new(Coordinator::new(router, clock, TxnOptions::default()));
    Db {
        coord,
        threads,
        by_shard: Arc::new(by_shard),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU time of the whole process (every thread: the store threads, the
/// bench thread, io_uring's workers), a steadier measure than the rate on
/// a noisy host.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// xorshift64*.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Zipfian rank in [0, n) with s = 0.99 (rejection-inversion would be
/// exact; a precomputed CDF is enough for 1000 keys).
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|i| {
                acc += 1.0 / (i as f64).powf(0.99);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf(cdf)
    }

    fn sample(&self, seed: &mut u64) -> usize {
        let u = (next(seed) >> 11) as f64 / (1u64 << 53) as f64;
        self.0.partition_point(|c| *c < u).min(self.0.len() - 1)
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Single,
    Cross,
    Zipf,
}

/// Where the transactions' coordinators run.
#[derive(Clone, Copy)]
enum Place {
    /// On the bench thread: every commit is a message to a store thread.
    Apart,
    /// Half on each store thread, beside its storage task, as the daemon's
    /// request handlers run on its shard threads. A single-shard
    /// transaction takes keys of its own thread's shard and commits with
    /// no cross-thread message; a cross-shard one takes one key of each.
    Local,
}

/// One client: `per` transactions of 2 reads and 2 writes, one at a time.
#[allow(clippy::too_many_arguments)]
async fn client(
    c: Arc<Coordinator>,
    keys: Arc<Vec<Vec<Vec<u8>>>>,
    zipf: Arc<Zipf>,
    aborts: Arc<AtomicU64>,
    shape: Shape,
    w: usize,
    home: Option<usize>,
    per: u64,
) {
    let mut seed = 0x1234_5678_9abc_def1 ^ ((w as u64 + 1) * 0x9E37_79B9);
    for _ in 0..per {
        let (a, b) = match shape {
            Shape::Single => {
                let s = home.unwrap_or((next(&mut seed) % 2) as usize);
                let ks = &keys[s];
                let i = next(&mut seed) as usize % ks.len();
                let j = next(&mut seed) as usize % ks.len();
                (ks[i].clone(), ks[j].clone())
            }
            Shape::Cross => {
                let s = home.unwrap_or(0);
                let i = next(&mut seed) as usize % keys[s].len();
                let j = next(&mut seed) as usize % keys[1 - s].len();
                (keys[s][i].clone(), keys[1 - s][j].clone())
            }
            Shape::Zipf => {
                let ks = &keys[0];
                (
                    ks[zipf.sample(&mut seed)].clone(),
                    ks[zipf.sample(&mut seed)].clone(),
                )
            }
        };
        let mut t = c.begin().await;
        let va = c.get(&mut t, &a).expect("get").map(|v| v.value);
        let vb = c.get(&mut t, &b).expect("get").map(|v| v.value);
        t.put(a, vb.unwrap_or_default(), None);
        t.put(b, va.unwrap_or_default(), None);
        match c.commit(t).await.expect("commit") {
            Commit::Committed { .. } => {}
            Commit::Aborted(_) => {
                aborts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `n` transactions, `inflight()` at a time; returns (elapsed, aborts).
fn run(db: &Db, shape: Shape, place: Place, n: u64) -> (Duration, u64) {
    let rt = rt();
    let aborts = Arc::new(AtomicU64::new(0));
    let zipf = Arc::new(Zipf::new(1000));
    let inflight = inflight();
    let per = n.div_ceil(inflight as u64);
    let started = Instant::now();
    rt.block_on(async {
        let mut done = Vec::new();
        for w in 0..inflight {
            let (c, keys, zipf, aborts) = (
                db.coord.clone(),
                db.by_shard.clone(),
                zipf.clone(),
                aborts.clone(),
            );
            match place {
                Place::Apart => done.push(tokio::task::spawn(async move {
                    client(c, keys, zipf, aborts, shape, w, None, per).await
                })),
                Place::Local => {
                    let home = w % db.threads.len();
                    let ran = db.threads[home].run_local(move || {
                        client(c, keys, zipf, aborts, shape, w, Some(home), per)
                    });
                    done.push(tokio::task::spawn(async move {
                        ran.await.expect("store thread ran the client")
                    }));
                }
            }
        }
        for t in done {
            t.await.expect("client");
        }
    });
    (started.elapsed(), aborts.load(Ordering::Relaxed))
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), KEYS);
    let mut g = c.benchmark_group("commit");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(1));
    for (name, shape, place) in [
        ("single_shard", Shape::Single, Place::Apart),
        ("cross_shard", Shape::Cross, Place::Apart),
        ("single_shard_local", Shape::Single, Place::Local),
        ("cross_shard_local", Shape::Cross, Place::Local),
        ("contended_zipf", Shape::Zipf, Place::Apart),
    ] {
        // Transactions, aborts, process CPU time, wall time.
        let mut total = (0u64, 0u64, Duration::ZERO, Duration::ZERO);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let cpu = process_cpu();
                let n = iters.max(inflight() as u64);
                let (d, aborts) = run(&db, shape, place, n);
                total.0 += n;
                total.1 += aborts;
                total.2 += process_cpu().saturating_sub(cpu);
                total.3 += d;
                d * iters as u32 / n as u32
            })
        });
        if total.0 == 0 {
            continue; // filtered out
        }
        eprintln!(
            "commit/{name}: {} transactions, {} aborted ({:.3}%), {:.2} us of CPU a commit, {:.2} CPUs busy",
            total.0,
            total.1,
            100.0 * total.1 as f64 / total.0.max(1) as f64,
            total.2.as_secs_f64() * 1e6 / total.0.max(1) as f64,
            total.2.as_secs_f64() / total.3.as_secs_f64().max(1e-9),
        );
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), KEYS);
    let rt = rt();
    let router = db.coord.router().clone();
    // An open snapshot, then every key rewritten: snapshot reads must walk
    // to the old version.
    let mut snap = rt.block_on(db.coord.begin());
    rt.block_on(async {
        for s in 0..2usize {
            for chunk in db.by_shard[s].chunks(1000) {
                let ops = chunk
                    .iter()
                    .map(|k| Op::Put {
                        key: k.clone(),
                        value: b"200".to_vec(),
                        expires_at_ms: None,
                    })
                    .collect();
                router
                    .shard(s)
                    .write(Batch {
                        ops,
                        conditions: vec![],
                    })
                    .await
                    .expect("rewrite");
            }
        }
    });
    let keys: Vec<Vec<u8>> = db.by_shard.concat();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("plain_get", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            router.get(&keys[i]).expect("get")
        })
    });
    let at = snap.read_version();
    g.bench_function("snapshot_get_old_version", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let s = router.shard_of(&keys[i]) as usize;
            router
                .shard(s)
                .reader()
                .get_at(&keys[i], at)
                .expect("get_at")
        })
    });
    g.bench_function("txn_get_with_read_set", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            db.coord.get(&mut snap, &keys[i]).expect("txn get")
        })
    });
    g.finish();
}

criterion_group!(benches, commit, read);
criterion_main!(benches);
