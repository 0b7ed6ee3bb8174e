//! `SUBSTR key start end`: GETRANGE's old name, still in Redis.

use crate::resp::cmd::getrange::range;

command!("substr", 4, ["readonly"], (1, 1, 1), |cx, a| {
    range(cx, a)
});
