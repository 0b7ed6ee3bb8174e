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
//! A batch and a transaction are atomic under every policy too; a
//! transaction across shards is fdatasync'ed at its commit point whatever
//! the policy (see [`txn`]).
//!
//! # Not (yet) here
//!
//! The Redis data types beyond strings, and replication, are later steps
//! (see the README's Status section).

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
