//! `LPOP key [count]`: removes and returns elements from the head
//! (one as a bulk string; with count an array, nil if the key is missing).

use crate::resp::cmd::lists::pop_command;

command!("lpop", -2, ["write", "fast"], (1, 1, 1), |cx, a| {
    pop_command(cx, a, true).await
});
