//! `UNLINK key [key ...]`: as DEL (deletes are appends; nothing to free
//! in the background).

use crate::resp::cmd::common::delete;

command!("unlink", -2, ["write", "fast"], (1, -1, 1), |cx, a| {
    delete(cx, &a[1..]).await
});
