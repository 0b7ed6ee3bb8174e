//! `EXISTS key [key ...]`: how many of the keys exist (of any type; a key
//! named twice counts twice, as in Redis).

use crate::resp::coll::Found;
use crate::resp::proto::Reply;

command!("exists", -2, ["readonly", "fast"], (1, -1, 1), |cx, a| {
    let mut n = 0;
    for k in &a[1..] {
        if !matches!(cx.lookup(k)?, Found::None) {
            n += 1;
        }
    }
    Ok(Reply::Int(n))
});
