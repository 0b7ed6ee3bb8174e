//! `SMEMBERS key`: every member, in byte order (a RESP3 set; an array in
//! RESP2).

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("smembers", 2, ["readonly"], (1, 1, 1), |cx, a| {
    let Some(s) = cx.read_coll(&a[1], Kind::Set).await? else {
        return Ok(Reply::Set(vec![]));
    };
    Ok(Reply::Set(
        s.all()?.into_iter().map(|(m, _)| Reply::Bulk(m)).collect(),
    ))
});
