//! Shared by the sorted-set commands. A member has two records under the
//! set's generation: `m` + member -> score (f64 bits, big-endian), and
//! `s` + order-preserving score + member -> empty, so that scans of the
//! `s` records walk the set in (score, member) order.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::resp::cmd::common::float;
use crate::resp::coll::{Coll, Found, Kind, View, score_key, score_of};
use crate::resp::proto::Reply;
use crate::resp::{Conn, wrong_type};

/// The score of `member`, if it is one.
pub fn score(c: &Coll<'_>, member: &[u8]) -> Result<Option<f64>, Reply> {
    Ok(c.get(&by_member(member))?.map(|b| decode_score(&b)))
}

fn decode_score(b: &[u8]) -> f64 {
    let a: [u8; 8] = b.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]);
    f64::from_bits(u64::from_be_bytes(a))
}

fn by_member(member: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + member.len());
    k.push(b'm');
    k.extend_from_slice(member);
    k
}

fn by_score(score: f64, member: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + member.len());
    k.push(b's');
    k.extend_from_slice(&score_key(score));
    k.extend_from_slice(member);
    k
}

/// Sets the score of `member` (whose current score is `old`).
pub fn set(c: &mut Coll<'_>, member: &[u8], old: Option<f64>, new: f64) -> Result<(), Reply> {
    match old {
        Some(o) => c.del(by_score(o, member)),
        None => c.meta.len += 1,
    }
    c.put(by_member(member), new.to_bits().to_be_bytes().to_vec())?;
    c.put(by_score(new, member), Vec::new())
}

/// Removes `member` (whose score is `old`).
pub fn remove(c: &mut Coll<'_>, member: &[u8], old: f64) {
    c.del(by_member(member));
    c.del(by_score(old, member));
    c.meta.len -= 1;
}

