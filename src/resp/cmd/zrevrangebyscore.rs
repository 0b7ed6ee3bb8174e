//! `ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]`.

use crate::resp::cmd::zsets::{By, Form, range_command};

command!("zrevrangebyscore", -4, ["readonly"], (1, 1, 1), |cx, a| {
    range_command(
        cx,
        a,
        Form {
            by: By::Score,
            rev: true,
            options: false,
        },
    )
    .await
});
