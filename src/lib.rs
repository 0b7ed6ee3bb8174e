//! FlashKV: a thread-per-core key-value storage daemon.
//!
//! # Layout
//!
//! - [`storage`] — one shard's storage: append-only segments with CRC'd
//!   records ([`storage::format`]), group commit with a sync policy, hint
//!   files, merge, crash recovery, checkpoints. All disk writes go through
//!   [`storage::io`] (io_uring or plain system calls, with fault injection).
//! - [`index`] — the lock-free ordered index (single writer, any number of
//!   readers, epoch-reclaimed).
//! - [`clock`] — the version clock shared by all shards: commit versions,
//!   the visibility watermark, open snapshots, the settled floor.
//! - [`txn`] — serializable transactions, the coordinator side (above the
//!   router); the participant side (lock table, validation) lives in the
//!   shard's storage task ([`storage::lock`], [`storage::service`]).
//! - [`shard`] — the partitioner, the data directory's manifest, the router
//!   and the thread-per-core runtime ([`shard::runtime::Daemon`]).
//! - [`api`] — the wire edges (gRPC, HTTP), their TLS and authentication
//!   ([`api::security`]); with [`resp`], the only places errors become
//!   protocol statuses.
//! - [`metrics`] — request, connection and storage metrics for `/metrics`.
//! - [`resp`] — the Redis protocol edge and its commands.
//! - [`config`] — flags and the TOML config file, validated.
//! - [`error`] — the crate error with stable codes.
//!
//! # Durability contract
//!
//! Under `sync=always` (the default) a write is acknowledged only after its
//! record is written and fdatasync'ed; it survives `kill -9` and power loss.
//! Under `interval:<ms>` an acknowledged write survives `kill -9` and may be
//! lost on power loss if it is younger than the interval. Under `none` it
//! survives `kill -9`; the OS decides when it reaches the disk. A batch is
//! atomic under every policy: after any crash, all of it or none of it.
//!
//! A transaction is atomic under every policy too, also across shards:
//! every part of a cross-shard commit carries the redo of the others, and
//! each part is synced by its own shard's policy (see [`txn`]).
//!
//! # Not (yet) here
//!
//! Replication across machines is a later step (see the README's Status
//! section).

pub mod api;
pub mod clock;
pub mod config;
pub mod error;
pub mod index;
pub mod keyspace;
pub mod metrics;
pub mod resp;
pub mod shard;
pub mod storage;
pub mod txn;

pub use error::{Error, ErrorCode, Result};

#[cfg(feature = "jemalloc")]
#[doc(hidden)]
pub use tikv_jemallocator as __jemallocator;

/// Makes jemalloc the program's global allocator: with 4 KiB pages for
/// its memory (jemalloc's default), or, given `huge_pages`, with
/// transparent huge pages (`thp:always`).
///
/// Huge pages make the engine faster: the index's nodes are reached at
/// random, and 2 MiB pages spare those visits TLB misses (in-process gets
/// 15-20% faster in session 9, 0-8% in session 17; one-at-a-time puts
/// 1.59M-1.61M/s against 1.44M-1.52M/s in session 17). But each new
/// 2 MiB page is zeroed in one page fault by the thread that touches it
/// first, the shard thread, while every request of the shard waits: on
/// this VM 5 ms per page, every 60-120 ms under redis-benchmark SET -P 16,
/// which made whole group commits of 800 SETs take 6-18 ms. So the daemon
/// (latency) uses 4 KiB pages, and the in-process benchmarks (throughput
/// of the engine embedded in a program that chooses) use huge pages; the
/// README gives both figures. `_RJEM_MALLOC_CONF=thp:always` or
/// `thp:default` in the environment overrides either choice.
///
/// A macro because the global allocator, and the symbol jemalloc reads
/// its options from, must be defined in the final binary.
#[cfg(feature = "jemalloc")]
#[macro_export]
macro_rules! jemalloc_global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::__jemallocator::Jemalloc = $crate::__jemallocator::Jemalloc;
    };
    (huge_pages) => {
        $crate::jemalloc_global_allocator!();

        /// jemalloc's options, read once when it starts (a C string).
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static JEMALLOC_CONF: &[u8; 11] = b"thp:always\0";
    };
}
