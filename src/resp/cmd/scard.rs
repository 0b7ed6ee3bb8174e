//! `SCARD key`: the number of members.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("scard", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let s = cx.read_coll(&a[1], Kind::Set).await?;
    Ok(Reply::Int(s.map_or(0, |s| s.meta.len as i64)))
});
