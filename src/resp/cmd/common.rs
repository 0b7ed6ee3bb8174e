//! Helpers several commands share: expiry arithmetic, the INCR family,
//! the EXPIRE family, TTL, deletes, RENAME, FLUSHDB, the key listing of
//! KEYS/SCAN/RANDOMKEY, SET-style options.

use std::ops::Bound;

use crate::keyspace;
use crate::resp::coll::{Found, Meta};
use crate::resp::proto::Reply;
use crate::resp::{Conn, error_reply, int_arg, not_integer, syntax_error};
use crate::shard::Router;
use crate::shard::router::Scan;
use crate::storage::store::now_ms;
use crate::storage::{Batch, Condition, Op, Outcome, Value};

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
        .update(key, {
            let key = key.to_vec();
            move |cur| {
                let old = match cur {
                    None => 0,
                    Some(v) => stored_int(&v.value).ok_or_else(not_integer)?,
                };
                let new = old
                    .checked_add(delta)
                    .ok_or_else(|| Reply::err("increment or decrement would overflow"))?;
                let ttl = cur.and_then(|v| v.expires_at_ms);
                Ok((Some(put(&key, new.to_string().into_bytes(), ttl)), new))
            }
        })
        .await?;
    Ok(Reply::Int(n))
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT: `args` = name key time
/// [NX|XX|GT|LT ...]. As in Redis, XX may go with GT or LT; NX goes with
/// none of the others, GT not with LT.
pub async fn expire(cx: &Conn, args: &[Vec<u8>], ms: bool, absolute: bool) -> Result<Reply, Reply> {
    let cmd = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let key = &args[1];
    let n = int_arg(&args[2])?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &args[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(Reply::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Reply::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Reply::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    let at = expiry(n, ms, absolute, false, &cmd)?;
    let done = cx
        .update_any(key, |cur| {
            let Some(v) = cur else {
                return Ok((None, false));
            };
            let old = v.expires_at_ms;
            // No TTL counts as an infinite one.
            let refused = (nx && old.is_some())
                || (xx && old.is_none())
                || (gt && old.is_none_or(|o| at <= o as i64))
                || (lt && old.is_some_and(|o| at >= o as i64));
            if refused {
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
    Ok(Reply::Int(match cx.lookup(key)?.record() {
        None => -2,
        Some(v) => match remaining_ms(v) {
            None => -1,
            Some(left) if ms => left as i64,
            // Rounded to the nearest second, as Redis rounds it.
            Some(left) => ((left + 500) / 1000) as i64,
        },
    }))
}

/// EXPIRETIME and PEXPIRETIME: when `key` expires (Unix seconds, or
/// milliseconds if `ms`), -1 if it does not, -2 if it is absent.
pub fn expire_time(cx: &Conn, key: &[u8], ms: bool) -> Result<Reply, Reply> {
    Ok(Reply::Int(match cx.lookup(key)?.record() {
        None => -2,
        Some(v) => match v.expires_at_ms {
            None => -1,
            Some(at) if ms => at as i64,
            Some(at) => (at.saturating_add(500) / 1000) as i64,
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

/// RENAME and RENAMENX: moves a string or a collection (its elements under
/// a new generation) to `dst`, replacing what `dst` held, in one atomic
/// batch (a transaction when the two keys live on different shards).
/// Returns whether it moved (false: NX and `dst` exists).
pub async fn rename(cx: &Conn, src: &[u8], dst: &[u8], nx: bool) -> Result<bool, Reply> {
    cx.check_key(dst)?;
    for _ in 0..64 {
        let view = cx.view().await;
        let found = cx.lookup_in(&view, src)?;
        let Some(rec) = found.record().cloned() else {
            return Err(Reply::err("no such key"));
        };
        if src == dst {
            return Ok(!nx);
        }
        let target = cx.lookup_in(&view, dst)?;
        if nx && target.record().is_some() {
            return Ok(false);
        }
        let (dst_meta, src_meta) = (keyspace::meta_key(dst), keyspace::meta_key(src));
        let mut ops = Vec::new();
        let mut conditions = vec![
            Condition {
                key: src.to_vec(),
                expected_version: match &found {
                    Found::Str(v) => v.version,
                    _ => 0,
                },
            },
            Condition {
                key: src_meta.clone(),
                expected_version: match &found {
                    Found::Coll(_, v) => v.version,
                    _ => 0,
                },
            },
        ];
        // Whatever `dst` holds goes (its elements become orphans).
        for (k, v) in [
            (dst.to_vec(), matches!(target, Found::Str(_))),
            (dst_meta.clone(), matches!(target, Found::Coll(..))),
        ] {
            let version = if v {
                target.record().map_or(0, |r| r.version)
            } else {
                0
            };
            conditions.push(Condition {
                key: k.clone(),
                expected_version: version,
            });
            if v {
                ops.push(Op::Delete { key: k });
            }
        }
        match found {
            Found::None => unreachable!("a record was found"),
            Found::Str(v) => {
                ops.push(Op::Delete { key: src.to_vec() });
                ops.push(put(dst, v.value, v.expires_at_ms));
            }
            Found::Coll(meta, _) => {
                let Some(c) = cx.read_coll_in(view, src, meta.kind)? else {
                    continue;
                };
                let moved = Meta {
                    generation: crate::resp::coll::new_generation(),
                    ..meta
                };
                let prefix = keyspace::elem_prefix(dst, moved.generation);
                for (suffix, value) in c.all()? {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&suffix);
                    ops.push(put(&key, value, None));
                }
                ops.push(Op::Delete { key: src_meta });
                ops.push(put(&dst_meta, moved.encode(), rec.expires_at_ms));
            }
        }
        // A key named on both sides of a delete and a put: the last wins.
        if let Outcome::Committed { .. } = cx.write_raw(Batch { ops, conditions }).await? {
            return Ok(true);
        }
    }
    Err(Reply::err("the keys kept changing; retry"))
}

/// FLUSHDB and FLUSHALL: deletes every key, collections included, in
/// batches of up to 1024 keys per shard.
pub async fn flush(cx: &Conn, args: &[Vec<u8>]) -> Result<Reply, Reply> {
    if args.len() > 2
        || args
            .get(1)
            .is_some_and(|m| !m.eq_ignore_ascii_case(b"ASYNC") && !m.eq_ignore_ascii_case(b"SYNC"))
    {
        return Err(syntax_error());
    }
    let n = cx.router().shard_count();
    let mut pending: Vec<Vec<Op>> = vec![Vec::new(); n];
    let mut scan = cx
        .router()
        .scan_raw(Bound::Unbounded, Bound::Unbounded, false, true);
    while let Some((key, _)) = scan.next_item().map_err(error_reply)? {
        let s = cx.router().shard_of(&key) as usize;
        pending[s].push(Op::Delete { key });
        if pending[s].len() >= 1024 {
            let ops = std::mem::take(&mut pending[s]);
            cx.write_raw(Batch {
                ops,
                conditions: vec![],
            })
            .await?;
        }
    }
    for ops in pending.into_iter().filter(|o| !o.is_empty()) {
        cx.write_raw(Batch {
            ops,
            conditions: vec![],
        })
        .await?;
    }
    Ok(Reply::OK)
}

/// The Redis keys in a range, strings and collections merged in key order,
/// each with its TYPE name. Expired keys are included (callers skip them).
pub struct Keys<'r> {
    strings: Scan<'r>,
    metas: Scan<'r>,
    s: Option<(Vec<u8>, Value)>,
    m: Option<(Vec<u8>, Value)>,
    started: bool,
}

impl<'r> Keys<'r> {
    /// Keys in `[lower, upper]`.
    pub fn new(router: &'r Router, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> Self {
        let (mlo, mhi) = keyspace::meta_range();
        let map = |b: &Bound<Vec<u8>>, unbounded: Bound<Vec<u8>>| match b {
            Bound::Included(k) => Bound::Included(keyspace::meta_key(k)),
            Bound::Excluded(k) => Bound::Excluded(keyspace::meta_key(k)),
            Bound::Unbounded => unbounded,
        };
        let metas = router.scan_raw(
            map(&lower, Bound::Included(mlo)),
            map(&upper, Bound::Excluded(mhi)),
            false,
            false,
        );
        Keys {
            strings: router.scan(lower, upper, false, true),
            metas,
            s: None,
            m: None,
            started: false,
        }
    }

    /// The next key, its record and its type.
    pub fn next_key(&mut self) -> crate::Result<Option<(Vec<u8>, Value, &'static str)>> {
        if !self.started {
            self.started = true;
            self.s = self.strings.next_item()?;
            self.m = self.metas.next_item()?;
        }
        let take_string = match (&self.s, &self.m) {
            (None, None) => return Ok(None),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((sk, _)), Some((mk, _))) => {
                let owner = keyspace::meta_owner(mk).unwrap_or(mk);
                match sk.as_slice().cmp(owner) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => {
                        // A string shadows a collection of the same name.
                        self.m = self.metas.next_item()?;
                        true
                    }
                }
            }
        };
        if take_string {
            let (k, v) = self.s.take().expect("a string is next");
            self.s = self.strings.next_item()?;
            return Ok(Some((k, v, "string")));
        }
        let (k, v) = self.m.take().expect("a collection is next");
        self.m = self.metas.next_item()?;
        let kind = Meta::decode(&v.value).map_or("none", |m| m.kind.name());
        let owner = keyspace::meta_owner(&k).unwrap_or(&k).to_vec();
        Ok(Some((owner, v, kind)))
    }
}

/// A float argument or stored value as Redis reads one (`inf`, `-inf`
/// allowed, NaN not).
pub fn float(b: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(b).ok()?;
    if t.is_empty() || t.trim() != t {
        return None;
    }
    let f = t.parse::<f64>().ok()?;
    (!f.is_nan()).then_some(f)
}

/// An integer stored as text (a hash field, a string), if it is one.
pub fn stored_int(b: &[u8]) -> Option<i64> {
    crate::resp::proto::parse_int(b)
}

/// A pseudo-random number for the RAND* and POP commands (xorshift seeded
/// from the clock and a counter; not for anything secret).
pub fn random() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ t;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The options of HSCAN, SSCAN and ZSCAN after the cursor.
pub struct ScanArgs {
    /// Where to resume: after this element (None: from the start).
    pub after: Option<Vec<u8>>,
    /// MATCH pattern.
    pub pattern: Option<Vec<u8>>,
    /// COUNT.
    pub count: usize,
    /// NOVALUES (HSCAN).
    pub novalues: bool,
    /// The cursor was unknown (expired from the table, or from before a
    /// restart): [`unknown_cursor`].
    pub stale: bool,
}

/// The error for a cursor the table no longer has. Answering "0" (done)
/// would end the caller's iteration early without a word: keys it never
/// saw would look absent. Redis' cursors never expire; FlashKV's name the
/// key to resume after and are kept in a bounded table.
pub fn unknown_cursor(cursor: &[u8]) -> Reply {
    Reply::err(format!(
        "cursor {} is unknown or expired (FlashKV keeps the newest {} scan cursors, none across a restart); start again from 0",
        String::from_utf8_lossy(cursor),
        crate::resp::MAX_CURSORS
    ))
}

/// Parses `key cursor [MATCH p] [COUNT n] [NOVALUES]` (`args[2..]`).
pub fn scan_args(cx: &Conn, args: &[Vec<u8>], novalues_ok: bool) -> Result<ScanArgs, Reply> {
    let cursor = std::str::from_utf8(&args[2])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))?;
    let mut out = ScanArgs {
        after: None,
        pattern: None,
        count: 10,
        novalues: false,
        stale: false,
    };
    if cursor != 0 {
        match cx.shared.cursor(cursor) {
            Some(k) => out.after = Some(k),
            None => out.stale = true,
        }
    }
    let mut i = 3;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"NOVALUES" if novalues_ok => {
                out.novalues = true;
                i += 1;
                continue;
            }
            b"MATCH" => out.pattern = Some(args.get(i + 1).ok_or_else(syntax_error)?.clone()),
            b"COUNT" => {
                let n = int_arg(args.get(i + 1).ok_or_else(syntax_error)?)?;
                if n < 1 {
                    return Err(syntax_error());
                }
                out.count = n as usize;
            }
            _ => return Err(syntax_error()),
        }
        i += 2;
    }
    Ok(out)
}

/// The reply of a *SCAN over collection elements: `page` holds up to
/// `count` + 1 (suffix, reply items) in order; the cursor names the last
/// returned suffix when more remain.
pub fn scan_reply(
    cx: &Conn,
    mut page: Vec<(Vec<u8>, Vec<Reply>)>,
    a: &ScanArgs,
    name_of: impl Fn(&[u8]) -> Vec<u8>,
) -> Reply {
    let more = page.len() > a.count;
    page.truncate(a.count);
    let next = match (more, page.last()) {
        (true, Some((last, _))) => cx.shared.save_cursor(last.clone()),
        _ => 0,
    };
    let mut items = Vec::new();
    for (suffix, replies) in page {
        if a.pattern
            .as_deref()
            .is_none_or(|p| crate::resp::glob::matches(p, &name_of(&suffix)))
        {
            items.extend(replies);
        }
    }
    Reply::Array(vec![Reply::text(next.to_string()), Reply::Array(items)])
}

/// Indexes into `n` items for the RAND* commands: `count` >= 0 picks that
/// many distinct ones (all if fewer), in random order; a negative count
/// picks |count| with repetition.
pub fn random_picks(n: usize, count: i64) -> Vec<usize> {
    if n == 0 || count == 0 {
        return Vec::new();
    }
    if count < 0 {
        return (0..count.unsigned_abs())
            .map(|_| (random() % n as u64) as usize)
            .collect();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    // Partial Fisher-Yates.
    let k = (count as usize).min(n);
    for i in 0..k {
        let j = i + (random() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// The number of Redis keys (DBSIZE, INFO keyspace): the engine's live
/// records less the elements of collections, which are counted by a scan
/// of their namespace (free when there are none).
pub async fn key_count(cx: &Conn) -> Result<i64, Reply> {
    let stats = cx.router().stats().await.map_err(error_reply)?;
    let records: i64 = stats.iter().map(|s| s.keys as i64).sum();
    let (lo, hi) = keyspace::elem_range();
    let mut elems = cx
        .router()
        .scan_raw(Bound::Included(lo), Bound::Excluded(hi), false, true);
    let mut n = 0i64;
    while elems.next_item().map_err(error_reply)?.is_some() {
        n += 1;
    }
    Ok((records - n).max(0))
}

/// The optional count of LPOP, RPOP, SPOP, ZPOPMIN and ZPOPMAX
/// (`args` = `name key [count]`).
pub fn pop_count(args: &[Vec<u8>]) -> Result<Option<u64>, Reply> {
    if args.len() > 3 {
        return Err(syntax_error());
    }
    // Not a number gets the same error as a negative one, as in Redis.
    args.get(2)
        .map(|c| match crate::resp::proto::parse_int(c) {
            Some(n) if n >= 0 => Ok(n as u64),
            _ => Err(Reply::err("value is out of range, must be positive")),
        })
        .transpose()
}

/// Replies a negative RAND* count may ask for at most: each is answered in
/// memory before it is sent, and a count such as -10^12 must get an error,
/// not exhaust the server.
const MAX_RAND_REPEATS: u64 = 10_000_000;

/// The count of HRANDFIELD and SRANDMEMBER.
pub fn rand_count(b: &[u8]) -> Result<i64, Reply> {
    let n = int_arg(b)?;
    if n < 0 && n.unsigned_abs() > MAX_RAND_REPEATS {
        return Err(Reply::err(format!(
            "value is out of range: a negative count may ask for at most {MAX_RAND_REPEATS} \
             members"
        )));
    }
    Ok(n)
}
