//! Offline verification and inspection of a data directory, without
//! changing anything (no lock taken, no tail cut, no hint written).
//!
//! Every segment header and record CRC is checked, every hint is decoded and
//! compared with its segment, and damage is reported with file and offset.
//! A torn tail of the newest log segment, or of the predecessor the newest
//! names as not durably sealed (see `format`), is reported as such
//! (start-up would cut it); anything else is damage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::format::{self, RecordKind, SEGMENT_HEADER_LEN, SegmentHeader, SegmentKind};
use crate::storage::hint;
use crate::storage::segment::{hint_file_name, parse_file_name};

/// One record, as listed by an inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// Offset in the segment.
    pub offset: u64,
    /// Record kind.
    pub kind: RecordKind,
    /// Version.
    pub version: u64,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value length.
    pub value_len: usize,
    /// Expiry, if any.
    pub expires_at_ms: Option<u64>,
}

/// What was found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// Segment file.
    pub path: PathBuf,
    /// Segment id.
    pub id: u32,
    /// Log or merge output (None if the header is damaged).
    pub kind: Option<SegmentKind>,
    /// The segment the header names as sealed but not yet durably so
    /// (a background seal in flight when it was last written; see
    /// `format::SegmentHeader`).
    pub unsynced_predecessor: Option<u32>,
    /// File length.
    pub len: u64,
    /// Valid records.
    pub records: u64,
    /// Puts and deletes among them.
    pub puts: u64,
    /// Deletes.
    pub deletes: u64,
    /// Lowest and highest version.
    pub versions: (u64, u64),
    /// Hint state: None (no hint), Some(Ok(entries)) or Some(Err(reason)).
    pub hint: Option<std::result::Result<usize, String>>,
    /// Bytes at the end that start-up would cut as a torn tail.
    pub torn_tail: u64,
    /// Zeros at the end: room preallocated for appends that no write
    /// reached (a crash before the segment was sealed or closed).
    pub unwritten_tail: u64,
    /// Damage: (offset, what).
    pub damage: Vec<(u64, String)>,
    /// Records, if asked for.
    pub listing: Vec<RecordInfo>,
}

/// What was found in a directory (a data directory or one shard's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Segments, per shard directory, in id order.
    pub segments: Vec<SegmentReport>,
}

impl CheckReport {
    /// Whether any damage was found (torn tails are not damage).
    pub fn damaged(&self) -> bool {
        self.segments
            .iter()
            .any(|s| !s.damage.is_empty() || matches!(s.hint, Some(Err(_))))
    }
}

/// Checks `dir`: a data directory (with `shard-NNN` folders) or one shard's
/// directory. With `list`, every record is listed too.
pub fn check_dir(dir: &Path, list: bool) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut shard_dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shard-"))
        })
        .collect();
    shard_dirs.sort();
    if shard_dirs.is_empty() {
        shard_dirs.push(dir.to_path_buf());
    }
    for d in shard_dirs {
        check_shard(&d, list, &mut report)?;
    }
    Ok(report)
}

