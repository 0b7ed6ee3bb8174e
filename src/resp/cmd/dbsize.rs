//! `DBSIZE`: keys in the database (keys whose expiry passed but that merge
//! has not dropped yet are counted, as Redis counts them until evicted).

use crate::resp::error_reply;
use crate::resp::proto::Reply;

command!("dbsize", 1, ["readonly", "fast"], (0, 0, 0), |cx, a| {
    let stats = cx.router().stats().await.map_err(error_reply)?;
    Ok(Reply::Int(stats.iter().map(|s| s.keys as i64).sum()))
});
