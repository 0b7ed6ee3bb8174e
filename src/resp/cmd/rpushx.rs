//! `RPUSHX key element [element ...]`: pushes onto the tail of an existing
//! list (0 if the key is missing); answers the new length.

use crate::resp::cmd::lists::push_command;

command!(
    "rpushx",
    -3,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| { push_command(cx, a, false, true).await }
);
