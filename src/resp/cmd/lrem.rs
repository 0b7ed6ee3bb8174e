//! `LREM key count element`: removes occurrences of element (count > 0:
//! the first count from the head; < 0: from the tail; 0: all); how many.

use crate::resp::cmd::lists::{all, rewrite};
use crate::resp::coll::Kind;
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("lrem", 4, ["write"], (1, 1, 1), |cx, a| {
    let count = int_arg(&a[2])?;
    let removed = cx
        .mutate(&a[1], Kind::List, {
            let args = a.to_vec();
            move |l| {
                if l.meta.len == 0 {
                    return Ok(0);
                }
                let old = all(l)?;
                let limit = if count == 0 {
                    usize::MAX
                } else {
                    count.unsigned_abs() as usize
                };
                let mut drop = vec![false; old.len()];
                let mut n = 0;
                let order: Box<dyn Iterator<Item = usize>> = if count < 0 {
                    Box::new((0..old.len()).rev())
                } else {
                    Box::new(0..old.len())
                };
                for i in order {
                    if n >= limit {
                        break;
                    }
                    if old[i] == args[3] {
                        drop[i] = true;
                        n += 1;
                    }
                }
                if n == 0 {
                    return Ok(0);
                }
                let new = old
                    .iter()
                    .zip(&drop)
                    .filter(|(_, d)| !**d)
                    .map(|(e, _)| e.clone())
                    .collect();
                rewrite(l, &old, new)?;
                Ok(n as i64)
            }
        })
        .await?;
    Ok(Reply::Int(removed))
});
