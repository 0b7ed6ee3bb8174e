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
            // The key as a string and as a collection: a change to either
            // fails EXEC.
            cx.check_key(k)?;
            for key in [k.clone(), crate::keyspace::meta_key(k)] {
                let v = cx.raw_get(&key)?.map_or(0, |v| v.version);
                cx.watched.push((key, v));
            }
        }
        Ok(Reply::OK)
    }
);
