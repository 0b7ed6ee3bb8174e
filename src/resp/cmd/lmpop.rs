//! `LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]`: pops up to count
//! elements (1 without COUNT) from the first of the keys with any;
//! [key, [element ...]], or a null array if every key is empty.

use crate::resp::cmd::lists::mpop_command;

command!("lmpop", -4, ["write", "movablekeys"], (0, 0, 0), |cx, a| {
    mpop_command(cx, a, false).await
});
