//! `PUNSUBSCRIBE [pattern ...]`: unsubscribes from the patterns (all of
//! them without arguments); a confirmation each.

use crate::resp::pubsub::{Kind, unsubscribe_command};

command!(
    "punsubscribe",
    -1,
    ["pubsub", "noscript", "loading", "stale"],
    (0, 0, 0),
    |cx, a| { Ok(unsubscribe_command(cx, a, Kind::Pattern)) }
);
