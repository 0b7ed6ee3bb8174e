//! `HVALS key`: every value, in field order.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hvals", 2, ["readonly"], (1, 1, 1), |cx, a| {
    let Some(h) = cx.read_coll(&a[1], Kind::Hash).await? else {
        return Ok(Reply::Array(vec![]));
    };
    Ok(Reply::Array(
        h.all()?.into_iter().map(|(_, v)| Reply::Bulk(v)).collect(),
    ))
});
