//! `BZPOPMIN key [key ...] timeout`: ZPOPMIN of the first of the keys with
//! a member, waiting up to `timeout` seconds (0: for ever) for one;
//! [key, member, score], or a null array on timeout.

use crate::resp::cmd::zsets::bpop_command;

command!(
    "bzpopmin",
    -3,
    ["write", "fast", "blocking"],
    (1, -2, 1),
    |cx, a| { bpop_command(cx, a, false).await }
);
