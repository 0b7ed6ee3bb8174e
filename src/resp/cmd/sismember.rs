//! `SISMEMBER key member`: 1 if a member, else 0.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("sismember", 3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let Some(s) = cx.read_coll(&a[1], Kind::Set).await? else {
        return Ok(Reply::Int(0));
    };
    Ok(Reply::Int(i64::from(s.get(&a[2])?.is_some())))
});
