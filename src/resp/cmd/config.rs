//! `CONFIG GET pattern...`, `CONFIG SET name value`, `CONFIG RESETSTAT`
//! (INFO's stats counters back to 0): the settings that exist. Most are
//! fixed at start-up (flags); the slow-request threshold can be changed
//! (`slowlog-log-slower-than`, in µs).

use crate::resp::glob::matches;
use crate::resp::proto::Reply;
use crate::resp::{Conn, int_arg};

fn settings(cx: &Conn) -> Vec<(&'static str, String)> {
    let sh = &cx.shared;
    let appendfsync = match sh.sync.as_str() {
        "always" => "always".to_string(),
        "none" => "no".to_string(),
        _ => "everysec".to_string(),
    };
    vec![
        ("appendonly", "yes".into()),
        ("appendfsync", appendfsync),
        ("save", String::new()),
        ("databases", "1".into()),
        (
            "port",
            sh.addr.rsplit(':').next().unwrap_or_default().into(),
        ),
        (
            "bind",
            sh.addr.rsplit_once(':').map_or("", |(h, _)| h).into(),
        ),
        ("maxclients", sh.conn_limits.max_connections.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("proto-max-bulk-len", sh.limits.max_value_size.to_string()),
        ("timeout", "0".into()),
        (
            "slowlog-log-slower-than",
            crate::metrics::metrics()
                .slow_request_threshold()
                .as_micros()
                .to_string(),
        ),
    ]
}

command!(
    "config",
    -2,
    ["admin", "noscript", "loading", "stale"],
    (0, 0, 0),
    |cx, a| {
        match a[1].to_ascii_uppercase().as_slice() {
            b"GET" if a.len() >= 3 => {
                let mut pairs = Vec::new();
                for (name, value) in settings(cx) {
                    if a[2..]
                        .iter()
                        .any(|p| matches(&p.to_ascii_lowercase(), name.as_bytes()))
                    {
                        pairs.push((Reply::text(name), Reply::text(value)));
                    }
                }
                Ok(Reply::Map(pairs))
            }
            b"SET" if a.len() >= 4 && a.len().is_multiple_of(2) => {
                for pair in a[2..].chunks(2) {
                    let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                    match name.as_str() {
                        "slowlog-log-slower-than" => {
                            let us = int_arg(&pair[1])?;
                            crate::metrics::metrics().set_slow_request_threshold(
                                std::time::Duration::from_micros(us.max(0) as u64),
                            );
                        }
                        other if settings(cx).iter().any(|(n, _)| *n == other) => {
                            return Err(Reply::err(format!(
                                "CONFIG SET failed (possibly related to argument '{other}') - FlashKV sets it at start-up only (see flashkv --help)"
                            )));
                        }
                        other => {
                            return Err(Reply::err(format!(
                                "Unknown option or number of arguments for CONFIG SET - '{other}'"
                            )));
                        }
                    }
                }
                Ok(Reply::OK)
            }
            b"RESETSTAT" if a.len() == 2 => {
                cx.shared.reset_stats();
                Ok(Reply::OK)
            }
            b"GET" | b"SET" | b"RESETSTAT" => Err(Reply::err(format!(
                "wrong number of arguments for 'config|{}' command",
                String::from_utf8_lossy(&a[1]).to_ascii_lowercase()
            ))),
            _ => Err(Reply::err(format!(
                "unknown subcommand '{}'. Try CONFIG HELP.",
                String::from_utf8_lossy(&a[1])
            ))),
        }
    }
);
