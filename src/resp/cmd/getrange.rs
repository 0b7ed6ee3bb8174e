//! `GETRANGE key start end`: the bytes from start to end inclusive;
//! negative offsets count from the end (SUBSTR is its old name).

use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("getrange", 4, ["readonly"], (1, 1, 1), |cx, a| {
    range(cx, a)
});

/// GETRANGE and its old name SUBSTR.
pub fn range(cx: &crate::resp::Conn, a: &[Vec<u8>]) -> Result<Reply, Reply> {
    let (mut start, mut end) = (int_arg(&a[2])?, int_arg(&a[3])?);
    let v = cx.get(&a[1])?.map(|v| v.value).unwrap_or_default();
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::Bulk(vec![]));
    }
    if start < 0 {
        start = (len + start).max(0);
    }
    if end < 0 {
        end = (len + end).max(0);
    }
    end = end.min(len - 1);
    if len == 0 || start > end {
        return Ok(Reply::Bulk(vec![]));
    }
    Ok(Reply::Bulk(v[start as usize..=end as usize].to_vec()))
}
