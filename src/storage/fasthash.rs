//! A fast hasher for the byte-key maps of the write path, the lock table
//! and the hint builder: xxh3 over each written slice, instead of the
//! standard library's SipHash. (The index hashes keys with xxh3 already, so
//! SipHash's resistance to chosen colliding keys would protect these maps
//! and not the table every key goes into.)

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`KeyHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// A `HashSet` with [`KeyHasher`].
pub type FastSet<K> = HashSet<K, BuildHasherDefault<KeyHasher>>;

/// Hashes each `write` with xxh3, seeded by what came before.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    fn write_usize(&mut self, n: usize) {
        // The length prefix of a slice: mixed in cheaply.
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_keys_hash_apart_and_maps_work() {
        let mut m: FastMap<&[u8], u32> = FastMap::default();
        for (i, k) in [&b"a"[..], b"ab", b"ba", b"", b"\0"].iter().enumerate() {
            m.insert(k, i as u32);
        }
        assert_eq!(m.len(), 5);
        assert_eq!(m[&b"ab"[..]], 1);
        let h = |k: &[u8]| {
            let mut s = KeyHasher::default();
            std::hash::Hash::hash(k, &mut s);
            s.finish()
        };
        assert_ne!(h(b"ab"), h(b"ba"));
        assert_ne!(h(b""), h(b"\0"));
    }
}
