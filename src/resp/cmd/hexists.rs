//! `HEXISTS key field`: 1 if the field exists, else 0.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hexists", 3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let Some(h) = cx.read_coll(&a[1], Kind::Hash).await? else {
        return Ok(Reply::Int(0));
    };
    Ok(Reply::Int(i64::from(h.get(&a[2])?.is_some())))
});
