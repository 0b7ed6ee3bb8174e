//! The tools against the real daemon: `flashkv-ctl` (online commands,
//! dump/load, offline check and inspect) and `flashkv-bench` (every mode,
//! JSON, distribution and SVG output). The tool binaries are built by
//! `cargo build --workspace --bins` (as `make test` does) next to this
//! test's binary.

// Test helpers unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin(name: &str) -> PathBuf {
    // target/<profile>/deps/tools-xxxx -> target/<profile>/<name>
    let p = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo build --workspace --bins` (make test does)",
        p.display()
    );
    p
}

mod common;
use common::Daemon;

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    Command::new(bin("flashkv-ctl"))
        .arg("--addr")
        .arg(d.url())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_tools_take_the_address_as_the_daemon_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), &[]);
    let bare = d.url().trim_start_matches("http://").to_string();
    ok(Command::new(bin("flashkv-ctl"))
        .args(["--addr", &bare, "put", "bare", "v"])
        .output()
        .unwrap());
    assert_eq!(ok(ctl(&d, &["get", "bare"])).trim(), "v");
    let out = ok(Command::new(bin("flashkv-bench"))
        .args(["--addr", &bare, "--keys", "100", "--connections", "1"])
        .args([
            "--inflight",
            "2",
            "--warmup",
            "0",
            "--duration",
            "0.3",
            "--quiet",
        ])
        .output()
        .unwrap());
    assert!(out.contains(" 0 errors"), "{out}");
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn ctl_commands_dump_load_and_offline_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    let d = Daemon::start(&data, &["--shards", "2"]);
    assert!(ok(ctl(&d, &["put", "greeting", "hello"])).starts_with("version "));
    assert_eq!(ok(ctl(&d, &["get", "greeting"])), "hello\n");
    let missing = ctl(&d, &["get", "nothing"]);
    assert_eq!(missing.status.code(), Some(1));
    let cas = ctl(&d, &["put", "greeting", "x", "--expected-version", "0"]);
    assert!(!cas.status.success());
    assert!(String::from_utf8_lossy(&cas.stderr).contains("compare-and-set failed"));
    for i in 0..300 {
        ok(ctl_quiet(
            &d,
            &format!("item/{i:03}"),
            &format!("value {i}"),
        ));
    }
    let scan = ok(ctl(&d, &["scan", "--prefix", "item/", "--limit", "3"]));
    let lines: Vec<&str> = scan.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with("item/000\t") && lines[0].ends_with("\tvalue 0"),
        "{scan}"
    );
    assert_eq!(ok(ctl(&d, &["delete", "greeting"])), "deleted\n");
    assert!(ok(ctl(&d, &["stats"])).contains("shard"));
    assert!(ok(ctl(&d, &["compact"])).contains("merged on"));
    assert!(ok(ctl(&d, &["shard-of", "item/001"])).contains("of 2"));
    // Dump, then load into a second daemon: same keys and values.
    let dump = dir.path().join("dump.bin");
    assert!(ok(ctl(&d, &["dump", dump.to_str().unwrap()])).contains("dumped 300 keys"));
    let d2 = Daemon::start(&dir.path().join("b"), &["--shards", "2"]);
    assert!(ok(ctl(&d2, &["load", dump.to_str().unwrap()])).contains("loaded 300 keys"));
    // Same keys and values (versions are new in the second daemon).
    let pairs = |out: String| -> Vec<(String, String)> {
        out.lines()
            .map(|l| {
                let f: Vec<&str> = l.splitn(3, '\t').collect();
                (f[0].to_string(), f[2].to_string())
            })
            .collect()
    };
    let loaded = pairs(ok(ctl(&d2, &["scan"])));
    assert_eq!(loaded.len(), 300);
    assert_eq!(loaded, pairs(ok(ctl(&d, &["scan"]))));
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, b"not a dump").unwrap();
    assert!(!ctl(&d2, &["load", bad.to_str().unwrap()]).status.success());
    assert_eq!(d2.stop(), 0);
    assert_eq!(d.stop(), 0);
    // Offline check: clean, then damaged (exit 2, file and offset named).
    let check = |p: &Path| {
        Command::new(bin("flashkv-ctl"))
            .args(["check", p.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let clean = check(&data);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    let inspect = ok(Command::new(bin("flashkv-ctl"))
        .args(["inspect", "--records", data.to_str().unwrap()])
        .output()
        .unwrap());
    assert!(inspect.contains("key=item/042"), "{inspect}");
    // A cleanly stopped daemon leaves no header naming an unsynced seal.
    assert!(!inspect.contains("unsynced_predecessor"), "{inspect}");
    let seg = std::fs::read_dir(data.join("shard-000"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "seg") && std::fs::metadata(p).unwrap().len() > 2000
        })
        .expect("a segment with records");
    let mut b = std::fs::read(&seg).unwrap();
    b[100] ^= 0xff;
    std::fs::write(&seg, &b).unwrap();
    let damaged = check(&data);
    assert_eq!(damaged.status.code(), Some(2));
    let out = String::from_utf8_lossy(&damaged.stdout);
    assert!(
        out.contains("DAMAGE") && out.contains(seg.file_name().unwrap().to_str().unwrap()),
        "{out}"
    );
}

fn ctl_quiet(d: &Daemon, k: &str, v: &str) -> Output {
    ctl(d, &["put", k, v])
}

/// The unary mode's two transports (h2 straight, and tonic's `Channel`
/// with `--channel`) both count a call the daemon answers with an error
/// status as an error, and only such calls.
#[test]
fn bench_unary_counts_refused_calls_as_errors_on_both_transports() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), &["--max-value-size", "100"]);
    let url = d.url();
    for transport in [None, Some("--channel")] {
        for (value_size, refused) in [("50", false), ("200", true)] {
            let json = dir.path().join("unary.json");
            let out = ok(Command::new(bin("flashkv-bench"))
                .args(["--addr", &url, "--keys", "100", "--connections", "2"])
                .args(["--inflight", "4", "--warmup", "0", "--duration", "0.5"])
                .args(["--read-ratio", "0", "--value-size", value_size, "--quiet"])
                .arg("--json")
                .arg(&json)
                .args(transport)
                .output()
                .unwrap());
            let j: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            let (ops, errors) = (
                j["operations"].as_u64().unwrap(),
                j["errors"].as_u64().unwrap(),
            );
            assert!(ops > 0, "{transport:?} {value_size}: {out}");
            assert_eq!(
                errors,
                if refused { ops } else { 0 },
                "{transport:?} {value_size}: {out}"
            );
        }
    }
    assert_eq!(d.stop(), 0);
}

/// A daemon that dies during a unary run leaves calls that fail at once:
/// the run still ends on time, counting them as errors.
#[test]
fn bench_ends_on_time_when_the_daemon_dies() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(&dir.path().join("data"), &[]);
    let json = dir.path().join("unary.json");
    let mut bench = Command::new(bin("flashkv-bench"))
        .args(["--addr", &d.url(), "--keys", "100", "--connections", "2"])
        .args([
            "--inflight",
            "4",
            "--warmup",
            "0",
            "--duration",
            "2",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    d.kill();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = bench.kill();
            panic!("the benchmark did not end after its daemon died");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(j["errors"].as_u64().unwrap() > 0, "{j}");
}

#[test]
fn bench_runs_every_mode_and_writes_its_reports() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), &["--shards", "2"]);
    let url = d.url();
    for mode in ["unary", "pipeline", "bulk"] {
        let json = dir.path().join(format!("{mode}.json"));
        let hist = dir.path().join(format!("{mode}.hist"));
        let svg = dir.path().join(format!("{mode}.svg"));
        let mut args = vec![
            "--addr",
            &url,
            "--mode",
            mode,
            "--connections",
            "2",
            "--inflight",
            "4",
            "--keys",
            "2000",
            "--warmup",
            "0.3",
            "--duration",
            "1",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
            "--hist",
            hist.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ];
        if mode == "unary" {
            args.extend(["--preload", "--dist", "zipf"]);
        }
        let out = ok(Command::new(bin("flashkv-bench"))
            .args(&args)
            .output()
            .unwrap());
        assert!(out.contains("ops/s"), "{out}");
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(j["operations"].as_u64().unwrap() > 0, "{j}");
        assert_eq!(j["errors"].as_u64(), Some(0), "{j}");
        if mode != "bulk" {
            let p99 = j["latency"]["all"]["p99_us"].as_u64().unwrap();
            assert!(p99 > 0 && p99 >= j["latency"]["all"]["p50_us"].as_u64().unwrap());
            assert!(std::fs::read_to_string(&hist).unwrap().lines().count() > 2);
            assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
        }
    }
    assert_eq!(d.stop(), 0);
}
