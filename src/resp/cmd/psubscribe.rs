//! `PSUBSCRIBE pattern [pattern ...]`: subscribes the connection to the
//! channels matching the glob patterns; a confirmation each.

use crate::resp::pubsub::{Kind, subscribe_command};

command!(
    "psubscribe",
    -2,
    ["pubsub", "noscript", "loading", "stale"],
    (0, 0, 0),
    |cx, a| { Ok(subscribe_command(cx, a, Kind::Pattern)) }
);
