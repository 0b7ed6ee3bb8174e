//! `GETDEL key`: returns the value and deletes the key.

use crate::resp::proto::Reply;
use crate::storage::Op;

command!("getdel", 2, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let old = cx
        .update(key, {
            let key = key.to_vec();
            move |cur| match cur {
                None => Ok((None, None)),
                Some(v) => Ok((Some(Op::Delete { key: key.clone() }), Some(v.value.clone()))),
            }
        })
        .await?;
    Ok(old.map_or(Reply::Null, Reply::Bulk))
});
