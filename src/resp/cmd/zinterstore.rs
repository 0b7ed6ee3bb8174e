//! `ZINTERSTORE destination numkeys key [key ...] [WEIGHTS weight ...]
//! [AGGREGATE SUM|MIN|MAX]`: stores the intersection of sorted sets (sets count
//! with score 1) in destination, replacing it; the size of the result.

use crate::resp::cmd::zsets::combine_store;

command!(
    "zinterstore",
    -4,
    ["write", "denyoom"],
    (1, 1, 1),
    |cx, a| { combine_store(cx, a, false).await }
);
