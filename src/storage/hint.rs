//! Hint files: the flatbuffers index of a sealed segment, for fast start-up.
//!
//! A hint lists every record of its segment that was live when it was
//! written, sorted by key, with location, value length and version. Start-up
//! maps the hint and bulk-loads the index without reading values.
//!
//! A hint is a cache, never the truth. The file is
//!
//! ```text
//! offset size field
//!      0    8 magic "FKVHINT\0"
//!      8    4 format version (1)
//!     12    4 CRC32 of the payload
//!     16    8 payload length
//!     24      payload: a flatbuffer, schema fbs/hint.fbs, identifier "FKVH"
//! ```
//!
//! and [`decode`] rejects it unless the magic, version, length and CRC match,
//! the flatbuffer verifies, it names the expected segment id and file length,
//! every entry lies inside the segment and the keys are strictly increasing.
//! A rejected hint is reported and its segment is scanned instead. Hints are
//! written to a temporary name, synced and renamed (see `Io::write_file_atomic`).

use flatbuffers::FlatBufferBuilder;

use crate::storage::format::{FLAG_EXPIRES, FORMAT_VERSION, SEGMENT_HEADER_LEN, record_len};
use crate::storage::hint_generated::flashkv::hint::{
    Entry as FbEntry, Hint, HintArgs, root_as_hint,
};

/// Hint file magic.
pub const HINT_MAGIC: [u8; 8] = *b"FKVHINT\0";
const HEADER_LEN: usize = 24;

/// One record for a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintRecord<'a> {
    /// Key bytes.
    pub key: &'a [u8],
    /// Offset of the record in the segment.
    pub offset: u32,
    /// Value length.
    pub value_len: u32,
    /// Version.
    pub version: u64,
    /// Record kind byte (1 put, 2 delete).
    pub kind: u8,
    /// Record flags byte.
    pub flags: u8,
}

/// Segment-level facts stored in the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintMeta {
    /// Segment id.
    pub segment_id: u32,
    /// Segment file length the hint describes.
    pub segment_len: u64,
    /// Lowest version of any record in the segment.
    pub min_version: u64,
    /// Highest version of any record in the segment.
    pub max_version: u64,
}

