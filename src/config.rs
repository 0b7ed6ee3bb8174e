//! The daemon's configuration: command-line flags and an optional TOML file
//! with the same keys (flags win), validated into a typed [`Config`].
//! Nothing else in the crate reads flags or the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::shard::Partitioner;
use crate::storage::io::LogAppend;
use crate::storage::{IoEngine, MergePolicy, StoreOptions, SyncPolicy};

/// Command-line flags. Every flag can also be set in the `--config` file
/// under the same name (`data-dir = "/var/lib/flashkv"`).
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(
    name = "flashkv",
    version,
    about = "FlashKV: a thread-per-core key-value storage daemon"
)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Flags {
    /// TOML file with settings; flags given on the command line win.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Data directory (created if missing). [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address. [default: 127.0.0.1:50051]
    #[arg(long)]
    pub grpc_addr: Option<SocketAddr>,
    /// Redis protocol (RESP) listen address. [default: 127.0.0.1:6380]
    #[arg(long)]
    pub resp_addr: Option<SocketAddr>,
    /// HTTP listen address. [default: 127.0.0.1:8080]
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Most open connections per protocol (gRPC, HTTP); more are refused. [default: 10000]
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// HTTP: a request (headers read to response ready) that takes longer
    /// than this many milliseconds is answered 503 timeout, and a client
    /// that sends its headers more slowly is disconnected. gRPC calls honour
    /// the client's deadline (grpc-timeout). [default: 30000]
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// At a shutdown (SIGTERM, SIGINT), connections still open this many
    /// milliseconds later are cut off; streams (Watch, Pipeline, BulkLoad)
    /// end at once either way. 0 cuts every connection off at once.
    /// [default: 10000]
    #[arg(long)]
    pub shutdown_drain_ms: Option<u64>,
    /// Log requests slower than this many milliseconds (0: off). [default: 500]
    #[arg(long)]
    pub slow_request_ms: Option<u64>,
    /// A transaction's commit waits at most this many milliseconds for a
    /// lock held by another one, then aborts (retryable). [default: 2000]
    #[arg(long)]
    pub lock_timeout_ms: Option<u64>,
    /// A Txn-service transaction left idle this many milliseconds is rolled
    /// back. [default: 60000]
    #[arg(long)]
    pub txn_idle_timeout_ms: Option<u64>,
    /// Number of shards for a new data directory (default: one per core);
    /// an existing directory keeps the count in its manifest.
    #[arg(long)]
    pub shards: Option<u32>,
    /// Range partitioning: comma-separated split keys (N keys make N+1 shards).
    #[arg(long, value_delimiter = ',')]
    pub split_keys: Option<Vec<String>>,
    /// Sync policy: always, interval:MS (milliseconds), none. [default: always]
    #[arg(long)]
    pub sync: Option<String>,
    /// I/O engine: auto, io_uring, plain. [default: auto]
    #[arg(long)]
    pub io_engine: Option<String>,
    /// How log appends reach the file: mmap (copies into a mapped,
    /// preallocated segment), write (through the I/O engine), or auto
    /// (mmap under --sync none only). [default: auto]
    #[arg(long)]
    pub log_append: Option<String>,
    /// Segment size in MiB. [default: 128]
    #[arg(long)]
    pub segment_size_mb: Option<u64>,
    /// Largest key in bytes. [default: 16384]
    #[arg(long)]
    pub max_key_size: Option<usize>,
    /// Largest value in bytes. [default: 16777216]
    #[arg(long)]
    pub max_value_size: Option<usize>,
    /// Largest gRPC message in bytes. [default: 67108864]
    #[arg(long)]
    pub max_message_size: Option<usize>,
    /// Merge a sealed segment once this share of it is garbage. [default: 0.5]
    #[arg(long)]
    pub merge_garbage_ratio: Option<f64>,
    /// Merge all segments with garbage once this many MiB are reclaimable. [default: 1024]
    #[arg(long)]
    pub merge_reclaimable_mb: Option<u64>,
    /// Also merge on this schedule, in seconds (0: off). [default: 0]
    #[arg(long)]
    pub merge_interval_secs: Option<u64>,
    /// Merge reads at most this many MiB/s; a quarter of it while requests keep
    /// the shard busy, until --merge-reclaimable-mb of garbage builds up. [default: 128]
    #[arg(long)]
    pub merge_rate_mb: Option<u64>,
    /// Skip damaged log ranges at start-up (reported) instead of refusing to start.
    #[arg(long)]
    #[serde(default)]
    pub repair: bool,
    /// Do not pin shard threads to cores (they are pinned only when there are
    /// as many shards as cores).
    #[arg(long)]
    #[serde(default)]
    pub no_pin: bool,
    /// TLS certificate chain (PEM) for gRPC, HTTP and RESP; with --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// File holding the bearer token gRPC and HTTP clients must send.
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
    /// File holding the password RESP clients must AUTH with.
    #[arg(long)]
    pub resp_password_file: Option<PathBuf>,
    /// Allow listening beyond loopback without authentication.
    #[arg(long)]
    #[serde(default)]
    pub insecure_no_auth: bool,
    /// Log filter (tracing syntax): error, warn, info, debug, trace. [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Test hook: each shard waits this long before recovering, so tests
    /// can observe the daemon while it recovers.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub startup_delay_ms: Option<u64>,
}

