//! The RESP slow log (SLOWLOG GET, LEN, RESET), as Redis keeps it: the
//! newest `slowlog-max-len` commands (default 128) that ran at least
//! `slowlog-log-slower-than` microseconds (default 10000; negative turns
//! it off, 0 records every command), both settable with CONFIG SET. One
//! log for the daemon, whichever shard thread ran the command.
//!
//! A plain SET is not recorded: it is queued for its shard's group commit
//! and answered when the group is written (and synced, under
//! `sync=always`), so its time is the group's. The log is apart from the
//! daemon's slow-request log (`--slow-request-ms`, every protocol, written
//! to the process log).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

/// Arguments kept per entry, and bytes per argument (Redis' limits).
const MAX_ARGS: usize = 32;
const MAX_ARG_BYTES: usize = 128;

/// One slow command.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Unique, increasing.
    pub id: u64,
    /// When it ran (Unix seconds).
    pub at: u64,
    /// How long it ran (µs).
    pub micros: u64,
    /// Its arguments, shortened as Redis shortens them.
    pub args: Vec<Vec<u8>>,
    /// The client's address and name.
    pub addr: String,
    pub name: Vec<u8>,
}

/// The log and its two settings.
pub struct SlowLog {
    slower_than_us: AtomicI64,
    max_len: AtomicUsize,
    log: Mutex<(u64, VecDeque<Entry>)>,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            slower_than_us: AtomicI64::new(10_000),
            max_len: AtomicUsize::new(128),
            log: Mutex::new((0, VecDeque::new())),
        }
    }
}

impl SlowLog {
    /// `slowlog-log-slower-than` (µs; negative: off).
    pub fn slower_than_us(&self) -> i64 {
        self.slower_than_us.load(Ordering::Relaxed)
    }

    /// Sets `slowlog-log-slower-than`.
    pub fn set_slower_than_us(&self, us: i64) {
        self.slower_than_us.store(us, Ordering::Relaxed);
    }

    /// `slowlog-max-len`.
    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    /// Sets `slowlog-max-len`, dropping the oldest entries beyond it.
    pub fn set_max_len(&self, n: usize) {
        self.max_len.store(n, Ordering::Relaxed);
        let mut log = self.log.lock().expect("slow log lock");
        log.1.truncate(n);
    }

    /// Whether a command that took `took` goes in the log (one relaxed
    /// load: called for every command).
    pub fn is_slow(&self, took: Duration) -> bool {
        let t = self.slower_than_us.load(Ordering::Relaxed);
        t >= 0 && took.as_micros() >= t as u128
    }

    /// Records a slow command.
    pub fn record(&self, args: &[Vec<u8>], took: Duration, addr: &str, name: &[u8]) {
        let max = self.max_len();
        if max == 0 {
            return;
        }
        let mut kept: Vec<Vec<u8>> = args
            .iter()
            .take(if args.len() > MAX_ARGS {
                MAX_ARGS - 1
            } else {
                MAX_ARGS
            })
            .map(|a| {
                if a.len() > MAX_ARG_BYTES {
                    let mut s = a[..MAX_ARG_BYTES].to_vec();
                    s.extend_from_slice(
                        format!("... ({} more bytes)", a.len() - MAX_ARG_BYTES).as_bytes(),
                    );
                    s
                } else {
                    a.clone()
                }
            })
            .collect();
        if args.len() > MAX_ARGS {
            kept.push(format!("... ({} more arguments)", args.len() - MAX_ARGS + 1).into_bytes());
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut log = self.log.lock().expect("slow log lock");
        let id = log.0;
        log.0 += 1;
        log.1.push_front(Entry {
            id,
            at,
            micros: took.as_micros() as u64,
            args: kept,
            addr: addr.to_string(),
            name: name.to_vec(),
        });
        log.1.truncate(max);
    }

    /// The newest `n` entries (all for None), newest first.
    pub fn get(&self, n: Option<usize>) -> Vec<Entry> {
        let log = self.log.lock().expect("slow log lock");
        log.1
            .iter()
            .take(n.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.log.lock().expect("slow log lock").1.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry (ids go on).
    pub fn reset(&self) {
        self.log.lock().expect("slow log lock").1.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("a{i}").into_bytes()).collect()
    }

    #[test]
    fn keeps_the_newest_slow_commands_shortened_as_redis_does() {
        let s = SlowLog::default();
        assert!(!s.is_slow(Duration::from_millis(9)) && s.is_slow(Duration::from_millis(10)));
        s.set_slower_than_us(0);
        assert!(s.is_slow(Duration::ZERO));
        s.set_slower_than_us(-1);
        assert!(!s.is_slow(Duration::from_secs(10)));
        s.set_max_len(3);
        for i in 0..5 {
            s.record(&args(2), Duration::from_micros(i), "1.2.3.4:5", b"n");
        }
        let got = s.get(None);
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 3, 2]);
        assert_eq!(got[0].micros, 4);
        assert_eq!(got[0].addr, "1.2.3.4:5");
        assert_eq!(s.get(Some(1)).len(), 1);
        let mut long = args(40);
        long[1] = vec![b'x'; 200];
        s.record(&long, Duration::ZERO, "a", b"");
        let e = &s.get(Some(1))[0];
        assert_eq!(e.args.len(), 32);
        assert_eq!(e.args[31], b"... (9 more arguments)".to_vec());
        assert_eq!(e.args[1].len(), 128 + b"... (72 more bytes)".len());
        s.set_max_len(1);
        assert_eq!(s.len(), 1);
        s.reset();
        assert!(s.is_empty());
        s.record(&args(1), Duration::ZERO, "a", b"");
        assert_eq!(s.get(None)[0].id, 6, "ids go on after a reset");
        s.set_max_len(0);
        s.record(&args(1), Duration::ZERO, "a", b"");
        assert!(s.is_empty());
    }
}