/// Members in (score, member) order (or reverse) with scores within
/// `range`, at most `limit`.
pub fn by_scores(
    c: &Coll<'_>,
    range: &ScoreRange,
    reverse: bool,
    limit: usize,
) -> Result<Vec<(Vec<u8>, f64)>, Reply> {
    let mut lo = vec![b's'];
    lo.extend_from_slice(&score_key(range.min));
    let mut hi = vec![b's'];
    hi.extend_from_slice(&(u64::from_be_bytes(score_key(range.max)) + 1).to_be_bytes());
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    // Pages, so that exclusive bounds and LIMIT stop the scan early.
    loop {
        let (l, u) = match (&after, reverse) {
            (None, _) => (
                Bound::Included(lo.as_slice()),
                Bound::Excluded(hi.as_slice()),
            ),
            (Some(a), false) => (
                Bound::Excluded(a.as_slice()),
                Bound::Excluded(hi.as_slice()),
            ),
            (Some(a), true) => (
                Bound::Included(lo.as_slice()),
                Bound::Excluded(a.as_slice()),
            ),
        };
        let page = c.scan(l, u, reverse, 256)?;
        let n = page.len();
        for (k, _) in &page {
            let s = score_of(&k[1..9]);
            if range.contains(s) {
                out.push((k[9..].to_vec(), s));
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        match page.into_iter().last() {
            Some((k, _)) if n == 256 => after = Some(k),
            _ => return Ok(out),
        }
    }
}

/// Every member in (score, member) order (or reverse), skipping `skip`,
/// at most `limit`.
pub fn by_rank(
    c: &Coll<'_>,
    skip: usize,
    limit: usize,
    reverse: bool,
) -> Result<Vec<(Vec<u8>, f64)>, Reply> {
    Ok(c.scan_prefix(b"s", reverse, skip.saturating_add(limit))?
        .into_iter()
        .skip(skip)
        .map(|(k, _)| (k[9..].to_vec(), score_of(&k[1..9])))
        .collect())
}

/// Members within a lex range, in member order (or reverse), at most
/// `limit` (Redis: meaningful when all scores are equal).
pub fn by_lex(
    c: &Coll<'_>,
    range: &LexRange,
    reverse: bool,
    limit: usize,
) -> Result<Vec<(Vec<u8>, f64)>, Reply> {
    let b = |x: &LexBound| match x {
        LexBound::Min | LexBound::Max => None,
        LexBound::In(v) => Some((true, by_member(v))),
        LexBound::Ex(v) => Some((false, by_member(v))),
    };
    let (lo, hi) = (b(&range.min), b(&range.max));
    if matches!(range.min, LexBound::Max) || matches!(range.max, LexBound::Min) {
        return Ok(Vec::new());
    }
    let lower = match &lo {
        None => Bound::Included(b"m".as_slice()),
        Some((true, k)) => Bound::Included(k.as_slice()),
        Some((false, k)) => Bound::Excluded(k.as_slice()),
    };
    let upper = match &hi {
        None => Bound::Excluded(b"n".as_slice()),
        Some((true, k)) => Bound::Included(k.as_slice()),
        Some((false, k)) => Bound::Excluded(k.as_slice()),
    };
    if let (Some((_, l)), Some((_, u))) = (&lo, &hi)
        && l > u
    {
        return Ok(Vec::new());
    }
    Ok(c.scan(lower, upper, reverse, limit)?
        .into_iter()
        .map(|(k, v)| (k[1..].to_vec(), decode_score(&v)))
        .collect())
}

/// The 0-based rank of `member` (scores ascending, or descending).
pub fn rank(c: &Coll<'_>, member: &[u8], score: f64, reverse: bool) -> Result<i64, Reply> {
    let here = by_score(score, member);
    let before = if reverse {
        let mut hi = vec![b's'];
        hi.extend_from_slice(&[0xFF; 9]);
        c.scan(
            Bound::Excluded(here.as_slice()),
            Bound::Excluded(hi.as_slice()),
            false,
            usize::MAX,
        )?
    } else {
        c.scan(
            Bound::Included(b"s".as_slice()),
            Bound::Excluded(here.as_slice()),
            false,
            usize::MAX,
        )?
    };
    Ok(before.len() as i64)
}

/// A score interval (`(` marks an exclusive end).
pub struct ScoreRange {
    /// Lower end.
    pub min: f64,
    /// Upper end.
    pub max: f64,
    /// Whether `min` itself is out.
    pub min_ex: bool,
    /// Whether `max` itself is out.
    pub max_ex: bool,
}

impl ScoreRange {
    /// Parses `min max` as ZRANGEBYSCORE reads them.
    pub fn parse(min: &[u8], max: &[u8]) -> Result<ScoreRange, Reply> {
        let one = |b: &[u8]| -> Result<(f64, bool), Reply> {
            let bad = || Reply::err("min or max is not a float");
            match b.strip_prefix(b"(") {
                Some(rest) => Ok((float(rest).ok_or_else(bad)?, true)),
                None => Ok((float(b).ok_or_else(bad)?, false)),
            }
        };
        let ((min, min_ex), (max, max_ex)) = (one(min)?, one(max)?);
        Ok(ScoreRange {
            min,
            max,
            min_ex,
            max_ex,
        })
    }

    /// Whether `s` is inside.
    pub fn contains(&self, s: f64) -> bool {
        (if self.min_ex {
            s > self.min
        } else {
            s >= self.min
        }) && (if self.max_ex {
            s < self.max
        } else {
            s <= self.max
        })
    }
}

/// One end of a lex range.
pub enum LexBound {
    /// `-`.
    Min,
    /// `+`.
    Max,
    /// `[x`.
    In(Vec<u8>),
    /// `(x`.
    Ex(Vec<u8>),
}

/// A lex interval.
pub struct LexRange {
    /// Lower end.
    pub min: LexBound,
    /// Upper end.
    pub max: LexBound,
}

impl LexRange {
    /// Parses `min max` as ZRANGEBYLEX reads them.
    pub fn parse(min: &[u8], max: &[u8]) -> Result<LexRange, Reply> {
        let one = |b: &[u8]| -> Result<LexBound, Reply> {
            match b.first() {
                Some(b'-') if b.len() == 1 => Ok(LexBound::Min),
                Some(b'+') if b.len() == 1 => Ok(LexBound::Max),
                Some(b'[') => Ok(LexBound::In(b[1..].to_vec())),
                Some(b'(') => Ok(LexBound::Ex(b[1..].to_vec())),
                _ => Err(Reply::err("min or max not valid string range item")),
            }
        };
        Ok(LexRange {
            min: one(min)?,
            max: one(max)?,
        })
    }
}

/// Members with scores as a reply: RESP2 a flat array (member, score, ...),
/// RESP3 an array of pairs; without scores, the members.
pub fn reply(cx: &Conn, items: Vec<(Vec<u8>, f64)>, with_scores: bool) -> Reply {
    let mut out = Vec::with_capacity(items.len() * 2);
    for (m, s) in items {
        if !with_scores {
            out.push(Reply::Bulk(m));
        } else if cx.proto >= 3 {
            out.push(Reply::Array(vec![Reply::Bulk(m), Reply::Double(s)]));
        } else {
            out.push(Reply::Bulk(m));
            out.push(Reply::Double(s));
        }
    }
    Reply::Array(out)
}

/// Loads a sorted set (or a set, every member scored 1) for ZUNIONSTORE
/// and ZINTERSTORE; None if absent.
pub fn load_scored(
    cx: &Conn,
    view: &View,
    key: &[u8],
) -> Result<Option<BTreeMap<Vec<u8>, f64>>, Reply> {
    match cx.lookup_in(view, key)? {
        Found::None => Ok(None),
        Found::Coll(m, _) if m.kind == Kind::Set => Ok(Some(
            cx.elements_in(view, key, &m)?
                .into_iter()
                .map(|(k, _)| (k, 1.0))
                .collect(),
        )),
        Found::Coll(m, _) if m.kind == Kind::ZSet => Ok(Some(
            cx.elements_in(view, key, &m)?
                .into_iter()
                .filter(|(k, _)| k.first() == Some(&b'm'))
                .map(|(k, v)| (k[1..].to_vec(), decode_score(&v)))
                .collect(),
        )),
        _ => Err(wrong_type()),
    }
}

/// ZRANGE with all its forms. `args` are the command's arguments; `form`
/// says how the classic commands map onto it.
pub async fn range_command(cx: &Conn, args: &[Vec<u8>], form: Form) -> Result<Reply, Reply> {
    use crate::resp::{int_arg, syntax_error};
    let key = &args[1];
    let (mut by, mut rev) = (form.by, form.rev);
    let (mut with_scores, mut limit): (bool, Option<(i64, i64)>) = (false, None);
    let mut i = 4;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"WITHSCORES" if form.withscores_ok => with_scores = true,
            b"BYSCORE" if form.options => by = By::Score,
            b"BYLEX" if form.options => by = By::Lex,
            b"REV" if form.options => rev = true,
            b"LIMIT" if form.limit_ok => {
                let (Some(o), Some(c)) = (args.get(i + 1), args.get(i + 2)) else {
                    return Err(syntax_error());
                };
                limit = Some((int_arg(o)?, int_arg(c)?));
                i += 3;
                continue;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    if limit.is_some() && by == By::Rank {
        return Err(Reply::err(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if with_scores && by == By::Lex {
        return Err(Reply::err(
            "syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    // With REV the bounds come max first.
    let (a, b) = if rev && by != By::Rank {
        (&args[3], &args[2])
    } else {
        (&args[2], &args[3])
    };
    let parsed_rank = if by == By::Rank {
        Some((int_arg(a)?, int_arg(b)?))
    } else {
        None
    };
    let scores = if by == By::Score {
        Some(ScoreRange::parse(a, b)?)
    } else {
        None
    };
    let lex = if by == By::Lex {
        Some(LexRange::parse(a, b)?)
    } else {
        None
    };
    let Some(c) = cx.read_coll(key, Kind::ZSet).await? else {
        return Ok(Reply::Array(vec![]));
    };
    let items = match by {
        By::Rank => {
            let (start, stop) = parsed_rank.expect("parsed");
            match crate::resp::cmd::lists::range(start, stop, c.meta.len as i64) {
                None => Vec::new(),
                Some((from, to)) => by_rank(&c, from as usize, (to - from + 1) as usize, rev)?,
            }
        }
        By::Score | By::Lex => {
            let (offset, count) = limit.unwrap_or((0, -1));
            if offset < 0 {
                return Ok(Reply::Array(vec![]));
            }
            let take = if count < 0 {
                usize::MAX
            } else {
                count as usize
            };
            let want = (offset as usize).saturating_add(take);
            let got = match (&scores, &lex) {
                (Some(s), _) => by_scores(&c, s, rev, want)?,
                (_, Some(l)) => by_lex(&c, l, rev, want)?,
                _ => unreachable!("a range was parsed"),
            };
            got.into_iter().skip(offset as usize).take(take).collect()
        }
    };
    Ok(reply(cx, items, with_scores))
}

/// How ZRANGE selects.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// By index.
    Rank,
    /// By score.
    Score,
    /// By member.
    Lex,
}

/// The shape of one of the ZRANGE family.
#[derive(Clone, Copy)]
pub struct Form {
    /// Default selection.
    pub by: By,
    /// Descending.
    pub rev: bool,
    /// Takes BYSCORE/BYLEX/REV (ZRANGE itself).
    pub options: bool,
    /// Takes LIMIT.
    pub limit_ok: bool,
    /// Takes WITHSCORES.
    pub withscores_ok: bool,
}

/// ZPOPMIN and ZPOPMAX: `args` = `name key [count]`.
pub async fn pop_command(cx: &Conn, args: &[Vec<u8>], max: bool) -> Result<Reply, Reply> {
    let count = crate::resp::cmd::common::pop_count(args)?.map_or(1, |n| n as usize);
    let popped = cx
        .mutate(&args[1], Kind::ZSet, move |c| {
            if c.meta.len == 0 || count == 0 {
                return Ok(Vec::new());
            }
            let items = by_rank(c, 0, count, max)?;
            for (m, s) in &items {
                remove(c, m, *s);
            }
            Ok(items)
        })
        .await?;
    if args.len() == 2 && cx.proto >= 3 {
        // RESP3: one popped pair is a flat [member, score].
        return Ok(match popped.into_iter().next() {
            Some((m, s)) => Reply::Array(vec![Reply::Bulk(m), Reply::Double(s)]),
            None => Reply::Array(vec![]),
        });
    }
    Ok(reply(cx, popped, true))
}

/// ZUNIONSTORE and ZINTERSTORE: `args` = name dst numkeys key [key ...]
/// [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX]; the size of the result.
pub async fn combine_store(cx: &Conn, args: &[Vec<u8>], union: bool) -> Result<Reply, Reply> {
    use crate::resp::{int_arg, syntax_error};
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let n = int_arg(&args[2])?;
    if n <= 0 {
        return Err(Reply::err(format!(
            "at least 1 input key is needed for '{name}' command"
        )));
    }
    let n = n as usize;
    if args.len() < 3 + n {
        return Err(syntax_error());
    }
    let keys = &args[3..3 + n];
    let mut weights = vec![1.0; n];
    let mut agg = 0u8; // 0 sum, 1 min, 2 max
    let mut i = 3 + n;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"WEIGHTS" if i + n < args.len() => {
                for (j, w) in weights.iter_mut().enumerate() {
                    *w = float(&args[i + 1 + j])
                        .ok_or_else(|| Reply::err("weight value is not a float"))?;
                }
                i += 1 + n;
            }
            b"AGGREGATE" if i + 1 < args.len() => {
                agg = match args[i + 1].to_ascii_uppercase().as_slice() {
                    b"SUM" => 0,
                    b"MIN" => 1,
                    b"MAX" => 2,
                    _ => return Err(syntax_error()),
                };
                i += 2;
            }
            _ => return Err(syntax_error()),
        }
    }
    let dst = &args[1];
    for _ in 0..64 {
        let view = cx.view().await;
        let mut acc: Option<BTreeMap<Vec<u8>, f64>> = None;
        for (k, w) in keys.iter().zip(&weights) {
            let set = load_scored(cx, &view, k)?.unwrap_or_default();
            let set: BTreeMap<Vec<u8>, f64> = set
                .into_iter()
                .map(|(m, s)| {
                    let v = s * w;
                    (m, if v.is_nan() { 0.0 } else { v })
                })
                .collect();
            let merge = |a: f64, b: f64| {
                let r = match agg {
                    1 => a.min(b),
                    2 => a.max(b),
                    _ => a + b,
                };
                if r.is_nan() { 0.0 } else { r }
            };
            acc = Some(match acc {
                None => set,
                Some(mut a) if union => {
                    for (m, s) in set {
                        a.entry(m).and_modify(|x| *x = merge(*x, s)).or_insert(s);
                    }
                    a
                }
                Some(a) => a
                    .into_iter()
                    .filter_map(|(m, x)| set.get(&m).map(|s| (m, merge(x, *s))))
                    .collect(),
            });
        }
        let result = acc.unwrap_or_default();
        let size = result.len() as i64;
        if replace(cx, &view, dst, result).await? {
            return Ok(Reply::Int(size));
        }
    }
    Err(Reply::err("the keys kept changing; retry"))
}

/// Replaces whatever `dst` holds with a sorted set of `members` (deleted
/// if empty), in one batch conditional on `dst` unchanged since `view`.
async fn replace(
    cx: &Conn,
    view: &View,
    dst: &[u8],
    members: BTreeMap<Vec<u8>, f64>,
) -> Result<bool, Reply> {
    use crate::keyspace;
    use crate::resp::coll::Meta;
    use crate::storage::{Batch, Condition, Op, Outcome};
    cx.check_key(dst)?;
    let found = cx.lookup_in(view, dst)?;
    let meta_key = keyspace::meta_key(dst);
    let mut ops = Vec::new();
    let conditions = vec![
        Condition {
            key: dst.to_vec(),
            expected_version: match &found {
                Found::Str(v) => v.version,
                _ => 0,
            },
        },
        Condition {
            key: meta_key.clone(),
            expected_version: match &found {
                Found::Coll(_, v) => v.version,
                _ => 0,
            },
        },
    ];
    match &found {
        Found::Str(_) => ops.push(Op::Delete { key: dst.to_vec() }),
        Found::Coll(..) => ops.push(Op::Delete {
            key: meta_key.clone(),
        }),
        Found::None => {}
    }
    if !members.is_empty() {
        let meta = Meta {
            len: members.len() as u64,
            ..Meta::fresh(Kind::ZSet)
        };
        let prefix = keyspace::elem_prefix(dst, meta.generation);
        for (m, s) in members {
            for (suffix, value) in [
                (by_member(&m), s.to_bits().to_be_bytes().to_vec()),
                (by_score(s, &m), Vec::new()),
            ] {
                let mut key = prefix.clone();
                key.extend_from_slice(&suffix);
                ops.push(Op::Put {
                    key,
                    value,
                    expires_at_ms: None,
                });
            }
        }
        ops.push(Op::Put {
            key: meta_key,
            value: meta.encode(),
            expires_at_ms: None,
        });
    }
    if ops.is_empty() {
        return Ok(true);
    }
    Ok(matches!(
        cx.write_raw(Batch { ops, conditions }).await?,
        Outcome::Committed { .. }
    ))
}

/// ZRANK and ZREVRANK: `args` = `name key member [WITHSCORE]`.
pub async fn rank_command(cx: &Conn, args: &[Vec<u8>], reverse: bool) -> Result<Reply, Reply> {
    let with_score = match args.get(3) {
        None => false,
        Some(w) if args.len() == 4 && w.eq_ignore_ascii_case(b"WITHSCORE") => true,
        Some(_) => return Err(crate::resp::syntax_error()),
    };
    let none = || {
        if with_score {
            Reply::NullArray
        } else {
            Reply::Null
        }
    };
    let Some(z) = cx.read_coll(&args[1], Kind::ZSet).await? else {
        return Ok(none());
    };
    let Some(s) = score(&z, &args[2])? else {
        return Ok(none());
    };
    let r = rank(&z, &args[2], s, reverse)?;
    Ok(if with_score {
        Reply::Array(vec![Reply::Int(r), Reply::Double(s)])
    } else {
        Reply::Int(r)
    })
}
