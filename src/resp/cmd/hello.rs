//! `HELLO [protover [AUTH username password] [SETNAME name]]`: switches
//! the connection to RESP2 or RESP3 and describes the server.

use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!(
    "hello",
    -1,
    ["noscript", "loading", "stale", "fast"],
    (0, 0, 0),
    |cx, a| {
        let mut proto = cx.proto;
        let mut i = 1;
        if a.len() > 1 {
            let v = int_arg(&a[1])
                .map_err(|_| Reply::err("Protocol version is not an integer or out of range"))?;
            if !(2..=3).contains(&v) {
                return Err(Reply::Error("NOPROTO unsupported protocol version".into()));
            }
            proto = v as u8;
            i = 2;
        }
        let mut name = None;
        while i < a.len() {
            match a[i].to_ascii_uppercase().as_slice() {
                b"AUTH" if i + 2 < a.len() => {
                    let ok = cx
                        .shared
                        .password
                        .as_ref()
                        .is_some_and(|p| p.matches(&a[i + 2]));
                    if !ok || a[i + 1] != b"default" {
                        return Err(Reply::Error(
                            "WRONGPASS invalid username-password pair or user is disabled.".into(),
                        ));
                    }
                    cx.authenticated = true;
                    i += 3;
                }
                b"SETNAME" if i + 1 < a.len() => {
                    name = Some(a[i + 1].clone());
                    i += 2;
                }
                _ => {
                    return Err(Reply::err(format!(
                        "Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&a[i])
                    )));
                }
            }
        }
        if !cx.authenticated {
            return Err(Reply::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into(),
        ));
        }
        cx.proto = proto;
        if name.is_some() {
            cx.name = name;
        }
        cx.publish_identity();
        Ok(Reply::Map(vec![
            (Reply::text("server"), Reply::text("redis")),
            (Reply::text("version"), Reply::text("7.2.0")),
            (Reply::text("proto"), Reply::Int(i64::from(proto))),
            (Reply::text("id"), Reply::Int(cx.slot.id as i64)),
            (Reply::text("mode"), Reply::text("standalone")),
            (Reply::text("role"), Reply::text("master")),
            (Reply::text("modules"), Reply::Array(vec![])),
        ]))
    }
);
