//! `LSET key index element`: replaces the element at index.

use crate::resp::coll::{Kind, pos_key};
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("lset", 4, ["write", "denyoom"], (1, 1, 1), |cx, a| {
    let i = int_arg(&a[2])?;
    cx.mutate(&a[1], Kind::List, {
        let args = a.to_vec();
        move |l| {
            if l.meta.len == 0 {
                return Err(Reply::err("no such key"));
            }
            let len = l.meta.len as i64;
            let i = if i < 0 { i + len } else { i };
            if i < 0 || i >= len {
                return Err(Reply::err("index out of range"));
            }
            // Rewriting the metadata too keeps changes to one list serialized.
            l.put(pos_key(l.meta.head + i), args[3].clone())
        }
    })
    .await?;
    Ok(Reply::OK)
});
