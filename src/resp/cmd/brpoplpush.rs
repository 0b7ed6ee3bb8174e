//! `BRPOPLPUSH source destination timeout`: BLMOVE source destination
//! RIGHT LEFT timeout.

use crate::resp::cmd::lists::bmove_command;

command!(
    "brpoplpush",
    4,
    ["write", "denyoom", "blocking"],
    (1, 2, 1),
    |cx, a| { bmove_command(cx, &a[1], &a[2], false, true, &a[3]).await }
);
