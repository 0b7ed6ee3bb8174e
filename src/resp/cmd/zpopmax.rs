//! `ZPOPMAX key [count]`: removes and returns the members with the highest
//! scores, with their scores.

use crate::resp::cmd::zsets::pop_command;

command!("zpopmax", -2, ["write", "fast"], (1, 1, 1), |cx, a| {
    pop_command(cx, a, true).await
});
