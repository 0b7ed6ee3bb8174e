//! `DBSIZE`: the number of keys, strings and collections (the elements of
//! a collection are not keys of their own).

use crate::resp::cmd::common::key_count;
use crate::resp::proto::Reply;

command!("dbsize", 1, ["readonly", "fast"], (0, 0, 0), |cx, a| {
    Ok(Reply::Int(key_count(cx).await?))
});
