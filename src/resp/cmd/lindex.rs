//! `LINDEX key index`: the element at index (negative from the end), or nil.

use crate::resp::coll::{Kind, pos_key};
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("lindex", 3, ["readonly"], (1, 1, 1), |cx, a| {
    let i = int_arg(&a[2])?;
    let Some(l) = cx.read_coll(&a[1], Kind::List).await? else {
        return Ok(Reply::Null);
    };
    let len = l.meta.len as i64;
    let i = if i < 0 { i + len } else { i };
    if i < 0 || i >= len {
        return Ok(Reply::Null);
    }
    Ok(l.get(&pos_key(l.meta.head + i))?
        .map_or(Reply::Null, Reply::Bulk))
});
