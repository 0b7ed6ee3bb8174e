//! Merge (compaction): rewrites the live records of sealed segments into new
//! segments and retires the old ones.
//!
//! A merge is a resumable job driven by the shard thread in small steps
//! (`Store::merge_step`), each bounded by a byte budget, so foreground writes
//! interleave with it and its rate is capped.
//!
//! # Steps and the crash guarantee after each
//!
//! 1. **Copy.** Records of the victims that the index still points at are
//!    copied byte for byte (same version, same CRC) into new segments
//!    written under temporary names (`<id>.seg.tmp`). A tombstone, or an
//!    expired put, is dropped instead when no remaining segment can hold an
//!    older version of its key (every other segment's lowest version is
//!    above it). *Crash: temporary files are deleted at start-up; old state.*
//! 2. **Seal outputs.** The outputs are synced under temporary names
//!    (written back as they are written, so this fdatasync, which the
//!    storage task waits for, finds little left). *Crash: old state.*
//! 3. **Commit.** A commit record `<job>.commit` listing victims and
//!    outputs is written durably (temp, fsync, rename, directory fsync). This
//!    is the commit point. *Crash: start-up finds the commit record and
//!    completes steps 4 and 6; new state.*
//! 4. **Install files.** Outputs are renamed to their final names;
//!    directory fsync.
//! 5. **Install in memory.** Outputs are mapped and added to the segment
//!    table. Then, a bounded number per step, each moved key's index entry
//!    is switched to its new place only if it still points at the old place
//!    (a write that raced with the merge wins); dropped tombstones are
//!    unlinked the same way. Meanwhile victims and outputs are both in the
//!    segment table, so readers find every entry; a checkpoint taken then
//!    copies the commit record too. After the last move the victims leave
//!    the segment table; readers that still hold them keep them mapped
//!    until their epoch ends. The outputs' hints are built from the output
//!    files on a background thread, as a sealed segment's are: building
//!    them on the shard thread before the commit (sorting the records)
//!    stalled every request of the shard for 0.4 s per 660k records. An
//!    output whose hint is not written yet when the process dies is
//!    scanned at start-up.
//! 6. **Retire.** Victim segments and hints are unlinked, directory fsync,
//!    the commit record is removed.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::{Entry, IndexWriter};
use crate::storage::format::{
    self, FLAG_EXPIRES, RecordKind, SEGMENT_HEADER_LEN, SegmentHeader, SegmentKind,
};
use crate::storage::io::{DataFile, tmp_path};
use crate::storage::segment::{Segment, hint_file_name, segment_file_name};
use crate::storage::store::{SegState, Store, now_ms};

/// Commit record magic.
const COMMIT_MAGIC: [u8; 8] = *b"FKVMERGE";
const FLUSH_BYTES: usize = 1 << 20;
/// The fewest index moves a throttled step applies.
const MIN_MOVES_PER_STEP: usize = 1024;
/// How many moves ahead the index lookups are prefetched, per stage.
const MOVE_PREFETCH: usize = 8;

/// Cursors ahead of the copy in a victim: the index lookups of the records
/// there (is each still live?) are prefetched in two stages, as the
/// moves' are, so that the copy does not wait for a cache miss or two per
/// record.
#[derive(Default)]
struct Ahead {
    victim: Option<usize>,
    /// Where the next slot and node prefetches go, and how many records
    /// each is ahead of the copy.
    slot: (usize, usize),
    node: (usize, usize),
}

impl Ahead {
    /// The copy is at `pos` of victim `victim` (`bytes`), one record on
    /// from the last call (or anywhere in a new victim).
    fn run(&mut self, writer: &IndexWriter, victim: usize, bytes: &[u8], pos: usize) {
        if self.victim != Some(victim) {
            *self = Ahead {
                victim: Some(victim),
                slot: (pos, 0),
                node: (pos, 0),
            };
        }
        advance(&mut self.slot, 2 * MOVE_PREFETCH, bytes, pos, |k| {
            writer.prefetch_slot(k)
        });
        advance(&mut self.node, MOVE_PREFETCH, bytes, pos, |k| {
            writer.prefetch_node(k)
        });
    }
}

