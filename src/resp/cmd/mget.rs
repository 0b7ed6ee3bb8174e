//! `MGET key [key ...]`: values (nil for absent keys).

use crate::resp::proto::Reply;

command!("mget", -2, ["readonly", "fast"], (1, -1, 1), |cx, a| {
    let mut out = Vec::with_capacity(a.len() - 1);
    for keys in a[1..].chunks(crate::resp::READ_AHEAD) {
        if keys.len() > 1 {
            crate::resp::read_ahead(cx.router(), || keys.iter().map(|k| k.as_slice()));
        }
        for k in keys {
            out.push(cx.get(k)?.map_or(Reply::Null, |v| Reply::Bulk(v.value)));
        }
    }
    Ok(Reply::Array(out))
});
