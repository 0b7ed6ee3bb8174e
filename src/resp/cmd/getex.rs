//! `GETEX key [EX s|PX ms|EXAT ts|PXAT ms|PERSIST]`: the value, setting or
//! dropping its expiry.

use crate::resp::cmd::common::{Ttl, put, ttl_option};
use crate::resp::proto::Reply;
use crate::resp::syntax_error;

command!("getex", -2, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let mut ttl = Ttl::Unset;
    // One TTL option (repeating it replaces its time, as in Redis).
    let mut ttl_word: Option<Vec<u8>> = None;
    let mut i = 2;
    while i < a.len() {
        let word = a[i].to_ascii_uppercase();
        if ttl != Ttl::Unset && ttl_word.as_deref() != Some(word.as_slice()) {
            return Err(syntax_error());
        }
        if let Some(t) = ttl_option(a, &mut i, "getex")? {
            ttl = t;
        } else if word == b"PERSIST" {
            ttl = Ttl::Persist;
            i += 1;
        } else {
            return Err(syntax_error());
        }
        ttl_word = Some(word);
    }
    let value = cx
        .update(key, {
            let key = key.to_vec();
            move |cur| {
                let Some(v) = cur else {
                    return Ok((None, None));
                };
                let op = match ttl {
                    Ttl::Unset | Ttl::Keep => None,
                    Ttl::Persist if v.expires_at_ms.is_none() => None,
                    Ttl::Persist => Some(put(&key, v.value.clone(), None)),
                    Ttl::At(t) => Some(put(&key, v.value.clone(), Some(t as u64))),
                };
                Ok((op, Some(v.value.clone())))
            }
        })
        .await?;
    Ok(value.map_or(Reply::Null, Reply::Bulk))
});