/// How the I/O engine is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoChoice {
    /// io_uring when the kernel allows it, else plain.
    Auto,
    /// This engine, or fail.
    Force(IoEngine),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// HTTP address.
    pub http_addr: SocketAddr,
    /// RESP address.
    pub resp_addr: SocketAddr,
    /// Requests at least this slow are logged (zero: none).
    pub slow_request: Duration,
    /// Transaction timeouts.
    pub txn: crate::txn::TxnOptions,
    /// Connection and request limits of the network edges.
    pub conn_limits: crate::api::ConnLimits,
    /// Partitioner asked for on the command line (None: directory's or default).
    pub partitioner: Option<Partitioner>,
    /// Storage settings (shard id filled in per shard).
    pub store: StoreOptions,
    /// I/O engine choice.
    pub io: IoChoice,
    /// How log appends are made (`--log-append`).
    pub log_append: LogAppend,
    /// Largest gRPC message.
    pub max_message_size: usize,
    /// Pin shard threads to cores.
    pub pin: bool,
    /// Log filter.
    pub log_level: String,
    /// Test hook: delay before each shard recovers.
    pub startup_delay: Duration,
    /// TLS and authentication.
    pub security: Security,
}

/// TLS and authentication settings (secrets already read from their files).
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS material, if TLS is on.
    pub tls: Option<crate::api::security::TlsFiles>,
    /// Bearer token for gRPC and HTTP.
    pub token: Option<crate::api::security::Secret>,
    /// Password for RESP.
    pub resp_password: Option<crate::api::security::Secret>,
}

impl Security {
    fn from_flags(f: &Flags, addrs: &[(&str, SocketAddr)]) -> Result<Security> {
        use crate::api::security::{Secret, TlsFiles};
        let tls = match (&f.tls_cert, &f.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: f.tls_client_ca.clone(),
            }),
            (None, None) if f.tls_client_ca.is_some() => {
                return Err(Error::Config(
                    "--tls-client-ca needs --tls-cert and --tls-key".into(),
                ));
            }
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "give --tls-cert and --tls-key together".into(),
                ));
            }
        };
        let token = f
            .auth_token_file
            .as_deref()
            .map(|p| Secret::from_file(p, "--auth-token-file"))
            .transpose()?;
        let resp_password = f
            .resp_password_file
            .as_deref()
            .map(|p| Secret::from_file(p, "--resp-password-file"))
            .transpose()?;
        if !f.insecure_no_auth {
            for (name, addr) in addrs {
                let unprotected = match *name {
                    "resp" => resp_password.is_none(),
                    _ => token.is_none(),
                };
                if !addr.ip().is_loopback() && unprotected {
                    return Err(Error::Config(format!(
                        "--{name}-addr {addr} listens beyond loopback without authentication; give {} \
                         (or --insecure-no-auth to allow it)",
                        if *name == "resp" {
                            "--resp-password-file"
                        } else {
                            "--auth-token-file"
                        }
                    )));
                }
            }
        }
        Ok(Security {
            tls,
            token,
            resp_password,
        })
    }
}

