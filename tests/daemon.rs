//! Integration tests of the real `flashkv` binary over gRPC: every RPC,
//! the three streaming kinds, errors and limits, restart with data intact,
//! graceful shutdown, and a refused second daemon.

// Test helpers unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use flashkv::api::grpc::proto::*;
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::{Daemon, rt};

/// Every file and directory below `dir` is accessible by its owner only.
fn assert_owner_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
            seen += 1;
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    assert!(seen >= 6, "expected data files below {}", dir.display());
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ttl_ms: 0,
        expected_version: None,
    }
}

#[test]
fn every_rpc_works_against_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--shards", "2"]);
    rt().block_on(async {
        let mut kv = d.kv().await;
        // Put / Get / Delete
        let v1 = kv
            .put(put("alpha", "1"))
            .await
            .unwrap()
            .into_inner()
            .version;
        assert!(v1 > 0);
        let g = kv
            .get(GetRequest {
                key: "alpha".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (g.found, g.value.as_slice(), g.version, g.ttl_ms),
            (true, &b"1"[..], v1, 0)
        );
        let missing = kv
            .get(GetRequest { key: "nope".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(!missing.found);
        // Compare-and-set
        let mut cas = put("alpha", "2");
        cas.expected_version = Some(v1 + 1000);
        let e = kv.put(cas.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains(&format!("version {v1}")),
            "{}",
            e.message()
        );
        cas.expected_version = Some(v1);
        let v2 = kv.put(cas).await.unwrap().into_inner().version;
        assert!(v2 > v1);
        let mut create = put("alpha", "3");
        create.expected_version = Some(0);
        assert_eq!(
            kv.put(create).await.unwrap_err().code(),
            Code::FailedPrecondition
        );
        // TTL
        let mut ttl = put("short", "lived");
        ttl.ttl_ms = 60_000;
        kv.put(ttl).await.unwrap();
        let g = kv
            .get(GetRequest {
                key: "short".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(g.found && g.ttl_ms > 50_000 && g.ttl_ms <= 60_000, "{g:?}");
        let mut gone = put("gone", "soon");
        gone.ttl_ms = 1;
        kv.put(gone).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            !kv.get(GetRequest { key: "gone".into() })
                .await
                .unwrap()
                .into_inner()
                .found
        );
        // Delete
        let del = kv
            .delete(DeleteRequest {
                key: "alpha".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(del.found && del.version > v2);
        let del = kv
            .delete(DeleteRequest {
                key: "alpha".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!del.found);
        // BatchGet
        kv.put(put("b1", "x")).await.unwrap();
        let bg = kv
            .batch_get(BatchGetRequest {
                keys: vec!["b1".into(), "none".into()],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            bg.results.iter().map(|r| r.found).collect::<Vec<_>>(),
            [true, false]
        );
        // A longer BatchGet (read ahead in batches), keys on both shards,
        // one twice, some absent: each answer in its place.
        for i in 0..40 {
            kv.put(put(&format!("bg{i}"), &format!("v{i}")))
                .await
                .unwrap();
        }
        let keys: Vec<String> = (0..50)
            .rev()
            .map(|i| format!("bg{i}"))
            .chain(["bg7".to_string()])
            .collect();
        let bg = kv
            .batch_get(BatchGetRequest {
                keys: keys.iter().map(|k| k.clone().into()).collect(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(bg.results.len(), keys.len());
        for (k, r) in keys.iter().zip(&bg.results) {
            let i: u32 = k[2..].parse().unwrap();
            assert_eq!(r.found, i < 40, "{k}");
            let want = if i < 40 {
                format!("v{i}").into_bytes()
            } else {
                vec![]
            };
            assert_eq!(r.value, want, "{k}");
        }
        // Write: atomic batch on one shard; refused across shards.
        let mut admin = d.admin().await;
        let shard_of = |k: &str| {
            let mut admin = admin.clone();
            let k = k.to_string();
            async move {
                admin
                    .shard_of(ShardOfRequest { key: k.into() })
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let mut same = vec![];
        let mut other = None;
        let s0 = shard_of("w0").await.shard;
        for i in 1..200 {
            let k = format!("w{i}");
            let s = shard_of(&k).await;
            assert_eq!(s.shards, 2);
            if s.shard == s0 && same.len() < 3 {
                same.push(k);
            } else if s.shard != s0 && other.is_none() {
                other = Some(k);
            }
        }
        let m = |k: &str| Mutation {
            op: Some(mutation::Op::Put(put(k, "batched"))),
        };
        let mut muts: Vec<Mutation> = same.iter().map(|k| m(k)).collect();
        muts.push(m("w0"));
        muts.push(Mutation {
            op: Some(mutation::Op::Delete(DeleteRequest { key: "w0".into() })),
        });
        let wv = kv
            .write(WriteRequest { mutations: muts })
            .await
            .unwrap()
            .into_inner()
            .version;
        for k in &same {
            let g = kv
                .get(GetRequest {
                    key: k.clone().into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!((g.found, g.version), (true, wv));
        }
        assert!(
            !kv.get(GetRequest { key: "w0".into() })
                .await
                .unwrap()
                .into_inner()
                .found,
            "last write of a key wins"
        );
        // A batch across shards commits atomically (two-phase, as a
        // transaction): both keys at the one commit version.
        let other = other.unwrap();
        let xv = kv
            .write(WriteRequest {
                mutations: vec![m("w0"), m(&other)],
            })
            .await
            .unwrap()
            .into_inner()
            .version;
        for k in ["w0".to_string(), other.clone()] {
            let g = kv
                .get(GetRequest { key: k.into() })
                .await
                .unwrap()
                .into_inner();
            assert_eq!((g.found, g.version), (true, xv));
        }
        // A failed condition on one shard leaves the other shard untouched.
        let mut conditional = put("w0", "never");
        conditional.expected_version = Some(1);
        let e = kv
            .write(WriteRequest {
                mutations: vec![
                    Mutation {
                        op: Some(mutation::Op::Put(conditional)),
                    },
                    Mutation {
                        op: Some(mutation::Op::Delete(DeleteRequest {
                            key: other.clone().into(),
                        })),
                    },
                ],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(
            kv.get(GetRequest {
                key: other.clone().into()
            })
            .await
            .unwrap()
            .into_inner()
            .found,
            "nothing of a failed batch is applied"
        );
        // Scan across shards in key order, with prefix, reverse, limit, keys_only.
        for i in 0..50 {
            kv.put(put(&format!("scan/{i:02}"), &format!("v{i}")))
                .await
                .unwrap();
        }
        let scan_client = kv.clone();
        let collect = |req: ScanRequest| {
            let mut kv = scan_client.clone();
            async move {
                let mut s = kv.scan(req).await.unwrap().into_inner();
                let mut out = vec![];
                while let Some(item) = s.message().await.unwrap() {
                    out.push(item);
                }
                out
            }
        };
        let all = collect(ScanRequest {
            prefix: "scan/".into(),
            ..Default::default()
        })
        .await;
        let keys: Vec<String> = all
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect();
        let want: Vec<String> = (0..50).map(|i| format!("scan/{i:02}")).collect();
        assert_eq!(keys, want);
        assert_eq!(all[7].value, b"v7");
        let rev = collect(ScanRequest {
            prefix: "scan/".into(),
            reverse: true,
            limit: 3,
            keys_only: true,
            ..Default::default()
        })
        .await;
        assert_eq!(
            rev.iter().map(|x| x.key.clone()).collect::<Vec<_>>(),
            [
                b"scan/49".to_vec(),
                b"scan/48".to_vec(),
                b"scan/47".to_vec()
            ]
        );
        assert!(rev.iter().all(|x| x.value.is_empty()));
        let range = collect(ScanRequest {
            start: "scan/10".into(),
            end: "scan/13".into(),
            ..Default::default()
        })
        .await;
        assert_eq!(range.len(), 3);
        // BulkLoad with a summary.
        let items: Vec<PutRequest> = (0..20_000)
            .map(|i| put(&format!("bulk/{i:06}"), "0123456789"))
            .collect();
        let summary = kv
            .bulk_load(tokio_stream::iter(items))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(summary.keys, 20_000);
        assert_eq!(summary.bytes, 20_000 * (11 + 10));
        let bulk = collect(ScanRequest {
            prefix: "bulk/".into(),
            keys_only: true,
            ..Default::default()
        })
        .await;
        assert_eq!(bulk.len(), 20_000);
        // Pipeline: ids come back, answers may be out of order.
        let reqs: Vec<PipelineRequest> = (0..1000u64)
            .map(|i| PipelineRequest {
                id: i,
                op: Some(match i % 3 {
                    0 => pipeline_request::Op::Put(put(&format!("p{i}"), "pv")),
                    1 => pipeline_request::Op::Get(GetRequest { key: "b1".into() }),
                    _ => pipeline_request::Op::Delete(DeleteRequest {
                        key: format!("p{}", i - 2).into(),
                    }),
                }),
            })
            .chain(std::iter::once(PipelineRequest {
                id: 5000,
                op: Some(pipeline_request::Op::Get(GetRequest { key: vec![] })),
            }))
            .collect();
        let mut resp = kv
            .pipeline(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(r) = resp.message().await.unwrap() {
            if r.id == 5000 {
                assert_eq!(r.code, Code::InvalidArgument as i32);
            } else {
                assert_eq!(r.code, 0, "{r:?}");
                match (r.id % 3, r.result.unwrap()) {
                    (0, pipeline_response::Result::Put(p)) => assert!(p.version > 0),
                    (1, pipeline_response::Result::Get(g)) => assert_eq!(g.value, b"x"),
                    (2, pipeline_response::Result::Delete(_)) => {}
                    (m, other) => panic!("id {} (mod {m}) got {other:?}", r.id),
                }
            }
            seen.insert(r.id);
        }
        assert_eq!(seen.len(), 1001);
        // Admin
        let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
        assert_eq!(stats.shards.len(), 2);
        assert!(stats.shards.iter().map(|s| s.keys).sum::<u64>() >= 20_050);
        assert_eq!(stats.sync, "always");
        admin.compact(CompactRequest {}).await.unwrap();
        let cp = dir.path().join("checkpoint");
        let cp_dir = tempfile::tempdir().unwrap();
        let target = cp_dir.path().join("cp");
        admin
            .checkpoint(CheckpointRequest {
                path: target.to_str().unwrap().into(),
            })
            .await
            .unwrap();
        assert_eq!(
            admin
                .checkpoint(CheckpointRequest {
                    path: target.to_str().unwrap().into()
                })
                .await
                .unwrap_err()
                .code(),
            Code::AlreadyExists
        );
        assert!(!cp.exists());
        // The checkpoint opens as a data directory.
        let d2 = Daemon::start(&target, &[]);
        let mut kv2 = d2.kv().await;
        let g = kv2
            .get(GetRequest {
                key: "bulk/000123".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(g.value, b"0123456789");
        assert_eq!(d2.stop(), 0);
        assert_owner_only(&target);
    });
    assert_eq!(d.stop(), 0);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &[
            "--max-key-size",
            "64",
            "--max-value-size",
            "1024",
            "--max-message-size",
            "65536",
        ],
    );
    rt().block_on(async {
        let mut kv = d.kv().await;
        let e = kv.put(put("", "v")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = kv.put(put(&"k".repeat(65), "v")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("exceeds the limit of 64"),
            "{}",
            e.message()
        );
        let e = kv
            .get(GetRequest {
                key: vec![b'k'; 65],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = kv.put(put("k", &"v".repeat(1025))).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("value of 1025 bytes"),
            "{}",
            e.message()
        );
        let e = kv
            .put(PutRequest {
                key: "k".into(),
                value: vec![0; 100_000],
                ttl_ms: 0,
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "oversized message: {e:?}");
        assert_eq!(
            kv.write(WriteRequest { mutations: vec![] })
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        // The daemon is still fine.
        kv.put(put("k", "v")).await.unwrap();
        assert!(
            kv.get(GetRequest { key: "k".into() })
                .await
                .unwrap()
                .into_inner()
                .found
        );
    });
}

#[test]
fn restart_keeps_data_and_refuses_mismatched_settings_and_second_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--shards", "2"]);
    let second = Daemon::try_start(dir.path(), &[])
        .err()
        .expect("second daemon must be refused");
    assert!(second.contains("locked by another process"), "{second}");
    rt().block_on(async {
        let mut kv = d.kv().await;
        for i in 0..500 {
            kv.put(put(&format!("k{i}"), &format!("v{i}")))
                .await
                .unwrap();
        }
        kv.delete(DeleteRequest { key: "k7".into() }).await.unwrap();
    });
    assert_eq!(d.stop(), 0, "graceful shutdown exits 0");
    assert_owner_only(dir.path());
    let err = Daemon::try_start(dir.path(), &["--shards", "3"])
        .err()
        .expect("shard count mismatch must be refused");
    assert!(
        err.contains("created with partitioner 'hash over 2 shards'")
            && err.contains("Start without --shards"),
        "{err}"
    );
    let d = Daemon::start(dir.path(), &[]);
    rt().block_on(async {
        let mut kv = d.kv().await;
        for i in 0..500 {
            let g = kv
                .get(GetRequest {
                    key: format!("k{i}").into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(g.found, i != 7, "k{i}");
            if i != 7 {
                assert_eq!(g.value, format!("v{i}").into_bytes());
            }
        }
    });
}

/// The data directory removed under the running daemon: with the default
/// `sync=always` the next write on each shard fails (UNAVAILABLE, naming
/// the deleted file) rather than being acknowledged into a deleted file,
/// and later writes are refused; under `interval:1000` the storage task's
/// once-a-second check finds it. Reads of what is in memory go on, and the
/// daemon still shuts down.
#[test]
fn removed_data_directory_refuses_writes() {
    for sync in ["always", "interval:1000"] {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("data");
        let d = Daemon::start(&dir, &["--shards", "2", "--sync", sync]);
        rt().block_on(async {
            let mut kv = d.kv().await;
            for i in 0..20 {
                kv.put(put(&format!("k{i}"), "v")).await.unwrap();
            }
            std::fs::remove_dir_all(&dir).unwrap();
            if sync != "always" {
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
            // Keys on both shards: each refuses.
            for i in 0..20 {
                let e = kv.put(put(&format!("k{i}"), "w")).await.unwrap_err();
                assert_eq!(e.code(), Code::Unavailable, "{sync}: {e:?}");
                assert!(
                    e.message()
                        .contains("was deleted while the shard had it open"),
                    "{sync}: {}",
                    e.message()
                );
            }
            let g = kv
                .get(GetRequest { key: "k3".into() })
                .await
                .unwrap()
                .into_inner();
            assert_eq!((g.found, g.value), (true, b"v".to_vec()), "{sync}");
        });
        // It stops, with a clean exit or (where its shutdown had state to
        // persist into the missing directory) an error saying so; not by
        // a signal or a panic.
        let code = d.stop();
        assert!(code == 0 || code == 1, "{sync}: exit code {code}");
    }
}

#[test]
fn health_service_reports_serving() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    rt().block_on(async {
        let ch = Channel::from_shared(format!("http://{}", d.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: "flashkv.v1.KV".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
}

/// A SIGTERM that arrives right after the ready line is a graceful
/// shutdown (exit 0), not death by signal: the handlers are in place before
/// the daemon says it is ready.
#[test]
fn sigterm_right_after_ready_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..10 {
        let d = Daemon::start(dir.path(), &["--shards", "2"]);
        assert_eq!(d.stop(), 0);
    }
}

/// SO_REUSEPORT lets sockets of one user share a port; a second daemon on
/// another directory but the same address must still be refused, not split
/// the first one's traffic.
#[test]
fn second_daemon_on_the_same_address_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = Daemon::start(a.path(), &[]);
    for (flag, addr) in [
        ("--grpc-addr", first.addr.clone()),
        ("--http-addr", first.http.clone()),
        ("--resp-addr", first.resp.clone()),
    ] {
        let mut args = vec![
            "--data-dir",
            b.path().to_str().unwrap(),
            flag,
            addr.as_str(),
            "--no-pin",
        ];
        for (f, v) in [
            ("--grpc-addr", "127.0.0.1:0"),
            ("--http-addr", "127.0.0.1:0"),
            ("--resp-addr", "127.0.0.1:0"),
        ] {
            if f != flag {
                args.extend([f, v]);
            }
        }
        let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_flashkv"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Under the old behaviour the second daemon would start and serve.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while second.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                second.kill().unwrap();
                panic!("{flag} {addr}: a second daemon started on the address");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = second.wait_with_output().unwrap();
        assert!(!out.status.success(), "{flag} {addr}: exited 0");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is in use"), "{flag}: {err}");
    }
    assert_eq!(first.stop(), 0);
}

/// The CPUs a thread may run on, as /proc lists them ("0-1", "1").
fn cpus_allowed(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Shard threads pin themselves to cores only when the shards take every
/// core; fewer shards than cores are left to the scheduler (pinned, one
/// shard beside a client on two cores waited behind it).
#[test]
fn shard_threads_are_pinned_only_when_they_take_every_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let own = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    for shards in [1, cores] {
        let dir = tempfile::tempdir().unwrap();
        let shard_flag = shards.to_string();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flashkv"))
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--resp-addr", "127.0.0.1:0", "--log-level", "warn"])
            .args(["--shards", &shard_flag])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.contains("ready"), "{line}");
        let mut seen = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            let Some(i) = comm.trim().strip_prefix("flashkv-shard-") else {
                continue;
            };
            let i: usize = i.parse().unwrap();
            let allowed = cpus_allowed(&std::fs::read_to_string(task.join("status")).unwrap());
            if shards >= cores {
                assert_eq!(allowed, i.to_string(), "{shards} shards: shard {i}");
            } else {
                assert_eq!(allowed, own, "{shards} of {cores} cores: shard {i}");
            }
            seen.push(i);
        }
        seen.sort();
        assert_eq!(seen, (0..shards).collect::<Vec<_>>());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
