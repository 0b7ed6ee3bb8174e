//! `SETNX key value`: 1 if set, 0 if the key existed.

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;

command!("setnx", 3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    if let crate::resp::coll::Found::Coll(..) = cx.lookup(key)? {
        // A collection under the name: the key exists.
        return Ok(Reply::Int(0));
    }
    let set = cx
        .update(key, {
            let key = key.to_vec();
            let a = a.to_vec();
            move |cur| match cur {
                Some(_) => Ok((None, false)),
                None => Ok((Some(put(&key, a[2].clone(), None)), true)),
            }
        })
        .await?;
    Ok(Reply::Int(i64::from(set)))
});
