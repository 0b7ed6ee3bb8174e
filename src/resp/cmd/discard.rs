//! `DISCARD`: drop the queued commands and every WATCH.

use crate::resp::proto::Reply;

command!(
    "discard",
    1,
    ["noscript", "loading", "stale", "fast", "allow_busy"],
    (0, 0, 0),
    |cx, a| {
        if cx.multi.take().is_none() {
            return Err(Reply::err("DISCARD without MULTI"));
        }
        cx.watched.clear();
        Ok(Reply::OK)
    }
);