fn check_shard(dir: &Path, list: bool, report: &mut CheckReport) -> Result<()> {
    let mut segs: Vec<(u32, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let e = e.map_err(|e| Error::io("list", dir, e))?;
        if let Some(name) = e.file_name().to_str()
            && let Some((id, "seg")) = parse_file_name(name)
        {
            segs.push((id, e.path()));
        }
    }
    segs.sort();
    let mut headers = HashMap::new();
    for (id, path) in &segs {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        headers.insert(*id, SegmentHeader::decode(&bytes).ok());
    }
    let is_log = |id: &u32| headers[id].is_some_and(|h| h.kind == SegmentKind::Log);
    let newest_log = segs.iter().map(|(id, _)| *id).filter(is_log).max();
    // The newest segment's predecessor, if its seal was not durable when
    // the newest was created, may have a torn tail too (see `format`).
    let unsynced_pred = newest_log
        .and_then(|id| headers[&id].and_then(|h| h.unsynced_predecessor))
        .filter(|p| headers.contains_key(p) && is_log(p));
    let tail_ok = |id: u32| Some(id) == newest_log || Some(id) == unsynced_pred;
    for (id, path) in segs {
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let mut r = SegmentReport {
            path: path.clone(),
            id,
            kind: None,
            unsynced_predecessor: None,
            len: bytes.len() as u64,
            records: 0,
            puts: 0,
            deletes: 0,
            versions: (0, 0),
            hint: None,
            torn_tail: 0,
            unwritten_tail: 0,
            damage: Vec::new(),
            listing: Vec::new(),
        };
        match SegmentHeader::decode(&bytes) {
            Ok(h) => {
                r.kind = Some(h.kind);
                r.unsynced_predecessor = h.unsynced_predecessor;
                if h.segment_id != id {
                    r.damage.push((
                        16,
                        format!("header names segment {}, file name {id}", h.segment_id),
                    ));
                }
            }
            Err(what) => {
                r.damage.push((0, what));
                report.segments.push(r);
                continue;
            }
        }
        let mut pos = SEGMENT_HEADER_LEN;
        let mut sealed = false;
        while pos < bytes.len() {
            match format::decode_record(&bytes[pos..]) {
                Ok(rec) => {
                    if sealed {
                        r.damage
                            .push((pos as u64, "a record follows the seal record".into()));
                    }
                    sealed = rec.kind == RecordKind::Seal;
                    if sealed {
                        pos += rec.len;
                        continue;
                    }
                    r.records += 1;
                    match rec.kind {
                        RecordKind::Put => r.puts += 1,
                        RecordKind::Delete => r.deletes += 1,
                        _ => {}
                    }
                    if r.versions.0 == 0 || rec.version < r.versions.0 {
                        r.versions.0 = rec.version;
                    }
                    r.versions.1 = r.versions.1.max(rec.version);
                    if list {
                        r.listing.push(RecordInfo {
                            offset: pos as u64,
                            kind: rec.kind,
                            version: rec.version,
                            key: rec.key.to_vec(),
                            value_len: rec.value.len(),
                            expires_at_ms: rec.expires_at_ms,
                        });
                    }
                    pos += rec.len;
                }
                Err(err) => {
                    if (sealed || tail_ok(id))
                        && crate::storage::recovery::unwritten_tail(&bytes, pos)
                    {
                        r.unwritten_tail = (bytes.len() - pos) as u64;
                        break;
                    }
                    let next = crate::storage::recovery::next_valid_record(&bytes, pos + 1);
                    if next.is_none() && tail_ok(id) {
                        r.torn_tail = (bytes.len() - pos) as u64;
                        break;
                    }
                    r.damage.push((pos as u64, err.to_string()));
                    match next {
                        Some(p) => pos = p,
                        None => break,
                    }
                }
            }
        }
        if !sealed && !tail_ok(id) && r.torn_tail == 0 {
            r.damage.push((
                bytes.len() as u64,
                "segment ends without its seal record (cut short?)".into(),
            ));
        }
        let hpath = dir.join(hint_file_name(id));
        if hpath.exists() {
            let hb = std::fs::read(&hpath).map_err(|e| Error::io("read", &hpath, e))?;
            r.hint = Some(hint::decode(&hb, id, r.len).map(|v| v.len()));
        }
        report.segments.push(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::storage::{Io, IoEngine, Store, StoreOptions};
    use std::sync::Arc;

    #[test]
    fn check_finds_flipped_bytes_and_bad_hints_and_reports_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            segment_size: 64 << 10,
            max_value_size: 1 << 10,
            ..Default::default()
        };
        IoEngine::Plain.block_on(async {
            let (mut s, _) = Store::open(
                dir.path(),
                opts,
                Io::new(IoEngine::Plain),
                Arc::new(Clock::new()),
            )
            .await
            .unwrap();
            for i in 0..1000u32 {
                s.put(format!("k{i}").as_bytes(), &[1u8; 100])
                    .await
                    .unwrap();
            }
            s.close().await.unwrap();
        });
        let clean = check_dir(dir.path(), true).unwrap();
        assert!(!clean.damaged(), "{clean:?}");
        assert_eq!(clean.segments.iter().map(|s| s.puts).sum::<u64>(), 1000);
        assert_eq!(
            clean
                .segments
                .iter()
                .map(|s| s.listing.len())
                .sum::<usize>(),
            1000
        );
        assert!(clean.segments.iter().any(|s| matches!(s.hint, Some(Ok(_)))));
        // Torn tail on the newest segment: reported, not damage.
        let newest = clean.segments.last().unwrap().path.clone();
        let len = std::fs::metadata(&newest).unwrap().len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&newest)
            .unwrap();
        f.set_len(len - 10).unwrap();
        let torn = check_dir(dir.path(), false).unwrap();
        assert!(!torn.damaged());
        assert!(torn.segments.last().unwrap().torn_tail > 0);
        // A flipped byte in the first segment is damage, with its offset.
        let first = clean.segments[0].path.clone();
        let mut b = std::fs::read(&first).unwrap();
        b[1000] ^= 0xff;
        std::fs::write(&first, &b).unwrap();
        let bad = check_dir(dir.path(), false).unwrap();
        assert!(bad.damaged());
        assert!(!bad.segments[0].damage.is_empty());
        // A damaged hint is reported as such.
        let hint_path = dir.path().join(hint_file_name(clean.segments[0].id));
        let mut h = std::fs::read(&hint_path).unwrap();
        let mid = h.len() / 2;
        h[mid] ^= 0xff;
        std::fs::write(&hint_path, &h).unwrap();
        assert!(matches!(
            check_dir(dir.path(), false).unwrap().segments[0].hint,
            Some(Err(_))
        ));
    }
}
