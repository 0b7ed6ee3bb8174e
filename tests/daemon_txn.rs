//! Bank transfers through the gRPC Txn service of the real daemon, killed
//! with SIGKILL mid-run and restarted.
//!
//! Each transfer is one transaction over three keys that usually live on
//! different shards: it reads two balances, writes both, and writes a
//! transfer record `t/<client>/<seq>` = "from to amount". While it runs,
//! snapshot readers check that the sum of the balances never changes. After
//! every restart:
//!
//! * every acknowledged transfer's record is there (durable);
//! * each balance is exactly the opening balance plus the transfers whose
//!   record exists (no half transfer: a record without its balance updates,
//!   or the other way round, would break the equation);
//! * the total is unchanged.
//!
//! `FLASHKV_TXN_CRASH_CYCLES` sets the kill count (default 3, the smoke run
//! of `make test`; `make test-crash` runs 20).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashkv::api::grpc::proto::txn_client::TxnClient;
use flashkv::api::grpc::proto::*;
use tonic::Code;
use tonic::transport::Channel;

mod common;
use common::Daemon;

const ACCOUNTS: usize = 12;
const OPENING: i64 = 1000;
const CLIENTS: usize = 6;

fn acct(i: usize) -> Vec<u8> {
    format!("acct/{i:02}").into_bytes()
}

fn start(dir: &Path) -> Daemon {
    Daemon::start(
        dir,
        &[
            "--shards",
            "2",
            "--sync",
            "always",
            "--segment-size-mb",
            "1",
            "--max-value-size",
            "65536",
            "--merge-garbage-ratio",
            "0.3",
        ],
    )
}

fn int(b: &[u8]) -> i64 {
    std::str::from_utf8(b).unwrap().parse().unwrap()
}

async fn txn(d: &Daemon) -> TxnClient<Channel> {
    TxnClient::connect(d.url()).await.unwrap()
}

/// One transfer, retried on ABORTED; Ok(true) once acknowledged.
async fn transfer(
    c: &mut TxnClient<Channel>,
    from: usize,
    to: usize,
    amount: i64,
    record: &str,
) -> Result<bool, tonic::Status> {
    loop {
        let id = c.begin(BeginRequest {}).await?.into_inner().txn_id;
        let get = |k: Vec<u8>| TxnGetRequest { txn_id: id, key: k };
        let a = c.get(get(acct(from))).await?.into_inner();
        let b = c.get(get(acct(to))).await?.into_inner();
        let put = |k: Vec<u8>, v: String| TxnPutRequest {
            txn_id: id,
            key: k,
            value: v.into_bytes(),
            ttl_ms: 0,
        };
        c.put(put(acct(from), (int(&a.value) - amount).to_string()))
            .await?;
        c.put(put(acct(to), (int(&b.value) + amount).to_string()))
            .await?;
        c.put(put(
            record.as_bytes().to_vec(),
            format!("{from} {to} {amount}"),
        ))
        .await?;
        match c.commit(CommitRequest { txn_id: id }).await {
            Ok(_) => return Ok(true),
            Err(s) if s.code() == Code::Aborted => continue,
            Err(s) => return Err(s),
        }
    }
}

/// Reads every balance and transfer record in one snapshot.
async fn snapshot(c: &mut TxnClient<Channel>) -> (Vec<i64>, BTreeMap<String, (usize, usize, i64)>) {
    let id = c.begin(BeginRequest {}).await.unwrap().into_inner().txn_id;
    let scan = |prefix: &str| TxnScanRequest {
        txn_id: id,
        prefix: prefix.as_bytes().to_vec(),
        limit: 1_000_000,
        ..Default::default()
    };
    let balances: Vec<i64> = c
        .scan(scan("acct/"))
        .await
        .unwrap()
        .into_inner()
        .items
        .iter()
        .map(|kv| int(&kv.value))
        .collect();
    let records = c
        .scan(scan("t/"))
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|kv| {
            let s = String::from_utf8(kv.value).unwrap();
            let mut p = s.split(' ').map(|x| x.parse::<i64>().unwrap());
            let (f, t, a) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
            (
                String::from_utf8(kv.key).unwrap(),
                (f as usize, t as usize, a),
            )
        })
        .collect();
    c.rollback(RollbackRequest { txn_id: id }).await.unwrap();
    (balances, records)
}

