//! Crash harness of the real daemon over gRPC and RESP: several clients
//! write (gRPC unary puts and atomic Write batches; pipelined Redis SETs and
//! atomic MSETs; a Redis list fed by RPUSH and drained by LPOP and a hash
//! counter bumped by HINCRBY) against `flashkv --sync always`,
//! the daemon is killed with SIGKILL at a random moment, restarted on the
//! same directory, and every acknowledged write must be there with its
//! value; no value appears that was never written, and every batch is all
//! or nothing. Small segments and an eager merge trigger make seals and
//! merges happen during the run.
//!
//! `FLASHKV_DAEMON_CRASH_CYCLES` sets the cycle count (default 20, the smoke
//! run of `make test`; `make test-crash` runs 100).

// Test helpers unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flashkv::api::grpc::proto::admin_client::AdminClient;
use flashkv::api::grpc::proto::kv_client::KvClient;
use flashkv::api::grpc::proto::*;
use tonic::transport::Channel;

const PUT_KEYS: u64 = 200;
const GROUPS: usize = 20;

mod common;
use common::Daemon;

/// The daemon with small segments and an eager merge trigger.
fn start(dir: &Path) -> (Daemon, String, String) {
    let d = Daemon::start(
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
    );
    let url = d.url();
    let resp = d.resp.clone();
    (d, url, resp)
}

/// A minimal RESP client (the harness needs SET and MSET and their
/// one-line replies): commands are pipelined, replies read in order.
struct Resp {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    async fn connect(addr: &str) -> std::io::Result<Resp> {
        Ok(Resp {
            stream: tokio::net::TcpStream::connect(addr).await?,
            buf: Vec::new(),
        })
    }

    async fn send(&mut self, args: &[&[u8]]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out).await
    }

    /// The next reply line (without CRLF).
    async fn reply(&mut self) -> std::io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Resp {
    /// An integer reply (`:n`).
    async fn int(&mut self) -> std::io::Result<i64> {
        let line = self.reply().await?;
        assert_eq!(
            line.first(),
            Some(&b':'),
            "{}",
            String::from_utf8_lossy(&line)
        );
        Ok(std::str::from_utf8(&line[1..]).unwrap().parse().unwrap())
    }

    /// A bulk reply of text without CRLF (None: nil).
    async fn bulk(&mut self) -> std::io::Result<Option<String>> {
        let line = self.reply().await?;
        if line == b"$-1" {
            return Ok(None);
        }
        assert_eq!(
            line.first(),
            Some(&b'$'),
            "{}",
            String::from_utf8_lossy(&line)
        );
        Ok(Some(String::from_utf8(self.reply().await?).unwrap()))
    }
}

/// What the list-and-counter client had acknowledged.
#[derive(Default)]
struct ListModel {
    /// Elements whose RPUSH was acknowledged and whose LPOP was not.
    present: BTreeSet<u64>,
    /// An RPUSH sent but not answered (it may or may not have happened).
    push_in_flight: Option<u64>,
    /// An LPOP sent but not answered (it may have removed the head).
    pop_in_flight: bool,
    /// Acknowledged HINCRBYs.
    count: i64,
    /// An HINCRBY sent but not answered.
    incr_in_flight: bool,
}

