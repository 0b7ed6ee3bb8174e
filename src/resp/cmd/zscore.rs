//! `ZSCORE key member`: the score, or nil.

use crate::resp::cmd::zsets::score;
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("zscore", 3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let Some(z) = cx.read_coll(&a[1], Kind::ZSet).await? else {
        return Ok(Reply::Null);
    };
    Ok(score(&z, &a[2])?.map_or(Reply::Null, Reply::Double))
});
