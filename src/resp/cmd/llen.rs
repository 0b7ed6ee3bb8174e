//! `LLEN key`: the length of the list.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("llen", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let l = cx.read_coll(&a[1], Kind::List).await?;
    Ok(Reply::Int(l.map_or(0, |l| l.meta.len as i64)))
});
