//! `GET key`: the value, or nil.

use crate::resp::proto::Reply;

command!("get", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    Ok(cx.get(&a[1])?.map_or(Reply::Null, |v| Reply::Bulk(v.value)))
});
