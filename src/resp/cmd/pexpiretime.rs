//! `PEXPIRETIME key`: the Unix time (milliseconds) at which the key
//! expires, -1 without expiry, -2 if absent.

use crate::resp::cmd::common::expire_time;

command!(
    "pexpiretime",
    2,
    ["readonly", "fast"],
    (1, 1, 1),
    |cx, a| { expire_time(cx, &a[1], true) }
);
