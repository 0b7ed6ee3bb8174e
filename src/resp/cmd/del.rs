//! `DEL key [key ...]`: how many existed. Keys on one shard go in one
//! atomic batch; keys on several shards are deleted shard by shard.

use crate::resp::cmd::common::delete;

command!("del", -2, ["write"], (1, -1, 1), |cx, a| {
    delete(cx, &a[1..]).await
});
