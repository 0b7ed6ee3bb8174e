//! `ZREVRANK key member [WITHSCORE]`: the member's 0-based rank by
//! descending score, or nil.

use crate::resp::cmd::zsets::rank_command;

command!("zrevrank", -3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    rank_command(cx, a, true).await
});
