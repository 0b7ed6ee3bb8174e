//! `MSET key value [key value ...]`: atomic, in one batch; the keys must
//! live on one shard until cross-shard transactions land (CROSSSLOT).

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;
use crate::storage::Batch;

command!("mset", -3, ["write"], (1, -1, 2), |cx, a| {
    if a.len().is_multiple_of(2) {
        return Err(Reply::err("wrong number of arguments for 'mset' command"));
    }
    cx.same_shard(a[1..].iter().step_by(2).map(|k| k.as_slice()))?;
    let ops = a[1..]
        .chunks(2)
        .map(|p| put(&p[0], p[1].clone(), None))
        .collect();
    cx.write(Batch {
        ops,
        conditions: vec![],
    })
    .await?;
    Ok(Reply::OK)
});
