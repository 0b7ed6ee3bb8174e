//! `TYPE key`: `string` or `none` (strings are the only type so far).

use crate::resp::proto::Reply;

command!("type", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    Ok(Reply::Simple(if cx.get(&a[1])?.is_some() {
        "string"
    } else {
        "none"
    }))
});