/// The Redis list and counter after a restart: every acknowledged push
/// that was not popped is there, in push order, and nothing else but an
/// unanswered push; at most the head is gone, and only if a pop was
/// unanswered; LLEN agrees with the elements; the counter counts every
/// acknowledged HINCRBY (and maybe the unanswered one). The model is then
/// reset to what is there.
async fn verify_list(resp: &str, model: &Mutex<ListModel>) {
    let mut r = Resp::connect(resp).await.unwrap();
    r.send(&[b"LRANGE", b"clist", b"0", b"-1"]).await.unwrap();
    let head = r.reply().await.unwrap();
    let n: usize = std::str::from_utf8(&head[1..]).unwrap().parse().unwrap();
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(r.bulk().await.unwrap().unwrap().parse::<u64>().unwrap());
    }
    r.send(&[b"LLEN", b"clist"]).await.unwrap();
    assert_eq!(
        r.int().await.unwrap() as usize,
        items.len(),
        "LLEN disagrees with LRANGE"
    );
    r.send(&[b"HGET", b"chash", b"n"]).await.unwrap();
    let count: i64 = r.bulk().await.unwrap().map_or(0, |c| c.parse().unwrap());
    let mut m = model.lock().unwrap();
    assert!(
        items.windows(2).all(|w| w[0] < w[1]),
        "list out of push order: {items:?}"
    );
    let got: BTreeSet<u64> = items.iter().copied().collect();
    let mut missing: Vec<u64> = m.present.difference(&got).copied().collect();
    if m.pop_in_flight && missing.first() == m.present.first() {
        missing.retain(|s| Some(s) != m.present.first());
    }
    assert!(missing.is_empty(), "acknowledged pushes lost: {missing:?}");
    let extra: Vec<u64> = got
        .difference(&m.present)
        .filter(|s| Some(**s) != m.push_in_flight)
        .copied()
        .collect();
    assert!(
        extra.is_empty(),
        "elements never acknowledged nor in flight: {extra:?}"
    );
    assert!(
        count == m.count || (m.incr_in_flight && count == m.count + 1),
        "counter {count}, acknowledged {} (one in flight: {})",
        m.count,
        m.incr_in_flight
    );
    *m = ListModel {
        present: got,
        count,
        ..ListModel::default()
    };
}

fn value(key: &str, seq: u64) -> Vec<u8> {
    format!("{key}:{seq}:{}", "v".repeat(500 + (seq % 500) as usize)).into_bytes()
}

fn seq_of(key: &str, v: &[u8]) -> u64 {
    let s = std::str::from_utf8(v).expect("UTF-8 value");
    let mut parts = s.splitn(3, ':');
    assert_eq!(parts.next(), Some(key), "value {s:?} under key {key}");
    let seq: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("sequence number");
    assert_eq!(
        v,
        value(key, seq).as_slice(),
        "value of {key} was never written"
    );
    seq
}

/// Acknowledged state: the highest acknowledged sequence per key.
type Acked = Arc<Mutex<HashMap<String, u64>>>;

fn ack(acked: &Acked, key: &str, seq: u64) {
    let mut m = acked.lock().unwrap();
    let e = m.entry(key.to_string()).or_insert(0);
    *e = (*e).max(seq);
}

/// Groups of three keys that live on one shard, for atomic batches.
async fn batch_groups(admin: &mut AdminClient<Channel>, prefix: &str) -> Vec<Vec<String>> {
    let mut by_shard: HashMap<u32, Vec<String>> = HashMap::new();
    let mut i = 0;
    while by_shard.values().map(|v| v.len() / 3).sum::<usize>() < GROUPS {
        let k = format!("{prefix}{i}");
        let s = admin
            .shard_of(ShardOfRequest {
                key: k.clone().into(),
            })
            .await
            .unwrap()
            .into_inner()
            .shard;
        by_shard.entry(s).or_default().push(k);
        i += 1;
    }
    by_shard
        .into_values()
        .flat_map(|v| v.chunks_exact(3).map(|c| c.to_vec()).collect::<Vec<_>>())
        .take(GROUPS)
        .collect()
}

async fn get(kv: &mut KvClient<Channel>, key: &str) -> GetResponse {
    kv.get(GetRequest {
        key: key.as_bytes().to_vec(),
    })
    .await
    .unwrap()
    .into_inner()
}

async fn verify(url: &str, acked: &Acked, groups: &[Vec<String>], batch_acked: &Acked) {
    let mut kv = KvClient::connect(url.to_string()).await.unwrap();
    let acked = acked.lock().unwrap().clone();
    for (key, seq) in &acked {
        let r = get(&mut kv, key).await;
        assert!(r.found, "acknowledged key {key} (seq {seq}) is missing");
        assert!(
            seq_of(key, &r.value) >= *seq,
            "{key}: acknowledged {seq}, found older"
        );
    }
    let batch_acked = batch_acked.lock().unwrap().clone();
    for g in groups {
        let mut seqs = Vec::new();
        for key in g {
            let r = get(&mut kv, key).await;
            seqs.push(r.found.then(|| seq_of(key, &r.value)));
        }
        assert!(
            seqs.iter().all(|s| *s == seqs[0]),
            "batch {g:?} is half applied: {seqs:?}"
        );
        if let Some(&acked_seq) = batch_acked.get(&g[0]) {
            assert!(
                seqs[0].is_some_and(|s| s >= acked_seq),
                "batch {g:?}: acknowledged {acked_seq}, found {seqs:?}"
            );
        }
    }
}

