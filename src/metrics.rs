//! Process-wide metrics for `GET /metrics` (Prometheus text format): request
//! counts, errors and latency histograms per protocol and command, open
//! connections per protocol and per shard thread, group-commit sizes and
//! fsync latency per shard, conditional-write aborts by reason — plus
//! figures read from the shards at scrape time (keys, bytes, merges, inbox
//! depth).
//!
//! Hot paths touch atomics only: a request costs one label lookup (a hash
//! and a read lock in the prometheus crate), two counter increments and one
//! histogram observation. Requests slower than the configured threshold are
//! also logged (`--slow-request-ms`).

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::shard::Router;
use crate::storage::fasthash::FastMap;

thread_local! {
    /// This thread's handles of the per-command request series. Looking
    /// one up in the vector (`with_label_values`) hashes the labels and
    /// takes the vector's lock: with the hashing around it, 5-6% of the
    /// daemon's CPU under pipelined Redis GETs. The handles share the
    /// vector's series, which are never removed.
    static SERIES: std::cell::RefCell<RequestSeries> = std::cell::RefCell::default();
    /// The same handles for static (protocol, command) names, found by the
    /// names' addresses: no hashing of the names' bytes (two xxh3 hashes
    /// per pipelined Redis command before).
    static STATIC_SERIES: std::cell::RefCell<FastMap<(usize, usize), (IntCounter, Histogram)>> =
        std::cell::RefCell::default();
}

/// Request counter and latency histogram by protocol, then command.
type RequestSeries = FastMap<String, FastMap<String, (IntCounter, Histogram)>>;

/// The metrics of this process.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    connections: IntGaugeVec,
    shard_connections: IntGaugeVec,
    refused: IntCounterVec,
    group_batches: HistogramVec,
    fsync: HistogramVec,
    aborts: IntCounterVec,
    open_transactions: IntGauge,
    slow_threshold_us: AtomicU64,
}

