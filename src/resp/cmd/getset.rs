//! `GETSET key value`: sets and returns the old value (nil if none); the
//! TTL is dropped, as by SET.

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;

command!("getset", 3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let old = cx
        .update(key, {
            let key = key.to_vec();
            let a = a.to_vec();
            move |cur| {
                Ok((
                    Some(put(&key, a[2].clone(), None)),
                    cur.map(|v| v.value.clone()),
                ))
            }
        })
        .await?;
    Ok(old.map_or(Reply::Null, Reply::Bulk))
});
