//! The on-disk byte layout of segments and records: the one normative place.
//!
//! All integers are little-endian. docs/format.md repeats this for readers of
//! the files; this module is the definition, pinned by fixture tests.
//!
//! # Segment file (`<id:010>.seg`)
//!
//! ```text
//! offset size field
//!      0    8 magic "FLASHKV\0"
//!      8    4 format version (1)
//!     12    4 segment kind: 1 = log (written by the shard), 2 = merge output
//!     16    4 segment id
//!     20    4 shard id
//!     24    4 unsynced predecessor: the id of the log segment before this
//!             one if its seal was not yet durable when this one was
//!             created (0 = none; see below)
//!     28    4 CRC32 of bytes 0..28
//!     32      records, back to back, until the end of the file
//! ```
//!
//! # Record
//!
//! ```text
//! offset size field
//!      0    4 CRC32 (crc32fast, IEEE) of every following byte of the record
//!      4    1 kind: 1 put, 2 delete, 3 txn prepare, 4 txn commit, 5 txn abort,
//!             6 seal
//!      5    1 flags: bit 0 GROUP_CONT (the atomic group continues with the
//!             next record), bit 1 EXPIRES (an expiry follows the header),
//!             bit 2 REDO_DELETE (a txn prepare record that deletes its
//!             key); other bits 0
//!      6    2 reserved, 0
//!      8    8 version (commit version of the write)
//!     16    8 transaction id (0 = none)
//!     24    4 key length K
//!     28    4 value length V
//!     32  [8] expiry, Unix milliseconds, only if EXPIRES is set
//!      …    K key
//!      …    V value
//! ```
//!
//! Every segment except the newest log segment ends with a *seal* record
//! (kind 6, empty key and value, version 0): a sealed segment cut anywhere,
//! even exactly between two records, is then recognised as damaged instead
//! of silently losing its tail.
//!
//! Under the `interval` and `none` sync policies a log segment's seal is
//! made durable in the background while writes go on into the next
//! segment, whose header then names it (bytes 24..28). Until the header is
//! rewritten without it (once the seal is durable), a crash may leave that
//! predecessor torn as well: start-up then cuts it like a torn tail and
//! drops the records of the segment that names it, which were written
//! after the lost ones, so that what survives is a prefix of the log.
//!
//! A *txn prepare* record (kind 3) is a redo record of a cross-shard
//! commit: every participant writes one for every write of the other
//! participants in the same atomic group as its own part, at the commit
//! version. Recovery re-applies those newer than the persisted settled floor
//! to the shard owning the key if that shard lacks them (see
//! `txn::apply_redo`).
//!
//! A record is valid only if its CRC matches, its kind is known, its reserved
//! bits are zero and it fits in the file. Records whose GROUP_CONT flag is set
//! belong to an atomic group that ends with the next record without it; a
//! group cut short by the end of the log is discarded whole on recovery.

use std::fmt;

/// Segment file magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"FLASHKV\0";
/// Format version written in segment and hint headers.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Size of a record header (without the optional expiry).
pub const RECORD_HEADER_LEN: usize = 32;
/// Size of the optional expiry field.
pub const EXPIRY_LEN: usize = 8;
/// Largest key the format (and the index) can hold: 2^24 - 1 bytes.
pub const MAX_KEY_LEN: usize = (1 << 24) - 1;

/// Flag: the atomic group continues with the next record.
pub const FLAG_GROUP_CONT: u8 = 1;
/// Flag: an 8-byte expiry follows the header.
pub const FLAG_EXPIRES: u8 = 2;
const _: () = assert!(
    FLAG_EXPIRES == crate::index::ENTRY_EXPIRES,
    "the index counts the keys with an expiry by this flag"
);
/// Flag: this txn prepare (redo) record deletes its key.
pub const FLAG_REDO_DELETE: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_GROUP_CONT | FLAG_EXPIRES | FLAG_REDO_DELETE;

/// What a record means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// Sets key to value.
    Put = 1,
    /// Removes key (a tombstone).
    Delete = 2,
    /// A redo record of a cross-shard commit, written by each participant.
    TxnPrepare = 3,
    /// The commit decision of a transaction.
    TxnCommit = 4,
    /// The abort decision of a transaction.
    TxnAbort = 5,
    /// The last record of a sealed segment.
    Seal = 6,
}

