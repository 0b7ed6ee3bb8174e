//! `RPOP key [count]`: removes and returns elements from the tail
//! (one as a bulk string; with count an array, nil if the key is missing).

use crate::resp::cmd::lists::pop_command;

command!("rpop", -2, ["write", "fast"], (1, 1, 1), |cx, a| {
    pop_command(cx, a, false).await
});
