//! `RPUSH key element [element ...]`: pushes onto the tail (creating the
//! list); answers the new length.

use crate::resp::cmd::lists::push_command;

command!(
    "rpush",
    -3,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| { push_command(cx, a, false, false).await }
);
