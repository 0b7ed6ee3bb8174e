//! `TIME`: Unix seconds and microseconds.

use crate::resp::proto::Reply;

command!(
    "time",
    1,
    ["loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(Reply::Array(vec![
            Reply::text(now.as_secs().to_string()),
            Reply::text(now.subsec_micros().to_string()),
        ]))
    }
);
