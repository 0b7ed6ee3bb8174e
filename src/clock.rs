//! The version clock: one atomic counter shared by every shard of a daemon.
//!
//! Every committed write takes the next version. At start-up the clock is
//! moved past the highest version found in any shard's log, so versions only
//! ever grow across restarts.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic version counter.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicU64,
}

impl Clock {
    /// A clock whose next version is 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next version.
    pub fn next(&self) -> u64 {
        self.last.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The last version handed out.
    pub fn current(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }

    /// Moves the clock to at least `version` (recovery).
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_and_observe_moves_forward_only() {
        let c = Clock::new();
        assert_eq!(c.next(), 1);
        c.observe(10);
        c.observe(5);
        assert_eq!(c.next(), 11);
        assert_eq!(c.current(), 11);
    }
}
