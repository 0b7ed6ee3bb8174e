//! `FLUSHDB [ASYNC|SYNC]`: deletes every key (strings and collections).

use crate::resp::cmd::common::flush;

command!("flushdb", -1, ["write"], (0, 0, 0), |cx, a| {
    flush(cx, a).await
});
