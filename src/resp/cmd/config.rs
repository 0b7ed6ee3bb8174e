//! `CONFIG GET pattern...`, `CONFIG SET name value`, `CONFIG RESETSTAT`
//! (INFO's stats counters back to 0): the settings that exist. Most are
//! fixed at start-up (flags); the SLOWLOG's `slowlog-log-slower-than` (µs)
//! and `slowlog-max-len` can be changed.

use crate::resp::glob::matches;
use crate::resp::proto::Reply;
use crate::resp::{Conn, subcommand_arity, unknown_subcommand};

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
            sh.server.slowlog.slower_than_us().to_string(),
        ),
        ("slowlog-max-len", sh.server.slowlog.max_len().to_string()),
    ]
}

/// An integer setting's value, or Redis' CONFIG SET error.
fn config_int(name: &str, v: &[u8]) -> Result<i64, Reply> {
    crate::resp::proto::parse_int(v).ok_or_else(|| {
        Reply::err(format!(
            "CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer"
        ))
    })
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
                            let us = config_int(&name, &pair[1])?;
                            cx.shared.server.slowlog.set_slower_than_us(us);
                        }
                        "slowlog-max-len" => {
                            let n = config_int(&name, &pair[1])?;
                            if n < 0 {
                                return Err(Reply::err(format!(
                                    "CONFIG SET failed (possibly related to argument 'slowlog-max-len') - argument must be between 0 and {} inclusive",
                                    i64::MAX
                                )));
                            }
                            cx.shared.server.slowlog.set_max_len(n as usize);
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
            b"GET" | b"SET" | b"RESETSTAT" => Err(subcommand_arity("config", &a[1])),
            _ => Err(unknown_subcommand("CONFIG", &a[1])),
        }
    }
);