impl Flags {
    /// Layers: command line over the config file.
    fn merged_with(self, file: Flags) -> Flags {
        Flags {
            config: self.config,
            data_dir: self.data_dir.or(file.data_dir),
            grpc_addr: self.grpc_addr.or(file.grpc_addr),
            http_addr: self.http_addr.or(file.http_addr),
            resp_addr: self.resp_addr.or(file.resp_addr),
            slow_request_ms: self.slow_request_ms.or(file.slow_request_ms),
            lock_timeout_ms: self.lock_timeout_ms.or(file.lock_timeout_ms),
            txn_idle_timeout_ms: self.txn_idle_timeout_ms.or(file.txn_idle_timeout_ms),
            max_connections: self.max_connections.or(file.max_connections),
            request_timeout_ms: self.request_timeout_ms.or(file.request_timeout_ms),
            shutdown_drain_ms: self.shutdown_drain_ms.or(file.shutdown_drain_ms),
            shards: self.shards.or(file.shards),
            split_keys: self.split_keys.or(file.split_keys),
            sync: self.sync.or(file.sync),
            io_engine: self.io_engine.or(file.io_engine),
            log_append: self.log_append.or(file.log_append),
            segment_size_mb: self.segment_size_mb.or(file.segment_size_mb),
            max_key_size: self.max_key_size.or(file.max_key_size),
            max_value_size: self.max_value_size.or(file.max_value_size),
            max_message_size: self.max_message_size.or(file.max_message_size),
            merge_garbage_ratio: self.merge_garbage_ratio.or(file.merge_garbage_ratio),
            merge_reclaimable_mb: self.merge_reclaimable_mb.or(file.merge_reclaimable_mb),
            merge_interval_secs: self.merge_interval_secs.or(file.merge_interval_secs),
            merge_rate_mb: self.merge_rate_mb.or(file.merge_rate_mb),
            repair: self.repair || file.repair,
            no_pin: self.no_pin || file.no_pin,
            log_level: self.log_level.or(file.log_level),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            auth_token_file: self.auth_token_file.or(file.auth_token_file),
            resp_password_file: self.resp_password_file.or(file.resp_password_file),
            insecure_no_auth: self.insecure_no_auth || file.insecure_no_auth,
            startup_delay_ms: self.startup_delay_ms,
        }
    }
}

/// Reads a config file.
pub fn read_file(path: &Path) -> Result<Flags> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read config", path, e))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

