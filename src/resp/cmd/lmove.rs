//! `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`: pops from one side of
//! source and pushes onto a side of destination, atomically (across shards
//! too); the element, or nil if source is empty.

use crate::resp::cmd::lists::{move_element, side};

command!("lmove", 5, ["write", "denyoom"], (1, 2, 1), |cx, a| {
    let (from, to) = (side(&a[3])?, side(&a[4])?);
    move_element(cx, &a[1], &a[2], from, to).await
});
