//! `LRANGE key start stop`: the elements from start to stop (inclusive;
//! negative indexes count from the end).

use crate::resp::cmd::lists::{range, slice};
use crate::resp::coll::Kind;
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("lrange", 4, ["readonly"], (1, 1, 1), |cx, a| {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    let Some(l) = cx.read_coll(&a[1], Kind::List).await? else {
        return Ok(Reply::Array(vec![]));
    };
    let Some((from, to)) = range(start, stop, l.meta.len as i64) else {
        return Ok(Reply::Array(vec![]));
    };
    Ok(Reply::Array(
        slice(&l, from, to)?.into_iter().map(Reply::Bulk).collect(),
    ))
});
