//! `DBSIZE`: the number of keys, strings and collections (the elements of
//! a collection are not keys of their own).

use std::ops::Bound;

use crate::keyspace;
use crate::resp::error_reply;
use crate::resp::proto::Reply;

command!("dbsize", 1, ["readonly", "fast"], (0, 0, 0), |cx, a| {
    let stats = cx.router().stats().await.map_err(error_reply)?;
    let records: i64 = stats.iter().map(|s| s.keys as i64).sum();
    let (lo, hi) = keyspace::elem_range();
    let mut elems = cx
        .router()
        .scan_raw(Bound::Included(lo), Bound::Excluded(hi), false, true);
    let mut n = 0i64;
    while elems.next_item().map_err(error_reply)?.is_some() {
        n += 1;
    }
    Ok(Reply::Int((records - n).max(0)))
});
