//! `SMEMBERS key`: every member, in byte order (a set in RESP3 terms, sent
//! as an array).

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("smembers", 2, ["readonly"], (1, 1, 1), |cx, a| {
    let Some(s) = cx.read_coll(&a[1], Kind::Set).await? else {
        return Ok(Reply::Array(vec![]));
    };
    Ok(Reply::Array(
        s.all()?.into_iter().map(|(m, _)| Reply::Bulk(m)).collect(),
    ))
});
