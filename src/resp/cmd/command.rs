//! `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS
//! [name...]`: the command table, enough for clients that ask at start-up.

use crate::resp::cmd::{COMMANDS, Spec, lookup};
use crate::resp::proto::Reply;

fn info(s: &Spec) -> Reply {
    Reply::Array(vec![
        Reply::text(s.name),
        Reply::Int(i64::from(s.arity)),
        Reply::Array(s.flags.iter().map(|f| Reply::Status((*f).into())).collect()),
        Reply::Int(i64::from(s.keys.0)),
        Reply::Int(i64::from(s.keys.1)),
        Reply::Int(i64::from(s.keys.2)),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

fn docs(s: &Spec) -> (Reply, Reply) {
    (
        Reply::text(s.name),
        Reply::Map(vec![
            (
                Reply::text("summary"),
                Reply::text(format!("the Redis {} command", s.name.to_ascii_uppercase())),
            ),
            (Reply::text("since"), Reply::text("1.0.0")),
            (Reply::text("group"), Reply::text("generic")),
        ]),
    )
}

command!("command", -1, ["loading", "stale"], (0, 0, 0), |cx, a| {
    if a.len() == 1 {
        return Ok(Reply::Array(COMMANDS.iter().map(|s| info(s)).collect()));
    }
    let names = || {
        a[2..]
            .iter()
            .map(|n| lookup(&String::from_utf8_lossy(n).to_ascii_lowercase()))
    };
    match a[1].to_ascii_uppercase().as_slice() {
        b"COUNT" if a.len() == 2 => Ok(Reply::Int(COMMANDS.len() as i64)),
        b"INFO" => Ok(Reply::Array(if a.len() == 2 {
            COMMANDS.iter().map(|s| info(s)).collect()
        } else {
            names().map(|s| s.map_or(Reply::NullArray, info)).collect()
        })),
        b"DOCS" => Ok(Reply::Map(if a.len() == 2 {
            COMMANDS.iter().map(|s| docs(s)).collect()
        } else {
            names().flatten().map(docs).collect()
        })),
        b"COUNT" => Err(crate::resp::subcommand_arity("command", &a[1])),
        _ => Err(crate::resp::unknown_subcommand("COMMAND", &a[1])),
    }
});
