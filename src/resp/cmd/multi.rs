//! `MULTI`: start queuing commands for EXEC.

use crate::resp::Multi;
use crate::resp::proto::Reply;

command!(
    "multi",
    1,
    ["noscript", "loading", "stale", "fast", "allow_busy"],
    (0, 0, 0),
    |cx, a| {
        if cx.multi.is_some() {
            return Err(Reply::err("MULTI calls can not be nested"));
        }
        cx.multi = Some(Multi::default());
        Ok(Reply::OK)
    }
);
