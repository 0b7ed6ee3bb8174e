//! `LPUSH key element [element ...]`: pushes onto the head (creating the
//! list); answers the new length.

use crate::resp::cmd::lists::push_command;

command!(
    "lpush",
    -3,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| { push_command(cx, a, true, false).await }
);
