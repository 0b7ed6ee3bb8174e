//! `SDIFFSTORE destination key [key ...]`: stores the result of SDIFF in
//! `destination` (replacing what it held; deleting it if empty),
//! atomically across shards; answers its size.

use crate::resp::cmd::sets::{Algebra, combine_store};

command!(
    "sdiffstore",
    -3,
    ["write", "denyoom"],
    (1, -1, 1),
    |cx, a| { combine_store(cx, a, Algebra::Diff).await }
);
