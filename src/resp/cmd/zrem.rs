//! `ZREM key member [member ...]`: removes members; how many existed.

use crate::resp::cmd::zsets::{remove, score};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("zrem", -3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let n = cx
        .mutate(&a[1], Kind::ZSet, {
            let args = a.to_vec();
            move |z| {
                let mut n = 0;
                for m in &args[2..] {
                    if let Some(s) = score(z, m)? {
                        remove(z, m, s)?;
                        n += 1;
                    }
                }
                Ok(n)
            }
        })
        .await?;
    Ok(Reply::Int(n))
});
