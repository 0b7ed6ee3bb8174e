//! `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`.

use crate::resp::cmd::zsets::{By, Form, range_command};

command!("zrangebyscore", -4, ["readonly"], (1, 1, 1), |cx, a| {
    range_command(
        cx,
        a,
        Form {
            by: By::Score,
            rev: false,
            options: false,
        },
    )
    .await
});
