//! `ZMSCORE key member [member ...]`: each member's score, or nil.

use crate::resp::cmd::zsets::score;
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("zmscore", -3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let z = cx.read_coll(&a[1], Kind::ZSet).await?;
    let mut out = Vec::with_capacity(a.len() - 2);
    for m in &a[2..] {
        out.push(match &z {
            Some(z) => score(z, m)?.map_or(Reply::Null, Reply::Double),
            None => Reply::Null,
        });
    }
    Ok(Reply::Array(out))
});
