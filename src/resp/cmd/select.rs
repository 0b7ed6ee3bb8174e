//! `SELECT index`: FlashKV has one database, 0.

use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!(
    "select",
    2,
    ["loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        match int_arg(&a[1])? {
            0 => Ok(Reply::OK),
            _ => Err(Reply::err(
                "DB index is out of range (FlashKV has database 0 only)",
            )),
        }
    }
);