fn check(
    balances: &[i64],
    records: &BTreeMap<String, (usize, usize, i64)>,
    acked: &HashSet<String>,
) {
    assert_eq!(balances.len(), ACCOUNTS);
    assert_eq!(
        balances.iter().sum::<i64>(),
        OPENING * ACCOUNTS as i64,
        "money was made or lost"
    );
    let mut want = vec![OPENING; ACCOUNTS];
    for (f, t, a) in records.values() {
        want[*f] -= a;
        want[*t] += a;
    }
    assert_eq!(
        balances,
        want.as_slice(),
        "balances disagree with the transfer records: a half transfer"
    );
    for k in acked {
        assert!(records.contains_key(k), "acknowledged transfer {k} is gone");
    }
}

#[test]
fn bank_transfers_survive_sigkill_whole() {
    let cycles: usize = std::env::var("FLASHKV_TXN_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut d = start(dir.path());
    rt.block_on(async {
        let mut kv = d.kv().await;
        kv.write(WriteRequest {
            mutations: (0..ACCOUNTS)
                .map(|i| Mutation {
                    op: Some(mutation::Op::Put(PutRequest {
                        key: acct(i),
                        value: OPENING.to_string().into_bytes(),
                        ..Default::default()
                    })),
                })
                .collect(),
        })
        .await
        .unwrap();
    });
    let mut total_acked = 0;
    for cycle in 0..cycles {
        let snapshots_checked = Arc::new(Mutex::new(0usize));
        rt.block_on(async {
            let mut workers = Vec::new();
            for w in 0..CLIENTS {
                let mut c = txn(&d).await;
                let acked = acked.clone();
                workers.push(tokio::spawn(async move {
                    let mut seed = (cycle * 100 + w) as u64 * 2654435761 + 1;
                    for seq in 0.. {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let from = (seed >> 33) as usize % ACCOUNTS;
                        let to = (from + 1 + (seed >> 45) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                        let amount = 1 + (seed >> 20) as i64 % 50;
                        let record = format!("t/{cycle}/{w}/{seq:06}");
                        match transfer(&mut c, from, to, amount, &record).await {
                            Ok(true) => {
                                acked.lock().unwrap().insert(record);
                            }
                            Ok(false) => {}
                            // The daemon was killed.
                            Err(_) => return,
                        }
                    }
                }));
            }
            let reader = {
                let mut c = txn(&d).await;
                let n = snapshots_checked.clone();
                tokio::spawn(async move {
                    loop {
                        let id = match c.begin(BeginRequest {}).await {
                            Ok(r) => r.into_inner().txn_id,
                            Err(_) => return,
                        };
                        let Ok(r) = c
                            .scan(TxnScanRequest {
                                txn_id: id,
                                prefix: b"acct/".to_vec(),
                                limit: 100,
                                ..Default::default()
                            })
                            .await
                        else {
                            return;
                        };
                        let sum: i64 = r.into_inner().items.iter().map(|kv| int(&kv.value)).sum();
                        assert_eq!(
                            sum,
                            OPENING * ACCOUNTS as i64,
                            "a snapshot saw a half transfer"
                        );
                        *n.lock().unwrap() += 1;
                        let _ = c.rollback(RollbackRequest { txn_id: id }).await;
                    }
                })
            };
            let run_ms = 700 + (cycle as u64 * 337) % 900;
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            d.kill();
            for w in workers {
                w.await.unwrap();
            }
            // A reader's failed assertion shows up here.
            reader.await.unwrap();
        });
        assert!(
            *snapshots_checked.lock().unwrap() > 0,
            "no snapshot was checked"
        );
        d = start(dir.path());
        let acked_now = acked.lock().unwrap().clone();
        rt.block_on(async {
            let mut c = txn(&d).await;
            let (balances, records) = snapshot(&mut c).await;
            check(&balances, &records, &acked_now);
        });
        assert!(
            acked_now.len() > total_acked,
            "cycle {cycle}: no transfer was acknowledged"
        );
        total_acked = acked_now.len();
    }
    eprintln!(
        "{total_acked} acknowledged transfers over {cycles} SIGKILL cycles, none lost, none half"
    );
    assert_eq!(d.stop(), 0);
}

#[test]
fn watch_streams_changes_in_version_order_and_resumes() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut kv = d.kv().await;
        let put = |k: &str, v: &str| PutRequest {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        };
        // A watch from "now" sees only later changes under its prefix.
        kv.put(put("w/before", "x")).await.unwrap();
        let mut stream = kv
            .watch(WatchRequest {
                prefix: b"w/".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let v1 = kv.put(put("w/a", "1")).await.unwrap().into_inner().version;
        kv.put(put("other", "1")).await.unwrap();
        kv.delete(DeleteRequest {
            key: b"w/a".to_vec(),
        })
        .await
        .unwrap();
        // An atomic batch across shards: its changes share one version.
        let muts = ["w/b", "w/c", "w/d", "w/e"]
            .iter()
            .map(|k| Mutation {
                op: Some(mutation::Op::Put(put(k, "2"))),
            })
            .collect();
        let bv = kv
            .write(WriteRequest { mutations: muts })
            .await
            .unwrap()
            .into_inner()
            .version;
        let mut got = Vec::new();
        while got.len() < 6 {
            let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .unwrap();
            got.push(ev);
        }
        assert_eq!(got[0].key, b"w/a");
        assert_eq!(
            (got[0].version, got[0].value.as_slice(), got[0].deleted),
            (v1, b"1".as_slice(), false)
        );
        assert_eq!(
            (got[1].key.as_slice(), got[1].deleted),
            (b"w/a".as_slice(), true)
        );
        assert!(
            got.windows(2).all(|w| w[0].version <= w[1].version),
            "in version order"
        );
        assert!(got[2..].iter().all(|e| e.version == bv));
        drop(stream);
        // Resume after a disconnect from the last version seen + 1.
        kv.put(put("w/f", "3")).await.unwrap();
        let mut resumed = kv
            .watch(WatchRequest {
                prefix: b"w/".to_vec(),
                start_version: bv + 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let ev = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.key, b"w/f");
        // One key; from before the history: refused with where it starts.
        let e = kv
            .watch(WatchRequest {
                key: b"w/a".to_vec(),
                start_version: 1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{}", e.message());
        let e = kv
            .watch(WatchRequest {
                key: b"w/a".to_vec(),
                prefix: b"w/".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // A watcher that does not read is cut off once it falls behind,
        // told where to resume.
        let mut slow = kv
            .watch(WatchRequest {
                prefix: b"bulk/".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let big = "v".repeat(2000);
        let puts: Vec<PutRequest> = (0..40_000)
            .map(|i| put(&format!("bulk/{i:06}"), &big))
            .collect();
        kv.bulk_load(tokio_stream::iter(puts)).await.unwrap();
        let mut seen = 0u64;
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(10), slow.next())
                .await
                .unwrap_or_else(|_| panic!("the stream stalled after {seen} events"))
            {
                Some(Ok(_)) => seen += 1,
                Some(Err(s)) => break s,
                None => panic!("the slow watcher's stream ended without a status"),
            }
        };
        assert_eq!(end.code(), Code::ResourceExhausted, "{}", end.message());
        assert!(
            end.message().contains("resume with start_version"),
            "{}",
            end.message()
        );
        assert!(seen < 40_000, "saw {seen}");
    });
    assert_eq!(d.stop(), 0);
}

#[test]
fn an_idle_transaction_is_rolled_back_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &["--shards", "2", "--txn-idle-timeout-ms", "300"],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = txn(&d).await;
        let busy = c.begin(BeginRequest {}).await.unwrap().into_inner().txn_id;
        let idle = c.begin(BeginRequest {}).await.unwrap().into_inner().txn_id;
        // Used every 100 ms: stays open; left alone: rolled back.
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.get(TxnGetRequest {
                txn_id: busy,
                key: b"k".to_vec(),
            })
            .await
            .unwrap();
        }
        let e = c
            .get(TxnGetRequest {
                txn_id: idle,
                key: b"k".to_vec(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{}", e.message());
        c.put(TxnPutRequest {
            txn_id: busy,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl_ms: 0,
        })
        .await
        .unwrap();
        c.commit(CommitRequest { txn_id: busy }).await.unwrap();
        let e = c.commit(CommitRequest { txn_id: busy }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "a transaction commits once");
    });
    assert_eq!(d.stop(), 0);
}
