//! `INCRBY key increment`.

use crate::resp::cmd::common::incr_by;
use crate::resp::int_arg;

command!("incrby", 3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let d = int_arg(&a[2])?;
    incr_by(cx, &a[1], d).await
});
