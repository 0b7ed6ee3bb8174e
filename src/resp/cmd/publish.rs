//! `PUBLISH channel message`: sends the message to the channel's
//! subscribers and the matching patterns'; how many received it.

use crate::resp::proto::Reply;

command!(
    "publish",
    3,
    ["pubsub", "loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        Ok(Reply::Int(
            cx.shared.server.pubsub.publish(&a[1], &a[2], false),
        ))
    }
);
