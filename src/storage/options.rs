//! Settings of one shard's storage: segment size, limits, sync policy, merge
//! triggers. Defaults are what `flashkv` runs with when given no flags.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::storage::format::{EXPIRY_LEN, MAX_KEY_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fdatasync before a write is acknowledged (the default).
    Always,
    /// Acknowledge once written to the OS; fdatasync in the background every
    /// interval (Redis' `appendfsync everysec` is `interval:1000`).
    Interval(Duration),
    /// Acknowledge once written to the OS; the OS decides when it reaches disk.
    None,
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => write!(f, "always"),
            SyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            SyncPolicy::None => write!(f, "none"),
        }
    }
}

impl FromStr for SyncPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "none" => Ok(SyncPolicy::None),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "sync policy {s:?}: expected always, none or interval:<milliseconds>"
                        ))
                    })?;
                Ok(SyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// When merge (compaction) runs and how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePolicy {
    /// A sealed segment whose dead share of bytes reaches this is merged.
    pub min_garbage_ratio: f64,
    /// When the dead bytes of all sealed segments reach this, every sealed
    /// segment with garbage is merged.
    pub min_reclaimable_bytes: u64,
    /// Also merge every sealed segment with garbage on this schedule.
    pub interval: Option<Duration>,
    /// Bytes of victim segments merge reads per second at most, so that
    /// foreground latency holds while it runs. While requests keep the
    /// shard thread busy, merge runs at a quarter of this, unless the dead
    /// bytes have reached `min_reclaimable_bytes` or a client asked for the
    /// merge.
    pub rate_bytes_per_sec: u64,
}

impl Default for MergePolicy {
    fn default() -> Self {
        MergePolicy {
            min_garbage_ratio: 0.5,
            min_reclaimable_bytes: 1 << 30,
            interval: None,
            rate_bytes_per_sec: 128 << 20,
        }
    }
}

/// Storage settings of one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Shard id, written in segment headers.
    pub shard_id: u32,
    /// A segment is sealed when the next write would take it past this size.
    pub segment_size: u64,
    /// Longest key accepted.
    pub max_key_size: usize,
    /// Longest value accepted.
    pub max_value_size: usize,
    /// Durability of acknowledged writes.
    pub sync: SyncPolicy,
    /// Salvage damaged segments instead of refusing to start: skip damaged
    /// ranges, report what was dropped, and rewrite the segment by merge.
    pub repair: bool,
    /// Merge triggers and rate.
    pub merge: MergePolicy,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            shard_id: 0,
            segment_size: 128 << 20,
            max_key_size: 16 << 10,
            max_value_size: 16 << 20,
            sync: SyncPolicy::Always,
            repair: false,
            merge: MergePolicy::default(),
        }
    }
}

impl StoreOptions {
    /// Checks that the settings are usable together.
    pub fn validate(&self) -> Result<()> {
        if self.max_key_size == 0 || self.max_key_size > MAX_KEY_LEN {
            return Err(Error::Config(format!(
                "max key size {} must be between 1 and {MAX_KEY_LEN}",
                self.max_key_size
            )));
        }
        if self.segment_size > u64::from(u32::MAX) {
            return Err(Error::Config(format!(
                "segment size {} is larger than 4 GiB - 1",
                self.segment_size
            )));
        }
        let largest = (SEGMENT_HEADER_LEN
            + RECORD_HEADER_LEN
            + EXPIRY_LEN
            + crate::storage::format::SEAL_LEN) as u64
            + self.max_key_size as u64
            + self.max_value_size as u64;
        if largest > self.segment_size {
            return Err(Error::Config(format!(
                "segment size {} cannot hold the largest record ({largest} bytes with max key {} and max value {})",
                self.segment_size, self.max_key_size, self.max_value_size
            )));
        }
        if !(0.0..=1.0).contains(&self.merge.min_garbage_ratio) {
            return Err(Error::Config(
                "merge garbage ratio must be between 0 and 1".into(),
            ));
        }
        if self.merge.rate_bytes_per_sec == 0 {
            return Err(Error::Config("merge rate must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_policy_parses_and_prints() {
        for s in ["always", "none", "interval:1000"] {
            assert_eq!(s.parse::<SyncPolicy>().unwrap().to_string(), s);
        }
        for bad in ["sometimes", "interval:", "interval:0", "interval:x"] {
            assert!(bad.parse::<SyncPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_rejects_records_larger_than_segments() {
        assert!(StoreOptions::default().validate().is_ok());
        let o = StoreOptions {
            segment_size: 1 << 20,
            ..Default::default()
        };
        assert!(o.validate().is_err());
        let o = StoreOptions {
            segment_size: 1 << 20,
            max_value_size: 1 << 19,
            ..Default::default()
        };
        assert!(o.validate().is_ok());
    }
}
