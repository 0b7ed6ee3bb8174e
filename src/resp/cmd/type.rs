//! `TYPE key`: string, hash, list, set, zset or none.

use crate::resp::proto::Reply;

command!("type", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    Ok(Reply::Simple(cx.lookup(&a[1])?.type_name()))
});
