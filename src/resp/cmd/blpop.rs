//! `BLPOP key [key ...] timeout`: LPOP from the first of the keys with an
//! element, waiting up to `timeout` seconds (0: for ever) for one;
//! [key, element], or a null array on timeout.

use crate::resp::cmd::lists::bpop_command;

command!("blpop", -3, ["write", "blocking"], (1, -2, 1), |cx, a| {
    bpop_command(cx, a, true).await
});
