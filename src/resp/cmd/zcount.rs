//! `ZCOUNT key min max`: how many members have a score in the range.

use crate::resp::cmd::zsets::{ScoreRange, by_scores};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("zcount", 4, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let range = ScoreRange::parse(&a[2], &a[3])?;
    let Some(z) = cx.read_coll(&a[1], Kind::ZSet).await? else {
        return Ok(Reply::Int(0));
    };
    Ok(Reply::Int(
        by_scores(&z, &range, false, usize::MAX)?.len() as i64
    ))
});