impl Config {
    /// Builds the configuration from flags (and the file they name).
    pub fn from_flags(flags: Flags) -> Result<Config> {
        let flags = match &flags.config {
            Some(path) => {
                let file = read_file(path)?;
                flags.merged_with(file)
            }
            None => flags,
        };
        let d = StoreOptions::default();
        let sync: SyncPolicy = flags.sync.as_deref().unwrap_or("always").parse()?;
        let io = match flags.io_engine.as_deref().unwrap_or("auto") {
            "auto" => IoChoice::Auto,
            s => IoChoice::Force(IoEngine::parse(s).ok_or_else(|| {
                Error::Config(format!(
                    "--io-engine {s:?}: expected auto, io_uring or plain"
                ))
            })?),
        };
        let log_append = LogAppend::parse(flags.log_append.as_deref().unwrap_or("auto"))
            .ok_or_else(|| {
                Error::Config(format!(
                    "--log-append {:?}: expected auto, mmap or write",
                    flags.log_append.as_deref().unwrap_or_default()
                ))
            })?;
        let partitioner = match (&flags.split_keys, flags.shards) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "give either --shards or --split-keys, not both".into(),
                ));
            }
            (Some(keys), None) => Some(Partitioner::ranges(
                keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            )?),
            (None, Some(n)) => Some(Partitioner::hash(n)?),
            (None, None) => None,
        };
        let store = StoreOptions {
            shard_id: 0,
            segment_size: flags.segment_size_mb.map_or(d.segment_size, |m| m << 20),
            max_key_size: flags.max_key_size.unwrap_or(d.max_key_size),
            max_value_size: flags.max_value_size.unwrap_or(d.max_value_size),
            sync,
            repair: flags.repair,
            merge: MergePolicy {
                min_garbage_ratio: flags
                    .merge_garbage_ratio
                    .unwrap_or(d.merge.min_garbage_ratio),
                min_reclaimable_bytes: flags
                    .merge_reclaimable_mb
                    .map_or(d.merge.min_reclaimable_bytes, |m| m << 20),
                interval: flags
                    .merge_interval_secs
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs),
                rate_bytes_per_sec: flags
                    .merge_rate_mb
                    .map_or(d.merge.rate_bytes_per_sec, |m| m << 20),
            },
        };
        store.validate()?;
        let max_message_size = flags.max_message_size.unwrap_or(64 << 20);
        if max_message_size < store.max_key_size + store.max_value_size + 1024 {
            return Err(Error::Config(format!(
                "max message size {max_message_size} cannot carry the largest key and value"
            )));
        }
        let grpc_addr = flags
            .grpc_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051)));
        let http_addr = flags
            .http_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let resp_addr = flags
            .resp_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 6380)));
        let security = Security::from_flags(
            &flags,
            &[
                ("grpc", grpc_addr),
                ("http", http_addr),
                ("resp", resp_addr),
            ],
        )?;
        Ok(Config {
            data_dir: flags.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            grpc_addr,
            http_addr,
            resp_addr,
            slow_request: Duration::from_millis(flags.slow_request_ms.unwrap_or(500)),
            txn: crate::txn::TxnOptions {
                lock_timeout: Duration::from_millis(flags.lock_timeout_ms.unwrap_or(2000).max(1)),
                idle_timeout: Duration::from_millis(
                    flags.txn_idle_timeout_ms.unwrap_or(60_000).max(1),
                ),
            },
            conn_limits: crate::api::ConnLimits {
                max_connections: flags.max_connections.unwrap_or(10_000).max(1),
                request_timeout: Duration::from_millis(
                    flags.request_timeout_ms.unwrap_or(30_000).max(1),
                ),
                shutdown_drain: flags
                    .shutdown_drain_ms
                    .map_or(crate::api::SHUTDOWN_DRAIN, Duration::from_millis),
            },
            partitioner,
            store,
            io,
            log_append,
            max_message_size,
            pin: !flags.no_pin,
            log_level: flags.log_level.unwrap_or_else(|| "info".into()),
            startup_delay: Duration::from_millis(flags.startup_delay_ms.unwrap_or(0)),
            security,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_arguments() {
        let c = Config::from_flags(Flags::parse_from(["flashkv"])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.resp_addr.to_string(), "127.0.0.1:6380");
        assert_eq!(c.store.sync, SyncPolicy::Always);
        assert_eq!(c.io, IoChoice::Auto);
        assert_eq!(c.log_append, LogAppend::Auto);
        let w =
            Config::from_flags(Flags::parse_from(["flashkv", "--log-append", "write"])).unwrap();
        assert_eq!(w.log_append, LogAppend::Write);
        assert!(c.partitioner.is_none());
        assert_eq!(c.conn_limits.shutdown_drain, Duration::from_secs(10));
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flashkv.toml");
        std::fs::write(
            &path,
            "data-dir = \"/srv/kv\"\nsync = \"interval:1000\"\nshards = 3\nshutdown-drain-ms = 2500\n",
        )
        .unwrap();
        let c = Config::from_flags(Flags::parse_from([
            "flashkv",
            "--config",
            path.to_str().unwrap(),
            "--sync",
            "none",
        ]))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/kv"));
        assert_eq!(c.store.sync, SyncPolicy::None);
        assert_eq!(c.partitioner, Some(Partitioner::hash(3).unwrap()));
        assert_eq!(c.conn_limits.shutdown_drain, Duration::from_millis(2500));
        let now = Config::from_flags(Flags::parse_from([
            "flashkv",
            "--config",
            path.to_str().unwrap(),
            "--shutdown-drain-ms",
            "0",
        ]))
        .unwrap();
        assert_eq!(now.conn_limits.shutdown_drain, Duration::ZERO);
        std::fs::write(&path, "no-such-key = 1\n").unwrap();
        let err = Config::from_flags(Flags::parse_from([
            "flashkv",
            "--config",
            path.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("no-such-key"), "{err}");
    }

    #[test]
    fn beyond_loopback_needs_auth_unless_waived() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k3n\n").unwrap();
        let t = token.to_str().unwrap();
        let err = Config::from_flags(Flags::parse_from([
            "flashkv",
            "--http-addr",
            "0.0.0.0:8080",
            "--resp-password-file",
            t,
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("--auth-token-file"), "{err}");
        let c = Config::from_flags(Flags::parse_from([
            "flashkv",
            "--http-addr",
            "0.0.0.0:8080",
            "--auth-token-file",
            t,
        ]))
        .unwrap();
        assert!(c.security.token.as_ref().unwrap().matches(b"t0k3n"));
        // The secret never shows in the configuration's debug output.
        assert!(!format!("{c:?}").contains("t0k3n"));
        Config::from_flags(Flags::parse_from([
            "flashkv",
            "--resp-addr",
            "0.0.0.0:6380",
            "--insecure-no-auth",
        ]))
        .unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        for args in [
            vec!["flashkv", "--sync", "sometimes"],
            vec!["flashkv", "--io-engine", "magic"],
            vec!["flashkv", "--log-append", "pwrite"],
            vec!["flashkv", "--shards", "0"],
            vec!["flashkv", "--shards", "2", "--split-keys", "m"],
            vec!["flashkv", "--segment-size-mb", "1"],
            vec!["flashkv", "--tls-cert", "c.pem"],
            vec!["flashkv", "--tls-client-ca", "ca.pem"],
            vec!["flashkv", "--grpc-addr", "0.0.0.0:1"],
            vec!["flashkv", "--resp-addr", "0.0.0.0:1"],
        ] {
            assert!(
                Config::from_flags(Flags::parse_from(args.clone())).is_err(),
                "{args:?}"
            );
        }
    }
}
