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

/// Makes jemalloc the program's global allocator, with transparent huge
/// pages for its memory (`thp:always`). The index's nodes are reached at
/// random, one dependent miss each, and 2 MiB pages spare those lookups
/// most TLB misses: in-process gets over 1M keys measured 15-20% faster,
/// puts about 7% (`cargo bench --bench storage`, `_RJEM_MALLOC_CONF`
/// toggled on one binary). The price is up to a few MiB of resident memory
/// per arena that 4 KiB pages would have left unbacked. jemalloc reads
/// `_RJEM_MALLOC_CONF` from the environment after this setting, so
/// `_RJEM_MALLOC_CONF=thp:default` turns it off without a rebuild.
///
/// Used by the daemon and the benchmarks; a macro because jemalloc reads
/// the setting from a symbol the final binary must define.
#[cfg(feature = "jemalloc")]
#[macro_export]
macro_rules! jemalloc_global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::__jemallocator::Jemalloc = $crate::__jemallocator::Jemalloc;

        /// jemalloc's options, read once when it starts (a C string).
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static JEMALLOC_CONF: &[u8; 11] = b"thp:always\0";
    };
}
