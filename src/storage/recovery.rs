//! Opening a shard's data directory: lock, finish or roll back interrupted
//! merges, check segments, build the index from hints or by scanning, and
//! deal with a torn tail.
//!
//! # Rules
//!
//! * The directory is locked (`flock` on `LOCK`); a second opener is refused.
//! * A merge commit record means the merge committed: its outputs are
//!   renamed into place if needed and its victims removed. Any other
//!   temporary file belongs to an interrupted merge or segment creation and
//!   is removed.
//! * Sealed segments with a valid hint are loaded from the hint (sorted
//!   entries, merged across hints and bulk-loaded into the index without any
//!   search). Every other segment is scanned. For each key the record with
//!   the highest version wins, so the order segments are read in does not
//!   matter.
//! * The newest log segment may end in a torn write. If nothing valid follows
//!   the first bad record, the file is cut there (and an atomic group cut
//!   short by the end is dropped whole). If a valid record follows, the
//!   damage is not a torn tail: start-up stops with the file and offset,
//!   unless `repair` is set. If start-up does not append to that segment
//!   again (it is over half full), it seals it (a seal record, synced), so
//!   that it is not an unsealed segment other than the newest at the next
//!   start-up.
//! * If the newest log segment's header names its predecessor as not yet
//!   durably sealed (a background seal, see `format`), that predecessor
//!   may be torn too: its torn tail is cut the same way, and if anything
//!   of it was lost (a tail cut, or its seal record missing), every record
//!   of the newest segment is dropped, so that what is left is a prefix of
//!   the log. The predecessor is then sealed and the newest's header
//!   rewritten without the name.
//! * Damage anywhere in a sealed segment stops start-up with the file and
//!   offset, unless `repair` is set: then damaged ranges are skipped and
//!   reported, and the segment is rewritten by a merge right after opening.

use std::cmp::{Ordering, Reverse};
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::index::{Entry, IndexWriter, key_cmp, key_prefix, new_index};
use crate::storage::format::{
    self, FLAG_EXPIRES, RecordKind, SEGMENT_HEADER_LEN, SegmentHeader, SegmentKind,
};
use crate::storage::hint::{self, HintView};
use crate::storage::io::{FaultOp, Io};
use crate::storage::merge::{commit_file_name, decode_commit};
use crate::storage::options::StoreOptions;
use crate::storage::segment::{
    Segment, SegmentSet, SegmentTable, hint_file_name, parse_file_name, segment_file_name,
};
use crate::storage::store::{
    self, Active, RecoveryReport, SegState, Shared, Store, StoreStats, create_segment,
};

fn entry_len(key: &[u8], e: &Entry) -> u64 {
    format::record_len(key.len(), e.value_len as usize, e.flags & FLAG_EXPIRES != 0) as u64
}

/// Whether `bytes[from..]` is all zeros: room preallocated for appends
/// (see `storage::io`) that no write reached, not a torn write.
pub fn unwritten_tail(bytes: &[u8], from: usize) -> bool {
    bytes.get(from..).is_some_and(|t| t.iter().all(|&b| b == 0))
}

/// First offset at or after `from` where a valid record starts.
pub fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(format::RECORD_HEADER_LEN - 1))
        .find(|&p| format::decode_record(&bytes[p..]).is_ok())
}

struct Scan {
    valid_len: u64,
    min_version: u64,
    max_version: u64,
    truncated: u64,
    /// Zeros after the last record (preallocated, never written).
    unwritten: u64,
    dropped: Vec<(u64, u64)>,
    /// Ends with its seal record.
    sealed: bool,
}

