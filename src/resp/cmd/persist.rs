//! `PERSIST key`: drops the expiry; 1 if there was one.

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;

command!("persist", 2, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let done = cx
        .update_any(key, |cur| match cur {
            Some(v) if v.expires_at_ms.is_some() => {
                Ok((Some(put(key, v.value.clone(), None)), true))
            }
            _ => Ok((None, false)),
        })
        .await?;
    Ok(Reply::Int(i64::from(done)))
});
