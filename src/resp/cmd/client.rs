//! `CLIENT SETNAME|GETNAME|ID|INFO|LIST|KILL|UNBLOCK|SETINFO|NO-EVICT|NO-TOUCH`.
//!
//! INFO and LIST describe connections as Redis 7.2 does, every field in
//! its order (client libraries parse them: redis-py's `client_info()`
//! needs each integer one); see [`crate::resp::clients::Slot::describe`].
//! LIST covers every open RESP connection of the daemon, whichever shard
//! thread serves it.

use crate::resp::proto::Reply;
use crate::resp::{Conn, subcommand_arity, syntax_error, unknown_subcommand};

/// Whether a client name or library attribute keeps CLIENT LIST's format
/// (no spaces, newlines or other bytes outside `!`..=`~`).
fn printable(v: &[u8]) -> bool {
    v.iter().all(|&b| b > b' ' && b <= b'~')
}

/// A TYPE filter of CLIENT LIST and CLIENT KILL.
#[derive(Clone, Copy)]
enum TypeFilter {
    /// `normal`: every connection not in RESP2 subscribed mode.
    Normal,
    /// `pubsub`: RESP2 connections in subscribed mode (as Redis types
    /// them).
    PubSub,
    /// `master`, `replica`, `slave`: none (no replication).
    Nobody,
}

impl TypeFilter {
    /// Parses a TYPE argument; Redis' error for an unknown one.
    fn parse(kind: &[u8]) -> Result<TypeFilter, Reply> {
        match kind.to_ascii_lowercase().as_slice() {
            b"normal" => Ok(TypeFilter::Normal),
            b"pubsub" => Ok(TypeFilter::PubSub),
            b"master" | b"replica" | b"slave" => Ok(TypeFilter::Nobody),
            _ => Err(Reply::err(format!(
                "Unknown client type '{}'",
                String::from_utf8_lossy(kind)
            ))),
        }
    }

    fn takes(self, s: &crate::resp::clients::Slot) -> bool {
        match self {
            TypeFilter::Normal => !s.is_pubsub(),
            TypeFilter::PubSub => s.is_pubsub(),
            TypeFilter::Nobody => false,
        }
    }
}

/// `CLIENT LIST [TYPE type] [ID id ...]`: one line per open connection,
/// by id. There are no replicas: TYPE master, replica and slave list none.
fn list(cx: &Conn, a: &[Vec<u8>]) -> Result<Reply, Reply> {
    let mut ids: Option<Vec<u64>> = None;
    let mut ty: Option<TypeFilter> = None;
    let mut i = 2;
    while i < a.len() {
        match a[i].to_ascii_uppercase().as_slice() {
            b"TYPE" if i + 1 < a.len() => {
                ty = Some(TypeFilter::parse(&a[i + 1])?);
                i += 2;
            }
            b"ID" if i + 1 < a.len() => {
                let mut got = Vec::new();
                i += 1;
                while i < a.len() {
                    let id = std::str::from_utf8(&a[i])
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|id| *id > 0)
                        .ok_or_else(|| Reply::err("Invalid client ID"))?;
                    got.push(id);
                    i += 1;
                }
                ids = Some(got);
            }
            _ => return Err(syntax_error()),
        }
    }
    let mut out = String::new();
    for slot in cx.shared.server.clients.all() {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&slot.id))
            || ty.is_some_and(|t| !t.takes(&slot))
        {
            continue;
        }
        let me = (slot.id == cx.slot.id).then_some("client|list");
        slot.describe(me, &mut out);
    }
    Ok(Reply::text(out))
}

