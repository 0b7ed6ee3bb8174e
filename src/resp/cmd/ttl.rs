//! `TTL key`: seconds left, -1 without expiry, -2 if absent.

use crate::resp::cmd::common::ttl;

command!("ttl", 2, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    ttl(cx, &a[1], false)
});
