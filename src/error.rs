//! The crate error type: one enum with stable codes and a retryable flag.
//!
//! Every variant keeps its source (`io::Error` is never flattened into a
//! string) and the context needed to act on it: the operation, the path, the
//! offset. Protocol edges map [`ErrorCode`] to their own status codes in one
//! function each. Expected outcomes (a missing key, a failed compare-and-set,
//! a transaction conflict) are not errors: they are values of the API.

use std::io;
use std::path::PathBuf;

/// Result with the crate [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable, protocol-independent error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or breaks a limit (key or value too large).
    InvalidArgument,
    /// An I/O operation failed; may succeed later (disk full, transient EIO).
    Io,
    /// Stored data failed a check (CRC, magic, lengths).
    Corruption,
    /// The data directory is held by another process.
    Locked,
    /// Writes are refused after a failed fsync until restart.
    Poisoned,
    /// The configuration is invalid or disagrees with the data directory.
    Config,
    /// The shard is shutting down or gone.
    Unavailable,
    /// The target of a create-only operation (a checkpoint directory) exists.
    AlreadyExists,
}

impl ErrorCode {
    /// The code as a stable string for logs, JSON bodies and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Io => "io",
            ErrorCode::Corruption => "corruption",
            ErrorCode::Locked => "locked",
            ErrorCode::Poisoned => "poisoned",
            ErrorCode::Config => "config",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::AlreadyExists => "already_exists",
        }
    }
}

/// The crate error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "fdatasync", "rename", ...).
        op: &'static str,
        /// The file or directory it was done on.
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Stored bytes failed validation.
    #[error("corrupt data in {} at offset {offset}: {what}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage in that file.
        offset: u64,
        /// What was expected and what was found.
        what: String,
    },

    /// A key, value or request broke a configured limit or was malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Another process holds the data directory.
    #[error("data directory {} is locked by another process (is another flashkv running on it?)", path.display())]
    Locked {
        /// The locked directory.
        path: PathBuf,
    },

    /// The shard refuses writes until restart: an fsync failed (what
    /// reached the disk is unknown; the restart recovers from the log), or
    /// its files were deleted under it.
    #[error("shard refuses writes until the daemon restarts: {cause}")]
    Poisoned {
        /// The failure that poisoned the shard.
        cause: String,
    },

    /// The configuration is invalid or conflicts with the data directory.
    #[error("configuration: {0}")]
    Config(String),

    /// The shard is shutting down or its thread is gone.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// A create-only target exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
}

impl Error {
    /// Builds an [`Error::Io`] with its context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Corruption`].
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corruption {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Io { .. } => ErrorCode::Io,
            Error::Corruption { .. } => ErrorCode::Corruption,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::Locked { .. } => ErrorCode::Locked,
            Error::Poisoned { .. } => ErrorCode::Poisoned,
            Error::Config(_) => ErrorCode::Config,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
        }
    }

    /// Whether the same request may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code(), ErrorCode::Io | ErrorCode::Unavailable)
    }

    /// Whether this is an out-of-space condition (ENOSPC or EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT)
            ),
            _ => false,
        }
    }
}
