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
//! - [`clock`] — the version clock shared by all shards.
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
//! # Not (yet) here
//!
//! The daemon's network interfaces, transactions and replication are built
//! on top of this crate in later steps (see docs/ and the README).

pub mod clock;
pub mod error;
pub mod index;
pub mod storage;

pub use error::{Error, ErrorCode, Result};
