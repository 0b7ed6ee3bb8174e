//! `APPEND key value`: the new length (keeps the TTL).

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;

command!("append", 3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let len = cx
        .update(key, {
            let key = key.to_vec();
            let a = a.to_vec();
            move |cur| {
                let mut v = cur.map(|v| v.value.clone()).unwrap_or_default();
                v.extend_from_slice(&a[2]);
                let len = v.len();
                Ok((Some(put(&key, v, cur.and_then(|c| c.expires_at_ms))), len))
            }
        })
        .await?;
    Ok(Reply::Int(len as i64))
});
