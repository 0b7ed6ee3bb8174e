//! `PSETEX key milliseconds value`.

use crate::resp::cmd::common::{expiry, put};
use crate::resp::int_arg;
use crate::resp::proto::Reply;
use crate::storage::Batch;

command!("psetex", 4, ["write"], (1, 1, 1), |cx, a| {
    let at = expiry(int_arg(&a[2])?, true, false, true, "psetex")?;
    let op = put(&a[1], a[3].clone(), Some(at as u64));
    cx.write(Batch {
        ops: vec![op],
        conditions: vec![],
    })
    .await?;
    Ok(Reply::OK)
});
