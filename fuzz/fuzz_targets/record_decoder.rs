//! Fuzz target: the log record decoder and the segment header decoder.
//!
//! Raw input: decoding never panics, and a record it accepts lies inside the
//! buffer. Structured input: a record built from the input round-trips, and
//! one flipped bit outside the length fields is always caught (CRC32 detects
//! every single-bit error).
#![no_main]

use flashkv::storage::format::{
    RecordKind, RecordSpec, SegmentHeader, decode_header, decode_record, encode_record,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_record(data) {
        assert!(r.len <= data.len());
        assert!(r.key.len() + r.value.len() <= r.len);
    }
    let _ = decode_header(data);
    let _ = SegmentHeader::decode(data);

    if data.len() < 12 {
        return;
    }
    let (ctl, rest) = data.split_at(12);
    let kind = if ctl[0] & 1 == 0 {
        RecordKind::Put
    } else {
        RecordKind::Delete
    };
    let split = usize::from(ctl[1]) % (rest.len() + 1);
    let (key, value) = rest.split_at(split);
    let value = if kind == RecordKind::Delete {
        &[][..]
    } else {
        value
    };
    let version = u64::from_le_bytes(ctl[4..12].try_into().expect("8 bytes"));
    let spec = RecordSpec {
        kind,
        flags: 0,
        version,
        txn_id: u64::from(ctl[2]),
        expires_at_ms: (ctl[0] & 2 != 0).then_some(version ^ 0x5555),
        key,
        value,
    };
    let mut buf = Vec::new();
    let n = encode_record(&mut buf, &spec);
    let r = decode_record(&buf).expect("an encoded record decodes");
    assert_eq!(
        (
            r.kind,
            r.version,
            r.txn_id,
            r.expires_at_ms,
            r.key,
            r.value,
            r.len
        ),
        (
            kind,
            version,
            spec.txn_id,
            spec.expires_at_ms,
            key,
            value,
            n
        )
    );
    // Flip one bit; the length fields (bytes 24..32) are left alone, since a
    // changed length moves the CRC's range rather than corrupting inside it.
    let pos = (usize::from(ctl[3]) * 7919) % n;
    if !(24..32).contains(&pos) {
        buf[pos] ^= 1 << (ctl[2] % 8);
        assert!(
            decode_record(&buf).is_err(),
            "flipped bit at {pos} not caught"
        );
    }
});
