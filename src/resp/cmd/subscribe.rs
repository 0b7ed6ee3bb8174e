//! `SUBSCRIBE channel [channel ...]`: subscribes the connection to the
//! channels; a confirmation each ([`crate::resp::pubsub`]).

use crate::resp::pubsub::{Kind, subscribe_command};

command!(
    "subscribe",
    -2,
    ["pubsub", "noscript", "loading", "stale"],
    (0, 0, 0),
    |cx, a| { Ok(subscribe_command(cx, a, Kind::Channel)) }
);
