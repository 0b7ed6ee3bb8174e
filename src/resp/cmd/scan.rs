//! `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: keys in order,
//! about COUNT at a time. A cursor names the last key returned (kept in a
//! bounded table shared by every connection of the daemon); 0 starts and
//! ends, and a cursor the table no longer has is an error.

use std::ops::Bound;

use crate::resp::cmd::common::{Keys, unknown_cursor};
use crate::resp::glob::{literal_prefix, matches};
use crate::resp::proto::Reply;
use crate::resp::{error_reply, int_arg, syntax_error};
use crate::shard::router::scan_bounds;
use crate::storage::store::now_ms;

command!("scan", -2, ["readonly"], (0, 0, 0), |cx, a| {
    let cursor = std::str::from_utf8(&a[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))?;
    let (mut pattern, mut count, mut kind) = (None, 10i64, None::<Vec<u8>>);
    let mut i = 2;
    while i < a.len() {
        let v = a.get(i + 1).ok_or_else(syntax_error)?;
        match a[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(v.clone()),
            b"COUNT" => {
                count = int_arg(v)?;
                if count < 1 {
                    return Err(syntax_error());
                }
            }
            b"TYPE" => kind = Some(v.to_ascii_lowercase()),
            _ => return Err(syntax_error()),
        }
        i += 2;
    }
    let prefix = pattern.as_deref().map(literal_prefix).unwrap_or_default();
    let (mut lower, upper) = scan_bounds(b"", b"", &prefix);
    if cursor != 0 {
        let Some(after) = cx.shared.cursor(cursor) else {
            return Err(unknown_cursor(&a[1]));
        };
        lower = Bound::Excluded(after);
    }
    let mut scan = Keys::new(cx.router(), lower, upper);
    let now = now_ms();
    let (mut seen, mut keys, mut last) = (0i64, Vec::new(), None);
    let mut done = true;
    while let Some((key, v, t)) = scan.next_key().map_err(error_reply)? {
        seen += 1;
        let live = v.expires_at_ms.is_none_or(|t| t > now);
        let typed = kind.as_deref().is_none_or(|k| k == t.as_bytes());
        if live && typed && pattern.as_deref().is_none_or(|p| matches(p, &key)) {
            keys.push(Reply::Bulk(key.clone()));
        }
        last = Some(key);
        if seen >= count {
            done = false;
            break;
        }
    }
    let next = match (done, last) {
        (false, Some(k)) => cx.shared.save_cursor(k),
        _ => 0,
    };
    Ok(Reply::Array(vec![
        Reply::text(next.to_string()),
        Reply::Array(keys),
    ]))
});
