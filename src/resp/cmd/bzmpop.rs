//! `BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]`: ZMPOP,
//! waiting up to `timeout` seconds (0: for ever) for one of the keys to
//! have a member; a null array on timeout.

use crate::resp::cmd::zsets::mpop_command;

command!(
    "bzmpop",
    -5,
    ["write", "blocking", "movablekeys"],
    (0, 0, 0),
    |cx, a| { mpop_command(cx, a, true).await }
);
