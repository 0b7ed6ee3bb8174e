//! `RESET`: back to RESP2, no name, no MULTI, no WATCH, no subscriptions.

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
        if let Some(s) = cx.subs.as_mut() {
            s.clear();
        }
        cx.publish_subscriptions();
        cx.publish_identity();
        Ok(Reply::Simple("RESET"))
    }
);
