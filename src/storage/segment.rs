//! Segment files and the read path over them.
//!
//! Every segment, the active one included, is memory-mapped read-only with a
//! mapping as long as the configured segment size; the file grows into it as
//! the writer appends. A reader only touches bytes of records that the index
//! published, and the index publishes a record only after its write returned,
//! so every byte a reader touches is inside the file.
//!
//! The set of live segments is an immutable [`SegmentTable`] behind an
//! epoch-protected pointer. The writer replaces the table when a segment is
//! created or merge retires one; the old table, and with it the last mapping of
//! a retired segment, is freed only when no reader pinned before the swap can
//! still hold it. A retired segment's file is unlinked right away: the mapping
//! keeps its pages alive until then.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_epoch::{Atomic, Guard, Owned};
use memmap2::{Mmap, MmapOptions};

use crate::error::{Error, Result};
use crate::storage::format::SegmentKind;

/// File name of segment `id`.
pub fn segment_file_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// File name of the hint of segment `id`.
pub fn hint_file_name(id: u32) -> String {
    format!("{id:010}.hint")
}

/// Parses `0000000042.seg` style names: (id, extension).
pub fn parse_file_name(name: &str) -> Option<(u32, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// A mapped segment.
pub struct Segment {
    /// Segment id.
    pub id: u32,
    /// Log or merge output.
    pub kind: SegmentKind,
    /// File path.
    pub path: PathBuf,
    map: Mmap,
    /// Set when a merge retires the segment, before its files are removed:
    /// a hint still queued for it is not written (it would be a stray file).
    retired: std::sync::atomic::AtomicBool,
}

impl Segment {
    /// Maps `path` read-only with a mapping of `capacity` bytes (at least the
    /// current file length).
    pub fn map(id: u32, kind: SegmentKind, path: &Path, capacity: u64) -> Result<Segment> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let len = usize::try_from(capacity.max(file_len)).map_err(|_| {
            Error::Config(format!("segment size {capacity} does not fit in memory"))
        })?;
        // SAFETY: the file is only ever appended to (or truncated past its
        // published end during recovery, before any reader exists); readers
        // only read published records, which lie inside the file.
        let map = unsafe { MmapOptions::new().len(len).map(&file) }
            .map_err(|e| Error::io("mmap", path, e))?;
        Ok(Segment {
            id,
            kind,
            path: path.to_path_buf(),
            map,
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks the segment retired by a merge (see [`Segment::retired`]).
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a merge has retired the segment.
    pub fn retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The mapped bytes. Only ranges known to be inside the file may be read.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// An immutable set of segments, sorted by id.
#[derive(Default, Clone)]
pub struct SegmentTable {
    segments: Vec<Arc<Segment>>,
}

impl SegmentTable {
    /// The segment with `id`.
    pub fn get(&self, id: u32) -> Option<&Arc<Segment>> {
        self.segments
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| &self.segments[i])
    }

    /// A copy with `seg` added.
    pub fn with(&self, seg: Arc<Segment>) -> SegmentTable {
        let mut segments = self.segments.clone();
        let pos = segments.partition_point(|s| s.id < seg.id);
        segments.insert(pos, seg);
        SegmentTable { segments }
    }

    /// A copy without the segments in `ids`.
    pub fn without(&self, ids: &[u32]) -> SegmentTable {
        SegmentTable {
            segments: self
                .segments
                .iter()
                .filter(|s| !ids.contains(&s.id))
                .cloned()
                .collect(),
        }
    }

    /// All segments in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Segment>> {
        self.segments.iter()
    }
}

/// The epoch-protected current [`SegmentTable`].
pub struct SegmentSet {
    current: Atomic<SegmentTable>,
}

impl SegmentSet {
    /// A set holding `table`.
    pub fn new(table: SegmentTable) -> Self {
        SegmentSet {
            current: Atomic::new(table),
        }
    }

    /// The current table, valid while `guard` is held.
    pub fn load<'g>(&self, guard: &'g Guard) -> &'g SegmentTable {
        let p = self.current.load(Ordering::Acquire, guard);
        // SAFETY: the pointer is never null (set at construction and only
        // replaced by non-null tables) and the table is freed only through the
        // epoch after it was replaced.
        unsafe { p.deref() }
    }

    /// Replaces the table (writer only); the old one is freed when no reader
    /// can hold it any more.
    pub fn replace(&self, table: SegmentTable, guard: &Guard) {
        let old = self
            .current
            .swap(Owned::new(table), Ordering::AcqRel, guard);
        // SAFETY: `old` is unreachable for new readers; readers pinned before
        // the swap keep it alive until they unpin.
        unsafe { guard.defer_destroy(old) };
    }
}

impl Drop for SegmentSet {
    fn drop(&mut self) {
        // SAFETY: &mut self: no reader can hold the table any more.
        unsafe {
            let guard = crossbeam_epoch::unprotected();
            let p = self.current.load(Ordering::Relaxed, guard);
            if !p.is_null() {
                drop(p.into_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(segment_file_name(42), "0000000042.seg");
        assert_eq!(parse_file_name("0000000042.seg"), Some((42, "seg")));
        assert_eq!(parse_file_name("0000000042.seg.tmp"), Some((42, "seg.tmp")));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("LOCK"), None);
    }

    #[test]
    fn mapping_longer_than_the_file_sees_appended_bytes() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"abc").unwrap();
        let seg = Segment::map(1, SegmentKind::Log, &path, 1 << 20).unwrap();
        assert_eq!(&seg.bytes()[..3], b"abc");
        f.write_all(b"def").unwrap();
        assert_eq!(&seg.bytes()[..6], b"abcdef");
    }
}