/// Latency buckets: 25 µs to about 3.3 s, doubling.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(25e-6, 2.0, 18).expect("valid bucket spec")
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "flashkv_requests_total",
                "Requests handled, by protocol and command.",
            ),
            &["protocol", "command"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "flashkv_request_errors_total",
                "Requests that ended in an error, by protocol, command and error code.",
            ),
            &["protocol", "command", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "flashkv_request_duration_seconds",
                "Time from request decoded to response ready, by protocol and command.",
            )
            .buckets(latency_buckets()),
            &["protocol", "command"],
        )
        .expect("valid metric");
        let connections = IntGaugeVec::new(
            Opts::new(
                "flashkv_connections",
                "Open client connections, by protocol.",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        let shard_connections = IntGaugeVec::new(
            Opts::new(
                "flashkv_shard_connections",
                "Open client connections served by each shard thread, by protocol and shard.",
            ),
            &["protocol", "shard"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new(
                "flashkv_connections_refused_total",
                "Connections refused because the protocol was at --max-connections.",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        let group_batches = HistogramVec::new(
            HistogramOpts::new(
                "flashkv_group_commit_batches",
                "Batches committed by one group-commit write, by shard.",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 11).expect("valid bucket spec")),
            &["shard"],
        )
        .expect("valid metric");
        let fsync = HistogramVec::new(
            HistogramOpts::new(
                "flashkv_fsync_duration_seconds",
                "fdatasync latency of the log, by shard.",
            )
            .buckets(latency_buckets()),
            &["shard"],
        )
        .expect("valid metric");
        let aborts = IntCounterVec::new(
            Opts::new(
                "flashkv_aborts_total",
                "Writes not applied because a precondition failed, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let open_transactions = IntGauge::new(
            "flashkv_open_transactions",
            "Transactions between their start and their outcome (Txn service, HTTP /v1/txn, batches across shards).",
        )
        .expect("valid metric");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(latency.clone()),
            Box::new(shard_connections.clone()),
            Box::new(connections.clone()),
            Box::new(refused.clone()),
            Box::new(group_batches.clone()),
            Box::new(fsync.clone()),
            Box::new(aborts.clone()),
            Box::new(open_transactions.clone()),
        ] {
            registry.register(m).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            errors,
            latency,
            connections,
            shard_connections,
            refused,
            group_batches,
            fsync,
            aborts,
            open_transactions,
            slow_threshold_us: AtomicU64::new(0),
        }
    }

    /// Records one finished request: its count, latency and (if it failed)
    /// its error code; logs it if it was slow.
    pub fn request(&self, protocol: &str, command: &str, start: Instant, error: Option<&str>) {
        self.record(protocol, command, start, error, true);
    }

    /// [`Metrics::request`] for a call that lasts as long as its client
    /// keeps streaming (a BulkLoad): recorded, never logged as slow.
    pub fn streamed(&self, protocol: &str, command: &str, start: Instant, error: Option<&str>) {
        self.record(protocol, command, start, error, false);
    }

    /// [`Metrics::request`] for static names, timed by the caller: a
    /// pipeline's commands run back to back, so each one's end is the next
    /// one's start, one clock read per command instead of two.
    pub fn command(
        &self,
        protocol: &'static str,
        command: &'static str,
        start: Instant,
        end: Instant,
        error: Option<&str>,
    ) {
        let elapsed = end.saturating_duration_since(start);
        STATIC_SERIES.with(|series| {
            let mut series = series.borrow_mut();
            let key = (protocol.as_ptr() as usize, command.as_ptr() as usize);
            let (count, latency) = series
                .entry(key)
                .or_insert_with(|| self.series(protocol, command));
            count.inc();
            latency.observe(elapsed.as_secs_f64());
        });
        self.errors_and_slow(protocol, command, elapsed, error, true);
    }

    fn record(
        &self,
        protocol: &str,
        command: &str,
        start: Instant,
        error: Option<&str>,
        warn_slow: bool,
    ) {
        let elapsed = start.elapsed();
        SERIES.with(|series| {
            let mut series = series.borrow_mut();
            let commands = match series.get_mut(protocol) {
                Some(c) => c,
                None => series.entry(protocol.to_string()).or_default(),
            };
            let (count, latency) = match commands.get(command) {
                Some(h) => h,
                None => commands
                    .entry(command.to_string())
                    .or_insert_with(|| self.series(protocol, command)),
            };
            count.inc();
            latency.observe(elapsed.as_secs_f64());
        });
        self.errors_and_slow(protocol, command, elapsed, error, warn_slow);
    }

    /// The request counter and latency histogram of one command (looked
    /// up in the vectors; the per-thread maps keep them).
    fn series(&self, protocol: &str, command: &str) -> (IntCounter, Histogram) {
        (
            self.requests.with_label_values(&[protocol, command]),
            self.latency.with_label_values(&[protocol, command]),
        )
    }

    /// Counts the error of a finished request, and logs it if it was slow.
    fn errors_and_slow(
        &self,
        protocol: &str,
        command: &str,
        elapsed: Duration,
        error: Option<&str>,
        warn_slow: bool,
    ) {
        if let Some(code) = error {
            self.errors
                .with_label_values(&[protocol, command, code])
                .inc();
        }
        let slow = self.slow_threshold_us.load(Ordering::Relaxed);
        if warn_slow && slow > 0 && elapsed.as_micros() as u64 >= slow {
            tracing::warn!(
                protocol,
                command,
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                error = error.unwrap_or(""),
                "slow request"
            );
        }
    }

    /// Open connections of `protocol`.
    pub fn open(&self, protocol: &str) -> i64 {
        self.connections.with_label_values(&[protocol]).get()
    }

    /// Logs requests at least this slow (zero: never).
    pub fn set_slow_request_threshold(&self, t: Duration) {
        self.slow_threshold_us
            .store(t.as_micros() as u64, Ordering::Relaxed);
    }

    /// The gauge of `protocol`'s connections served by `shard`.
    pub fn shard_connections(&self, protocol: &str, shard: usize) -> IntGauge {
        self.shard_connections
            .with_label_values(&[protocol, &shard.to_string()])
    }

    /// A guard for a new connection of `protocol`, or None (counted as
    /// refused) if `max` are open already.
    pub fn admit(&self, protocol: &str, max: usize) -> Option<ConnectionGuard> {
        let g = self.connections.with_label_values(&[protocol]);
        // Count first, then check: two shard threads admitting at once can
        // both be refused, never both let in beyond the limit.
        g.inc();
        if g.get() > max as i64 {
            g.dec();
            self.refused.with_label_values(&[protocol]).inc();
            return None;
        }
        Some(ConnectionGuard(g))
    }

    /// The group-commit size histogram of a shard.
    pub fn group_batches(&self, shard: u32) -> Histogram {
        self.group_batches
            .with_label_values(&[shard.to_string().as_str()])
    }

    /// The fsync latency histogram of a shard.
    pub fn fsync(&self, shard: u32) -> Histogram {
        self.fsync.with_label_values(&[shard.to_string().as_str()])
    }

    /// A guard counting one open transaction while it lives.
    pub fn transaction(&self) -> TransactionGuard {
        self.open_transactions.inc();
        TransactionGuard(self.open_transactions.clone())
    }

    /// Counts a write not applied, by reason.
    pub fn abort(&self, reason: &str) {
        self.aborts.with_label_values(&[reason]).inc();
    }

    /// The text exposition: registered metrics, then the figures read from
    /// the shards now (if the daemon is past recovery) and the process.
    pub async fn render(&self, router: Option<&Router>) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into memory cannot fail");
        let mut out = String::from_utf8(buf).expect("the text format is UTF-8");
        if let Some(router) = router {
            // A shard that cannot answer (shutting down) is left out.
            let mut rows = Vec::new();
            for i in 0..router.shard_count() {
                let h = router.shard(i);
                if let Ok(s) = h.stats().await {
                    rows.push((i, s, h.queue_depth()));
                }
            }
            type Pick = fn(&crate::storage::StoreStats) -> u64;
            let families: [(&str, &str, &str, Pick); 12] = [
                ("flashkv_keys", "gauge", "Live keys.", |s| s.keys),
                (
                    "flashkv_tombstones",
                    "gauge",
                    "Tombstones in the index.",
                    |s| s.tombstones,
                ),
                (
                    "flashkv_index_memory_bytes",
                    "gauge",
                    "Bytes allocated by the index, keys included.",
                    |s| s.index_bytes,
                ),
                (
                    "flashkv_old_version_bytes",
                    "gauge",
                    "Bytes of old versions kept in memory for open snapshots (part of flashkv_index_memory_bytes).",
                    |s| s.old_version_bytes,
                ),
                (
                    "flashkv_live_bytes",
                    "gauge",
                    "Log bytes the index points to.",
                    |s| s.live_bytes,
                ),
                (
                    "flashkv_dead_bytes",
                    "gauge",
                    "Log bytes merge can reclaim.",
                    |s| s.dead_bytes,
                ),
                (
                    "flashkv_bytes_written_total",
                    "counter",
                    "Bytes appended to the log.",
                    |s| s.bytes_written,
                ),
                (
                    "flashkv_log_writes_total",
                    "counter",
                    "Write calls to the log.",
                    |s| s.log_writes,
                ),
                (
                    "flashkv_log_syncs_total",
                    "counter",
                    "fdatasync calls on the log.",
                    |s| s.log_syncs,
                ),
                (
                    "flashkv_batches_total",
                    "counter",
                    "Batches committed.",
                    |s| s.batches,
                ),
                (
                    "flashkv_merges_total",
                    "counter",
                    "Merges completed.",
                    |s| s.merges,
                ),
                (
                    "flashkv_merge_reclaimed_bytes_total",
                    "counter",
                    "Bytes reclaimed by merges.",
                    |s| s.bytes_reclaimed,
                ),
            ];
            for (name, kind, help, pick) in families {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (i, s, _) in &rows {
                    let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", pick(s));
                }
            }
            let name = "flashkv_shard_queue_depth";
            let _ = writeln!(
                out,
                "# HELP {name} Requests waiting in a shard's storage inbox.\n# TYPE {name} gauge"
            );
            for (i, _, depth) in &rows {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {depth}");
            }
            // From the shared state, so also for a shard that cannot answer.
            let name = "flashkv_shard_refusing_writes";
            let _ = writeln!(
                out,
                "# HELP {name} 1 while a shard refuses writes until restart (a failed fdatasync, its files deleted).\n# TYPE {name} gauge"
            );
            for i in 0..router.shard_count() {
                let refusing = u8::from(router.shard(i).reader().poisoned().is_some());
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {refusing}");
            }
        }
        if let Some(rss) = resident_bytes() {
            let name = "flashkv_process_resident_memory_bytes";
            let _ = writeln!(
                out,
                "# HELP {name} Resident memory of the process.\n# TYPE {name} gauge\n{name} {rss}"
            );
        }
        out
    }
}

/// Resident set size from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Counts an open connection until dropped.
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts an open transaction until dropped.
pub struct TransactionGuard(IntGauge);

impl Drop for TransactionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}
