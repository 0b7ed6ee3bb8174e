//! `DEL key [key ...]`: how many existed. One atomic batch, across shards
//! if the keys live on several (a transaction).

use crate::resp::cmd::common::delete;

command!("del", -2, ["write"], (1, -1, 1), |cx, a| {
    delete(cx, &a[1..]).await
});
