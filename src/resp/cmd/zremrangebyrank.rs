//! `ZREMRANGEBYRANK key start stop`: removes the members in a rank range;
//! how many.

use crate::resp::cmd::lists::range;
use crate::resp::cmd::zsets::{by_rank, remove};
use crate::resp::coll::Kind;
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("zremrangebyrank", 4, ["write"], (1, 1, 1), |cx, a| {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    let n = cx
        .mutate(&a[1], Kind::ZSet, {
            let args = a.to_vec();
            move |z| {
                let Some((from, to)) = range(start, stop, z.meta.len as i64) else {
                    return Ok(0);
                };
                let items = by_rank(z, from as usize, (to - from + 1) as usize, false)?;
                for (m, s) in &items {
                    remove(z, m, *s)?;
                }
                Ok(items.len() as i64)
            }
        })
        .await?;
    Ok(Reply::Int(n))
});
