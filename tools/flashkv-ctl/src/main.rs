//! `flashkv-ctl`: a command-line client for people.
//!
//! Online (over gRPC): get, put, delete, scan, stats, compact, checkpoint,
//! shard-of, and `load`/`dump` of key/value files through BulkLoad and Scan
//! with a progress bar. Offline (on a data directory, read-only): `check`
//! verifies every record CRC and hint and exits non-zero on damage;
//! `inspect` lists segments and, with `--records`, every record.
//!
//! Dump files: the magic `FKVDUMP1`, then for each pair a little-endian u32
//! key length, u32 value length, key bytes, value bytes.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flashkv::api::grpc::BearerToken;
use flashkv::api::grpc::proto::admin_client::AdminClient;
use flashkv::api::grpc::proto::kv_client::KvClient;
use flashkv::api::grpc::proto::*;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The KV client, with the token (if any) on every call.
type Kv = KvClient<InterceptedService<Channel, BearerToken>>;

const DUMP_MAGIC: &[u8; 8] = b"FKVDUMP1";

#[derive(Parser)]
#[command(name = "flashkv-ctl", version, about = "FlashKV command-line client")]
struct Cli {
    /// Daemon address: host:port as the daemon prints it (https is
    /// assumed with --ca-file, http otherwise), or a URL.
    #[arg(long, default_value = "127.0.0.1:50051", global = true)]
    addr: String,
    /// CA certificate (PEM) to verify the daemon's TLS certificate with.
    #[arg(long, global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// File holding the daemon's bearer token (--auth-token-file).
    #[arg(long, global = true)]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a key's value (exit 1 if absent).
    Get { key: String },
    /// Store a value.
    Put {
        key: String,
        value: String,
        /// Time to live in milliseconds.
        #[arg(long, default_value_t = 0)]
        ttl_ms: u64,
        /// Compare-and-set: write only at this version (0: must not exist).
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// Remove a key.
    Delete { key: String },
    /// List keys in order: tab-separated key, version, value.
    Scan {
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value = "")]
        start: String,
        #[arg(long, default_value = "")]
        end: String,
        #[arg(long, default_value_t = 0)]
        limit: u64,
        #[arg(long)]
        reverse: bool,
        #[arg(long)]
        keys_only: bool,
    },
    /// Storage figures per shard.
    Stats,
    /// Merge every sealed segment now.
    Compact,
    /// Write a consistent copy of the data into PATH (on the server).
    Checkpoint { path: String },
    /// Which shard owns a key.
    ShardOf { key: String },
    /// Import a dump file through BulkLoad.
    Load { file: PathBuf },
    /// Export keys (optionally a prefix) into a dump file.
    Dump {
        file: PathBuf,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Verify a data directory offline (read-only); exit 2 on damage.
    Check { dir: PathBuf },
    /// Describe a data directory offline: segments, and with --records every record.
    Inspect {
        dir: PathBuf,
        #[arg(long)]
        records: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flashkv-ctl: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Check { dir } => return check(&dir),
        Cmd::Inspect { dir, records } => return inspect(&dir, records),
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let Cli {
        addr,
        ca_file,
        token_file,
        cmd,
    } = cli;
    let conn = Connect {
        addr,
        ca_file,
        token_file,
    };
    rt.block_on(online(&conn, cmd))
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How to reach the daemon.
struct Connect {
    addr: String,
    ca_file: Option<std::path::PathBuf>,
    token_file: Option<std::path::PathBuf>,
}

async fn online(cli: &Connect, cmd: Cmd) -> anyhow::Result<i32> {
    let endpoint = flashkv::api::grpc::client_endpoint(&cli.addr, cli.ca_file.as_deref())?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", endpoint.uri()))?;
    let token = match &cli.token_file {
        None => BearerToken::default(),
        Some(p) => BearerToken::from_file(p)?,
    };
    let mut kv = KvClient::with_interceptor(channel.clone(), token.clone())
        .max_decoding_message_size(1 << 30)
        .max_encoding_message_size(1 << 30);
    let mut admin = AdminClient::with_interceptor(channel, token);
    match cmd {
        Cmd::Get { key } => {
            let r = kv.get(GetRequest { key: key.into() }).await?.into_inner();
            if !r.found {
                eprintln!("(not found)");
                return Ok(1);
            }
            println!("{}", show(&r.value));
            eprintln!(
                "version {}{}",
                r.version,
                if r.ttl_ms > 0 {
                    format!(", expires in {} ms", r.ttl_ms)
                } else {
                    String::new()
                }
            );
        }
        Cmd::Put {
            key,
            value,
            ttl_ms,
            expected_version,
        } => {
            let r = kv
                .put(PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ttl_ms,
                    expected_version,
                })
                .await?
                .into_inner();
            println!("version {}", r.version);
        }
        Cmd::Delete { key } => {
            let r = kv
                .delete(DeleteRequest { key: key.into() })
                .await?
                .into_inner();
            println!("{}", if r.found { "deleted" } else { "(not found)" });
        }
        Cmd::Scan {
            prefix,
            start,
            end,
            limit,
            reverse,
            keys_only,
        } => {
            let mut s = kv
                .scan(ScanRequest {
                    start: start.into(),
                    end: end.into(),
                    prefix: prefix.into(),
                    limit,
                    reverse,
                    keys_only,
                })
                .await?
                .into_inner();
            while let Some(item) = s.message().await? {
                if keys_only {
                    println!("{}\t{}", show(&item.key), item.version);
                } else {
                    println!(
                        "{}\t{}\t{}",
                        show(&item.key),
                        item.version,
                        show(&item.value)
                    );
                }
            }
        }
        Cmd::Stats => {
            let s = admin.stats(StatsRequest {}).await?.into_inner();
            println!("io engine {}, sync {}", s.io_engine, s.sync);
            println!(
                "{:>5} {:>12} {:>10} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8} {:>6}",
                "shard",
                "keys",
                "tombstones",
                "index bytes",
                "live bytes",
                "dead bytes",
                "batches",
                "fsyncs",
                "segments",
                "merges"
            );
            for sh in s.shards {
                println!(
                    "{:>5} {:>12} {:>10} {:>12} {:>12} {:>12} {:>9} {:>9} {:>8} {:>6}",
                    sh.shard,
                    sh.keys,
                    sh.tombstones,
                    sh.index_bytes,
                    sh.live_bytes,
                    sh.dead_bytes,
                    sh.batches,
                    sh.log_syncs,
                    sh.segments.len(),
                    sh.merges
                );
            }
        }
        Cmd::Compact => {
            let r = admin.compact(CompactRequest {}).await?.into_inner();
            println!(
                "merged on {} shards, {} bytes reclaimed",
                r.shards_merged, r.bytes_reclaimed
            );
        }
        Cmd::Checkpoint { path } => {
            admin
                .checkpoint(CheckpointRequest { path: path.clone() })
                .await?;
            println!("checkpoint written to {path}");
        }
        Cmd::ShardOf { key } => {
            let r = admin
                .shard_of(ShardOfRequest { key: key.into() })
                .await?
                .into_inner();
            println!("shard {} of {}", r.shard, r.shards);
        }
        Cmd::Load { file } => return load(&mut kv, &file).await,
        Cmd::Dump { file, prefix } => return dump(&mut kv, &file, prefix).await,
        Cmd::Check { .. } | Cmd::Inspect { .. } => {
            unreachable!("offline commands are handled before connecting")
        }
    }
    Ok(0)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:40}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} {{msg}}"
        ))
        .expect("progress template is valid")
        .progress_chars("=> "),
    );
    pb
}

