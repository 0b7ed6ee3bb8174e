//! `HSET key field value [field value ...]`: sets fields; answers how many
//! were new.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!(
    "hset",
    -4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        if !a.len().is_multiple_of(2) {
            return Err(Reply::err("wrong number of arguments for 'hset' command"));
        }
        let added = cx
            .mutate(&a[1], Kind::Hash, {
                let args = a.to_vec();
                move |h| {
                    let mut added = 0;
                    for p in args[2..].chunks(2) {
                        if h.get(&p[0])?.is_none() {
                            added += 1;
                            h.meta.len += 1;
                        }
                        h.put(p[0].clone(), p[1].clone())?;
                    }
                    Ok(added)
                }
            })
            .await?;
        Ok(Reply::Int(added))
    }
);
