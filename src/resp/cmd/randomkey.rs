//! `RANDOMKEY`: a random live key (the first at or after a random point of
//! a random shard's key space, wrapping around), or nil.

use std::ops::Bound;

use crate::resp::cmd::common::Keys;
use crate::resp::error_reply;
use crate::resp::proto::Reply;
use crate::storage::store::now_ms;

command!("randomkey", 1, ["readonly"], (0, 0, 0), |cx, a| {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        .wrapping_mul(2654435761);
    let point = seed.to_be_bytes().to_vec();
    let now = now_ms();
    for (lower, upper) in [
        (Bound::Included(point.clone()), Bound::Unbounded),
        (Bound::Unbounded, Bound::Excluded(point)),
    ] {
        let mut scan = Keys::new(cx.router(), lower, upper);
        while let Some((key, v, _)) = scan.next_key().map_err(error_reply)? {
            if v.expires_at_ms.is_none_or(|t| t > now) {
                return Ok(Reply::Bulk(key));
            }
        }
    }
    Ok(Reply::Null)
});
