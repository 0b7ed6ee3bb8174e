//! `ZREMRANGEBYSCORE key min max`: removes the members in a score range;
//! how many.

use crate::resp::cmd::zsets::{ScoreRange, by_scores, remove};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("zremrangebyscore", 4, ["write"], (1, 1, 1), |cx, a| {
    let range = ScoreRange::parse(&a[2], &a[3])?;
    let n = cx
        .mutate(&a[1], Kind::ZSet, {
            let args = a.to_vec();
            move |z| {
                if z.meta.len == 0 {
                    return Ok(0);
                }
                let items = by_scores(z, &range, false, usize::MAX)?;
                for (m, s) in &items {
                    remove(z, m, *s)?;
                }
                Ok(items.len() as i64)
            }
        })
        .await?;
    Ok(Reply::Int(n))
});
