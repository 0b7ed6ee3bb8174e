//! `HMSET key field value [field value ...]`: HSET answering OK.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!(
    "hmset",
    -4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        if !a.len().is_multiple_of(2) {
            return Err(Reply::err("wrong number of arguments for 'hmset' command"));
        }
        cx.mutate(&a[1], Kind::Hash, {
            let args = a.to_vec();
            move |h| {
                for p in args[2..].chunks(2) {
                    if h.get(&p[0])?.is_none() {
                        h.meta.len += 1;
                    }
                    h.put(p[0].clone(), p[1].clone())?;
                }
                Ok(())
            }
        })
        .await?;
        Ok(Reply::OK)
    }
);
