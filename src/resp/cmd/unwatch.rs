//! `UNWATCH`: forget every WATCHed key.

use crate::resp::proto::Reply;

command!(
    "unwatch",
    1,
    ["noscript", "loading", "stale", "fast", "allow_busy"],
    (0, 0, 0),
    |cx, a| {
        cx.watched.clear();
        Ok(Reply::OK)
    }
);