#[test]
fn sigkill_of_the_daemon_loses_no_acknowledged_write() {
    let cycles: u64 = std::env::var("FLASHKV_DAEMON_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Acked = Arc::default();
    let batch_acked: Acked = Arc::default();
    let mset_acked: Acked = Arc::default();
    let list: Arc<Mutex<ListModel>> = Arc::default();
    let mut groups = Vec::new();
    let mut mset_groups = Vec::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    let mut total = 0u64;
    for cycle in 0..cycles {
        let (mut child, url, resp) = start(dir.path());
        rt.block_on(async {
            if groups.is_empty() {
                let mut admin = AdminClient::connect(url.clone()).await.unwrap();
                groups = batch_groups(&mut admin, "batch-").await;
                mset_groups = batch_groups(&mut admin, "mset-").await;
            }
            // Everything acknowledged before this start must have survived.
            verify(&url, &acked, &groups, &batch_acked).await;
            verify(&url, &acked, &mset_groups, &mset_acked).await;
            verify_list(&resp, &list).await;
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run = Duration::from_millis(150 + rng % 500);
        let base = (cycle + 1) * 1_000_000_000;
        let done = rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..3u64 {
                let mut kv = KvClient::connect(url.clone()).await.unwrap();
                let acked = acked.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    for seq in base + w * 10_000_000.. {
                        let key = format!("put-{w}-{}", seq % PUT_KEYS);
                        let req = PutRequest {
                            key: key.clone().into(),
                            value: value(&key, seq),
                            ttl_ms: 0,
                            expected_version: None,
                        };
                        if kv.put(req).await.is_err() {
                            break; // the daemon is gone
                        }
                        ack(&acked, &key, seq);
                        n += 1;
                    }
                    n
                }));
            }
            let mut kv = KvClient::connect(url.clone()).await.unwrap();
            let batch_acked2 = batch_acked.clone();
            let gs = groups.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                for seq in base + 50_000_000.. {
                    let g = &gs[(seq as usize) % gs.len()];
                    let mutations = g
                        .iter()
                        .map(|k| Mutation {
                            op: Some(mutation::Op::Put(PutRequest {
                                key: k.clone().into(),
                                value: value(k, seq),
                                ttl_ms: 0,
                                expected_version: None,
                            })),
                        })
                        .collect();
                    if kv.write(WriteRequest { mutations }).await.is_err() {
                        break;
                    }
                    ack(&batch_acked2, &g[0], seq);
                    n += 1;
                }
                n
            }));
            // Redis clients: pipelined SETs of their own keys, then an
            // atomic MSET of a group, over and over.
            for w in 0..2u64 {
                let mut r = Resp::connect(&resp).await.unwrap();
                let acked = acked.clone();
                let mset_acked = mset_acked.clone();
                let gs = mset_groups.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    let mut seq = base + 70_000_000 + w * 10_000_000;
                    'run: loop {
                        let mut keys = Vec::new();
                        for _ in 0..4 {
                            seq += 1;
                            let key = format!("resp-{w}-{}", seq % PUT_KEYS);
                            let v = value(&key, seq);
                            if r.send(&[b"SET", key.as_bytes(), &v]).await.is_err() {
                                break 'run;
                            }
                            keys.push((key, seq));
                        }
                        for (key, s) in keys {
                            match r.reply().await {
                                Ok(line) if line == b"+OK" => {
                                    ack(&acked, &key, s);
                                    n += 1;
                                }
                                Ok(line) => panic!("SET {key}: {}", String::from_utf8_lossy(&line)),
                                Err(_) => break 'run,
                            }
                        }
                        seq += 1;
                        // Each writer its own groups (even or odd), so that a
                        // group's sequence numbers only grow.
                        let g = &gs[(seq as usize % (gs.len() / 2)) * 2 + w as usize];
                        let values: Vec<Vec<u8>> = g.iter().map(|k| value(k, seq)).collect();
                        let mut args: Vec<&[u8]> = vec![b"MSET"];
                        for (k, v) in g.iter().zip(&values) {
                            args.push(k.as_bytes());
                            args.push(v);
                        }
                        if r.send(&args).await.is_err() {
                            break;
                        }
                        match r.reply().await {
                            Ok(line) if line == b"+OK" => {
                                ack(&mset_acked, &g[0], seq);
                                n += 1;
                            }
                            Ok(line) => panic!("MSET {g:?}: {}", String::from_utf8_lossy(&line)),
                            Err(_) => break,
                        }
                    }
                    n
                }));
            }
            // A Redis queue and counter: RPUSH, every fourth step an LPOP,
            // and an HINCRBY, one at a time.
            let mut r = Resp::connect(&resp).await.unwrap();
            let model = list.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                for seq in base + 90_000_000.. {
                    let text = seq.to_string();
                    model.lock().unwrap().push_in_flight = Some(seq);
                    if r.send(&[b"RPUSH", b"clist", text.as_bytes()])
                        .await
                        .is_err()
                    {
                        break;
                    }
                    let Ok(_) = r.int().await else { break };
                    {
                        let mut m = model.lock().unwrap();
                        m.present.insert(seq);
                        m.push_in_flight = None;
                    }
                    n += 1;
                    if seq % 4 == 0 {
                        model.lock().unwrap().pop_in_flight = true;
                        if r.send(&[b"LPOP", b"clist"]).await.is_err() {
                            break;
                        }
                        let Ok(popped) = r.bulk().await else { break };
                        let mut m = model.lock().unwrap();
                        let head = m.present.pop_first();
                        assert_eq!(popped.map(|p| p.parse::<u64>().unwrap()), head, "LPOP");
                        m.pop_in_flight = false;
                        n += 1;
                    }
                    model.lock().unwrap().incr_in_flight = true;
                    if r.send(&[b"HINCRBY", b"chash", b"n", b"1"]).await.is_err() {
                        break;
                    }
                    let Ok(c) = r.int().await else { break };
                    let mut m = model.lock().unwrap();
                    m.count += 1;
                    assert_eq!(c, m.count, "HINCRBY");
                    m.incr_in_flight = false;
                    n += 1;
                }
                n
            }));
            tokio::time::sleep(run).await;
            child.kill(); // SIGKILL
            let mut done = 0;
            for t in tasks {
                done += t.await.unwrap();
            }
            done
        });
        assert!(
            done > 0,
            "cycle {cycle}: nothing was acknowledged in {run:?}"
        );
        total += done;
        eprintln!(
            "cycle {cycle}: SIGKILL after {run:?}, {done} acknowledged writes this cycle, {total} in all"
        );
    }
    // A last restart checks the final cycle, and that seals and merges did
    // happen during the run.
    let (child, url, resp) = start(dir.path());
    rt.block_on(async {
        verify(&url, &acked, &groups, &batch_acked).await;
        verify(&url, &acked, &mset_groups, &mset_acked).await;
        verify_list(&resp, &list).await;
        assert!(list.lock().unwrap().count > 0, "no HINCRBY acknowledged");
        // Both protocols took part.
        {
            let acked = acked.lock().unwrap();
            assert!(
                acked.keys().any(|k| k.starts_with("put-")),
                "no gRPC put acknowledged"
            );
            assert!(
                acked.keys().any(|k| k.starts_with("resp-")),
                "no RESP SET acknowledged"
            );
        }
        assert!(
            !mset_acked.lock().unwrap().is_empty(),
            "no RESP MSET acknowledged"
        );
        let mut admin = AdminClient::connect(url.clone()).await.unwrap();
        let stats = admin.stats(StatsRequest {}).await.unwrap().into_inner();
        // Segment ids only grow: every new segment, merge output and merge
        // job takes the next one.
        let max_id = stats
            .shards
            .iter()
            .flat_map(|s| &s.segments)
            .map(|g| g.id)
            .max()
            .unwrap_or(0);
        eprintln!("after {cycles} cycles: highest segment id {max_id}");
        if cycles >= 20 {
            assert!(
                max_id >= 6,
                "the run should have sealed and merged segments (highest id {max_id})"
            );
        }
    });
    drop(child);
}
