//! The Redis collections seen from the other protocols, against the real
//! daemon: their internal records stay out of gRPC scans and cannot be
//! named by gRPC keys, and the elements of a deleted or expired collection
//! are reclaimed in the background.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, rt};
use flashkv::api::grpc::proto::{GetRequest, PutRequest, ScanRequest, StatsRequest};

/// Sends one command over RESP2 and returns the first line of the reply
/// (enough for the integer and status replies used here).
fn cmd(conn: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut().write_all(out.as_bytes()).unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

async fn records(d: &Daemon) -> u64 {
    let mut admin = d.admin().await;
    let s = admin.stats(StatsRequest {}).await.unwrap().into_inner();
    s.shards.iter().map(|s| s.keys).sum()
}

#[test]
fn collections_are_internal_and_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--shards", "2"]);
    let mut r = BufReader::new(TcpStream::connect(&d.resp).unwrap());
    rt().block_on(async {
        let mut kv = d.kv().await;
        assert_eq!(cmd(&mut r, &["SET", "plain", "v"]), "+OK");
        let mut fields = vec!["HSET", "big"];
        let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
        for n in &names {
            fields.push(n);
            fields.push("x");
        }
        assert_eq!(cmd(&mut r, &fields), ":200");
        assert_eq!(cmd(&mut r, &["RPUSH", "list", "a", "b"]), ":2");
        // A gRPC scan of everything sees the string only.
        let mut s = kv.scan(ScanRequest::default()).await.unwrap().into_inner();
        let mut keys = vec![];
        while let Some(item) = s.message().await.unwrap() {
            keys.push(item.key);
        }
        assert_eq!(keys, vec![b"plain".to_vec()]);
        // The reserved namespace cannot be named from gRPC.
        let reserved = b"\xff\xfemlist".to_vec();
        let e = kv
            .get(GetRequest {
                key: reserved.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        assert!(e.message().contains("reserved"), "{e}");
        let e = kv
            .put(PutRequest {
                key: reserved,
                value: b"x".to_vec(),
                ttl_ms: 0,
                expected_version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        // string + 2 metadata records + 200 fields + 2 elements.
        assert_eq!(records(&d).await, 205);
        // DEL is O(1); the elements go in the background.
        assert_eq!(cmd(&mut r, &["DEL", "big"]), ":1");
        let deadline = Instant::now() + Duration::from_secs(20);
        while records(&d).await != 4 {
            assert!(Instant::now() < deadline, "elements not reclaimed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A hash recreated under the same name starts empty.
        assert_eq!(cmd(&mut r, &["HSET", "big", "new", "1"]), ":1");
        assert_eq!(cmd(&mut r, &["HLEN", "big"]), ":1");
        assert_eq!(cmd(&mut r, &["DBSIZE"]), ":3");
    });
    assert_eq!(d.stop(), 0);
}
