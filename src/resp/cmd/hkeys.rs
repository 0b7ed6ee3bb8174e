//! `HKEYS key`: every field, in order.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hkeys", 2, ["readonly"], (1, 1, 1), |cx, a| {
    let Some(h) = cx.read_coll(&a[1], Kind::Hash).await? else {
        return Ok(Reply::Array(vec![]));
    };
    Ok(Reply::Array(
        h.all()?.into_iter().map(|(f, _)| Reply::Bulk(f)).collect(),
    ))
});
