//! `ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]`: pops up to count
//! of the lowest (highest) scored members (1 without COUNT) from the first
//! of the keys with any; [key, [[member, score] ...]], or a null array.

use crate::resp::cmd::zsets::mpop_command;

command!("zmpop", -4, ["write", "movablekeys"], (0, 0, 0), |cx, a| {
    mpop_command(cx, a, false).await
});
