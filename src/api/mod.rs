//! The wire edges: the only places errors become protocol statuses.

use std::time::Duration;

pub mod grpc;

/// Request limits every edge enforces before touching storage.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest key.
    pub max_key_size: usize,
    /// Largest value.
    pub max_value_size: usize,
}

impl Limits {
    /// A key must be non-empty and within the limit.
    pub fn check_key(&self, key: &[u8]) -> crate::Result<()> {
        if key.is_empty() {
            return Err(crate::Error::InvalidArgument(
                "key must not be empty".into(),
            ));
        }
        if crate::keyspace::is_reserved(key) {
            return Err(crate::Error::InvalidArgument(
                "keys beginning with the bytes 0xFF 0xFE are reserved for FlashKV's Redis \
                 collections"
                    .into(),
            ));
        }
        if key.len() > self.max_key_size {
            return Err(crate::Error::InvalidArgument(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                key.len(),
                self.max_key_size
            )));
        }
        Ok(())
    }

    /// A value must be within the limit.
    pub fn check_value(&self, value: &[u8]) -> crate::Result<()> {
        if value.len() > self.max_value_size {
            return Err(crate::Error::InvalidArgument(format!(
                "value of {} bytes exceeds the limit of {} bytes",
                value.len(),
                self.max_value_size
            )));
        }
        Ok(())
    }
}

/// How long a shutdown waits for open connections to finish by default
/// (HTTP's graceful close; then every connection still open is cut off,
/// `shard::runtime`); `--shutdown-drain-ms` sets it
/// ([`ConnLimits::shutdown_drain`]).
pub const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Limits every network edge applies to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open connections per protocol; a connection beyond it is
    /// refused (HTTP: a 503 reply, then closed; gRPC: closed).
    pub max_connections: usize,
    /// HTTP request deadline (and header read timeout).
    pub request_timeout: Duration,
    /// How long a shutdown waits for open connections before it cuts them
    /// off.
    pub shutdown_drain: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            request_timeout: Duration::from_secs(30),
            shutdown_drain: SHUTDOWN_DRAIN,
        }
    }
}
pub mod http;
pub mod security;
pub mod txn;