/// `CLIENT KILL addr` (the old form: OK, or an error if no connection
/// has that address) or `CLIENT KILL filter value ...` (ID, TYPE, USER,
/// ADDR, LADDR, SKIPME, MAXAGE: how many were killed). Killed connections
/// leave CLIENT LIST at once and close, after the reply to a command they
/// are running (one that waits for a client that stopped reading is cut
/// off).
fn kill(cx: &Conn, a: &[Vec<u8>]) -> Result<Reply, Reply> {
    let clients = &cx.shared.server.clients;
    if a.len() == 3 {
        let n = clients.kill(|s| s.addr.as_bytes() == a[2].as_slice());
        return if n == 0 {
            Err(Reply::err("No such client"))
        } else {
            Ok(Reply::OK)
        };
    }
    if !a.len().is_multiple_of(2) {
        return Err(syntax_error());
    }
    let (mut id, mut ty, mut addr, mut laddr, mut skipme, mut maxage) =
        (None, None::<TypeFilter>, None, None, true, None);
    for pair in a[2..].chunks(2) {
        let v = &pair[1];
        match pair[0].to_ascii_uppercase().as_slice() {
            b"ID" => {
                id = Some(
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|id| *id > 0)
                        .ok_or_else(|| Reply::err("client-id should be greater than 0"))?,
                );
            }
            b"TYPE" => ty = Some(TypeFilter::parse(v)?),
            // Every connection is the default user's.
            b"USER" if v.as_slice() == b"default" => {}
            b"USER" => {
                return Err(Reply::err(format!(
                    "No such user '{}'",
                    String::from_utf8_lossy(v)
                )));
            }
            b"ADDR" => addr = Some(v.clone()),
            b"LADDR" => laddr = Some(v.clone()),
            b"SKIPME" => {
                skipme = match v.to_ascii_lowercase().as_slice() {
                    b"yes" => true,
                    b"no" => false,
                    _ => return Err(syntax_error()),
                }
            }
            b"MAXAGE" => {
                maxage = Some(
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(crate::resp::not_integer)?,
                );
            }
            _ => return Err(syntax_error()),
        }
    }
    let n = clients.kill(|s| {
        ty.is_none_or(|t| t.takes(s))
            && id.is_none_or(|id| s.id == id)
            && addr
                .as_ref()
                .is_none_or(|x| s.addr.as_bytes() == x.as_slice())
            && laddr
                .as_ref()
                .is_none_or(|x| s.laddr.as_bytes() == x.as_slice())
            && maxage.is_none_or(|m| s.age_secs() >= m)
            && !(skipme && s.id == cx.slot.id)
    });
    Ok(Reply::Int(n as i64))
}

command!(
    "client",
    -2,
    ["noscript", "loading", "stale"],
    (0, 0, 0),
    |cx, a| {
        match a[1].to_ascii_uppercase().as_slice() {
            b"SETNAME" if a.len() == 3 => {
                if !printable(&a[2]) {
                    return Err(Reply::err(
                        "Client names cannot contain spaces, newlines or special characters.",
                    ));
                }
                cx.name = (!a[2].is_empty()).then(|| a[2].clone());
                cx.publish_identity();
                Ok(Reply::OK)
            }
            b"GETNAME" if a.len() == 2 => Ok(cx.name.clone().map_or(Reply::Null, Reply::Bulk)),
            b"ID" if a.len() == 2 => Ok(Reply::Int(cx.slot.id as i64)),
            b"INFO" if a.len() == 2 => {
                let mut out = String::new();
                cx.slot.describe(Some("client|info"), &mut out);
                Ok(Reply::text(out))
            }
            b"LIST" => list(cx, a),
            b"KILL" if a.len() >= 3 => kill(cx, a),
            // Client libraries announce themselves; CLIENT INFO shows it.
            b"SETINFO" if a.len() == 4 => {
                let attr = String::from_utf8_lossy(&a[2]);
                let version = match attr.to_ascii_lowercase().as_str() {
                    "lib-name" => false,
                    "lib-ver" => true,
                    _ => return Err(Reply::err(format!("Unrecognized option '{attr}'"))),
                };
                if !printable(&a[3]) {
                    return Err(Reply::err(format!(
                        "{attr} cannot contain spaces, newlines or special characters."
                    )));
                }
                cx.slot
                    .set_lib(version, String::from_utf8_lossy(&a[3]).into_owned());
                Ok(Reply::OK)
            }
            b"NO-EVICT" | b"NO-TOUCH" if a.len() == 3 => Ok(Reply::OK),
            // Ends a blocking pop: as a timeout, or with an UNBLOCKED error.
            b"UNBLOCK" if a.len() == 3 || a.len() == 4 => {
                let id = crate::resp::int_arg(&a[2])?;
                let error = match a.get(3).map(|o| o.to_ascii_uppercase()) {
                    None => false,
                    Some(o) if o == b"TIMEOUT" => false,
                    Some(o) if o == b"ERROR" => true,
                    Some(_) => {
                        return Err(Reply::err(
                            "CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
                        ));
                    }
                };
                let done = u64::try_from(id)
                    .ok()
                    .and_then(|id| cx.shared.server.clients.get(id))
                    .is_some_and(|s| s.unblock(error));
                Ok(Reply::Int(i64::from(done)))
            }
            b"SETNAME" | b"GETNAME" | b"ID" | b"INFO" | b"SETINFO" | b"KILL" | b"UNBLOCK" => {
                Err(subcommand_arity("client", &a[1]))
            }
            _ if a.len() < 2 => Err(syntax_error()),
            _ => Err(unknown_subcommand("CLIENT", &a[1])),
        }
    }
);
