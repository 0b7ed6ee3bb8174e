//! `BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout`: LMOVE,
//! waiting up to `timeout` seconds (0: for ever) for source to have an
//! element; the element, or nil on timeout.

use crate::resp::cmd::lists::{bmove_command, side};

command!(
    "blmove",
    6,
    ["write", "denyoom", "blocking"],
    (1, 2, 1),
    |cx, a| {
        let (from, to) = (side(&a[3])?, side(&a[4])?);
        bmove_command(cx, &a[1], &a[2], from, to, &a[5]).await
    }
);
