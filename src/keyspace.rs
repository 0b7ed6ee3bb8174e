//! The reserved key namespace that holds the Redis data types (hashes,
//! lists, sets, sorted sets), and how its keys route to shards.
//!
//! Redis strings are plain FlashKV keys. A Redis collection `k` is a
//! metadata record plus one record per field, member or element, all in a
//! namespace that user keys cannot enter (every API edge refuses keys that
//! begin with [`RESERVED`]):
//!
//! ```text
//! meta     FF FE 'm' <k>                              -> kind, generation, length, ...
//! element  FF FE 's' <len(k): u32 BE> <k> <gen: u64 BE> <suffix>
//! ```
//!
//! Every record of `k` routes by `k` itself ([`routing_key`]), so a
//! collection and all its elements live on the shard that owns `k`, and a
//! read or write of one is a single-shard operation. The generation is new
//! each time a collection is created: deleting or expiring `k` removes only
//! its metadata record (O(1), atomic), and elements of an older generation
//! are invisible from then on and are reclaimed in the background.

/// Every internal key begins with these bytes.
pub const RESERVED: &[u8] = b"\xff\xfe";
/// The first key after the reserved namespace.
pub const RESERVED_END: &[u8] = b"\xff\xff";
/// Metadata records: `RESERVED` + this tag + the Redis key.
pub const META: u8 = b'm';
/// Element records: `RESERVED` + this tag + length-prefixed key + generation.
pub const ELEM: u8 = b's';

/// Whether `key` is in the reserved namespace.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED)
}

/// The key whose shard owns `key`: the Redis key for internal records,
/// `key` itself otherwise.
pub fn routing_key(key: &[u8]) -> &[u8] {
    if !is_reserved(key) || key.len() < 3 {
        return key;
    }
    match key[2] {
        META => &key[3..],
        ELEM if key.len() >= 7 => {
            let n = u32::from_be_bytes([key[3], key[4], key[5], key[6]]) as usize;
            key.get(7..7 + n).unwrap_or(key)
        }
        _ => key,
    }
}

/// The metadata key of Redis key `k`.
pub fn meta_key(k: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(3 + k.len());
    m.extend_from_slice(RESERVED);
    m.push(META);
    m.extend_from_slice(k);
    m
}

/// The Redis key of a metadata key (None: not one).
pub fn meta_owner(key: &[u8]) -> Option<&[u8]> {
    (is_reserved(key) && key.get(2) == Some(&META)).then(|| &key[3..])
}

/// Adds to `ops`, writes of string keys, the deletion of any Redis
/// collection of the same names, so that one atomic batch replaces or
/// deletes a key of any type, as Redis' SET and DEL do. Each such delete
/// routes with its key (same shard), and the store writes nothing for the
/// delete of an absent key, so where there is no collection it costs a
/// lookup. The collection's elements become garbage for the reclaimer.
pub fn replace_collections(ops: &mut Vec<crate::storage::Op>) {
    let metas: Vec<crate::storage::Op> = ops
        .iter()
        .filter(|op| !is_reserved(op.key()))
        .map(|op| crate::storage::Op::Delete {
            key: meta_key(op.key()),
        })
        .collect();
    ops.extend(metas);
}

/// The first and the after-last metadata keys.
pub fn meta_range() -> (Vec<u8>, Vec<u8>) {
    let mut lo = RESERVED.to_vec();
    lo.push(META);
    let mut hi = RESERVED.to_vec();
    hi.push(META + 1);
    (lo, hi)
}

/// The prefix every element of generation `generation` of `k` starts with.
pub fn elem_prefix(k: &[u8], generation: u64) -> Vec<u8> {
    let mut p = Vec::with_capacity(15 + k.len());
    p.extend_from_slice(RESERVED);
    p.push(ELEM);
    p.extend_from_slice(&(k.len() as u32).to_be_bytes());
    p.extend_from_slice(k);
    p.extend_from_slice(&generation.to_be_bytes());
    p
}

/// The first and the after-last element keys, over every collection.
pub fn elem_range() -> (Vec<u8>, Vec<u8>) {
    let mut lo = RESERVED.to_vec();
    lo.push(ELEM);
    let mut hi = RESERVED.to_vec();
    hi.push(ELEM + 1);
    (lo, hi)
}

/// The Redis key and generation an element key belongs to.
pub fn elem_owner(key: &[u8]) -> Option<(&[u8], u64)> {
    if !is_reserved(key) || key.get(2) != Some(&ELEM) || key.len() < 7 {
        return None;
    }
    let n = u32::from_be_bytes([key[3], key[4], key[5], key[6]]) as usize;
    let k = key.get(7..7 + n)?;
    let g = key.get(7 + n..7 + n + 8)?;
    Some((k, u64::from_be_bytes(g.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_keys_route_by_their_redis_key() {
        let k = b"user:1";
        assert_eq!(routing_key(k), k);
        assert_eq!(routing_key(&meta_key(k)), k);
        let mut e = elem_prefix(k, 7);
        e.extend_from_slice(b"field");
        assert_eq!(routing_key(&e), k);
        assert_eq!(elem_owner(&e), Some((&k[..], 7)));
        assert_eq!(meta_owner(&meta_key(k)), Some(&k[..]));
        assert_eq!(meta_owner(&e), None);
        // Truncated internal keys route as themselves, never panic.
        assert_eq!(
            routing_key(b"\xff\xfes\0\0\0\x09ab"),
            b"\xff\xfes\0\0\0\x09ab"
        );
        assert_eq!(routing_key(b"\xff\xfe"), b"\xff\xfe");
    }

    #[test]
    fn namespaces_nest_in_the_reserved_range() {
        let (mlo, mhi) = meta_range();
        let (elo, ehi) = elem_range();
        for k in [meta_key(b"a"), meta_key(b"\xff\xff")] {
            assert!(is_reserved(&k) && k >= mlo && k < mhi);
        }
        let e = elem_prefix(b"a", u64::MAX);
        assert!(e >= elo && e < ehi && is_reserved(&e));
        assert!(mhi.as_slice() <= RESERVED_END && ehi.as_slice() <= RESERVED_END);
        assert!(!is_reserved(b"\xff\xff") && !is_reserved(b"\xff"));
    }
}
