//! `UNSUBSCRIBE [channel ...]`: unsubscribes from the channels (all of
//! them without arguments); a confirmation each.

use crate::resp::pubsub::{Kind, unsubscribe_command};

command!(
    "unsubscribe",
    -1,
    ["pubsub", "noscript", "loading", "stale"],
    (0, 0, 0),
    |cx, a| { Ok(unsubscribe_command(cx, a, Kind::Channel)) }
);
