//! `SETRANGE key offset value`: overwrites from offset (zero-padding), the
//! new length; keeps the TTL.

use crate::resp::cmd::common::put;
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("setrange", 4, ["write"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let offset = int_arg(&a[2])?;
    if offset < 0 {
        return Err(Reply::err("offset is out of range"));
    }
    let offset = offset as usize;
    let part = &a[3];
    if offset + part.len() > cx.shared.limits.max_value_size {
        return Err(Reply::err(
            "string exceeds maximum allowed size (max-value-size)",
        ));
    }
    let len = cx
        .update(key, {
            let key = key.to_vec();
            let part = part.to_vec();
            move |cur| {
                let mut v = cur.map(|v| v.value.clone()).unwrap_or_default();
                if part.is_empty() {
                    return Ok((None, v.len()));
                }
                if v.len() < offset + part.len() {
                    v.resize(offset + part.len(), 0);
                }
                v[offset..offset + part.len()].copy_from_slice(&part);
                let len = v.len();
                Ok((Some(put(&key, v, cur.and_then(|c| c.expires_at_ms))), len))
            }
        })
        .await?;
    Ok(Reply::Int(len as i64))
});
