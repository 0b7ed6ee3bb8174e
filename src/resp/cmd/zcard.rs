//! `ZCARD key`: the number of members.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("zcard", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let z = cx.read_coll(&a[1], Kind::ZSet).await?;
    Ok(Reply::Int(z.map_or(0, |z| z.meta.len as i64)))
});
