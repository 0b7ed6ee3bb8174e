//! `flashkv`, the daemon: config -> shards -> listeners, then wait for
//! SIGTERM/SIGINT and shut down gracefully.

use clap::Parser;
use flashkv::config::{Config, Flags};
use flashkv::shard::runtime::Daemon;

#[cfg(feature = "jemalloc")]
flashkv::jemalloc_global_allocator!();

fn main() {
    if let Err(e) = run() {
        eprintln!("flashkv: error: {}", report(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each once: FlashKV's errors already show
/// their source (`create <path>: No such file or directory`), which
/// anyhow's `{:#}` would print again.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

fn run() -> anyhow::Result<()> {
    let cfg = Config::from_flags(Flags::parse())?;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cfg.log_level)?)
        .with_writer(std::io::stderr)
        .init();
    // Signal handlers first: a SIGTERM that arrives right after the ready
    // line must shut down gracefully, not kill the process.
    let signals = Signals::install()?;
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
    let engine = match daemon.recovery.first().map(|r| r.write_path) {
        Some("mmap") => format!(
            "{} (fdatasync; log appends by mmap)",
            daemon.engine.as_str()
        ),
        Some("pwrite") if daemon.engine == flashkv::storage::IoEngine::Uring => {
            "io_uring (fdatasync; writes by pwrite: the file system has no non-blocking buffered writes)".to_string()
        }
        _ => daemon.engine.as_str().to_string(),
    };
    // One line with what was chosen; tests and scripts read the address here.
    println!(
        "flashkv {} ready: gRPC on {} | HTTP on {} | RESP on {} | data {} | {} | io engine {} | sync {} | {} index entries recovered",
        env!("CARGO_PKG_VERSION"),
        daemon.grpc_addr,
        daemon.http_addr,
        daemon.resp_addr,
        cfg.data_dir.display(),
        daemon.partitioner,
        engine,
        cfg.store.sync,
        keys
    );
    signals.wait();
    tracing::info!("shutting down: no new connections, finishing requests, syncing");
    daemon.shutdown()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// SIGTERM and SIGINT, caught from installation on.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (term, int) = rt.block_on(async {
            anyhow::Ok((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })?;
        Ok(Signals { rt, term, int })
    }

    /// Blocks until one of them arrives.
    fn wait(mut self) {
        self.rt.block_on(async {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn an_error_prints_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = anyhow::Error::from(flashkv::Error::io("create", "d/x.tmp", io));
        assert_eq!(
            report(&e),
            "create d/x.tmp: No such file or directory (os error 2)"
        );
        let e = e.context("shutdown");
        assert_eq!(
            report(&e),
            "shutdown: create d/x.tmp: No such file or directory (os error 2)"
        );
    }
}
