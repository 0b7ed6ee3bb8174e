//! Storage engine benchmarks (16-byte keys, 100-byte values).
//!
//! - `put`: single-threaded puts with `sync=none`, one write per put and in
//!   groups of 64, on each I/O backend;
//! - `get`: hits and misses over 1M keys, one get at a time and as
//!   multi-gets of 16 keys (`StoreReader::get_many`, which overlaps the
//!   keys' cache misses), and hits on 2 reader threads; `get/dependent_read`
//!   is the floor under a get: a read of a random byte of a 128 MiB file
//!   mapping whose address depends on the read before it (a get is three
//!   such reads in a row);
//! - `durable_put`: puts with `sync=always` from 1, 8 and 64 concurrent
//!   writers through the storage task (group commit);
//! - `reopen`: index rebuild from hints versus from a scan, 1M and 10M keys
//!   (10M only with `FLASHKV_BENCH_10M=1`: it writes 3 GB);
//! - `merge`: merge throughput over 1M keys written twice (half garbage);
//! - `index`: the in-memory index alone: 1M new keys inserted in random
//!   order (the skiplist search of every insert), keys with random first
//!   bytes and keys sharing a 10-byte prefix (`key:000000123456`, as
//!   redis-benchmark's), one by one and in prepared groups of 512
//!   (`IndexWriter::prepare`, as the group commit does); and overwrites of
//!   present keys.
//!
//! Memory per key is printed (index bytes and resident-set growth per key).
//! Run: `make bench` (or `cargo bench --bench storage -- <filter>`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flashkv::clock::Clock;
use flashkv::storage::{Batch, Io, IoEngine, Store, StoreOptions, StoreThread, SyncPolicy};

#[cfg(feature = "jemalloc")]
flashkv::jemalloc_global_allocator!(huge_pages);

const N: u64 = 1_000_000;
const VALUE: [u8; 100] = [0x5a; 100];

fn key(i: u64) -> [u8; 16] {
    // Spread keys over the key space (a multiplicative hash), 16 bytes each.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn opts(sync: SyncPolicy) -> StoreOptions {
    StoreOptions {
        sync,
        ..Default::default()
    }
}

fn engines() -> Vec<IoEngine> {
    let mut v = vec![IoEngine::Plain];
    if flashkv::storage::io::uring_available() {
        v.push(IoEngine::Uring);
    }
    v
}

async fn open(dir: &Path, o: StoreOptions, engine: IoEngine) -> Store {
    Store::open(dir, o, Io::new(engine), Arc::new(Clock::new()))
        .await
        .expect("open store")
        .0
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// Writes keys 0..n (in groups, fast) and waits for hints.
fn fill(dir: &Path, n: u64, rounds: u32) {
    IoEngine::Plain.block_on(async {
        let mut s = open(dir, opts(SyncPolicy::None), IoEngine::Plain).await;
        for _ in 0..rounds {
            let mut i = 0;
            while i < n {
                let batches: Vec<Batch> = (i..(i + 256).min(n))
                    .map(|j| Batch::put(key(j).to_vec(), VALUE.to_vec()))
                    .collect();
                i += batches.len() as u64;
                for r in s.write_group(batches).await {
                    r.expect("fill");
                }
            }
        }
        s.close().await.expect("close");
    });
}

fn bench_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("put");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    for engine in engines() {
        for group in [1usize, 64] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut next = 0u64;
            g.bench_function(
                BenchmarkId::new(format!("sync_none_group{group}"), engine.as_str()),
                |b| {
                    b.iter_custom(|iters| {
                        engine.block_on(async {
                            let mut s = open(dir.path(), opts(SyncPolicy::None), engine).await;
                            let start = Instant::now();
                            let mut done = 0;
                            while done < iters {
                                let n = (group as u64).min(iters - done);
                                if group == 1 {
                                    s.put(&key(next % N), &VALUE).await.expect("put");
                                } else {
                                    let batches = (0..n)
                                        .map(|j| {
                                            Batch::put(key((next + j) % N).to_vec(), VALUE.to_vec())
                                        })
                                        .collect();
                                    for r in s.write_group(batches).await {
                                        r.expect("put");
                                    }
                                }
                                next += n;
                                done += n;
                            }
                            let t = start.elapsed();
                            s.close().await.expect("close");
                            t
                        })
                    })
                },
            );
        }
    }
    g.finish();
}

