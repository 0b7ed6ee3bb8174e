//! `FLUSHALL [ASYNC|SYNC]`: as FLUSHDB (there is one database).

use crate::resp::cmd::common::flush;

command!("flushall", -1, ["write"], (0, 0, 0), |cx, a| {
    flush(cx, a).await
});
