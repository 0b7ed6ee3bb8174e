//! Crash test: a child process writes with `sync=always` from several
//! concurrent writers (with merges running), printing every acknowledged
//! write; the parent kills it with SIGKILL at a random moment, reopens the
//! directory and checks that every acknowledged write is there.
//!
//! `FLASHKV_CRASH_CYCLES` sets the number of kill cycles (default 8; `make
//! test-crash` runs 50).

// Test helpers unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashkv::clock::Clock;
use flashkv::storage::{Io, IoEngine, MergePolicy, Store, StoreOptions, StoreThread, SyncPolicy};

const CHILD_ENV: &str = "FLASHKV_CRASH_CHILD_DIR";
const WRITERS: u32 = 8;
const KEYS_PER_WRITER: u64 = 300;

fn opts() -> StoreOptions {
    StoreOptions {
        segment_size: 256 << 10,
        max_value_size: 64 << 10,
        sync: SyncPolicy::Always,
        merge: MergePolicy {
            min_garbage_ratio: 0.3,
            rate_bytes_per_sec: 64 << 20,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn value(key: &str, seq: u64) -> Vec<u8> {
    format!("{key}:{seq}:{}", "p".repeat((seq % 97) as usize)).into_bytes()
}

/// Parses a stored value back into its sequence number, checking its shape.
fn seq_of(key: &str, v: &[u8]) -> u64 {
    let s = std::str::from_utf8(v).expect("value is UTF-8");
    let mut parts = s.splitn(3, ':');
    assert_eq!(parts.next(), Some(key), "value {s:?} stored under {key}");
    let seq: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("value has a sequence number");
    assert_eq!(
        v,
        value(key, seq).as_slice(),
        "value of {key} is not one that was written"
    );
    seq
}

/// The child: writes until killed.
#[test]
#[ignore = "runs only as the child process of crash_with_sigkill_keeps_every_acknowledged_write"]
fn crash_child_writer() {
    let dir = std::env::var(CHILD_ENV)
        .expect("run by the crash test with the directory in FLASHKV_CRASH_CHILD_DIR");
    let start_seq: u64 = std::env::var("FLASHKV_CRASH_SEQ").unwrap().parse().unwrap();
    let engine = test_engine();
    let t =
        StoreThread::spawn(dir.into(), opts(), Io::new(engine), Arc::new(Clock::new())).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = t.handle.clone();
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for w in 0..WRITERS {
            let h = handle.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut seq = start_seq;
                loop {
                    seq += 1;
                    let key = format!("w{w}-{}", seq % KEYS_PER_WRITER);
                    h.put(key.as_bytes(), &value(&key, seq)).await.unwrap();
                    tx.send(format!("{key} {seq}\n")).unwrap();
                }
            });
        }
        let h = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let _ = h.compact().await;
            }
        });
        let mut out = std::io::stdout().lock();
        while let Some(line) = rx.recv().await {
            out.write_all(line.as_bytes()).unwrap();
            out.flush().unwrap();
        }
    });
}

/// FLASHKV_TEST_IO_ENGINE=plain|io_uring, or what the kernel allows.
fn test_engine() -> IoEngine {
    std::env::var("FLASHKV_TEST_IO_ENGINE")
        .ok()
        .and_then(|e| IoEngine::parse(&e))
        .unwrap_or_else(IoEngine::detect)
}

fn check(dir: &Path, acked: &HashMap<String, u64>) -> usize {
    let engine = test_engine();
    engine.block_on(async {
        let (s, _) = Store::open(dir, opts(), Io::new(engine), Arc::new(Clock::new()))
            .await
            .expect("reopen after SIGKILL");
        let r = s.reader();
        for (key, &seq) in acked {
            let v = r
                .get(key.as_bytes())
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged key {key} is missing"));
            let got = seq_of(key, &v.value);
            assert!(
                got >= seq,
                "{key}: acknowledged seq {seq}, found older {got}"
            );
        }
        // Nothing that was never written is present.
        for (k, v) in r
            .scan(Bound::Unbounded, Bound::Unbounded, false, usize::MAX, false)
            .unwrap()
        {
            let key = String::from_utf8(k).unwrap();
            seq_of(&key, &v.value);
        }
        s.close().await.unwrap();
        acked.len()
    })
}

#[test]
fn crash_with_sigkill_keeps_every_acknowledged_write() {
    let cycles: u32 = std::env::var("FLASHKV_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut total_acks = 0u64;
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    for cycle in 0..cycles {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let kill_after = Duration::from_millis(100 + rng % 400);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(
                "FLASHKV_CRASH_SEQ",
                (u64::from(cycle) * 1_000_000_000).to_string(),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((k, s)) = line.split_once(' ')
                    && let Ok(seq) = s.parse::<u64>()
                {
                    acks.push((k.to_string(), seq));
                }
            }
            acks
        });
        let started = Instant::now();
        std::thread::sleep(kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        assert!(
            !acks.is_empty() || started.elapsed() < Duration::from_millis(50),
            "child acknowledged nothing in {kill_after:?}"
        );
        total_acks += acks.len() as u64;
        for (k, seq) in acks {
            let e = acked.entry(k).or_insert(0);
            *e = (*e).max(seq);
        }
        let keys = check(dir.path(), &acked);
        eprintln!(
            "cycle {cycle}: killed after {kill_after:?}, {keys} keys checked, {total_acks} acknowledged writes so far"
        );
    }
    assert!(total_acks > 0);
}
