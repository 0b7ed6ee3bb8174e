//! `WATCH key [key ...]`: EXEC will do nothing (and answer nil) if any of
//! these keys changes (or expires) before it runs. The versions seen here
//! become part of the EXEC transaction's read set: FlashKV's optimistic
//! validation is what enforces them.

use crate::resp::proto::Reply;

command!(
    "watch",
    -2,
    ["noscript", "loading", "stale", "fast", "allow_busy"],
    (1, -1, 1),
    |cx, a| {
        if cx.multi.is_some() {
            return Err(Reply::err("WATCH inside MULTI is not allowed"));
        }
        for k in &a[1..] {
            let v = cx.get(k)?.map_or(0, |v| v.version);
            cx.watched.push((k.clone(), v));
        }
        Ok(Reply::OK)
    }
);
