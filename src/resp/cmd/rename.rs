//! `RENAME key newkey`: moves a string or a collection, with its TTL,
//! replacing whatever `newkey` held; atomic across shards.

use crate::resp::cmd::common::rename;
use crate::resp::proto::Reply;

command!("rename", 3, ["write"], (1, 2, 1), |cx, a| {
    rename(cx, &a[1], &a[2], false).await?;
    Ok(Reply::OK)
});
