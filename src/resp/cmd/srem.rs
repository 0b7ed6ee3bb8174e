//! `SREM key member [member ...]`: removes members; how many existed.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("srem", -3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let removed = cx
        .mutate(&a[1], Kind::Set, {
            let args = a.to_vec();
            move |s| {
                let mut n = 0;
                for m in &args[2..] {
                    if s.get(m)?.is_some() {
                        s.del(m.clone());
                        s.meta.len -= 1;
                        n += 1;
                    }
                }
                Ok(n)
            }
        })
        .await?;
    Ok(Reply::Int(removed))
});
