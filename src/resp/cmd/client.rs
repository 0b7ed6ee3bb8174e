//! `CLIENT SETNAME|GETNAME|ID|INFO|SETINFO|NO-EVICT|NO-TOUCH`.

use crate::resp::proto::Reply;
use crate::resp::{Conn, syntax_error};

/// This connection as Redis 7.2's CLIENT INFO describes one, every field
/// in its order (client libraries parse them: redis-py's `client_info()`
/// needs each integer one). No pub/sub, one database, one user: `sub`,
/// `psub`, `ssub` and `db` are 0, `user` is `default`. The buffers are
/// this connection's own: `qbuf` is input not yet parsed, `rbs` and `rbp`
/// the input buffer's size (it never shrinks, so its size is its peak),
/// `obl` replies not yet written; there is no reply list beyond that
/// buffer, so `oll` and `omem` are 0.
fn describe(cx: &Conn, args: &[Vec<u8>]) -> String {
    let held = cx.held;
    let argv: usize = args.iter().map(Vec::len).sum();
    let (multi, multi_mem) = match &cx.multi {
        None => (-1, 0),
        Some(m) => (
            m.queued.len() as i64,
            m.queued.iter().flatten().map(Vec::len).sum::<usize>(),
        ),
    };
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle=0 flags={} db=0 sub=0 psub=0 ssub=0 multi={multi} \
         qbuf={} qbuf-free={} argv-mem={argv} multi-mem={multi_mem} rbs={} rbp={} obl={} oll=0 omem=0 \
         tot-mem={} events=r cmd=client|info user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
        cx.id,
        cx.peer,
        cx.shared.addr,
        cx.fd,
        String::from_utf8_lossy(cx.name.as_deref().unwrap_or_default()),
        cx.since.elapsed().as_secs(),
        if cx.multi.is_some() { "x" } else { "N" },
        held.input,
        held.input_cap.saturating_sub(held.input),
        held.input_cap,
        held.input_cap,
        held.output,
        held.input_cap + held.output_cap + argv + multi_mem,
        cx.proto,
        cx.lib.0,
        cx.lib.1,
    )
}

/// Whether a client name or library attribute keeps CLIENT LIST's format
/// (no spaces, newlines or other bytes outside `!`..=`~`).
fn printable(v: &[u8]) -> bool {
    v.iter().all(|&b| b > b' ' && b <= b'~')
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
                Ok(Reply::OK)
            }
            b"GETNAME" if a.len() == 2 => Ok(cx.name.clone().map_or(Reply::Null, Reply::Bulk)),
            b"ID" if a.len() == 2 => Ok(Reply::Int(cx.id as i64)),
            b"INFO" if a.len() == 2 => Ok(Reply::text(describe(cx, a))),
            // Client libraries announce themselves; CLIENT INFO shows it.
            b"SETINFO" if a.len() == 4 => {
                let attr = String::from_utf8_lossy(&a[2]);
                let slot = match attr.to_ascii_lowercase().as_str() {
                    "lib-name" => &mut cx.lib.0,
                    "lib-ver" => &mut cx.lib.1,
                    _ => return Err(Reply::err(format!("Unrecognized option '{attr}'"))),
                };
                if !printable(&a[3]) {
                    return Err(Reply::err(format!(
                        "{attr} cannot contain spaces, newlines or special characters."
                    )));
                }
                *slot = String::from_utf8_lossy(&a[3]).into_owned();
                Ok(Reply::OK)
            }
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
