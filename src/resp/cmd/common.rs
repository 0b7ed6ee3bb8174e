//! Helpers several commands share: expiry arithmetic, the INCR family,
//! the EXPIRE family, TTL, deletes grouped by shard, SET-style options.

use crate::resp::proto::Reply;
use crate::resp::{Conn, int_arg, not_integer, syntax_error};
use crate::storage::store::now_ms;
use crate::storage::{Batch, Op, Outcome, Value};

/// A put of `value` with an absolute expiry.
pub fn put(key: &[u8], value: Vec<u8>, expires_at_ms: Option<u64>) -> Op {
    Op::Put {
        key: key.to_vec(),
        value,
        expires_at_ms,
    }
}

/// `ERR invalid expire time in '<cmd>' command`.
pub fn bad_expire(cmd: &str) -> Reply {
    Reply::err(format!("invalid expire time in '{cmd}' command"))
}

/// An absolute expiry in Unix ms from an EX/PX/EXAT/PXAT-style argument:
/// `n` in seconds unless `ms`, relative unless `absolute`. Overflow is the
/// Redis error; so is a non-positive relative time when `positive`.
pub fn expiry(n: i64, ms: bool, absolute: bool, positive: bool, cmd: &str) -> Result<i64, Reply> {
    if positive && n <= 0 {
        return Err(bad_expire(cmd));
    }
    let n_ms = if ms { Some(n) } else { n.checked_mul(1000) };
    let at = match (n_ms, absolute) {
        (Some(v), true) => Some(v),
        (Some(v), false) => v.checked_add(now_ms() as i64),
        (None, _) => None,
    };
    at.ok_or_else(|| bad_expire(cmd))
}

/// Milliseconds left before `v` expires (None: no expiry).
pub fn remaining_ms(v: &Value) -> Option<u64> {
    v.expires_at_ms.map(|t| t.saturating_sub(now_ms()).max(1))
}

/// INCRBY and its kin: adds `delta` to the integer at `key` (absent = 0),
/// keeping its TTL.
pub async fn incr_by(cx: &Conn, key: &[u8], delta: i64) -> Result<Reply, Reply> {
    let n = cx
        .update(key, |cur| {
            let old = match cur {
                None => 0,
                Some(v) => std::str::from_utf8(&v.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(not_integer)?,
            };
            let new = old
                .checked_add(delta)
                .ok_or_else(|| Reply::err("increment or decrement would overflow"))?;
            let ttl = cur.and_then(|v| v.expires_at_ms);
            Ok((Some(put(key, new.to_string().into_bytes(), ttl)), new))
        })
        .await?;
    Ok(Reply::Int(n))
}

/// Conditions of EXPIRE and kin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: `args` = name key time [NX|XX|GT|LT].
pub async fn expire(cx: &Conn, args: &[Vec<u8>], ms: bool, absolute: bool) -> Result<Reply, Reply> {
    let cmd = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let key = &args[1];
    let n = int_arg(&args[2])?;
    let mut when = When::Always;
    for opt in &args[3..] {
        let w = match opt.to_ascii_uppercase().as_slice() {
            b"NX" => When::Nx,
            b"XX" => When::Xx,
            b"GT" => When::Gt,
            b"LT" => When::Lt,
            _ => {
                return Err(Reply::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )));
            }
        };
        if when != When::Always && when != w {
            return Err(Reply::err(
                "NX and XX, GT or LT options at the same time are not compatible",
            ));
        }
        when = w;
    }
    let at = expiry(n, ms, absolute, false, &cmd)?;
    let done = cx
        .update(key, |cur| {
            let Some(v) = cur else {
                return Ok((None, false));
            };
            let old = v.expires_at_ms;
            let allowed = match when {
                When::Always => true,
                When::Nx => old.is_none(),
                When::Xx => old.is_some(),
                // No TTL counts as an infinite one.
                When::Gt => old.is_some_and(|o| at > o as i64),
                When::Lt => old.is_none_or(|o| at < o as i64),
            };
            if !allowed {
                return Ok((None, false));
            }
            if at <= now_ms() as i64 {
                // A time in the past deletes the key, as in Redis.
                return Ok((Some(Op::Delete { key: key.to_vec() }), true));
            }
            Ok((Some(put(key, v.value.clone(), Some(at as u64))), true))
        })
        .await?;
    Ok(Reply::Int(i64::from(done)))
}

/// TTL and PTTL: -2 absent, -1 no expiry.
pub fn ttl(cx: &Conn, key: &[u8], ms: bool) -> Result<Reply, Reply> {
    Ok(Reply::Int(match cx.get(key)? {
        None => -2,
        Some(v) => match remaining_ms(&v) {
            None => -1,
            Some(left) if ms => left as i64,
            Some(left) => left.div_ceil(1000) as i64,
        },
    }))
}

/// Deletes keys (grouped per shard, one atomic batch per shard); returns how
/// many existed.
pub async fn delete(cx: &Conn, keys: &[Vec<u8>]) -> Result<Reply, Reply> {
    let mut ops = Vec::with_capacity(keys.len());
    for k in keys {
        cx.check_key(k)?;
        ops.push(Op::Delete { key: k.clone() });
    }
    // A key named twice is removed once.
    ops.sort_by(|a, b| a.key().cmp(b.key()));
    ops.dedup_by(|a, b| a.key() == b.key());
    // One atomic batch, across shards if it must.
    match cx
        .write(Batch {
            ops,
            conditions: vec![],
        })
        .await?
    {
        Outcome::Committed { removed, .. } => Ok(Reply::Int(i64::from(removed))),
        Outcome::ConditionFailed { .. } => unreachable!("a batch without conditions"),
    }
}

/// The expiry options of SET and GETEX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No option: SET drops the TTL, GETEX keeps it.
    Unset,
    /// Expire at this Unix ms.
    At(i64),
    /// KEEPTTL.
    Keep,
    /// PERSIST (GETEX).
    Persist,
}

/// Parses one EX/PX/EXAT/PXAT option at `args[*i]` (and its value),
/// advancing `i`; None if `args[*i]` is not one.
pub fn ttl_option(args: &[Vec<u8>], i: &mut usize, cmd: &str) -> Result<Option<Ttl>, Reply> {
    let (ms, absolute) = match args[*i].to_ascii_uppercase().as_slice() {
        b"EX" => (false, false),
        b"PX" => (true, false),
        b"EXAT" => (false, true),
        b"PXAT" => (true, true),
        _ => return Ok(None),
    };
    let v = args.get(*i + 1).ok_or_else(syntax_error)?;
    let n = int_arg(v)?;
    *i += 2;
    Ok(Some(Ttl::At(expiry(n, ms, absolute, true, cmd)?)))
}