async fn load(kv: &mut Kv, file: &Path) -> anyhow::Result<i32> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let total = f.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .context("reading the dump header")?;
    if &magic != DUMP_MAGIC {
        bail!(
            "{} is not a FlashKV dump (magic {:?})",
            file.display(),
            magic
        );
    }
    let pb = bar(total, "load");
    let (tx, rx) = tokio::sync::mpsc::channel::<PutRequest>(4096);
    let pb2 = pb.clone();
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut n = 0u64;
        loop {
            let mut lens = [0u8; 8];
            match r.read_exact(&mut lens) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(n),
                Err(e) => return Err(e.into()),
            }
            let kl = u32::from_le_bytes(lens[..4].try_into()?) as usize;
            let vl = u32::from_le_bytes(lens[4..].try_into()?) as usize;
            let mut key = vec![0; kl];
            let mut value = vec![0; vl];
            r.read_exact(&mut key).context("truncated dump: key")?;
            r.read_exact(&mut value).context("truncated dump: value")?;
            pb2.inc(8 + (kl + vl) as u64);
            n += 1;
            if tx
                .blocking_send(PutRequest {
                    key,
                    value,
                    ttl_ms: 0,
                    expected_version: None,
                })
                .is_err()
            {
                return Ok(n);
            }
        }
    });
    let summary = kv
        .bulk_load(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let read = reader.await??;
    let summary = summary?.into_inner();
    pb.finish_with_message(format!("{} keys", summary.keys));
    println!(
        "loaded {} keys ({} bytes) in {} ms",
        summary.keys, summary.bytes, summary.elapsed_ms
    );
    if summary.keys != read {
        bail!(
            "read {read} records but the server applied {}",
            summary.keys
        );
    }
    Ok(0)
}

