//! The settled floor on disk: `<data-dir>/txn-settled`, the version at or
//! below which every cross-shard commit is durable on all its participants.
//!
//! Recovery re-applies only redo records above it and merge drops them at or
//! below it, so it must never run ahead of the truth: it is taken from the
//! clock ([`Clock::settled`]) and replaced atomically (temp file, fsync,
//! rename, directory fsync) before the clock publishes it to merge. A
//! missing file reads as 0 (every redo record is considered).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};

/// File name in the data directory.
pub const FILE: &str = "txn-settled";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads the floor (0 if there is none yet).
pub fn read(dir: &Path) -> Result<u64> {
    let p = path(dir);
    match fs::read_to_string(&p) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| Error::corruption(&p, 0, format!("not a version number: {:?}", s.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io("read", &p, e)),
    }
}

/// Replaces the floor on disk with `v`, durably.
pub fn write(dir: &Path, v: u64) -> Result<()> {
    let p = path(dir);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(format!("{v}\n").as_bytes())
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    fs::rename(&tmp, &p).map_err(|e| Error::io("rename", &p, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Persists the clock's settled floor now if it moved; returns it.
pub fn persist(dir: &Path, clock: &Clock) -> Result<u64> {
    let v = clock.settled();
    if v > clock.persisted_settled() {
        write(dir, v)?;
        clock.set_persisted_settled(v);
    }
    Ok(v)
}

/// A thread persisting the floor every `every` until stopped.
pub struct Persister {
    stop: Arc<AtomicBool>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Persister {
    /// Starts the thread; `tick` also runs each period (registry expiry).
    pub fn start(
        dir: PathBuf,
        clock: Arc<Clock>,
        every: Duration,
        tick: impl Fn() + Send + 'static,
    ) -> Result<Persister> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let join = std::thread::Builder::new()
            .name("flashkv-settle".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(every);
                    if let Err(e) = persist(&dir, &clock) {
                        tracing::warn!(error = %e, "persisting the settled floor failed; merge keeps redo records meanwhile");
                    }
                    tick();
                }
            })
            .map_err(|e| Error::io("spawn thread", "flashkv-settle", e))?;
        Ok(Persister {
            stop,
            join: Some(join),
        })
    }
}

impl Drop for Persister {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_round_trips_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), 0);
        let clock = Clock::new();
        clock.track_settlement(0);
        clock.observe(7);
        assert_eq!(persist(dir.path(), &clock).unwrap(), 7);
        assert_eq!(read(dir.path()).unwrap(), 7);
        assert_eq!(clock.persisted_settled(), 7);
        let v = clock.next_unsettled();
        clock.next();
        assert_eq!(persist(dir.path(), &clock).unwrap(), v - 1);
        assert_eq!(read(dir.path()).unwrap(), 7);
        clock.settle(v);
        persist(dir.path(), &clock).unwrap();
        assert_eq!(read(dir.path()).unwrap(), v + 1);
        fs::write(path(dir.path()), "junk").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
