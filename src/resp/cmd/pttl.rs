//! `PTTL key`: milliseconds left, -1 without expiry, -2 if absent.

use crate::resp::cmd::common::ttl;

command!("pttl", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    ttl(cx, &a[1], true)
});
