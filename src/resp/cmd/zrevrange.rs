//! `ZREVRANGE key start stop [WITHSCORES]`: by index, highest first.

use crate::resp::cmd::zsets::{By, Form, range_command};

command!("zrevrange", -4, ["readonly"], (1, 1, 1), |cx, a| {
    range_command(
        cx,
        a,
        Form {
            by: By::Rank,
            rev: true,
            options: false,
        },
    )
    .await
});
