//! Log damage sweep: copies of one data directory are damaged — cut at byte
//! offsets in the last 4 KiB of the newest segment, cut at random offsets in
//! other segments, flipped bytes anywhere, garbage appended — and opened
//! through the daemon's recovery path. Each open must either recover an
//! exact prefix of the acknowledged writes (a read may report corruption,
//! never return a value that was never written) or refuse with a corruption
//! error naming the file; it must never panic.
//!
//! `FLASHKV_DAMAGE_STRIDE` sets the step between cut offsets in the last
//! 4 KiB (default 13; `make test-damage` uses 1) and `FLASHKV_DAMAGE_RANDOM`
//! the number of random damages of each kind (default 25).

// Test helpers unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flashkv::ErrorCode;
use flashkv::clock::Clock;
use flashkv::storage::{Batch, Io, IoEngine, Op, Store, StoreOptions, SyncPolicy};

fn opts() -> StoreOptions {
    StoreOptions {
        segment_size: 64 << 10,
        max_value_size: 4 << 10,
        sync: SyncPolicy::None,
        ..Default::default()
    }
}

fn value(key: &str) -> Vec<u8> {
    format!("value of {key} {}", "x".repeat(key.len() * 3)).into_bytes()
}

/// The acknowledged writes, in order: each group is one atomic batch of
/// unique keys.
fn build(dir: &Path) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    IoEngine::Plain.block_on(async {
        let (mut s, _) = Store::open(
            dir,
            opts(),
            Io::new(IoEngine::Plain),
            Arc::new(Clock::new()),
        )
        .await
        .unwrap();
        for i in 0..2500u32 {
            let n = if i % 10 == 0 { 3 } else { 1 };
            let keys: Vec<String> = (0..n).map(|j| format!("k{i:05}-{j}")).collect();
            let batch = Batch {
                ops: keys
                    .iter()
                    .map(|k| Op::Put {
                        key: k.clone().into_bytes(),
                        value: value(k),
                        expires_at_ms: None,
                    })
                    .collect(),
                conditions: vec![],
            };
            s.write(batch).await.unwrap();
            groups.push(keys);
        }
        s.close().await.unwrap();
    });
    groups
}

#[derive(Debug, PartialEq)]
enum Found {
    Present,
    Absent,
    Unreadable,
}

/// Opens the damaged copy; returns a description of what happened.
fn check(dir: &Path, groups: &[Vec<String>], what: &str) -> &'static str {
    let opened = std::panic::catch_unwind(|| {
        IoEngine::Plain.block_on(async {
            Store::open(
                dir,
                opts(),
                Io::new(IoEngine::Plain),
                Arc::new(Clock::new()),
            )
            .await
            .map(|(s, _)| s)
        })
    })
    .unwrap_or_else(|_| panic!("{what}: recovery panicked"));
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::Corruption, "{what}: refused with {e}");
            assert!(
                e.to_string().contains(".seg") || e.to_string().contains(".commit"),
                "{what}: error names no file: {e}"
            );
            return "refused";
        }
    };
    let r = store.reader();
    let mut seen_absent = false;
    for (g, keys) in groups.iter().enumerate() {
        let found: Vec<Found> = keys
            .iter()
            .map(|k| match r.get(k.as_bytes()) {
                Ok(Some(v)) => {
                    assert_eq!(
                        v.value,
                        value(k),
                        "{what}: {k} has a value that was never written"
                    );
                    Found::Present
                }
                Ok(None) => Found::Absent,
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::Corruption, "{what}: reading {k}: {e}");
                    Found::Unreadable
                }
            })
            .collect();
        let absent = found.iter().filter(|f| **f == Found::Absent).count();
        assert!(
            absent == 0 || absent == keys.len(),
            "{what}: batch {g} is half present: {found:?}"
        );
        if absent > 0 {
            seen_absent = true;
        } else {
            assert!(
                !seen_absent,
                "{what}: batch {g} is present after an absent one: not a prefix"
            );
        }
    }
    if seen_absent {
        "recovered a prefix"
    } else {
        "recovered everything"
    }
}

fn copy_of(src: &Path) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(src).unwrap() {
        let p = f.unwrap().path();
        if p.file_name().unwrap() != "LOCK" {
            std::fs::copy(&p, dst.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dst
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn damaged_logs_recover_a_prefix_or_refuse_and_never_panic() {
    let src = tempfile::tempdir().unwrap();
    let groups = build(src.path());
    let segs = segments(src.path());
    assert!(segs.len() >= 3, "the sweep needs several segments");
    let stride = env("FLASHKV_DAMAGE_STRIDE", 13).max(1) as usize;
    let randoms = env("FLASHKV_DAMAGE_RANDOM", 25);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let mut tally = std::collections::BTreeMap::<String, u64>::new();
    let mut count =
        |kind: &str, outcome: &str| *tally.entry(format!("{kind}: {outcome}")).or_default() += 1;

    // 1. The newest segment cut at offsets in its last 4 KiB: a torn tail,
    // always recovered as a prefix.
    let newest = segs.last().unwrap().file_name().unwrap().to_owned();
    let full = std::fs::read(src.path().join(&newest)).unwrap();
    let from = full.len().saturating_sub(4096).max(32);
    for cut in (from..full.len()).step_by(stride) {
        let d = copy_of(src.path());
        std::fs::write(d.path().join(&newest), &full[..cut]).unwrap();
        let outcome = check(d.path(), &groups, &format!("newest segment cut at {cut}"));
        assert_ne!(
            outcome, "refused",
            "a torn tail of the newest segment must recover"
        );
        count("cut newest", outcome);
    }
    // 2. Other segments cut at random offsets: refused (their seal is gone).
    for _ in 0..randoms {
        let d = copy_of(src.path());
        let seg = &segments(d.path())[next(segs.len() as u64 - 1) as usize];
        let len = std::fs::metadata(seg).unwrap().len();
        let cut = 32 + next(len - 32);
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        count(
            "cut sealed",
            check(
                d.path(),
                &groups,
                &format!("{} cut at {cut}", seg.display()),
            ),
        );
    }
    // 3. One flipped byte anywhere in any segment.
    for _ in 0..randoms * 2 {
        let d = copy_of(src.path());
        let seg = &segments(d.path())[next(segs.len() as u64) as usize];
        let mut b = std::fs::read(seg).unwrap();
        let at = next(b.len() as u64) as usize;
        b[at] ^= 1 << next(8);
        std::fs::write(seg, &b).unwrap();
        count(
            "flip",
            check(
                d.path(),
                &groups,
                &format!("{} byte {at} flipped", seg.display()),
            ),
        );
    }
    // 4. Garbage appended to a segment.
    for _ in 0..randoms {
        let d = copy_of(src.path());
        let seg = &segments(d.path())[next(segs.len() as u64) as usize];
        let mut b = std::fs::read(seg).unwrap();
        let n = 1 + next(200) as usize;
        b.extend((0..n).map(|_| next(256) as u8));
        std::fs::write(seg, &b).unwrap();
        count(
            "garbage",
            check(
                d.path(),
                &groups,
                &format!("{} with {n} garbage bytes", seg.display()),
            ),
        );
    }
    for (k, v) in &tally {
        eprintln!("{k}: {v}");
    }
    let total: u64 = tally.values().sum();
    assert!(total >= 4 * randoms, "{tally:?}");
}
