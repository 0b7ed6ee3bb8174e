//! `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms|KEEPTTL]`.
//! A plain SET is one write; with NX, XX, GET or KEEPTTL it reads the key
//! and commits only if it did not change in between.

use crate::resp::cmd::common::{Ttl, put, ttl_option};
use crate::resp::proto::Reply;
use crate::resp::syntax_error;
use crate::storage::Batch;

command!("set", -3, ["write"], (1, 1, 1), |cx, a| {
    let (key, value) = (&a[1], &a[2]);
    let (mut nx, mut xx, mut get, mut ttl) = (false, false, false, Ttl::Unset);
    // The TTL option given, by name: repeating it replaces its time, as in
    // Redis; another TTL option with it is a syntax error.
    let mut ttl_word: Option<Vec<u8>> = None;
    let mut i = 3;
    while i < a.len() {
        let word = a[i].to_ascii_uppercase();
        if let Some(t) = ttl_option(a, &mut i, "set")? {
            if ttl != Ttl::Unset && ttl_word.as_deref() != Some(word.as_slice()) {
                return Err(syntax_error());
            }
            ttl = t;
            ttl_word = Some(word);
            continue;
        }
        match word.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if matches!(ttl, Ttl::Unset | Ttl::Keep) => ttl = Ttl::Keep,
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    let at = move |keep: Option<u64>| match ttl {
        Ttl::At(t) => Some(t as u64),
        Ttl::Keep => keep,
        Ttl::Unset | Ttl::Persist => None,
    };
    if !nx && !xx && !get && ttl != Ttl::Keep {
        cx.write(Batch {
            ops: vec![put(key, value.clone(), at(None))],
            conditions: vec![],
        })
        .await?;
        return Ok(Reply::OK);
    }
    if !get && let crate::resp::coll::Found::Coll(_, rec) = cx.lookup(key)? {
        // A collection under the name: NX fails; otherwise SET replaces it
        // (Conn::write removes the collection in the same batch).
        if nx {
            return Ok(Reply::Null);
        }
        cx.write(Batch {
            ops: vec![put(key, value.clone(), at(rec.expires_at_ms))],
            conditions: vec![],
        })
        .await?;
        return Ok(Reply::OK);
    }
    let (written, old) = cx
        .update(key, {
            let key = key.to_vec();
            let value = value.clone();
            move |cur| {
                let old = cur.map(|v| v.value.clone());
                if (nx && cur.is_some()) || (xx && cur.is_none()) {
                    return Ok((None, (false, old)));
                }
                let op = put(&key, value.clone(), at(cur.and_then(|v| v.expires_at_ms)));
                Ok((Some(op), (true, old)))
            }
        })
        .await?;
    Ok(match (get, written) {
        (true, _) => old.map_or(Reply::Null, Reply::Bulk),
        (false, true) => Reply::OK,
        (false, false) => Reply::Null,
    })
});
