//! `HGETALL key`: every field and value, in field order (a map in RESP3).

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hgetall", 2, ["readonly"], (1, 1, 1), |cx, a| {
    let Some(h) = cx.read_coll(&a[1], Kind::Hash).await? else {
        return Ok(Reply::Map(vec![]));
    };
    Ok(Reply::Map(
        h.all()?
            .into_iter()
            .map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v)))
            .collect(),
    ))
});
