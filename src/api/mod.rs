//! The wire edges: the only places errors become protocol statuses.

pub mod grpc;
pub mod http;
