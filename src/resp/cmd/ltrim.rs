//! `LTRIM key start stop`: keeps only the elements from start to stop.

use crate::resp::cmd::lists::range;
use crate::resp::coll::{Kind, pos_key};
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("ltrim", 4, ["write"], (1, 1, 1), |cx, a| {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    cx.mutate(&a[1], Kind::List, {
        let args = a.to_vec();
        move |l| {
            let len = l.meta.len as i64;
            if len == 0 {
                return Ok(());
            }
            let (from, to) = range(start, stop, len).unwrap_or((len, len - 1));
            let head = l.meta.head;
            for i in (0..from.min(len)).chain((to + 1).max(0)..len) {
                l.del(pos_key(head + i));
            }
            let kept = (to - from + 1).max(0);
            l.meta.head = head + from.min(len);
            l.meta.tail = l.meta.head + kept;
            l.meta.len = kept as u64;
            Ok(())
        }
    })
    .await?;
    Ok(Reply::OK)
});