async fn dump(kv: &mut Kv, file: &Path, prefix: String) -> anyhow::Result<i32> {
    let f = std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(DUMP_MAGIC)?;
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("dump {spinner} {pos} keys {per_sec} {msg}")
            .expect("progress template is valid"),
    );
    let mut s = kv
        .scan(ScanRequest {
            prefix: prefix.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(item) = s.message().await? {
        w.write_all(&(item.key.len() as u32).to_le_bytes())?;
        w.write_all(&(item.value.len() as u32).to_le_bytes())?;
        w.write_all(&item.key)?;
        w.write_all(&item.value)?;
        n += 1;
        pb.inc(1);
    }
    w.flush()?;
    w.get_ref().sync_all()?;
    pb.finish_and_clear();
    println!("dumped {n} keys to {}", file.display());
    Ok(0)
}

fn check(dir: &Path) -> anyhow::Result<i32> {
    let r = flashkv::storage::check::check_dir(dir, false)?;
    let mut records = 0;
    for s in &r.segments {
        records += s.records;
        for (off, what) in &s.damage {
            println!("DAMAGE {} at offset {off}: {what}", s.path.display());
        }
        if let Some(Err(why)) = &s.hint {
            println!("DAMAGE hint of {}: {why}", s.path.display());
        }
        if s.torn_tail > 0 {
            println!(
                "torn tail of {} bytes at the end of {} (start-up cuts it)",
                s.torn_tail,
                s.path.display()
            );
        }
    }
    println!(
        "{} segments, {records} records checked: {}",
        r.segments.len(),
        if r.damaged() { "DAMAGED" } else { "ok" }
    );
    Ok(if r.damaged() { 2 } else { 0 })
}

fn inspect(dir: &Path, records: bool) -> anyhow::Result<i32> {
    let r = flashkv::storage::check::check_dir(dir, records)?;
    for s in &r.segments {
        println!(
            "{} kind={:?}{} len={} records={} puts={} deletes={} versions={}..{} hint={} torn_tail={} unwritten_tail={} damage={}",
            s.path.display(),
            s.kind,
            s.unsynced_predecessor
                .map(|p| format!(" unsynced_predecessor={p}"))
                .unwrap_or_default(),
            s.len,
            s.records,
            s.puts,
            s.deletes,
            s.versions.0,
            s.versions.1,
            match &s.hint {
                None => "none".to_string(),
                Some(Ok(n)) => format!("{n} entries"),
                Some(Err(e)) => format!("invalid ({e})"),
            },
            s.torn_tail,
            s.unwritten_tail,
            s.damage.len()
        );
        for rec in &s.listing {
            println!(
                "  @{} {:?} v{} key={} value_len={}{}",
                rec.offset,
                rec.kind,
                rec.version,
                show(&rec.key),
                rec.value_len,
                rec.expires_at_ms
                    .map(|t| format!(" expires_at_ms={t}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(if r.damaged() { 2 } else { 0 })
}
