//! The wire edges: the only places errors become protocol statuses.

use std::time::Duration;

pub mod grpc;

/// Limits every network edge applies to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most open connections per protocol; a connection beyond it is
    /// refused (HTTP: a 503 reply, then closed; gRPC: closed).
    pub max_connections: usize,
    /// HTTP request deadline (and header read timeout).
    pub request_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            request_timeout: Duration::from_secs(30),
        }
    }
}
pub mod http;
