//! `DECRBY key decrement`.

use crate::resp::cmd::common::incr_by;
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("decrby", 3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let d = int_arg(&a[2])?
        .checked_neg()
        .ok_or_else(|| Reply::err("decrement would overflow"))?;
    incr_by(cx, &a[1], d).await
});
