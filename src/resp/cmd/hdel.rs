//! `HDEL key field [field ...]`: removes fields; how many existed. The
//! last field removed deletes the key.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hdel", -3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let removed = cx
        .mutate(&a[1], Kind::Hash, {
            let args = a.to_vec();
            move |h| {
                let mut n = 0;
                for f in &args[2..] {
                    if h.get(f)?.is_some() {
                        h.del(f.clone());
                        h.meta.len -= 1;
                        n += 1;
                    }
                }
                Ok(n)
            }
        })
        .await?;
    Ok(Reply::Int(removed))
});
