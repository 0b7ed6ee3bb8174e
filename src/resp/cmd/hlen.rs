//! `HLEN key`: the number of fields.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hlen", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let h = cx.read_coll(&a[1], Kind::Hash).await?;
    Ok(Reply::Int(h.map_or(0, |h| h.meta.len as i64)))
});
