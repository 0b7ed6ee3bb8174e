//! `RENAMENX key newkey`: RENAME only if `newkey` does not exist (1), else 0.

use crate::resp::cmd::common::rename;
use crate::resp::proto::Reply;

command!("renamenx", 3, ["write", "fast"], (1, 2, 1), |cx, a| {
    Ok(Reply::Int(i64::from(rename(cx, &a[1], &a[2], true).await?)))
});
