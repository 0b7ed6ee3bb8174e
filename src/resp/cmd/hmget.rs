//! `HMGET key field [field ...]`: the values, nil for missing fields.

use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hmget", -3, ["readonly", "fast"], (1, 1, 1), |cx, a| {
    let h = cx.read_coll(&a[1], Kind::Hash).await?;
    let mut out = Vec::with_capacity(a.len() - 2);
    for f in &a[2..] {
        out.push(match &h {
            Some(h) => h.get(f)?.map_or(Reply::Null, Reply::Bulk),
            None => Reply::Null,
        });
    }
    Ok(Reply::Array(out))
});
