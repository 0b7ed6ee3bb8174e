//! `SLOWLOG GET [count] | LEN | RESET | HELP`: the daemon's RESP slow log
//! (see [`crate::resp::slowlog`]), entries as Redis gives them: id, Unix
//! time, microseconds, arguments, client address, client name.

use crate::resp::proto::Reply;

command!(
    "slowlog",
    -2,
    ["admin", "loading", "stale"],
    (0, 0, 0),
    |cx, a| {
        let log = &cx.shared.server.slowlog;
        match a[1].to_ascii_uppercase().as_slice() {
            b"GET" if a.len() <= 3 => {
                let n = match a.get(2) {
                    None => Some(10),
                    Some(c) => {
                        let bad = || Reply::err("count should be greater than or equal to -1");
                        match crate::resp::proto::parse_int(c).ok_or_else(bad)? {
                            -1 => None,
                            n if n < -1 => return Err(bad()),
                            n => Some(n as usize),
                        }
                    }
                };
                Ok(Reply::Array(
                    log.get(n)
                        .into_iter()
                        .map(|e| {
                            Reply::Array(vec![
                                Reply::Int(e.id as i64),
                                Reply::Int(e.at as i64),
                                Reply::Int(e.micros as i64),
                                Reply::Array(e.args.into_iter().map(Reply::Bulk).collect()),
                                Reply::text(e.addr),
                                Reply::Bulk(e.name),
                            ])
                        })
                        .collect(),
                ))
            }
            b"LEN" if a.len() == 2 => Ok(Reply::Int(log.len() as i64)),
            b"RESET" if a.len() == 2 => {
                log.reset();
                Ok(Reply::OK)
            }
            b"HELP" if a.len() == 2 => Ok(Reply::Array(
                [
                    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "GET [<count>]",
                    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                    "    Entries are made of:",
                    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
                    "    client name",
                    "LEN",
                    "    Return the length of the slowlog.",
                    "RESET",
                    "    Reset the slowlog.",
                    "HELP",
                    "    Prints this help.",
                ]
                .into_iter()
                .map(|l| Reply::Status(l.to_string()))
                .collect(),
            )),
            b"GET" => Err(Reply::err(format!(
                "unknown subcommand or wrong number of arguments for '{}'. Try SLOWLOG HELP.",
                String::from_utf8_lossy(&a[1])
            ))),
            b"LEN" | b"RESET" | b"HELP" => Err(crate::resp::subcommand_arity("slowlog", &a[1])),
            _ => Err(crate::resp::unknown_subcommand("SLOWLOG", &a[1])),
        }
    }
);
