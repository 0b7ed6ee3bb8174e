//! `CLIENT SETNAME|GETNAME|ID|INFO|SETINFO|LIST|NO-EVICT|NO-TOUCH`.

use crate::resp::proto::Reply;
use crate::resp::{Conn, syntax_error};

fn describe(cx: &Conn) -> String {
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 resp={} lib-name= lib-ver=\n",
        cx.id,
        cx.peer,
        cx.shared.addr,
        String::from_utf8_lossy(cx.name.as_deref().unwrap_or_default()),
        cx.since.elapsed().as_secs(),
        cx.proto
    )
}

command!(
    "client",
    -2,
    ["noscript", "loading", "stale"],
    (0, 0, 0),
    |cx, a| {
        match a[1].to_ascii_uppercase().as_slice() {
            b"SETNAME" if a.len() == 3 => {
                if a[2].iter().any(|&b| b <= b' ' || b > b'~') {
                    return Err(Reply::err(
                        "Client names cannot contain spaces, newlines or special characters.",
                    ));
                }
                cx.name = (!a[2].is_empty()).then(|| a[2].clone());
                Ok(Reply::OK)
            }
            b"GETNAME" if a.len() == 2 => Ok(cx.name.clone().map_or(Reply::Null, Reply::Bulk)),
            b"ID" if a.len() == 2 => Ok(Reply::Int(cx.id as i64)),
            b"INFO" if a.len() == 2 => Ok(Reply::text(describe(cx))),
            // Client libraries announce themselves; accepted and not kept.
            b"SETINFO" if a.len() == 4 => Ok(Reply::OK),
            b"NO-EVICT" | b"NO-TOUCH" if a.len() == 3 => Ok(Reply::OK),
            b"SETNAME" | b"GETNAME" | b"ID" | b"INFO" | b"SETINFO" => Err(Reply::err(format!(
                "wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&a[1]).to_ascii_lowercase()
            ))),
            _ if a.len() < 2 => Err(syntax_error()),
            _ => Err(Reply::err(format!(
                "unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(&a[1])
            ))),
        }
    }
);
