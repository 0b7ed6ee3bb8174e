//! Shards: the partitioner, the data directory's manifest, the router, and
//! the thread-per-core runtime that runs every shard.

pub mod floor;
pub mod manifest;
pub mod partition;
pub mod router;
pub mod runtime;
pub mod spread;

pub use partition::Partitioner;
pub use router::Router;
