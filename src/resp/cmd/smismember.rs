//! `SMISMEMBER key member [member ...]`: 1 or 0 for each member.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!(
    "smismember",
    -3,
    ["readonly", "fast"],
    (1, 1, 1),
    |cx, a| {
        let s = cx.read_coll(&a[1], Kind::Set).await?;
        let mut out = Vec::with_capacity(a.len() - 2);
        for m in &a[2..] {
            let hit = match &s {
                Some(s) => s.get(m)?.is_some(),
                None => false,
            };
            out.push(Reply::Int(i64::from(hit)));
        }
        Ok(Reply::Array(out))
    }
);
