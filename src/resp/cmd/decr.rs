//! `DECR key`.

use crate::resp::cmd::common::incr_by;

command!("decr", 2, ["write", "fast"], (1, 1, 1), |cx, a| {
    incr_by(cx, &a[1], -1).await
});
