//! `ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count]
//! [WITHSCORES]`: members by index, score or lex range.

use crate::resp::cmd::zsets::{By, Form, range_command};

command!("zrange", -4, ["readonly"], (1, 1, 1), |cx, a| {
    range_command(
        cx,
        a,
        Form {
            by: By::Rank,
            rev: false,
            options: true,
        },
    )
    .await
});
