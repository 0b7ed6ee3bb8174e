//! `MSET key value [key value ...]`: atomic, in one batch (a transaction
//! when the keys live on several shards).

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;
use crate::storage::Batch;

command!("mset", -3, ["write"], (1, -1, 2), |cx, a| {
    if a.len().is_multiple_of(2) {
        return Err(Reply::err("wrong number of arguments for 'mset' command"));
    }
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