/// Encodes a hint file. `records` is sorted by key here; keys must be unique.
pub fn encode(meta: HintMeta, records: &mut [HintRecord<'_>]) -> Vec<u8> {
    records.sort_unstable_by(|a, b| crate::index::key_cmp(a.key, b.key));
    encode_sorted(meta, records)
}

/// [`encode`] for records already sorted by key, at most one per key.
pub fn encode_sorted(meta: HintMeta, records: &[HintRecord<'_>]) -> Vec<u8> {
    encode_sorted_iter(meta, records.iter().copied())
}

/// [`encode_sorted`] for records made by an iterator (walked three times,
/// once backwards), so that a caller need not collect them first.
///
/// The entries go straight into the flatbuffer, and the file header is
/// written in front of the payload in the builder's own buffer: apart from
/// a copy of the keys, the hint is the only large allocation.
pub fn encode_sorted_iter<'a, I>(meta: HintMeta, records: I) -> Vec<u8>
where
    I: ExactSizeIterator<Item = HintRecord<'a>> + DoubleEndedIterator + Clone,
{
    debug_assert!(
        records
            .clone()
            .zip(records.clone().skip(1))
            .all(|(a, b)| crate::index::key_cmp(a.key, b.key).is_lt()),
        "hint records must be sorted by key, one per key"
    );
    let n = records.len();
    let key_bytes: usize = records.clone().map(|r| r.key.len()).sum();
    u32::try_from(key_bytes).expect("hint keys of one segment fit in 4 GiB");
    let mut keys = Vec::with_capacity(key_bytes);
    for r in records.clone() {
        keys.extend_from_slice(r.key);
    }
    let mut fbb = FlatBufferBuilder::with_capacity(
        HEADER_LEN + n * std::mem::size_of::<FbEntry>() + key_bytes + 256,
    );
    // The builder fills its buffer from the back: entries are pushed last
    // first, with key offsets counted down from the end of the keys.
    fbb.start_vector::<FbEntry>(n);
    let mut end = key_bytes;
    for r in records.rev() {
        end -= r.key.len();
        fbb.push(FbEntry::new(
            r.offset,
            end as u32,
            r.key.len() as u32,
            r.value_len,
            r.version,
            r.kind,
            r.flags,
            0,
            0,
        ));
    }
    let entries = fbb.end_vector::<FbEntry>(n);
    let keys = fbb.create_vector(&keys);
    let root = Hint::create(
        &mut fbb,
        &HintArgs {
            segment_id: meta.segment_id,
            segment_len: meta.segment_len,
            max_version: meta.max_version,
            min_version: meta.min_version,
            entries: Some(entries),
            keys: Some(keys),
        },
    );
    fbb.finish(root, Some("FKVH"));
    let (mut buf, head) = fbb.collapse();
    let payload = &buf[head..];
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(&HINT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    if head < HEADER_LEN {
        // The builder grew past its estimate and left no room in front.
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(payload);
        return out;
    }
    buf[head - HEADER_LEN..head].copy_from_slice(&header);
    buf.drain(..head - HEADER_LEN);
    buf
}

/// A validated hint, borrowing the file bytes.
pub struct HintView<'a> {
    meta: HintMeta,
    entries: flatbuffers::Vector<'a, FbEntry>,
    keys: &'a [u8],
}

impl<'a> HintView<'a> {
    /// Segment-level facts.
    pub fn meta(&self) -> HintMeta {
        self.meta
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `i` (validated by [`decode`]). Start-up reads entries in
    /// order, so this also prefetches the entries and key bytes a little
    /// ahead: a hint is far larger than the CPU caches, and start-up merges
    /// a dozen of them at once, more streams than the hardware prefetcher
    /// keeps up with.
    pub fn get(&self, i: usize) -> HintRecord<'a> {
        let e = self.entries.get(i);
        let ko = e.key_offset() as usize;
        let entry_bytes = std::mem::size_of::<FbEntry>();
        prefetch(self.entries.bytes(), (i + PREFETCH_AHEAD) * entry_bytes);
        prefetch(self.keys, ko + PREFETCH_AHEAD * 16);
        HintRecord {
            key: &self.keys[ko..ko + e.key_len() as usize],
            offset: e.offset(),
            value_len: e.value_len(),
            version: e.version(),
            kind: e.kind(),
            flags: e.flags(),
        }
    }
}

/// How many entries ahead [`HintView::get`] prefetches.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to start loading `bytes[at]`, if it exists.
#[inline]
pub(crate) fn prefetch(bytes: &[u8], at: usize) {
    if let Some(b) = bytes.get(at) {
        crate::index::prefetch_line(b);
    }
}

/// Validates a hint file for segment `segment_id` of `segment_len` bytes.
pub fn decode(bytes: &[u8], segment_id: u32, segment_len: u64) -> Result<HintView<'_>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("hint file too short ({} bytes)", bytes.len()));
    }
    if bytes[0..8] != HINT_MAGIC {
        return Err("bad hint magic".into());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(format!(
            "hint format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let mut lb = [0u8; 8];
    lb.copy_from_slice(&bytes[16..24]);
    let payload_len = u64::from_le_bytes(lb);
    let payload = &bytes[HEADER_LEN..];
    if payload.len() as u64 != payload_len {
        return Err(format!(
            "hint payload is {} bytes, header says {payload_len}",
            payload.len()
        ));
    }
    let actual = crc32fast::hash(payload);
    if actual != crc {
        return Err(format!(
            "hint CRC {crc:#010x} does not match {actual:#010x}"
        ));
    }
    let hint = root_as_hint(payload).map_err(|e| format!("hint flatbuffer invalid: {e}"))?;
    let meta = HintMeta {
        segment_id: hint.segment_id(),
        segment_len: hint.segment_len(),
        min_version: hint.min_version(),
        max_version: hint.max_version(),
    };
    if meta.segment_id != segment_id || meta.segment_len != segment_len {
        return Err(format!(
            "hint is for segment {} of {} bytes, the segment is {segment_id} of {segment_len} bytes",
            meta.segment_id, meta.segment_len
        ));
    }
    let entries = hint.entries().ok_or("hint has no entries vector")?;
    let keys = hint
        .keys()
        .map(|k| k.bytes())
        .ok_or("hint has no keys vector")?;
    let view = HintView {
        meta,
        entries,
        keys,
    };
    let mut prev: Option<&[u8]> = None;
    for i in 0..view.entries.len() {
        let e = view.entries.get(i);
        let (ko, kl) = (e.key_offset() as usize, e.key_len() as usize);
        if ko.checked_add(kl).is_none_or(|end| end > keys.len()) {
            return Err(format!("hint entry {i} key is outside the key area"));
        }
        if !matches!(e.kind(), 1 | 2) {
            return Err(format!("hint entry {i} has record kind {}", e.kind()));
        }
        let rec_len = record_len(kl, e.value_len() as usize, e.flags() & FLAG_EXPIRES != 0) as u64;
        let off = u64::from(e.offset());
        if off < SEGMENT_HEADER_LEN as u64 || off + rec_len > segment_len {
            return Err(format!("hint entry {i} points outside the segment"));
        }
        if e.version() < meta.min_version || e.version() > meta.max_version {
            return Err(format!(
                "hint entry {i} version is outside the segment's range"
            ));
        }
        let key = &keys[ko..ko + kl];
        if prev.is_some_and(|p| crate::index::key_cmp(p, key) != std::cmp::Ordering::Less) {
            return Err(format!("hint entry {i} is out of key order"));
        }
        prev = Some(key);
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &[u8], offset: u32, version: u64) -> HintRecord<'_> {
        HintRecord {
            key,
            offset,
            value_len: 3,
            version,
            kind: 1,
            flags: 0,
        }
    }

    fn meta() -> HintMeta {
        HintMeta {
            segment_id: 4,
            segment_len: 1000,
            min_version: 1,
            max_version: 9,
        }
    }

    #[test]
    fn round_trip_sorts_by_key() {
        let mut recs = vec![rec(b"b", 100, 2), rec(b"a", 32, 1), rec(b"c", 200, 9)];
        let bytes = encode(meta(), &mut recs);
        let view = decode(&bytes, 4, 1000).unwrap();
        assert_eq!(view.meta(), meta());
        let keys: Vec<_> = (0..view.len()).map(|i| view.get(i).key.to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(view.get(2), rec(b"c", 200, 9));
    }

    #[test]
    fn rejects_damage_and_mismatched_segments() {
        let mut recs = vec![rec(b"a", 32, 1), rec(b"b", 100, 2)];
        let bytes = encode(meta(), &mut recs);
        assert!(decode(&bytes, 5, 1000).is_err());
        assert!(decode(&bytes, 4, 999).is_err());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&b, 4, 1000).is_err(), "flip at {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], 4, 1000).is_err(),
                "cut at {cut} accepted"
            );
        }
        let mut out_of_segment = vec![rec(b"a", 990, 1)];
        assert!(decode(&encode(meta(), &mut out_of_segment), 4, 1000).is_err());
    }
}
