//! `KEYS pattern`: every key matching a glob pattern (strings and
//! collections). A literal prefix of the pattern bounds the scan.

use crate::resp::cmd::common::Keys;
use crate::resp::error_reply;
use crate::resp::glob::{literal_prefix, matches};
use crate::resp::proto::Reply;
use crate::shard::router::scan_bounds;
use crate::storage::store::now_ms;

command!("keys", 2, ["readonly"], (0, 0, 0), |cx, a| {
    let pattern = &a[1];
    let (lower, upper) = scan_bounds(b"", b"", &literal_prefix(pattern));
    let mut keys = Keys::new(cx.router(), lower, upper);
    let now = now_ms();
    let mut out = Vec::new();
    while let Some((key, v, _)) = keys.next_key().map_err(error_reply)? {
        if v.expires_at_ms.is_some_and(|t| t <= now) {
            continue;
        }
        if matches(pattern, &key) {
            out.push(Reply::Bulk(key));
        }
    }
    Ok(Reply::Array(out))
});