fn bench_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rss0 = rss_bytes();
    fill(dir.path(), N, 1);
    let (store, reader) = IoEngine::Plain.block_on(async {
        let s = open(dir.path(), opts(SyncPolicy::None), IoEngine::Plain).await;
        let r = s.reader();
        (s.stats(), r)
    });
    // Fault in the mappings once so the benchmark measures steady state.
    for i in 0..N {
        reader.get(&key(i)).expect("get").expect("present");
    }
    let rss = rss_bytes().saturating_sub(rss0);
    println!(
        "memory per key (1M keys of 16 bytes): index {:.1} bytes/key ({:.1} beyond the key bytes); process RSS growth {:.1} bytes/key (includes mapped segment pages)",
        store.index_bytes as f64 / N as f64,
        store.index_bytes as f64 / N as f64 - 16.0,
        rss as f64 / N as f64
    );
    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            reader.get(&key(i)).expect("get").expect("present")
        })
    });
    g.bench_function("miss", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            reader.get(&key(i + N)).expect("get")
        })
    });
    // Multi-gets of 16 keys; throughput counts keys.
    for (name, offset) in [("hit_many16", 0), ("miss_many16", N)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut keys = [[0u8; 16]; 16];
                let start = Instant::now();
                let mut done = 0;
                while done < iters {
                    for k in keys.iter_mut() {
                        i = (i + 7919) % N;
                        *k = key(i + offset);
                    }
                    let got = reader.get_many(&keys).expect("get_many");
                    assert_eq!(got.iter().all(Option::is_some), offset == 0);
                    done += keys.len() as u64;
                }
                start.elapsed()
            })
        });
    }
    // The floor under `get/hit`: one read of a random byte of a 128 MiB
    // file mapping (written in 8 KiB writes, as group commits write the
    // log) whose address depends on the byte read before it. A get is
    // three such reads in a row (hash slot, index node, record).
    {
        use std::io::Write;
        const SIZE: usize = 128 << 20;
        let path = dir.path().join("floor");
        let mut f = std::fs::File::create(&path).expect("create");
        let chunk: Vec<u8> = (0..8192u32).map(|j| j as u8).collect();
        for _ in 0..SIZE / chunk.len() {
            f.write_all(&chunk).expect("write");
        }
        drop(f);
        let file = std::fs::File::open(&path).expect("open");
        // SAFETY: the file is not changed while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("mmap");
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut off = 0usize;
        for i in (0..SIZE).step_by(4096) {
            std::hint::black_box(map[i]);
        }
        g.bench_function("dependent_read", |b| {
            b.iter(|| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                off = (x as usize ^ usize::from(map[off])) % SIZE;
                off
            })
        });
    }
    g.bench_function("hit_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let reader = &reader;
                    s.spawn(move || {
                        for j in 0..iters / 2 {
                            reader
                                .get(&key((j * 7919 + t) % N))
                                .expect("get")
                                .expect("present");
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

fn bench_durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_put");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for engine in engines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = StoreThread::spawn(
            dir.path().to_path_buf(),
            opts(SyncPolicy::Always),
            Io::new(engine),
            Arc::new(Clock::new()),
        )
        .expect("spawn store");
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for writers in [1u64, 8, 64] {
            g.bench_function(
                BenchmarkId::new(format!("{}/writers", engine.as_str()), writers),
                |b| {
                    b.iter_custom(|iters| {
                        let h = t.handle.clone();
                        let counter = counter.clone();
                        rt.block_on(async move {
                            let start = Instant::now();
                            let tasks: Vec<_> = (0..writers)
                                .map(|w| {
                                    let h = h.clone();
                                    let counter = counter.clone();
                                    let n = iters / writers + u64::from(w < iters % writers);
                                    tokio::spawn(async move {
                                        for _ in 0..n {
                                            let i = counter
                                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                            h.put(&key(i % N), &VALUE).await.expect("put");
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.expect("writer");
                            }
                            start.elapsed()
                        })
                    })
                },
            );
        }
        t.shutdown().expect("shutdown");
    }
    g.finish();
}

fn bench_reopen(c: &mut Criterion) {
    let mut g = c.benchmark_group("reopen");
    g.sample_size(10);
    let mut sizes = vec![N];
    if std::env::var("FLASHKV_BENCH_10M").is_ok_and(|v| v == "1") {
        sizes.push(10 * N);
    }
    for n in sizes {
        let hinted = tempfile::tempdir().expect("tempdir");
        fill(hinted.path(), n, 1);
        // A second open seals the partly filled newest segment's successor,
        // so all data but a small tail sits in hinted segments.
        let scanned = tempfile::tempdir().expect("tempdir");
        for f in std::fs::read_dir(hinted.path()).expect("list") {
            let p = f.expect("entry").path();
            if p.extension().is_some_and(|e| e == "seg") {
                std::fs::hard_link(&p, scanned.path().join(p.file_name().expect("name")))
                    .expect("link");
            }
        }
        for (name, dir) in [("hints", hinted.path()), ("scan", scanned.path())] {
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += IoEngine::Plain.block_on(async {
                            let start = Instant::now();
                            let (s, report) = Store::open(
                                dir,
                                opts(SyncPolicy::None),
                                Io::new(IoEngine::Plain),
                                Arc::new(Clock::new()),
                            )
                            .await
                            .expect("open");
                            let t = start.elapsed();
                            assert_eq!(report.index_entries as u64, n);
                            drop(s);
                            t
                        });
                        // The scan variant must not gain hints from its own opens.
                        if name == "scan" {
                            for f in std::fs::read_dir(dir).expect("list") {
                                let p = f.expect("entry").path();
                                if p.extension().is_some_and(|e| e == "hint") {
                                    let _ = std::fs::remove_file(p);
                                }
                            }
                        }
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn bench_merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge");
    g.sample_size(10);
    let src = tempfile::tempdir().expect("tempdir");
    fill(src.path(), N, 2);
    let victim_bytes: u64 = std::fs::read_dir(src.path())
        .expect("list")
        .filter_map(|f| f.ok())
        .filter(|f| f.path().extension().is_some_and(|e| e == "seg"))
        .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    g.throughput(Throughput::Bytes(victim_bytes));
    g.bench_function("1M_keys_half_garbage", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                for f in std::fs::read_dir(src.path()).expect("list") {
                    let p = f.expect("entry").path();
                    if p.file_name().is_some_and(|n| n != "LOCK") {
                        std::fs::copy(&p, dir.path().join(p.file_name().expect("name")))
                            .expect("copy");
                    }
                }
                total += IoEngine::Plain.block_on(async {
                    let mut s = open(dir.path(), opts(SyncPolicy::None), IoEngine::Plain).await;
                    let start = Instant::now();
                    assert!(s.merge_now(true).await.expect("merge"));
                    let t = start.elapsed();
                    assert_eq!(s.stats().keys, N);
                    t
                });
            }
            total
        })
    });
    g.finish();
}

fn bench_index(c: &mut Criterion) {
    use flashkv::index::{Entry, new_index};
    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    let entry = Entry {
        segment: 1,
        offset: 0,
        value_len: 100,
        version: 1,
        tombstone: false,
        flags: 0,
    };
    let spread: Vec<[u8; 16]> = (0..N).map(key).collect();
    let prefixed: Vec<[u8; 16]> = (0..N)
        .map(|i| {
            let mut k = [0u8; 16];
            // Random order over the key space, as redis-benchmark -r draws.
            let n = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000_000_000;
            k.copy_from_slice(format!("key:{n:012}").as_bytes());
            k
        })
        .collect();
    // One by one, and in groups of 512 prepared at once, as a group commit
    // does them. The first index built one by one also reports its memory.
    let mut memory_shown = false;
    for (bench, prepared) in [("insert_1M", false), ("insert_1M_prepared_512", true)] {
        for (name, keys) in [("spread_keys", &spread), ("prefixed_keys", &prefixed)] {
            g.bench_function(BenchmarkId::new(bench, name), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (reader, mut w) = new_index();
                        let start = Instant::now();
                        for chunk in keys.chunks(512) {
                            if prepared {
                                let refs: Vec<&[u8]> = chunk.iter().map(|k| &k[..]).collect();
                                w.prepare(&refs);
                            }
                            for k in chunk {
                                w.upsert(k, entry);
                            }
                            w.clear_hints();
                        }
                        total += start.elapsed();
                        if !memory_shown {
                            memory_shown = true;
                            println!(
                                "index memory per key, 1M keys grown by inserts (not reserved as a reopen does): {:.1} bytes beyond the key bytes",
                                reader.memory_bytes() as f64 / N as f64 - 16.0
                            );
                        }
                    }
                    total
                })
            });
        }
    }
    g.bench_function("overwrite_1M", |b| {
        let (_reader, mut w) = new_index();
        for k in &prefixed {
            w.upsert(k, entry);
        }
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for k in &prefixed {
                    w.upsert(k, entry);
                }
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_index,
    bench_put,
    bench_get,
    bench_durable,
    bench_reopen,
    bench_merge
);
criterion_main!(benches);
