//! `PEXPIRE key milliseconds [NX|XX|GT|LT]`: 1 if the expiry was set, 0 if the key is absent
//! or the option did not allow it. A time in the past deletes the key. The
//! expiry is stored with the record, so it holds across restarts.

use crate::resp::cmd::common::expire;

command!("pexpire", -3, ["write", "fast"], (1, 1, 1), |cx, a| {
    expire(cx, a, true, false).await
});
