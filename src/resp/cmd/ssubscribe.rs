//! `SSUBSCRIBE shardchannel [shardchannel ...]`: subscribes the connection
//! to shard channels (SPUBLISH's); a confirmation each.

use crate::resp::pubsub::{Kind, subscribe_command};

command!(
    "ssubscribe",
    -2,
    ["pubsub", "noscript", "loading", "stale"],
    (1, -1, 1),
    |cx, a| { Ok(subscribe_command(cx, a, Kind::Shard)) }
);
