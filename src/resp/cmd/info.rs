//! `INFO [section ...]`: server, clients, memory, persistence, stats,
//! replication, cluster, keyspace. Replication and cluster describe a
//! standalone primary (`role:master`, `cluster_enabled:0`): clients and
//! test suites read them to tell a standalone server from a replica or a
//! cluster node. `blocked_clients` counts the clients waiting in a
//! blocking pop; there is no client tracking, so `tracking_clients` is 0
//! (`redis-cli --stat` prints a missing field as -2^63).

use std::fmt::Write as _;

use crate::resp::Conn;
use crate::resp::proto::Reply;

async fn section(cx: &Conn, name: &str, out: &mut String) -> Result<(), Reply> {
    let sh = &cx.shared;
    match name {
        "server" => {
            let _ = write!(
                out,
                "# Server\r\nredis_version:7.2.0\r\nflashkv_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nio_engine:{}\r\nshards:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                sh.addr.rsplit(':').next().unwrap_or_default(),
                sh.uptime().as_secs(),
                sh.uptime().as_secs() / 86400,
                sh.io_engine,
                cx.router().shard_count()
            );
        }
        "clients" => {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\ntracking_clients:0\r\n\r\n",
                crate::metrics::metrics().open("resp"),
                sh.conn_limits.max_connections,
                sh.server.wakeups.blocked()
            );
        }
        "memory" => {
            let rss = crate::metrics::resident_bytes().unwrap_or(0);
            let stats = cx
                .router()
                .stats()
                .await
                .map_err(crate::resp::error_reply)?;
            let index: u64 = stats.iter().map(|s| s.index_bytes).sum();
            let _ = write!(
                out,
                "# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\nused_memory_human:{:.2}M\r\nindex_memory:{index}\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n\r\n",
                rss as f64 / 1048576.0
            );
        }
        "persistence" => {
            let stats = cx
                .router()
                .stats()
                .await
                .map_err(crate::resp::error_reply)?;
            let _ = write!(
                out,
                "# Persistence\r\nloading:0\r\naof_enabled:1\r\nflashkv_sync:{}\r\nrdb_changes_since_last_save:0\r\nlog_bytes_written:{}\r\nlog_syncs:{}\r\nmerges:{}\r\n\r\n",
                sh.sync,
                stats.iter().map(|s| s.bytes_written).sum::<u64>(),
                stats.iter().map(|s| s.log_syncs).sum::<u64>(),
                stats.iter().map(|s| s.merges).sum::<u64>()
            );
        }
        "stats" => {
            let _ = write!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 pubsub_channels:{}\r\npubsub_patterns:{}\r\npubsubshard_channels:{}\r\n\r\n",
                sh.connections_received(),
                sh.commands_processed(),
                sh.server
                    .pubsub
                    .active(crate::resp::pubsub::Kind::Channel, None)
                    .len(),
                sh.server.pubsub.patterns(),
                sh.server
                    .pubsub
                    .active(crate::resp::pubsub::Kind::Shard, None)
                    .len(),
            );
        }
        "replication" => {
            out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
        }
        "cluster" => out.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n"),
        "keyspace" => {
            let keys = crate::resp::cmd::common::key_count(cx).await?;
            out.push_str("# Keyspace\r\n");
            if keys > 0 {
                let _ = write!(out, "db0:keys={keys},expires=0,avg_ttl=0\r\n");
            }
            out.push_str("\r\n");
        }
        _ => {}
    }
    Ok(())
}

const ALL: [&str; 8] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cluster",
    "keyspace",
];

command!("info", -1, ["loading", "stale"], (0, 0, 0), |cx, a| {
    let wanted: Vec<String> = a[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let mut out = String::new();
    for name in ALL {
        if all || wanted.iter().any(|w| w == name) {
            section(cx, name, &mut out).await?;
        }
    }
    Ok(Reply::text(out))
});
