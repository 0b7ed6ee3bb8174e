//! `FLUSHALL [ASYNC|SYNC]`: as FLUSHDB (there is one database).

use std::ops::Bound;

use crate::resp::proto::Reply;
use crate::resp::{error_reply, syntax_error};
use crate::storage::{Batch, Op};

command!("flushall", -1, ["write"], (0, 0, 0), |cx, a| {
    if a.len() > 2
        || a.get(1)
            .is_some_and(|m| !m.eq_ignore_ascii_case(b"ASYNC") && !m.eq_ignore_ascii_case(b"SYNC"))
    {
        return Err(syntax_error());
    }
    // Deletes in batches of up to 1024 keys per shard.
    let n = cx.router().shard_count();
    let mut pending: Vec<Vec<Op>> = vec![Vec::new(); n];
    let mut scan = cx
        .router()
        .scan(Bound::Unbounded, Bound::Unbounded, false, true);
    while let Some((key, _)) = scan.next_item().map_err(error_reply)? {
        let s = cx.router().shard_of(&key) as usize;
        pending[s].push(Op::Delete { key });
        if pending[s].len() >= 1024 {
            let ops = std::mem::take(&mut pending[s]);
            cx.write(Batch {
                ops,
                conditions: vec![],
            })
            .await?;
        }
    }
    for ops in pending.into_iter().filter(|o| !o.is_empty()) {
        cx.write(Batch {
            ops,
            conditions: vec![],
        })
        .await?;
    }
    Ok(Reply::OK)
});