impl RecordKind {
    /// Parses the kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => RecordKind::Put,
            2 => RecordKind::Delete,
            3 => RecordKind::TxnPrepare,
            4 => RecordKind::TxnCommit,
            5 => RecordKind::TxnAbort,
            6 => RecordKind::Seal,
            _ => return None,
        })
    }
}

/// Kind of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// Appended to by the shard's writer; only the newest may have a torn tail.
    Log = 1,
    /// Written whole by merge and installed only once complete and synced.
    Merged = 2,
}

/// The parsed segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Log or merge output.
    pub kind: SegmentKind,
    /// Segment id (also in the file name).
    pub segment_id: u32,
    /// Shard that owns the segment.
    pub shard_id: u32,
    /// The log segment before this one, if its seal was not yet durable
    /// when this one was created (see the module docs).
    pub unsynced_predecessor: Option<u32>,
}

impl SegmentHeader {
    /// Encodes the 32-byte header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(self.kind as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.segment_id.to_le_bytes());
        b[20..24].copy_from_slice(&self.shard_id.to_le_bytes());
        b[24..28].copy_from_slice(&self.unsynced_predecessor.unwrap_or(0).to_le_bytes());
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(format!(
                "file too short for a segment header ({} bytes)",
                b.len()
            ));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(format!(
                "bad magic {:02x?}, expected {:02x?}",
                &b[0..8],
                SEGMENT_MAGIC
            ));
        }
        let crc = le_u32(&b[28..32]);
        let actual = crc32fast::hash(&b[0..28]);
        if crc != actual {
            return Err(format!(
                "header CRC {crc:#010x} does not match {actual:#010x}"
            ));
        }
        let version = le_u32(&b[8..12]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        let kind = match le_u32(&b[12..16]) {
            1 => SegmentKind::Log,
            2 => SegmentKind::Merged,
            k => return Err(format!("unknown segment kind {k}")),
        };
        Ok(SegmentHeader {
            kind,
            segment_id: le_u32(&b[16..20]),
            shard_id: le_u32(&b[20..24]),
            unsynced_predecessor: Some(le_u32(&b[24..28])).filter(|&id| id != 0),
        })
    }
}

/// A record to encode.
#[derive(Debug, Clone, Copy)]
pub struct RecordSpec<'a> {
    /// Record kind.
    pub kind: RecordKind,
    /// GROUP_CONT and similar flags (EXPIRES is derived from `expires_at_ms`).
    pub flags: u8,
    /// Commit version.
    pub version: u64,
    /// Transaction id, 0 for none.
    pub txn_id: u64,
    /// Expiry in Unix milliseconds, if any.
    pub expires_at_ms: Option<u64>,
    /// Key bytes.
    pub key: &'a [u8],
    /// Value bytes (empty for a delete).
    pub value: &'a [u8],
}

/// Length of the seal record that ends every sealed segment.
pub const SEAL_LEN: usize = RECORD_HEADER_LEN;

/// Appends the seal record.
pub fn encode_seal(out: &mut Vec<u8>) {
    encode_record(
        out,
        &RecordSpec {
            kind: RecordKind::Seal,
            flags: 0,
            version: 0,
            txn_id: 0,
            expires_at_ms: None,
            key: &[],
            value: &[],
        },
    );
}

/// Encoded length of a record.
pub fn record_len(key_len: usize, value_len: usize, has_expiry: bool) -> usize {
    RECORD_HEADER_LEN + if has_expiry { EXPIRY_LEN } else { 0 } + key_len + value_len
}

