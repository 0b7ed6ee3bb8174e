//! `HSTRLEN key field`: the length of the value, 0 if missing.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hstrlen", 3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let Some(h) = cx.read_coll(&a[1], Kind::Hash).await? else {
        return Ok(Reply::Int(0));
    };
    Ok(Reply::Int(h.get(&a[2])?.map_or(0, |v| v.len() as i64)))
});
