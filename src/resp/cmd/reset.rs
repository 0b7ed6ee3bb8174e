//! `RESET`: back to RESP2, no name, no MULTI, no WATCH.

use crate::resp::proto::Reply;

command!(
    "reset",
    1,
    ["loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        cx.proto = 2;
        cx.name = None;
        cx.multi = None;
        cx.watched.clear();
        cx.publish_identity();
        Ok(Reply::Simple("RESET"))
    }
);
