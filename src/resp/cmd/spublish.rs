//! `SPUBLISH shardchannel message`: sends the message to the shard
//! channel's subscribers; how many received it.

use crate::resp::proto::Reply;

command!(
    "spublish",
    3,
    ["pubsub", "loading", "stale", "fast"],
    (1, 1, 1),
    |cx, a| {
        Ok(Reply::Int(
            cx.shared.server.pubsub.publish(&a[1], &a[2], true),
        ))
    }
);
