//! `HSETNX key field value`: sets the field only if it is new (1), else 0.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!(
    "hsetnx",
    4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        let set = cx
            .mutate(&a[1], Kind::Hash, {
                let args = a.to_vec();
                move |h| {
                    if h.get(&args[2])?.is_some() {
                        return Ok(false);
                    }
                    h.meta.len += 1;
                    h.put(args[2].clone(), args[3].clone())?;
                    Ok(true)
                }
            })
            .await?;
        Ok(Reply::Int(i64::from(set)))
    }
);
