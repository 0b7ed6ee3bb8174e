//! `flashkv`, the daemon: config -> shards -> listeners, then wait for
//! SIGTERM/SIGINT and shut down gracefully.

use clap::Parser;
use flashkv::config::{Config, Flags};
use flashkv::shard::runtime::Daemon;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    if let Err(e) = run() {
        eprintln!("flashkv: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cfg = Config::from_flags(Flags::parse())?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cfg.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    let daemon = Daemon::start(cfg.clone())?;
    for (i, r) in daemon.recovery.iter().enumerate() {
        if r.truncated_tail_bytes > 0
            || !r.dropped_ranges.is_empty()
            || !r.rejected_hints.is_empty()
        {
            tracing::warn!(shard = i, report = ?r, "recovery repaired damage");
        }
    }
    let keys: usize = daemon.recovery.iter().map(|r| r.index_entries).sum();
    // One line with what was chosen; tests and scripts read the address here.
    println!(
        "flashkv {} ready: gRPC on {} | HTTP on {} | data {} | {} | io engine {} | sync {} | {} index entries recovered",
        env!("CARGO_PKG_VERSION"),
        daemon.grpc_addr,
        daemon.http_addr,
        cfg.data_dir.display(),
        daemon.partitioner,
        daemon.engine.as_str(),
        cfg.store.sync,
        keys
    );
    wait_for_signal()?;
    tracing::info!("shutting down: no new connections, finishing requests, syncing");
    daemon.shutdown()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}