/// Moves cursor `c` (position, records ahead of `pos`) on to `distance`
/// records ahead of the copy at `pos`, calling `fetch` with each key it
/// passes. It stops at the end of the victim or at a record whose header
/// does not parse (the copy reports that one).
fn advance(
    c: &mut (usize, usize),
    distance: usize,
    bytes: &[u8],
    pos: usize,
    fetch: impl Fn(&[u8]),
) {
    c.1 = c.1.saturating_sub(1);
    if c.0 <= pos {
        // Behind the copy (it skipped a damaged range), or just started.
        *c = (pos, 0);
    }
    while c.1 < distance {
        let Some((key, len)) = peek(bytes, c.0) else {
            break;
        };
        fetch(key);
        c.0 += len;
        c.1 += 1;
    }
}

/// The key and length of the record at `at`, from its header alone (no
/// CRC check).
fn peek(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let h = format::decode_header(bytes.get(at..)?).ok()?;
    let key_at = at + h.key_offset();
    Some((bytes.get(key_at..key_at + h.key_len)?, h.record_len()))
}

/// File name of the commit record of merge job `id`.
pub fn commit_file_name(id: u32) -> String {
    format!("{id:010}.commit")
}

/// Encodes a commit record: magic, victim count, output count, ids, CRC32.
pub fn encode_commit(victims: &[u32], outputs: &[u32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + 4 * (victims.len() + outputs.len()));
    b.extend_from_slice(&COMMIT_MAGIC);
    b.extend_from_slice(&(victims.len() as u32).to_le_bytes());
    b.extend_from_slice(&(outputs.len() as u32).to_le_bytes());
    for id in victims.iter().chain(outputs) {
        b.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a commit record into (victims, outputs).
pub fn decode_commit(b: &[u8]) -> Option<(Vec<u32>, Vec<u32>)> {
    if b.len() < 20 || b[0..8] != COMMIT_MAGIC {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let nv = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
    let no = u32::from_le_bytes(body[12..16].try_into().ok()?) as usize;
    if body.len() != 16 + 4 * (nv + no) {
        return None;
    }
    let ids: Vec<u32> = body[16..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((ids[..nv].to_vec(), ids[nv..].to_vec()))
}

struct Output {
    id: u32,
    file: DataFile,
    len: u64,
    buf: Vec<u8>,
    min_version: u64,
    max_version: u64,
}

struct Finished {
    id: u32,
    len: u64,
    min_version: u64,
    max_version: u64,
}

struct Move {
    key: Vec<u8>,
    from_segment: u32,
    from_offset: u32,
    to: Option<Entry>,
}

/// A merge in progress; see the module docs.
pub(crate) struct MergeJob {
    job_id: u32,
    victims: Vec<(Arc<Segment>, u64)>,
    drop_below: u64,
    /// Redo records above this version are carried over.
    keep_redo_above: u64,
    /// Victims with damage skipped at recovery (repair mode): merge steps
    /// over damaged ranges there instead of failing.
    salvage: Vec<u32>,
    cursor: (usize, usize),
    out: Option<Output>,
    finished: Vec<Finished>,
    moves: Vec<Move>,
    /// Moves applied so far, once installed.
    moved: usize,
    /// Set once the outputs are installed (step 5 under way).
    installed: Option<Installed>,
    tmp_files: Vec<PathBuf>,
    committed: bool,
    reclaimed: u64,
}

/// A committed merge whose outputs are in the segment table and whose
/// index moves are being applied.
struct Installed {
    victim_ids: Vec<u32>,
    commit_path: PathBuf,
    started: std::time::Instant,
    /// The longest step of moves so far: the longest the shard paused.
    longest_step: std::time::Duration,
    /// Time spent in steps of moves, and their number.
    busy: std::time::Duration,
    steps: u32,
}

impl MergeJob {
    pub(crate) fn new(store: &mut Store, victim_ids: Vec<u32>) -> MergeJob {
        let guard = crossbeam_epoch::pin();
        let table = store.shared.segments.load(&guard);
        let victims: Vec<(Arc<Segment>, u64)> = victim_ids
            .iter()
            .filter_map(|id| Some((table.get(*id)?.clone(), store.segs.get(id)?.len)))
            .collect();
        // A tombstone may be dropped only if every segment that stays holds
        // versions above it; writes after this point get higher versions.
        let drop_below = store
            .segs
            .iter()
            .filter(|(id, _)| !victim_ids.contains(id))
            .map(|(_, s)| {
                if s.min_version == 0 {
                    u64::MAX
                } else {
                    s.min_version
                }
            })
            .min()
            .unwrap_or(u64::MAX)
            .min(store.clock.current() + 1)
            // A redo record of an unsettled commit may still re-apply an
            // older write of the key; a snapshot may still read below it.
            .min(store.clock.persisted_settled().saturating_add(1))
            .min(store.clock.horizon().saturating_add(1));
        let keep_redo_above = store.clock.persisted_settled();
        drop(guard);
        let job_id = store.alloc_id();
        MergeJob {
            job_id,
            victims,
            drop_below,
            keep_redo_above,
            salvage: store.damaged.clone(),
            cursor: (0, SEGMENT_HEADER_LEN),
            out: None,
            finished: Vec::new(),
            moves: Vec::new(),
            moved: 0,
            installed: None,
            tmp_files: Vec::new(),
            committed: false,
            reclaimed: 0,
        }
    }

    /// Bytes freed by the finished merge.
    pub(crate) fn reclaimed(&self) -> u64 {
        self.reclaimed
    }

    /// The commit record of a merge that is past its commit point and not
    /// yet retired: a copy of the directory needs it beside the victims and
    /// outputs, which are both in the segment table until then.
    pub(crate) fn commit_path(&self) -> Option<&std::path::Path> {
        self.installed.as_ref().map(|i| i.commit_path.as_path())
    }

    /// Runs the job on: copies up to `budget` bytes of victim records; once
    /// everything is copied, commits and installs the outputs; then applies
    /// index moves, as many per step as the records a step copied on
    /// average (all of them if `budget` is unbounded), and retires the
    /// victims after the last. Returns true when done.
    pub(crate) async fn step(&mut self, store: &mut Store, budget: u64) -> Result<bool> {
        if self.installed.is_none() {
            if !self.copy(store, budget).await? {
                return Ok(false);
            }
            self.commit_and_install(store).await?;
            if budget != u64::MAX {
                // The commit's fsyncs were this step's work.
                return Ok(false);
            }
        }
        let limit = if budget == u64::MAX {
            usize::MAX
        } else {
            // As many steps of moves as steps of copying: a step's pause
            // stays near a copy step's, and the moves do not hold the merge
            // below its rate (1 ms of moves per tick made them 2.6 s of a
            // merge whose 128 MiB of victims the rate copies in about 1 s).
            let victim_bytes: u64 = self.victims.iter().map(|(_, len)| *len).sum();
            let per_step =
                self.moves.len() as u128 * u128::from(budget) / u128::from(victim_bytes.max(1));
            usize::try_from(per_step)
                .unwrap_or(usize::MAX)
                .max(MIN_MOVES_PER_STEP)
        };
        if !self.apply_moves(store, limit) {
            return Ok(false);
        }
        self.retire(store);
        Ok(true)
    }

    /// Copies up to `budget` bytes of victim records. Returns true when
    /// every victim is copied.
    async fn copy(&mut self, store: &mut Store, budget: u64) -> Result<bool> {
        let now = now_ms();
        let mut consumed = 0u64;
        let mut ahead = Ahead::default();
        while consumed < budget {
            let (vi, pos) = self.cursor;
            let Some((seg, len)) = self.victims.get(vi).cloned() else {
                return Ok(true);
            };
            if pos as u64 >= len {
                self.cursor = (vi + 1, SEGMENT_HEADER_LEN);
                continue;
            }
            let bytes = &seg.bytes()[..len as usize];
            ahead.run(&store.writer, vi, bytes, pos);
            let rec = match format::decode_record(&bytes[pos..]) {
                Ok(r) => r,
                Err(d) if self.salvage.contains(&seg.id) => {
                    let next = crate::storage::recovery::next_valid_record(bytes, pos + 1)
                        .unwrap_or(bytes.len());
                    tracing::warn!(segment = seg.id, offset = pos, error = %d, "merge skips a damaged range of a repaired segment");
                    consumed += (next - pos) as u64;
                    self.cursor = (vi, next);
                    continue;
                }
                Err(d) => return Err(Error::corruption(&seg.path, pos as u64, d.to_string())),
            };
            consumed += rec.len as u64;
            self.cursor = (vi, pos + rec.len);
            if rec.kind == RecordKind::TxnPrepare && rec.version > self.keep_redo_above {
                // Recovery may still need it: carry it over unchanged (no
                // index entry, no hint entry).
                self.copy_raw(store, &bytes[pos..pos + rec.len], rec.version)
                    .await?;
                continue;
            }
            if !matches!(rec.kind, RecordKind::Put | RecordKind::Delete) {
                continue;
            }
            let live = store
                .writer
                .get(rec.key)
                .is_some_and(|e| e.is_at(seg.id, pos as u32));
            if !live {
                continue;
            }
            let expired = rec.expires_at_ms.is_some_and(|t| t <= now);
            let gone = rec.kind == RecordKind::Delete || expired;
            if gone && rec.version < self.drop_below {
                self.moves.push(Move {
                    key: rec.key.to_vec(),
                    from_segment: seg.id,
                    from_offset: pos as u32,
                    to: None,
                });
                continue;
            }
            if self.out.as_ref().is_some_and(|o| {
                o.len + (o.buf.len() + rec.len + format::SEAL_LEN) as u64 > store.opts.segment_size
            }) {
                self.finish_output().await?;
            }
            if self.out.is_none() {
                self.out = Some(self.new_output(store).await?);
            }
            let out = self.out.as_mut().expect("output just created");
            let offset = out.len + out.buf.len() as u64;
            let start = out.buf.len();
            out.buf.extend_from_slice(&bytes[pos..pos + rec.len]);
            // Copied alone, the record must not continue into the next one.
            format::clear_group_cont(&mut out.buf[start..]);
            out.min_version = out.min_version.min(rec.version);
            out.max_version = out.max_version.max(rec.version);
            let flags = rec.flags & FLAG_EXPIRES;
            self.moves.push(Move {
                key: rec.key.to_vec(),
                from_segment: seg.id,
                from_offset: pos as u32,
                to: Some(Entry {
                    segment: out.id,
                    offset: offset as u32,
                    value_len: rec.value.len() as u32,
                    version: rec.version,
                    tombstone: rec.kind == RecordKind::Delete,
                    flags,
                }),
            });
            if out.buf.len() >= FLUSH_BYTES {
                flush(out).await?;
            }
        }
        Ok(false)
    }

    async fn copy_raw(&mut self, store: &mut Store, rec: &[u8], version: u64) -> Result<()> {
        if self.out.as_ref().is_some_and(|o| {
            o.len + (o.buf.len() + rec.len() + format::SEAL_LEN) as u64 > store.opts.segment_size
        }) {
            self.finish_output().await?;
        }
        if self.out.is_none() {
            self.out = Some(self.new_output(store).await?);
        }
        let out = self.out.as_mut().expect("output just created");
        // One record copied alone: it must not continue into the next.
        let start = out.buf.len();
        out.buf.extend_from_slice(rec);
        format::clear_group_cont(&mut out.buf[start..]);
        out.max_version = out.max_version.max(version);
        Ok(())
    }

    async fn new_output(&mut self, store: &mut Store) -> Result<Output> {
        let id = store.alloc_id();
        let path = tmp_path(&store.dir.join(segment_file_name(id)));
        let file = store.io.create(&path)?;
        self.tmp_files.push(path);
        let header = SegmentHeader {
            kind: SegmentKind::Merged,
            segment_id: id,
            shard_id: store.opts.shard_id,
            unsynced_predecessor: None,
        }
        .encode();
        Ok(Output {
            id,
            file,
            len: 0,
            buf: header.to_vec(),
            min_version: u64::MAX,
            max_version: 0,
        })
    }

    async fn finish_output(&mut self) -> Result<()> {
        let Some(mut out) = self.out.take() else {
            return Ok(());
        };
        format::encode_seal(&mut out.buf);
        flush(&mut out).await?;
        let started = std::time::Instant::now();
        out.file.sync_data().await?;
        tracing::debug!(
            segment = out.id,
            bytes = out.len,
            fdatasync_ms = started.elapsed().as_secs_f64() * 1e3,
            "merge output finished"
        );
        self.finished.push(Finished {
            id: out.id,
            len: out.len,
            min_version: out.min_version,
            max_version: out.max_version,
        });
        Ok(())
    }

    async fn commit_and_install(&mut self, store: &mut Store) -> Result<()> {
        self.finish_output().await?;
        let victim_ids: Vec<u32> = self.victims.iter().map(|(s, _)| s.id).collect();
        let output_ids: Vec<u32> = self.finished.iter().map(|f| f.id).collect();
        let commit_path = store.dir.join(commit_file_name(self.job_id));
        store.io.sync_dir(&store.dir)?;
        let written = store
            .io
            .write_file_atomic(&commit_path, encode_commit(&victim_ids, &output_ids))
            .await;
        // The rename is the commit point: if it happened, the merge is
        // committed even if the directory fsync after it failed.
        self.committed = written.is_ok() || commit_path.exists();
        written?;

        for f in &self.finished {
            let path = store.dir.join(segment_file_name(f.id));
            store.io.rename(&tmp_path(&path), &path)?;
        }
        store.io.sync_dir(&store.dir)?;
        self.tmp_files.clear();

        // In memory: map outputs first (the only step that can fail) and
        // add them to the segment table; the index moves and the victims'
        // retirement follow in later steps.
        let mut mapped = Vec::new();
        for f in &self.finished {
            let path = store.dir.join(segment_file_name(f.id));
            mapped.push(Arc::new(Segment::map(
                f.id,
                SegmentKind::Merged,
                &path,
                store.opts.segment_size,
            )?));
        }
        let guard = crossbeam_epoch::pin();
        let mut table = store.shared.segments.load(&guard).clone();
        for (seg, f) in mapped.into_iter().zip(&self.finished) {
            table = table.with(seg);
            store.segs.insert(
                f.id,
                SegState {
                    kind: SegmentKind::Merged,
                    len: f.len,
                    live_bytes: 0,
                    min_version: f.min_version,
                    max_version: f.max_version,
                    has_hint: false,
                    sealed: true,
                },
            );
        }
        store.shared.segments.replace(table, &guard);
        drop(guard);
        // The hints are built from the output files alone.
        for f in &self.finished {
            store.spawn_hint_writer(f.id);
        }
        self.installed = Some(Installed {
            victim_ids,
            commit_path,
            started: std::time::Instant::now(),
            longest_step: std::time::Duration::ZERO,
            busy: std::time::Duration::ZERO,
            steps: 0,
        });
        Ok(())
    }

    /// Applies up to `limit` index moves: each moved key's entry is
    /// switched to its new place only if it still points at the old place
    /// (a write that raced with the merge wins); dropped tombstones are
    /// unlinked the same way. Victims and outputs are both in the segment
    /// table meanwhile, so a reader finds every entry, moved or not.
    /// Returns true when every move is applied.
    ///
    /// Moves go in steps because each is a random index lookup: the 660k
    /// moves of one segment took 160-290 ms, during which the shard served
    /// nothing. The lookups are prefetched two stages ahead (slot, node).
    fn apply_moves(&mut self, store: &mut Store, limit: usize) -> bool {
        let (guard, started) = (crossbeam_epoch::pin(), std::time::Instant::now());
        let end = self.moved.saturating_add(limit).min(self.moves.len());
        for i in self.moved..end {
            if let Some(m) = self.moves.get(i + 2 * MOVE_PREFETCH) {
                store.writer.prefetch_slot(&m.key);
            }
            if let Some(m) = self.moves.get(i + MOVE_PREFETCH) {
                store.writer.prefetch_node(&m.key);
            }
            let m = &self.moves[i];
            match m.to {
                Some(entry) => {
                    if store
                        .writer
                        .update_if_at(&m.key, m.from_segment, m.from_offset, entry)
                    {
                        let len = format::record_len(
                            m.key.len(),
                            entry.value_len as usize,
                            entry.flags & FLAG_EXPIRES != 0,
                        ) as u64;
                        if let Some(st) = store.segs.get_mut(&entry.segment) {
                            st.live_bytes += len;
                        }
                    }
                }
                None => {
                    store
                        .writer
                        .remove_if_at(&m.key, m.from_segment, m.from_offset, &guard);
                }
            }
        }
        self.moved = end;
        if let Some(inst) = &mut self.installed {
            let took = started.elapsed();
            inst.longest_step = inst.longest_step.max(took);
            inst.busy += took;
            inst.steps += 1;
        }
        end == self.moves.len()
    }

    /// Step 6: the victims leave the segment table and the directory.
    fn retire(&mut self, store: &mut Store) {
        let Some(inst) = self.installed.take() else {
            return;
        };
        tracing::debug!(
            moves = self.moves.len(),
            ms = inst.started.elapsed().as_secs_f64() * 1e3,
            steps = inst.steps,
            busy_ms = inst.busy.as_secs_f64() * 1e3,
            longest_step_ms = inst.longest_step.as_secs_f64() * 1e3,
            "merge moved its index entries"
        );
        self.moves = Vec::new();
        let victim_ids = inst.victim_ids;
        let guard = crossbeam_epoch::pin();
        let current = store.shared.segments.load(&guard);
        for id in &victim_ids {
            if let Some(seg) = current.get(*id) {
                seg.retire();
            }
        }
        let table = current.without(&victim_ids);
        store.shared.segments.replace(table, &guard);
        drop(guard);
        let before: u64 = victim_ids
            .iter()
            .filter_map(|id| store.segs.remove(id))
            .map(|s| s.len)
            .sum();
        let after: u64 = self.finished.iter().map(|f| f.len).sum();
        self.reclaimed = before.saturating_sub(after);
        store.damaged.retain(|id| !victim_ids.contains(id));

        // Failures here leave files that the next start-up removes (the
        // commit record stays until they are gone).
        let commit_path = inst.commit_path;
        let retire = || -> Result<()> {
            for id in &victim_ids {
                store.io.remove(&store.dir.join(segment_file_name(*id)))?;
                store.io.remove(&store.dir.join(hint_file_name(*id)))?;
            }
            store.io.sync_dir(&store.dir)?;
            store.io.remove(&commit_path)?;
            store.io.sync_dir(&store.dir)
        };
        if let Err(e) = retire() {
            tracing::warn!(error = %e, "removing merged segments failed; start-up will finish it");
        }
    }

    /// Cleans up after a failed step. Before the commit point the temporary
    /// outputs are deleted and nothing changed. After it, the commit record
    /// stays, start-up completes the merge, and no merge runs until then.
    pub(crate) fn abort(self, store: &mut Store) {
        if self.committed {
            store.merge_blocked = Some("a merge failed after its commit point".into());
            return;
        }
        for p in &self.tmp_files {
            let _ = std::fs::remove_file(p);
        }
    }
}

async fn flush(out: &mut Output) -> Result<()> {
    if out.buf.is_empty() {
        return Ok(());
    }
    let pos = out.len;
    let (r, b) = out
        .file
        .write_all_at(std::mem::take(&mut out.buf), pos)
        .await;
    r?;
    // The output is synced once, when it is finished: written back as it
    // goes, that fdatasync (which the storage task waits for, serving
    // nothing) has little left to write instead of up to a whole segment.
    out.file.start_writeback(pos, b.len() as u64);
    out.len = pos + b.len() as u64;
    out.buf = b;
    out.buf.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_record_round_trips_and_rejects_damage() {
        let b = encode_commit(&[1, 2, 3], &[9]);
        assert_eq!(decode_commit(&b), Some((vec![1, 2, 3], vec![9])));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert_eq!(decode_commit(&d), None, "flip at {i}");
        }
        assert_eq!(decode_commit(&b[..b.len() - 1]), None);
    }

    #[test]
    fn the_lookahead_visits_each_records_key_once_and_stops_at_the_end() {
        let mut bytes = vec![0u8; SEGMENT_HEADER_LEN];
        let mut starts = Vec::new();
        for i in 0..40u64 {
            starts.push(bytes.len());
            let key = format!("key{i:03}");
            format::encode_record(
                &mut bytes,
                &format::RecordSpec {
                    kind: RecordKind::Put,
                    flags: 0,
                    version: i + 1,
                    txn_id: 0,
                    // Every third record has an expiry before its key.
                    expires_at_ms: (i % 3 == 0).then_some(1 << 40),
                    key: key.as_bytes(),
                    value: &vec![b'v'; i as usize * 7],
                },
            );
        }
        let fetched = std::cell::RefCell::new(Vec::new());
        let record = |k: &[u8]| {
            fetched
                .borrow_mut()
                .push(String::from_utf8(k.to_vec()).unwrap())
        };
        let mut c = (0, 0);
        for (n, &pos) in starts.iter().enumerate() {
            advance(&mut c, 8, &bytes, pos, record);
            // Always eight records ahead, or at the end.
            let expect = (n + 8).min(starts.len());
            assert_eq!(fetched.borrow().len(), expect, "at record {n}");
        }
        let want: Vec<String> = (0..40).map(|i| format!("key{i:03}")).collect();
        assert_eq!(*fetched.borrow(), want);
        // A damaged header stops it there; a cursor behind the copy (which
        // skipped the damage) starts again from the copy.
        let mut damaged = bytes.clone();
        damaged[starts[5] + 4] = 0xEE;
        fetched.borrow_mut().clear();
        let mut c = (0, 0);
        advance(&mut c, 8, &damaged, starts[0], record);
        assert_eq!(fetched.borrow().len(), 5);
        advance(&mut c, 8, &damaged, starts[6], record);
        assert_eq!(fetched.borrow()[5], "key006");
    }
}