/// Scans `bytes` (a whole segment file) and feeds every record of every
/// complete atomic group to `apply`.
fn scan_segment<'a>(
    path: &Path,
    bytes: &'a [u8],
    seg_id: u32,
    torn_tail_ok: bool,
    repair: bool,
    mut apply: impl FnMut(&'a [u8], Entry),
) -> Result<Scan> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut good_end = pos;
    let mut group: Vec<(&'a [u8], Entry)> = Vec::new();
    let mut s = Scan {
        valid_len: 0,
        min_version: 0,
        max_version: 0,
        truncated: 0,
        unwritten: 0,
        dropped: Vec::new(),
        sealed: false,
    };
    while pos < bytes.len() {
        match format::decode_record(&bytes[pos..]) {
            Ok(rec) => {
                if s.sealed {
                    if !repair {
                        return Err(Error::corruption(
                            path,
                            pos as u64,
                            "a record follows the segment's seal record",
                        ));
                    }
                    s.sealed = false;
                }
                if rec.kind == RecordKind::Seal {
                    if !group.is_empty() && !repair {
                        return Err(Error::corruption(
                            path,
                            pos as u64,
                            "seal record inside an atomic group",
                        ));
                    }
                    s.sealed = true;
                } else {
                    if s.min_version == 0 || rec.version < s.min_version {
                        s.min_version = rec.version;
                    }
                    s.max_version = s.max_version.max(rec.version);
                }
                if matches!(rec.kind, RecordKind::Put | RecordKind::Delete) {
                    group.push((
                        rec.key,
                        Entry {
                            segment: seg_id,
                            offset: pos as u32,
                            value_len: rec.value.len() as u32,
                            version: rec.version,
                            tombstone: rec.kind == RecordKind::Delete,
                            flags: rec.flags & FLAG_EXPIRES,
                        },
                    ));
                }
                pos += rec.len;
                if !rec.group_continues() {
                    for (k, e) in group.drain(..) {
                        apply(k, e);
                    }
                    good_end = pos;
                }
            }
            Err(err) => {
                if (torn_tail_ok || s.sealed) && unwritten_tail(bytes, pos) {
                    // The end of what was written (an atomic group cut
                    // short before it is still a torn write, below).
                    s.unwritten = (bytes.len() - pos) as u64;
                    break;
                }
                let next = next_valid_record(bytes, pos + 1);
                match next {
                    None if torn_tail_ok => {
                        s.truncated = (bytes.len() - good_end) as u64;
                        s.valid_len = good_end as u64;
                        return Ok(s);
                    }
                    _ if repair => {
                        let resume = next.unwrap_or(bytes.len());
                        let from = good_end.min(pos);
                        s.dropped.push((from as u64, (resume - from) as u64));
                        group.clear();
                        pos = resume;
                        good_end = pos;
                    }
                    _ => {
                        return Err(Error::corruption(
                            path,
                            pos as u64,
                            format!(
                                "{err}{}; start with repair to skip damaged ranges",
                                if next.is_some() {
                                    ", and valid records follow (not a torn tail)"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                }
            }
        }
    }
    if !group.is_empty() {
        // An atomic group cut short by the end of the file.
        if torn_tail_ok || repair {
            s.truncated = (bytes.len() - good_end) as u64;
            s.unwritten = 0;
            if repair && !torn_tail_ok {
                s.dropped.push((good_end as u64, s.truncated));
                s.truncated = 0;
            }
        } else {
            return Err(Error::corruption(
                path,
                good_end as u64,
                "segment ends inside an atomic group",
            ));
        }
    }
    s.valid_len = good_end as u64;
    if !torn_tail_ok && !s.sealed {
        // Only the newest log segment may lack its seal: any other one was
        // cut short, possibly exactly between two records.
        if !repair {
            return Err(Error::corruption(
                path,
                bytes.len() as u64,
                "segment ends without its seal record (cut short?); start with repair to keep what it holds",
            ));
        }
        s.dropped.push((bytes.len() as u64, 0));
    }
    Ok(s)
}

fn read_header(io: &Io, path: &Path) -> Result<(SegmentHeader, u64)> {
    io.gate(FaultOp::Read, "read", path)?;
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    let n = f.read(&mut b).map_err(|e| Error::io("read", path, e))?;
    let h = SegmentHeader::decode(&b[..n]).map_err(|what| Error::corruption(path, 0, what))?;
    Ok((h, len))
}

fn map_file(io: &Io, path: &Path) -> Result<Option<Mmap>> {
    io.gate(FaultOp::Read, "read", path)?;
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    if f.metadata().map_err(|e| Error::io("stat", path, e))?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: hint files are written once under a temporary name and renamed;
    // nothing modifies them while mapped. Populated: start-up reads all of
    // it (the checksum first), and one populate is cheaper than a fault per
    // 64 KiB.
    unsafe { memmap2::MmapOptions::new().populate().map(&f) }
        .map(Some)
        .map_err(|e| Error::io("mmap", path, e))
}

struct Loaded {
    id: u32,
    kind: SegmentKind,
    len: u64,
    min_version: u64,
    max_version: u64,
    has_hint: bool,
    sealed: bool,
}

impl Store {
    /// Opens (or creates) the shard directory `dir`.
    pub async fn open(
        dir: &Path,
        opts: StoreOptions,
        mut io: Io,
        clock: Arc<Clock>,
    ) -> Result<(Store, RecoveryReport)> {
        opts.validate()?;
        let lock = crate::storage::store::lock_dir(dir)?;
        io.fit_to_dir(dir);
        let mut report = RecoveryReport {
            write_path: io.append_path(opts.sync),
            ..RecoveryReport::default()
        };
        finish_merges(dir, &io, &mut report)?;

        let mut seg_files: BTreeMap<u32, PathBuf> = BTreeMap::new();
        let mut hint_files: BTreeMap<u32, PathBuf> = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match parse_file_name(name) {
                Some((id, "seg")) => {
                    seg_files.insert(id, entry.path());
                }
                Some((id, "hint")) => {
                    hint_files.insert(id, entry.path());
                }
                _ if name.ends_with(".tmp") => {
                    io.remove(&entry.path())?;
                    report.temp_files_removed += 1;
                }
                _ => {}
            }
        }
        for (id, path) in &hint_files {
            if !seg_files.contains_key(id) {
                io.remove(path)?;
            }
        }

        // Headers: every segment must have a valid one.
        let mut headers = BTreeMap::new();
        for (&id, path) in &seg_files {
            let (h, len) = read_header(&io, path)?;
            if h.segment_id != id {
                return Err(Error::corruption(
                    path,
                    16,
                    format!("header names segment {}, file name says {id}", h.segment_id),
                ));
            }
            if h.shard_id != opts.shard_id {
                return Err(Error::Config(format!(
                    "{} belongs to shard {}, opened as shard {}",
                    path.display(),
                    h.shard_id,
                    opts.shard_id
                )));
            }
            headers.insert(id, (h, len));
        }
        let newest_log = headers
            .iter()
            .filter(|(_, (h, _))| h.kind == SegmentKind::Log)
            .map(|(id, _)| *id)
            .max();
        // A log segment whose seal was not durable when the newest was
        // created may be torn too (see `format`).
        let unsynced_pred = newest_log
            .and_then(|id| headers[&id].0.unsynced_predecessor)
            .filter(|p| {
                headers
                    .get(p)
                    .is_some_and(|(h, _)| h.kind == SegmentKind::Log)
            });

        let (index, mut writer) = new_index();
        // Live bytes per segment, kept while the index is built.
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        let mut loaded: Vec<Loaded> = Vec::new();
        let mut damaged = Vec::new();

        // Hints first: validate, then merge them by key into a bulk load.
        let mut hint_maps: Vec<(u32, Mmap)> = Vec::new();
        for (&id, &(h, len)) in &headers {
            if Some(id) == newest_log {
                // The newest log segment is appended to; its hint (if a seal
                // was interrupted after writing it) is rebuilt at the next seal.
                continue;
            }
            let Some(hpath) = hint_files.get(&id) else {
                continue;
            };
            match map_file(&io, hpath)? {
                Some(m) => match hint::decode(&m, id, len) {
                    Ok(v) => {
                        let meta = v.meta();
                        loaded.push(Loaded {
                            id,
                            kind: h.kind,
                            len,
                            min_version: meta.min_version,
                            max_version: meta.max_version,
                            has_hint: true,
                            // Hints are written for sealed segments only.
                            sealed: true,
                        });
                        hint_maps.push((id, m));
                    }
                    Err(why) => {
                        tracing::warn!(segment = id, reason = %why, "ignoring a damaged hint; scanning the segment");
                        report.rejected_hints.push((id, why));
                    }
                },
                None => report.rejected_hints.push((id, "empty hint file".into())),
            }
        }
        let views: Vec<HintView<'_>> = hint_maps
            .iter()
            .map(|(id, m)| {
                let len = headers[id].1;
                hint::decode(m, *id, len).expect("validated above")
            })
            .collect();
        report.segments_from_hints = views.len();

        // Then scan every segment without a valid hint, collecting its newest
        // record per key, sorted, so that it joins the same bulk load.
        let hinted: Vec<u32> = loaded.iter().map(|l| l.id).collect();
        let to_scan: Vec<(u32, SegmentHeader, u64)> = headers
            .iter()
            .filter(|(id, _)| !hinted.contains(id))
            .map(|(id, (h, len))| (*id, *h, *len))
            .collect();
        let scan_maps = to_scan
            .iter()
            .map(|(id, _, _)| {
                let path = &seg_files[id];
                map_file(&io, path)?.ok_or_else(|| Error::corruption(path, 0, "empty segment file"))
            })
            .collect::<Result<Vec<Mmap>>>()?;
        let mut scanned: Vec<(u32, Vec<ScannedRecord<'_>>)> = Vec::new();
        // Set when that predecessor lost anything: the newest segment's
        // records were written after what was lost, and are dropped.
        let mut pred_lost = false;
        for (&(id, h, len), map) in to_scan.iter().zip(&scan_maps) {
            let path = &seg_files[&id];
            if pred_lost && Some(id) == newest_log {
                // What was written, without the zeros of preallocated room.
                let dropped = map[SEGMENT_HEADER_LEN..len as usize]
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |i| i as u64 + 1);
                tracing::warn!(
                    segment = id,
                    bytes = dropped,
                    "dropping the newest log segment's records: its predecessor's seal was not durable and the predecessor lost its tail"
                );
                report.truncated_tail_bytes += dropped;
                let f = io.open_rw(path)?;
                f.set_len(SEGMENT_HEADER_LEN as u64)?;
                f.sync_data().await?;
                scanned.push((id, Vec::new()));
                loaded.push(Loaded {
                    id,
                    kind: h.kind,
                    len: SEGMENT_HEADER_LEN as u64,
                    min_version: 0,
                    max_version: 0,
                    has_hint: false,
                    sealed: false,
                });
                continue;
            }
            let torn_ok = Some(id) == newest_log || Some(id) == unsynced_pred;
            let mut recs: Vec<ScannedRecord<'_>> = Vec::new();
            let scan = scan_segment(
                path,
                &map[..len as usize],
                id,
                torn_ok,
                opts.repair,
                |key, e| recs.push((key_prefix(key), key, e)),
            )?;
            report.segments_scanned += 1;
            if Some(id) == unsynced_pred && (scan.truncated > 0 || !scan.sealed) {
                pred_lost = true;
            }
            if scan.truncated > 0 {
                tracing::warn!(
                    segment = id,
                    bytes = scan.truncated,
                    "cutting a torn tail off a log segment written when the crash came"
                );
                report.truncated_tail_bytes += scan.truncated;
            }
            let cut = scan.truncated > 0 || scan.unwritten > 0;
            if cut {
                let f = io.open_rw(path)?;
                f.set_len(scan.valid_len)?;
                f.sync_data().await?;
            }
            if !scan.dropped.is_empty() {
                for (off, n) in &scan.dropped {
                    tracing::error!(
                        segment = id,
                        offset = off,
                        bytes = n,
                        "repair: skipped a damaged range"
                    );
                    report.dropped_ranges.push((id, *off, *n));
                }
                damaged.push(id);
            }
            // The newest record of each key (the last one in the segment, as
            // a seal's hint takes it), in key order. A sort comparing whole
            // keys on equal prefixes read two keys at random per comparison,
            // every comparison for the element keys of one Redis collection.
            let order = (0u32..)
                .zip(&recs)
                .map(|(i, r)| store::sort_entry(r.1, i))
                .collect();
            let recs: Vec<ScannedRecord<'_>> = store::newest_per_key(order, |i| recs[i as usize].1)
                .into_iter()
                .map(|i| recs[i as usize])
                .collect();
            scanned.push((id, recs));
            loaded.push(Loaded {
                id,
                kind: h.kind,
                len: if cut { scan.valid_len } else { len },
                min_version: scan.min_version,
                max_version: scan.max_version,
                has_hint: false,
                sealed: scan.sealed,
            });
        }
        let mut sources: Vec<Source<'_>> = views
            .into_iter()
            .zip(hint_maps.iter().map(|(id, _)| *id))
            .map(|(v, id)| Source::Hint(v, id))
            .collect();
        sources.extend(scanned.into_iter().map(|(_, recs)| Source::Scanned(recs)));
        bulk_load(&mut writer, &sources, &mut live);
        drop(sources);
        drop(scan_maps);
        drop(hint_maps);
        loaded.sort_by_key(|l| l.id);

        // Writer-side accounting.
        let mut segs: BTreeMap<u32, SegState> = loaded
            .iter()
            .map(|l| {
                (
                    l.id,
                    SegState {
                        kind: l.kind,
                        len: l.len,
                        live_bytes: 0,
                        min_version: l.min_version,
                        max_version: l.max_version,
                        has_hint: l.has_hint,
                        sealed: l.sealed,
                    },
                )
            })
            .collect();
        for (id, bytes) in &live {
            if let Some(st) = segs.get_mut(id) {
                st.live_bytes = *bytes;
            }
        }
        let max_version = loaded.iter().map(|l| l.max_version).max().unwrap_or(0);
        clock.observe(max_version);
        report.max_version = max_version;
        report.index_entries = index.len();

        let mut table = SegmentTable::default();
        for l in &loaded {
            let path = dir.join(segment_file_name(l.id));
            table = table.with(Arc::new(Segment::map(
                l.id,
                l.kind,
                &path,
                opts.segment_size,
            )?));
        }
        let mut next_id = headers.keys().max().map_or(1, |m| m + 1);

        // Reuse the newest log segment if it has room; otherwise start a new one.
        let reuse = newest_log.and_then(|id| {
            let st = segs.get(&id)?;
            (st.len < opts.segment_size / 2 && !st.sealed && !damaged.contains(&id))
                .then_some((id, st.len))
        });
        let active = match reuse {
            Some((id, len)) => {
                let mut file = io.open_rw(&seg_files[&id])?;
                file.prepare_appends(opts.sync, opts.segment_size)?;
                Active { id, file, len }
            }
            None => {
                let id = next_id;
                next_id += 1;
                let (file, seg) =
                    create_segment(dir, &io, &opts, id, SegmentKind::Log, None).await?;
                table = table.with(Arc::new(seg));
                segs.insert(id, SegState::new_log());
                Active {
                    id,
                    file,
                    len: SEGMENT_HEADER_LEN as u64,
                }
            }
        };
        // A log segment left without its seal (the newest, after a crash)
        // that is not appended to again is sealed now: were it left open,
        // it would no longer be the newest at the next start-up, which
        // refuses an unsealed segment anywhere else.
        for (&id, st) in segs.iter_mut() {
            if id == active.id || st.sealed || st.kind != SegmentKind::Log || damaged.contains(&id)
            {
                continue;
            }
            let file = io.open_rw(&seg_files[&id])?;
            let mut seal = Vec::with_capacity(format::SEAL_LEN);
            format::encode_seal(&mut seal);
            file.write_all_at(seal, st.len).await.0?;
            file.sync_data().await?;
            st.len += format::SEAL_LEN as u64;
            st.sealed = true;
            report.segments_sealed += 1;
            tracing::info!(segment = id, "sealed a log segment a crash left open");
        }
        // The newest segment, appended to again, stops naming a
        // predecessor that is now whole and durable.
        if unsynced_pred.is_some() && Some(active.id) == newest_log {
            let header = SegmentHeader {
                unsynced_predecessor: None,
                ..headers[&active.id].0
            };
            store::write_header(&active.file, &header).await?;
            active.file.sync_data().await?;
        }
        let shared = Arc::new(Shared {
            index,
            segments: SegmentSet::new(table),
            clock: clock.clone(),
            sync: opts.sync,
            poisoned: Default::default(),
        });
        let shard_id = opts.shard_id;
        // A file system that reports no link counts (0 for a file just
        // created) cannot show a deleted file: the check stays off there.
        let links_counted = {
            use std::os::unix::fs::MetadataExt;
            lock.metadata().is_ok_and(|m| m.nlink() > 0)
        };
        if !links_counted {
            tracing::warn!(dir = %dir.display(), "the file system reports no link counts: a data directory removed under the daemon will not be noticed");
        }
        let mut store = Store {
            dir: dir.to_path_buf(),
            opts,
            io,
            shared,
            writer,
            active,
            segs,
            next_id,
            clock,
            unsynced: false,
            background_sync: false,
            pending_seal: None,
            buf: Vec::new(),
            hints_pending: Vec::new(),
            merge: None,
            merge_blocked: None,
            damaged: damaged.clone(),
            stats: StoreStats::default(),
            fsync_seconds: crate::metrics::metrics().fsync(shard_id),
            group_batches: crate::metrics::metrics().group_batches(shard_id),
            sweep_cursor: None,
            chained: Default::default(),
            links_counted,
            _lock: lock,
        };
        // Sealed segments that were scanned get their hint now.
        let need_hint: Vec<u32> = store
            .segs
            .iter()
            .filter(|(id, st)| {
                **id != store.active.id
                    && !st.has_hint
                    && !damaged.contains(id)
                    && st.kind == SegmentKind::Log
            })
            .map(|(id, _)| *id)
            .collect();
        for id in need_hint {
            store.spawn_hint_writer(id);
        }
        let floor = store.clock.persisted_settled();
        if floor != u64::MAX {
            report.redo = store.redo_records(floor)?;
        }
        if !damaged.is_empty() {
            // Rewrite damaged segments now so the damage is gone for good.
            let victims: Vec<u32> = damaged
                .iter()
                .copied()
                .filter(|id| *id != store.active.id)
                .collect();
            if !victims.is_empty() {
                store.merge = Some(crate::storage::merge::MergeJob::new(&mut store, victims));
                while !store.merge_step(u64::MAX).await? {}
            }
        }
        Ok((store, report))
    }
}

/// Completes merges whose commit record exists; see `merge.rs`.
fn finish_merges(dir: &Path, io: &Io, report: &mut RecoveryReport) -> Result<()> {
    let mut commits = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if let Some(name) = entry.file_name().to_str()
            && let Some((id, "commit")) = parse_file_name(name)
        {
            commits.push((id, entry.path()));
        }
    }
    commits.sort();
    for (id, path) in commits {
        io.gate(FaultOp::Read, "read", &path)?;
        let bytes = fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        let (victims, outputs) = decode_commit(&bytes)
            .ok_or_else(|| Error::corruption(&path, 0, "merge commit record fails its checks"))?;
        debug_assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some(commit_file_name(id).as_str())
        );
        for out in &outputs {
            for name in [segment_file_name(*out), hint_file_name(*out)] {
                let fin = dir.join(&name);
                let tmp = crate::storage::io::tmp_path(&fin);
                if tmp.exists() {
                    io.rename(&tmp, &fin)?;
                }
            }
            if !dir.join(segment_file_name(*out)).exists() {
                return Err(Error::corruption(
                    &path,
                    0,
                    format!("merge output segment {out} is missing"),
                ));
            }
        }
        io.sync_dir(dir)?;
        for v in &victims {
            io.remove(&dir.join(segment_file_name(*v)))?;
            io.remove(&dir.join(hint_file_name(*v)))?;
        }
        io.sync_dir(dir)?;
        io.remove(&path)?;
        io.sync_dir(dir)?;
        report.merges_completed += 1;
    }
    Ok(())
}

/// A scanned record: key prefix (for cheap sorting), key, entry.
type ScannedRecord<'a> = (u64, &'a [u8], Entry);

/// A sorted run of (key, entry) for the bulk load: a hint, or a scanned
/// segment's records sorted by key.
enum Source<'a> {
    Hint(HintView<'a>, u32),
    Scanned(Vec<ScannedRecord<'a>>),
}

impl<'a> Source<'a> {
    /// The segment the source's entries point into.
    fn segment(&self) -> Option<u32> {
        match self {
            Source::Hint(_, id) => Some(*id),
            Source::Scanned(r) => r.first().map(|r| r.2.segment),
        }
    }

    fn len(&self) -> usize {
        match self {
            Source::Hint(v, _) => v.len(),
            Source::Scanned(r) => r.len(),
        }
    }

    fn get(&self, i: usize) -> (&'a [u8], Entry) {
        match self {
            Source::Hint(v, id) => {
                let r = v.get(i);
                (r.key, hint_entry(*id, &r))
            }
            Source::Scanned(r) => {
                // Sorted by key, the records' keys are scattered over the
                // mapped segment: start loading one a few entries ahead.
                if let Some(ahead) = r.get(i + SCANNED_PREFETCH_AHEAD) {
                    hint::prefetch(ahead.1, 0);
                }
                (r[i].1, r[i].2)
            }
        }
    }
}

/// How many records ahead a scanned source prefetches its keys.
const SCANNED_PREFETCH_AHEAD: usize = 8;

/// Merges the sorted sources by key (highest version wins) and bulk-loads
/// the result into the empty index: no search per key.
fn bulk_load(writer: &mut IndexWriter, sources: &[Source<'_>], live: &mut BTreeMap<u32, u64>) {
    let expected = sources.iter().map(|s| s.len()).sum();
    let mut loader = writer
        .bulk_loader(expected)
        .expect("the index is empty before recovery loads it");
    // Live bytes per segment, summed in a dense array over the sources'
    // segment ids (a map lookup per key costs more than the rest of a push).
    let mut ids: Vec<u32> = sources.iter().filter_map(Source::segment).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut sums = vec![0u64; ids.len()];
    let mut push = |key: &[u8], e: Entry| {
        let len = entry_len(key, &e);
        match ids.binary_search(&e.segment) {
            Ok(i) => sums[i] += len,
            Err(_) => *live.entry(e.segment).or_default() += len,
        }
        loader.push(key, e);
    };
    if let [only] = sources {
        for i in 0..only.len() {
            let (k, e) = only.get(i);
            push(k, e);
        }
    } else {
        merge_sources(sources, &mut push);
    }
    for (id, sum) in ids.into_iter().zip(sums) {
        if sum > 0 {
            *live.entry(id).or_default() += sum;
        }
    }
}

/// Feeds the sources' entries to `push` in key order, one per key (the
/// highest version wins).
fn merge_sources<'a>(sources: &[Source<'a>], push: &mut impl FnMut(&[u8], Entry)) {
    // Pick the smallest head: linearly for a few sources, with a heap ordered
    // by the 8-byte key prefix first for more (a dozen segments at 10M keys).
    let mut pos = vec![0usize; sources.len()];
    let mut pending: Option<(&[u8], Entry)> = None;
    if sources.len() <= 4 {
        let mut heads: Vec<Option<(&[u8], Entry)>> = sources
            .iter()
            .map(|s| (s.len() > 0).then(|| s.get(0)))
            .collect();
        loop {
            let mut best: Option<usize> = None;
            for (h, head) in heads.iter().enumerate() {
                if let Some((k, _)) = head
                    && best.is_none_or(|b| {
                        key_cmp(k, heads[b].as_ref().map_or(&[][..], |x| x.0)) == Ordering::Less
                    })
                {
                    best = Some(h);
                }
            }
            let Some(h) = best else { break };
            let (key, e) = heads[h].take().expect("best head exists");
            pos[h] += 1;
            if pos[h] < sources[h].len() {
                heads[h] = Some(sources[h].get(pos[h]));
            }
            merge_one(&mut pending, key, e, push);
        }
    } else {
        let mut heap: BinaryHeap<Reverse<(u64, &[u8], usize)>> = sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len() > 0)
            .map(|(h, s)| {
                let k = s.get(0).0;
                Reverse((key_prefix(k), k, h))
            })
            .collect();
        // The smallest head is replaced in place (one sift) rather than
        // popped and pushed (two).
        while let Some(mut top) = heap.peek_mut() {
            let Reverse((_, key, h)) = *top;
            let (_, e) = sources[h].get(pos[h]);
            pos[h] += 1;
            if pos[h] < sources[h].len() {
                let k = sources[h].get(pos[h]).0;
                *top = Reverse((key_prefix(k), k, h));
            } else {
                PeekMut::pop(top);
            }
            merge_one(&mut pending, key, e, push);
        }
    }
    if let Some((pk, pe)) = pending {
        push(pk, pe);
    }
}

/// Folds one (key, entry) from the merged stream into `pending`: the same
/// key keeps its newest version; a new key flushes the previous one.
fn merge_one<'a>(
    pending: &mut Option<(&'a [u8], Entry)>,
    key: &'a [u8],
    e: Entry,
    push: &mut impl FnMut(&[u8], Entry),
) {
    match pending {
        Some((pk, pe)) if *pk == key => {
            if e.version > pe.version {
                *pe = e;
            }
        }
        _ => {
            if let Some((pk, pe)) = pending.take() {
                push(pk, pe);
            }
            *pending = Some((key, e));
        }
    }
}

fn hint_entry(segment: u32, r: &hint::HintRecord<'_>) -> Entry {
    Entry {
        segment,
        offset: r.offset,
        value_len: r.value_len,
        version: r.version,
        tombstone: r.kind == RecordKind::Delete as u8,
        flags: r.flags & FLAG_EXPIRES,
    }
}
