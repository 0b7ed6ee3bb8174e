//! `RENAME key newkey`: atomic (one batch, a transaction when the keys
//! live on two shards), keeping the TTL.

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;
use crate::storage::{Batch, Condition, Op, Outcome};

const NX: bool = false;
const OK_REPLY: Reply = Reply::OK;

command!("rename", 3, ["write"], (1, 2, 1), |cx, a| {
    let (src, dst) = (&a[1], &a[2]);
    cx.check_key(dst)?;
    for _ in 0..64 {
        let Some(v) = cx.get(src)? else {
            return Err(Reply::err("no such key"));
        };
        let dst_version = cx.get(dst)?.map_or(0, |d| d.version);
        if src == dst {
            return Ok(OK_REPLY);
        }
        if NX && dst_version != 0 {
            return Ok(Reply::Int(0));
        }
        let mut conditions = vec![Condition {
            key: src.clone(),
            expected_version: v.version,
        }];
        if NX {
            conditions.push(Condition {
                key: dst.clone(),
                expected_version: 0,
            });
        }
        let batch = Batch {
            ops: vec![
                Op::Delete { key: src.clone() },
                put(dst, v.value, v.expires_at_ms),
            ],
            conditions,
        };
        if let Outcome::Committed { .. } = cx.write(batch).await? {
            return Ok(OK_REPLY);
        }
    }
    Err(Reply::err("the keys kept changing; retry"))
});
