//! `ZLEXCOUNT key min max`: how many members are in the lex range.

use crate::resp::cmd::zsets::{LexRange, by_lex};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("zlexcount", 4, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let range = LexRange::parse(&a[2], &a[3])?;
    let Some(z) = cx.read_coll(&a[1], Kind::ZSet).await? else {
        return Ok(Reply::Int(0));
    };
    Ok(Reply::Int(
        by_lex(&z, &range, false, usize::MAX)?.len() as i64
    ))
});
