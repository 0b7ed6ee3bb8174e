//! `RPOPLPUSH source destination`: LMOVE source destination RIGHT LEFT.

use crate::resp::cmd::lists::move_element;

command!("rpoplpush", 3, ["write", "denyoom"], (1, 2, 1), |cx, a| {
    move_element(cx, &a[1], &a[2], false, true).await
});
