//! `RESET`: back to RESP2, no name.

use crate::resp::proto::Reply;

command!(
    "reset",
    1,
    ["loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        cx.proto = 2;
        cx.name = None;
        Ok(Reply::Simple("RESET"))
    }
);
