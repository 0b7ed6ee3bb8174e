//! `HINCRBY key field increment`: adds to the integer in a field (missing
//! = 0); answers the new value.

use crate::resp::cmd::common::stored_int;
use crate::resp::coll::Kind;
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!(
    "hincrby",
    4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        let by = int_arg(&a[3])?;
        let n = cx
            .mutate(&a[1], Kind::Hash, {
                let args = a.to_vec();
                move |h| {
                    let old = match h.get(&args[2])? {
                        None => {
                            h.meta.len += 1;
                            0
                        }
                        Some(v) => stored_int(&v)
                            .ok_or_else(|| Reply::err("hash value is not an integer"))?,
                    };
                    let new = old
                        .checked_add(by)
                        .ok_or_else(|| Reply::err("increment or decrement would overflow"))?;
                    h.put(args[2].clone(), new.to_string().into_bytes())?;
                    Ok(new)
                }
            })
            .await?;
        Ok(Reply::Int(n))
    }
);
