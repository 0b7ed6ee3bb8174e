//! `SUNSUBSCRIBE [shardchannel ...]`: unsubscribes from the shard channels
//! (all of them without arguments); a confirmation each.

use crate::resp::pubsub::{Kind, unsubscribe_command};

command!(
    "sunsubscribe",
    -1,
    ["pubsub", "noscript", "loading", "stale"],
    (1, -1, 1),
    |cx, a| { Ok(unsubscribe_command(cx, a, Kind::Shard)) }
);
