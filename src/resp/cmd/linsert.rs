//! `LINSERT key BEFORE|AFTER pivot element`: inserts next to the first
//! occurrence of pivot; the new length, -1 without pivot, 0 without key.

use crate::resp::cmd::lists::{all, rewrite};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;
use crate::resp::syntax_error;

command!("linsert", 5, ["write", "denyoom"], (1, 1, 1), |cx, a| {
    let before = match a[2].to_ascii_uppercase().as_slice() {
        b"BEFORE" => true,
        b"AFTER" => false,
        _ => return Err(syntax_error()),
    };
    let n = cx
        .mutate(&a[1], Kind::List, {
            let args = a.to_vec();
            move |l| {
                if l.meta.len == 0 {
                    return Ok(0);
                }
                let old = all(l)?;
                let Some(at) = old.iter().position(|e| *e == args[3]) else {
                    return Ok(-1);
                };
                let mut new = old.clone();
                new.insert(if before { at } else { at + 1 }, args[4].clone());
                rewrite(l, &old, new)?;
                Ok(l.meta.len as i64)
            }
        })
        .await?;
    Ok(Reply::Int(n))
});
