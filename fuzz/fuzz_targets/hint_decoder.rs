//! Fuzz target: the hint file decoder.
//!
//! Raw input, then the input as the payload behind a valid header (magic,
//! version, CRC and length right) so that the flatbuffer verifier and the
//! entry checks see arbitrary bytes, then a valid hint built from the input
//! (which must round-trip) with one payload byte changed and the CRC fixed.
//! Decoding never panics, and every entry of an accepted hint lies inside
//! the segment with its key inside the key area, keys strictly increasing.
#![no_main]

use flashkv::storage::format::{FLAG_EXPIRES, FORMAT_VERSION, SEGMENT_HEADER_LEN, record_len};
use flashkv::storage::hint::{self, HINT_MAGIC, HintMeta, HintRecord};

const SEGMENT_LEN: u64 = 1 << 20;

fn check(file: &[u8]) {
    let Ok(view) = hint::decode(file, 7, SEGMENT_LEN) else {
        return;
    };
    let mut prev: Option<&[u8]> = None;
    for i in 0..view.len() {
        let r = view.get(i);
        let len = record_len(
            r.key.len(),
            r.value_len as usize,
            r.flags & FLAG_EXPIRES != 0,
        );
        assert!(u64::from(r.offset) >= SEGMENT_HEADER_LEN as u64);
        assert!(u64::from(r.offset) + len as u64 <= SEGMENT_LEN);
        if let Some(p) = prev {
            assert!(flashkv::index::key_cmp(p, r.key).is_lt());
        }
        prev = Some(r.key);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check(data);
    let mut file = Vec::with_capacity(24 + data.len());
    file.extend_from_slice(&HINT_MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    file.extend_from_slice(&(data.len() as u64).to_le_bytes());
    file.extend_from_slice(data);
    check(&file);

    if data.len() < 8 {
        return;
    }
    let mut keys: Vec<&[u8]> = data[8..]
        .chunks(1 + usize::from(data[4] % 8))
        .take(usize::from(data[0] % 32))
        .collect();
    keys.sort_by(|a, b| flashkv::index::key_cmp(a, b));
    keys.dedup();
    let mut records: Vec<HintRecord<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| HintRecord {
            key: k,
            offset: (SEGMENT_HEADER_LEN + 64 * i) as u32,
            value_len: u32::from(data[5] % 16),
            version: i as u64 + 1,
            kind: 1 + (data[6] >> (i % 8)) % 2,
            flags: 0,
        })
        .collect();
    let meta = HintMeta {
        segment_id: 7,
        segment_len: SEGMENT_LEN,
        min_version: 1,
        max_version: records.len() as u64,
    };
    let mut file = hint::encode(meta, &mut records);
    let view = hint::decode(&file, 7, SEGMENT_LEN).expect("an encoded hint decodes");
    assert_eq!(view.len(), records.len());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(view.get(i), *r);
    }
    let pos = 24 + usize::from(u16::from_le_bytes([data[1], data[2]])) % (file.len() - 24);
    file[pos] ^= data[3] | 1;
    let crc = crc32fast::hash(&file[24..]);
    file[12..16].copy_from_slice(&crc.to_le_bytes());
    check(&file);
});
