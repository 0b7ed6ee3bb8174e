//! `QUIT`: +OK, then the connection closes.

use crate::resp::proto::Reply;

command!(
    "quit",
    -1,
    ["loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        cx.quit = true;
        Ok(Reply::OK)
    }
);
