//! `KEYS pattern`: every key matching a glob pattern (an ordered scan
//! bounded by the pattern's literal prefix).

use crate::resp::error_reply;
use crate::resp::glob::{literal_prefix, matches};
use crate::resp::proto::Reply;
use crate::shard::router::scan_bounds;
use crate::storage::store::now_ms;

command!("keys", 2, ["readonly"], (0, 0, 0), |cx, a| {
    let pattern = &a[1];
    let (lower, upper) = scan_bounds(b"", b"", &literal_prefix(pattern));
    let mut scan = cx.router().scan(lower, upper, false, true);
    let now = now_ms();
    let mut out = Vec::new();
    while let Some((key, v)) = scan.next_item().map_err(error_reply)? {
        if v.expires_at_ms.is_some_and(|t| t <= now) {
            continue;
        }
        if matches(pattern, &key) {
            out.push(Reply::Bulk(key));
        }
    }
    Ok(Reply::Array(out))
});
