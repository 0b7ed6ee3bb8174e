//! `BLMPOP timeout numkeys key [key ...] LEFT|RIGHT [COUNT count]`: LMPOP,
//! waiting up to `timeout` seconds (0: for ever) for one of the keys to
//! have an element; a null array on timeout.

use crate::resp::cmd::lists::mpop_command;

command!(
    "blmpop",
    -5,
    ["write", "blocking", "movablekeys"],
    (0, 0, 0),
    |cx, a| { mpop_command(cx, a, true).await }
);