/// Appends the encoded record to `out` and returns its length.
///
/// The caller has checked the lengths against the configured limits; lengths
/// beyond what the format can hold are a bug, not bad input.
pub fn encode_record(out: &mut Vec<u8>, r: &RecordSpec<'_>) -> usize {
    let start = out.len();
    let mut flags = r.flags & !FLAG_EXPIRES;
    if r.expires_at_ms.is_some() {
        flags |= FLAG_EXPIRES;
    }
    let klen = u32::try_from(r.key.len()).expect("key length checked against MAX_KEY_LEN");
    let vlen = u32::try_from(r.value.len()).expect("value length checked against the segment size");
    out.extend_from_slice(&[0u8; 4]);
    out.push(r.kind as u8);
    out.push(flags);
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&r.version.to_le_bytes());
    out.extend_from_slice(&r.txn_id.to_le_bytes());
    out.extend_from_slice(&klen.to_le_bytes());
    out.extend_from_slice(&vlen.to_le_bytes());
    if let Some(e) = r.expires_at_ms {
        out.extend_from_slice(&e.to_le_bytes());
    }
    out.extend_from_slice(r.key);
    out.extend_from_slice(r.value);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// A decoded record, borrowing its key and value from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Record kind.
    pub kind: RecordKind,
    /// Flags byte as stored.
    pub flags: u8,
    /// Commit version.
    pub version: u64,
    /// Transaction id (0 = none).
    pub txn_id: u64,
    /// Expiry in Unix milliseconds, if any.
    pub expires_at_ms: Option<u64>,
    /// Key bytes.
    pub key: &'a [u8],
    /// Value bytes.
    pub value: &'a [u8],
    /// Total encoded length.
    pub len: usize,
}

impl Record<'_> {
    /// Whether the atomic group continues with the next record.
    pub fn group_continues(&self) -> bool {
        self.flags & FLAG_GROUP_CONT != 0
    }
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the record does (a torn tail, or the end).
    Truncated {
        /// Bytes the record needs, as far as the header tells.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The header is not a record header (unknown kind, reserved bits set).
    BadHeader(String),
    /// The CRC does not match.
    BadCrc {
        /// CRC stored in the record.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => {
                write!(f, "record needs {needed} bytes but only {available} remain")
            }
            DecodeError::BadHeader(s) => write!(f, "bad record header: {s}"),
            DecodeError::BadCrc { stored, computed } => write!(
                f,
                "record CRC {stored:#010x} does not match computed {computed:#010x}"
            ),
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The fixed header fields, parsed without checking the CRC.
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    /// Record kind.
    pub kind: RecordKind,
    /// Flags.
    pub flags: u8,
    /// Version.
    pub version: u64,
    /// Transaction id.
    pub txn_id: u64,
    /// Key length.
    pub key_len: usize,
    /// Value length.
    pub value_len: usize,
}

impl RecordHeader {
    /// Total length of the record this header starts.
    pub fn record_len(&self) -> usize {
        record_len(self.key_len, self.value_len, self.flags & FLAG_EXPIRES != 0)
    }

    /// Where the key starts, from the start of the record: after the
    /// header and the expiry, if any.
    pub fn key_offset(&self) -> usize {
        RECORD_HEADER_LEN
            + if self.flags & FLAG_EXPIRES != 0 {
                EXPIRY_LEN
            } else {
                0
            }
    }
}

/// Parses the fixed header at the start of `buf` (no CRC check).
pub fn decode_header(buf: &[u8]) -> Result<RecordHeader, DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(DecodeError::Truncated {
            needed: RECORD_HEADER_LEN,
            available: buf.len(),
        });
    }
    let kind = RecordKind::from_u8(buf[4])
        .ok_or_else(|| DecodeError::BadHeader(format!("unknown record kind {}", buf[4])))?;
    let flags = buf[5];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::BadHeader(format!(
            "unknown flags {flags:#04x}"
        )));
    }
    if buf[6] != 0 || buf[7] != 0 {
        return Err(DecodeError::BadHeader("reserved bytes are not zero".into()));
    }
    let key_len = le_u32(&buf[24..28]) as usize;
    if key_len > MAX_KEY_LEN {
        return Err(DecodeError::BadHeader(format!(
            "key length {key_len} exceeds the format limit"
        )));
    }
    Ok(RecordHeader {
        kind,
        flags,
        version: le_u64(&buf[8..16]),
        txn_id: le_u64(&buf[16..24]),
        key_len,
        value_len: le_u32(&buf[28..32]) as usize,
    })
}

