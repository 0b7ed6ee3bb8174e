//! `STRLEN key`: length of the value, 0 if absent.

use crate::resp::proto::Reply;

command!("strlen", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    Ok(Reply::Int(
        cx.get(&a[1])?.map_or(0, |v| v.value.len() as i64),
    ))
});
