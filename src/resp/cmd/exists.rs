//! `EXISTS key [key ...]`: how many of the keys exist (a key named twice
//! counts twice).

use crate::resp::proto::Reply;

command!("exists", -2, ["readonly", "fast"], (1, -1, 1), |cx, a| {
    let mut n = 0;
    for k in &a[1..] {
        if cx.get(k)?.is_some() {
            n += 1;
        }
    }
    Ok(Reply::Int(n))
});
