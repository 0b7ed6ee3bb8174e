//! `ZREVRANGEBYLEX key max min [LIMIT offset count]`.

use crate::resp::cmd::zsets::{By, Form, range_command};

command!("zrevrangebylex", -4, ["readonly"], (1, 1, 1), |cx, a| {
    range_command(
        cx,
        a,
        Form {
            by: By::Lex,
            rev: true,
            options: false,
        },
    )
    .await
});
