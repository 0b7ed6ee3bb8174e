//! `ECHO message`.

use crate::resp::proto::Reply;

command!("echo", 2, ["fast", "stale"], (0, 0, 0), |cx, a| {
    Ok(Reply::Bulk(a[1].clone()))
});
