//! `AUTH [username] password`: no password is configured (authentication
//! comes with the security work), so AUTH answers as Redis does then.

use crate::resp::proto::Reply;

command!(
    "auth",
    -2,
    ["noscript", "loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        if a.len() > 3 {
            return Err(Reply::err("syntax error"));
        }
        Err(Reply::err(
            "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ))
    }
);
