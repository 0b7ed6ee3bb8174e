//! `ZRANGEBYLEX key min max [LIMIT offset count]`.

use crate::resp::cmd::zsets::{By, Form, range_command};

command!("zrangebylex", -4, ["readonly"], (1, 1, 1), |cx, a| {
    range_command(
        cx,
        a,
        Form {
            by: By::Lex,
            rev: false,
            options: false,
        },
    )
    .await
});
