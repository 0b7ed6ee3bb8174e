//! `HGET key field`: the value, or nil.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hget", 3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let Some(h) = cx.read_coll(&a[1], Kind::Hash).await? else {
        return Ok(Reply::Null);
    };
    Ok(h.get(&a[2])?.map_or(Reply::Null, Reply::Bulk))
});
