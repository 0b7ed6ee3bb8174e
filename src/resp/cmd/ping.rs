//! `PING [message]`: PONG, or the message.

use crate::resp::proto::Reply;

command!("ping", -1, ["fast", "stale"], (0, 0, 0), |cx, a| {
    match a.len() {
        1 => Ok(Reply::Simple("PONG")),
        2 => Ok(Reply::Bulk(a[1].clone())),
        _ => Err(Reply::err("wrong number of arguments for 'ping' command")),
    }
});
