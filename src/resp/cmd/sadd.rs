//! `SADD key member [member ...]`: adds members; how many were new.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!(
    "sadd",
    -3,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        let added = cx
            .mutate(&a[1], Kind::Set, {
                let args = a.to_vec();
                move |s| {
                    let mut n = 0;
                    for m in &args[2..] {
                        if s.get(m)?.is_none() {
                            s.put(m.clone(), Vec::new())?;
                            s.meta.len += 1;
                            n += 1;
                        }
                    }
                    Ok(n)
                }
            })
            .await?;
        Ok(Reply::Int(added))
    }
);