/// Clears GROUP_CONT of the one whole record in `rec` and updates its CRC
/// (merge copies records one by one, so a copy never continues a group).
pub fn clear_group_cont(rec: &mut [u8]) {
    if rec[5] & FLAG_GROUP_CONT == 0 {
        return;
    }
    rec[5] &= !FLAG_GROUP_CONT;
    let crc = crc32fast::hash(&rec[4..]);
    rec[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes and verifies the record at the start of `buf`.
pub fn decode_record(buf: &[u8]) -> Result<Record<'_>, DecodeError> {
    let h = decode_header(buf)?;
    let len = h.record_len();
    if buf.len() < len {
        return Err(DecodeError::Truncated {
            needed: len,
            available: buf.len(),
        });
    }
    let stored = le_u32(&buf[0..4]);
    let computed = crc32fast::hash(&buf[4..len]);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let pos = h.key_offset();
    let expires_at_ms = (h.flags & FLAG_EXPIRES != 0).then(|| le_u64(&buf[RECORD_HEADER_LEN..pos]));
    let key = &buf[pos..pos + h.key_len];
    let value = &buf[pos + h.key_len..len];
    Ok(Record {
        kind: h.kind,
        flags: h.flags,
        version: h.version,
        txn_id: h.txn_id,
        expires_at_ms,
        key,
        value,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(key: &'a [u8], value: &'a [u8]) -> RecordSpec<'a> {
        RecordSpec {
            kind: RecordKind::Put,
            flags: 0,
            version: 7,
            txn_id: 0,
            expires_at_ms: None,
            key,
            value,
        }
    }

    #[test]
    fn record_round_trip_with_and_without_expiry() {
        let mut buf = Vec::new();
        let n1 = encode_record(&mut buf, &spec(b"key", b"value"));
        let mut s = spec(b"k2", b"");
        s.kind = RecordKind::Delete;
        s.expires_at_ms = Some(123_456);
        s.flags = FLAG_GROUP_CONT;
        let n2 = encode_record(&mut buf, &s);
        assert_eq!(n1, record_len(3, 5, false));
        assert_eq!(n2, record_len(2, 0, true));
        let r1 = decode_record(&buf).unwrap();
        assert_eq!(
            (r1.key, r1.value, r1.version, r1.len),
            (&b"key"[..], &b"value"[..], 7, n1)
        );
        let r2 = decode_record(&buf[n1..]).unwrap();
        assert_eq!(r2.kind, RecordKind::Delete);
        assert_eq!(r2.expires_at_ms, Some(123_456));
        assert!(r2.group_continues());
        assert_eq!(r2.key, b"k2");
    }

    /// Pins the byte layout: a change here is a format change and needs a new
    /// FORMAT_VERSION.
    #[test]
    fn record_layout_is_pinned() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &spec(b"ab", b"xyz"));
        let expected_tail: &[u8] = &[
            1, 0, 0, 0, // kind put, flags, reserved
            7, 0, 0, 0, 0, 0, 0, 0, // version
            0, 0, 0, 0, 0, 0, 0, 0, // txn id
            2, 0, 0, 0, // key len
            3, 0, 0, 0, // value len
            b'a', b'b', b'x', b'y', b'z',
        ];
        assert_eq!(&buf[4..], expected_tail);
        assert_eq!(&buf[0..4], &crc32fast::hash(expected_tail).to_le_bytes());
        let h = SegmentHeader {
            kind: SegmentKind::Log,
            segment_id: 3,
            shard_id: 1,
            unsynced_predecessor: None,
        };
        let hb = h.encode();
        assert_eq!(&hb[0..8], b"FLASHKV\0");
        assert_eq!(
            &hb[8..24],
            &[1, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(SegmentHeader::decode(&hb).unwrap(), h);
        assert_eq!(&hb[24..28], &[0, 0, 0, 0]);
        let h = SegmentHeader {
            unsynced_predecessor: Some(2),
            ..h
        };
        let hb = h.encode();
        assert_eq!(&hb[24..28], &[2, 0, 0, 0]);
        assert_eq!(SegmentHeader::decode(&hb).unwrap(), h);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_rejected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, &spec(b"key", b"some value"));
        for cut in 0..buf.len() {
            assert!(decode_record(&buf[..cut]).is_err(), "cut at {cut} decoded");
        }
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode_record(&b).is_err(),
                    "flip of byte {i} bit {bit} decoded"
                );
            }
        }
    }

    #[test]
    fn zeroes_are_not_a_record() {
        assert!(matches!(
            decode_record(&[0u8; 64]),
            Err(DecodeError::BadHeader(_))
        ));
        let mut hb = SegmentHeader {
            kind: SegmentKind::Merged,
            segment_id: 1,
            shard_id: 0,
            unsynced_predecessor: None,
        }
        .encode();
        hb[9] ^= 1;
        assert!(SegmentHeader::decode(&hb).is_err());
    }
}
