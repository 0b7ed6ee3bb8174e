//! `ZRANK key member [WITHSCORE]`: the member's 0-based rank by ascending
//! score, or nil.

use crate::resp::cmd::zsets::rank_command;

command!("zrank", -3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    rank_command(cx, a, false).await
});
