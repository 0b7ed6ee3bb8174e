//! `PING [message]`: PONG, or the message (in RESP2 subscribed mode,
//! ["pong", message]).

use crate::resp::proto::Reply;

command!("ping", -1, ["fast", "stale"], (0, 0, 0), |cx, a| {
    // In RESP2 subscribed mode, as Redis: ["pong", message or ""].
    if cx.proto == 2 && cx.subscribed() && a.len() <= 2 {
        return Ok(Reply::Array(vec![
            Reply::text("pong"),
            Reply::Bulk(a.get(1).cloned().unwrap_or_default()),
        ]));
    }
    match a.len() {
        1 => Ok(Reply::Simple("PONG")),
        2 => Ok(Reply::Bulk(a[1].clone())),
        _ => Err(Reply::err("wrong number of arguments for 'ping' command")),
    }
});
