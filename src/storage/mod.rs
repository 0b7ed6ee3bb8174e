//! Storage of one shard: Bitcask-style append-only segments, hint files,
//! merge, recovery, and the group-commit task.
//!
//! | module | holds |
//! |---|---|
//! | [`format`](mod@format) | the normative byte layout of segments and records |
//! | [`io`] | the I/O layer: io_uring and plain backends, fault injection |
//! | [`segment`] | memory-mapped segments and the epoch-protected segment table |
//! | [`hint`] | flatbuffers hint files |
//! | [`store`] | the write path (group commit, sealing), read path, checkpoint, stats |
//! | [`recovery`] | opening a directory: lock, merges, hints, scans, torn tails |
//! | [`merge`] | compaction as a resumable, rate-limited job |
//! | [`service`] | the shard's storage task and its `Send` handle |
//! | [`options`] | settings and their defaults |
//! | [`check`] | offline, read-only verification of a data directory |

pub mod check;
pub mod fasthash;
pub mod feed;
pub mod format;
pub mod hint;
#[allow(clippy::all, clippy::unwrap_used, unsafe_op_in_unsafe_fn, missing_docs, mismatched_lifetime_syntaxes)]
#[rustfmt::skip]
mod hint_generated;
pub mod io;
pub mod lock;
pub mod merge;
pub mod options;
pub mod recovery;
pub mod segment;
pub mod service;
pub mod store;

pub use io::{FaultAction, FaultInjector, FaultOp, FaultRule, Io, IoEngine};
pub use options::{MergePolicy, StoreOptions, SyncPolicy};
pub use service::{StoreHandle, StoreThread};
pub use store::{
    Batch, Condition, Op, Outcome, READ_AHEAD, ReadAhead, RecoveryReport, Store, StoreReader,
    StoreStats, Value,
};
