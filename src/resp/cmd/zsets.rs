//! Shared by the sorted-set commands. A member has two records under the
//! set's generation: `m` + member -> score (f64 bits, big-endian), and
//! `s` + order-preserving score + member -> empty, so that scans of the
//! `s` records walk the set in (score, member) order.
//!
//! A rank index answers ZRANK and finds the start of ZRANGE by index in
//! O(log n) record reads, as Redis' skiplist spans do. It is a skiplist of
//! counted spans kept as records: a member is a node of level `l` with
//! probability 1/64^l (by a fixed hash of the member, so the same after a
//! restart), and level `l` has a record `c` + `l` + position (score key +
//! member) per node, whose value is its span: how many members lie from
//! it up to the next node of that level. `c` + `l` alone, the level's
//! head, counts the members before its first node. A set keeps as many
//! levels as 64^levels <= its length allows (level `l` is built from level
//! `l - 1`, about 64 records, when the set first reaches 64^l members), so
//! a lookup reads about 64 records per level and a change of one member
//! updates one span per level. The metadata record's `tail` marks a set
//! that keeps the index (1) and `head` holds its number of levels; sets
//! written before the index existed have neither and are scanned.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::resp::cmd::common::float;
use crate::resp::coll::{Coll, Element, Found, Kind, View, score_key, score_of};
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
    if let Some(o) = old
        && score_key(o) == score_key(new)
    {
        return c.put(by_member(member), new.to_bits().to_be_bytes().to_vec());
    }
    match old {
        Some(o) => {
            c.del(by_score(o, member));
            unindex(c, member, o)?;
        }
        None => c.meta.len += 1,
    }
    c.put(by_member(member), new.to_bits().to_be_bytes().to_vec())?;
    c.put(by_score(new, member), Vec::new())?;
    index(c, member, new)?;
    grow(c)
}

/// Removes `member` (whose score is `old`).
pub fn remove(c: &mut Coll<'_>, member: &[u8], old: f64) -> Result<(), Reply> {
    c.del(by_member(member));
    c.del(by_score(old, member));
    c.meta.len -= 1;
    unindex(c, member, old)
}

/// Branching of the rank index: a node of level `l` is one of level
/// `l + 1` with probability 1/FANOUT.
const FANOUT: u64 = 64;
/// Levels a set can have (64^10 members is beyond any set).
const MAX_LEVELS: u8 = 10;
/// `Meta::tail` of a sorted set that keeps the rank index.
pub const RANKED: i64 = 1;

/// Whether `c` keeps the rank index, and its levels.
fn levels(c: &Coll<'_>) -> Option<u8> {
    (c.meta.tail == RANKED).then_some(c.meta.head.clamp(0, MAX_LEVELS as i64) as u8)
}

/// The level of `member`'s node: FNV-1a with a splitmix64 finaliser, a
/// hash that is the same on every run (levels are stored).
fn level_of(member: &[u8]) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in member {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let mut l = 0;
    while l < MAX_LEVELS && h.is_multiple_of(FANOUT) {
        l += 1;
        h /= FANOUT;
    }
    l
}

/// Levels a set of `len` members keeps: as many as 64^levels <= len.
fn levels_for(len: u64) -> u8 {
    let (mut l, mut reach) = (0u8, FANOUT);
    while l < MAX_LEVELS && reach <= len {
        l += 1;
        reach = reach.saturating_mul(FANOUT);
    }
    l
}

/// A member's position in the set's order: score key, then member.
fn position(score: f64, member: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + member.len());
    p.extend_from_slice(&score_key(score));
    p.extend_from_slice(member);
    p
}

/// The record suffix of `pos` on `level` (0: the `s` records; an empty
/// `pos` on a level above 0 is the level's head).
fn level_key(level: u8, pos: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + pos.len());
    if level == 0 {
        k.push(b's');
    } else {
        k.push(b'c');
        k.push(level);
    }
    k.extend_from_slice(pos);
    k
}

fn span_of(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Records of `level` with positions within the bounds (the head, with an
/// empty position, is below every node), as (position, span); members of
/// level 0 span 1.
fn level_scan(
    c: &Coll<'_>,
    level: u8,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<(Vec<u8>, u64)>, Reply> {
    let prefix = level_key(level, b"");
    let end = crate::shard::router::prefix_successor(&prefix).expect("a short prefix");
    let lo = match lower {
        Bound::Included(p) => Bound::Included(level_key(level, p)),
        Bound::Excluded(p) => Bound::Excluded(level_key(level, p)),
        Bound::Unbounded => Bound::Included(prefix.clone()),
    };
    let hi = match upper {
        Bound::Included(p) => Bound::Included(level_key(level, p)),
        Bound::Excluded(p) => Bound::Excluded(level_key(level, p)),
        Bound::Unbounded => Bound::Excluded(end),
    };
    let n = prefix.len();
    Ok(c.scan(
        lo.as_ref().map(Vec::as_slice),
        hi.as_ref().map(Vec::as_slice),
        reverse,
        limit,
    )?
    .into_iter()
    .map(|(k, v)| {
        let span = if level == 0 { 1 } else { span_of(&v) };
        (k[n..].to_vec(), span)
    })
    .collect())
}

/// The record of `level` just before `pos` (the head if no node is), as
/// (position, span).
fn before(c: &Coll<'_>, level: u8, pos: &[u8]) -> Result<(Vec<u8>, u64), Reply> {
    level_scan(c, level, Bound::Unbounded, Bound::Excluded(pos), true, 1)?
        .pop()
        .ok_or_else(|| Reply::err("corrupt sorted set rank index: a level has no head"))
}

fn put_span(c: &mut Coll<'_>, level: u8, pos: &[u8], span: u64) -> Result<(), Reply> {
    c.put(level_key(level, pos), span.to_be_bytes().to_vec())
}

fn corrupt() -> Reply {
    Reply::err("corrupt sorted set rank index: a span went below zero")
}

/// Adds the new member's nodes and spans (its `s` record is staged).
fn index(c: &mut Coll<'_>, member: &[u8], score: f64) -> Result<(), Reply> {
    let Some(m) = levels(c) else { return Ok(()) };
    let pos = position(score, member);
    let top = level_of(member);
    for l in 1..=m {
        let (prev, prev_span) = before(c, l, &pos)?;
        if l <= top {
            // Its span: the members from it up to the next node of this
            // level, summed over the level below (already updated).
            let next = level_scan(c, l, Bound::Excluded(&pos), Bound::Unbounded, false, 1)?.pop();
            let upper = match &next {
                Some((p, _)) => Bound::Excluded(p.as_slice()),
                None => Bound::Unbounded,
            };
            let span: u64 = level_scan(c, l - 1, Bound::Included(&pos), upper, false, usize::MAX)?
                .iter()
                .map(|(_, s)| s)
                .sum();
            put_span(c, l, &pos, span)?;
            let rest = (prev_span + 1).checked_sub(span).ok_or_else(corrupt)?;
            put_span(c, l, &prev, rest)?;
        } else {
            put_span(c, l, &prev, prev_span + 1)?;
        }
    }
    Ok(())
}

/// Takes the member's nodes out and shrinks the spans over it.
fn unindex(c: &mut Coll<'_>, member: &[u8], score: f64) -> Result<(), Reply> {
    let Some(m) = levels(c) else { return Ok(()) };
    let pos = position(score, member);
    let top = level_of(member);
    for l in 1..=m {
        let (prev, prev_span) = before(c, l, &pos)?;
        let own = if l <= top {
            let key = level_key(l, &pos);
            let own = c.get(&key)?.map_or(0, |v| span_of(&v));
            c.del(key);
            own
        } else {
            0
        };
        let span = (prev_span + own).checked_sub(1).ok_or_else(corrupt)?;
        put_span(c, l, &prev, span)?;
    }
    Ok(())
}

/// Builds the levels the set's length now calls for, each from the level
/// below it.
fn grow(c: &mut Coll<'_>) -> Result<(), Reply> {
    let Some(mut m) = levels(c) else {
        return Ok(());
    };
    while m < levels_for(c.meta.len) {
        let l = m + 1;
        let below = level_scan(c, m, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)?;
        let mut head = 0;
        let mut node: Option<(Vec<u8>, u64)> = None;
        for (pos, span) in below {
            let member = pos.get(8..).unwrap_or_default();
            if !pos.is_empty() && level_of(member) >= l {
                if let Some((p, s)) = node.take() {
                    put_span(c, l, &p, s)?;
                }
                node = Some((pos, span));
            } else if let Some((_, s)) = &mut node {
                *s += span;
            } else {
                head += span;
            }
        }
        if let Some((p, s)) = node {
            put_span(c, l, &p, s)?;
        }
        put_span(c, l, b"", head)?;
        m = l;
        c.meta.head = i64::from(m);
    }
    Ok(())
}

/// The rank index records of a new set of `members` sorted by position
/// (for ZUNIONSTORE and ZINTERSTORE), and its number of levels.
fn index_records(positions: &[Vec<u8>]) -> (u8, Vec<Element>) {
    let n = positions.len();
    let m = levels_for(n as u64);
    let tops: Vec<u8> = positions
        .iter()
        .map(|p| level_of(p.get(8..).unwrap_or_default()))
        .collect();
    let mut out = Vec::new();
    for l in 1..=m {
        let nodes: Vec<usize> = (0..n).filter(|&i| tops[i] >= l).collect();
        let head = nodes.first().copied().unwrap_or(n);
        out.push((level_key(l, b""), (head as u64).to_be_bytes().to_vec()));
        for (j, &i) in nodes.iter().enumerate() {
            let next = nodes.get(j + 1).copied().unwrap_or(n);
            out.push((
                level_key(l, &positions[i]),
                ((next - i) as u64).to_be_bytes().to_vec(),
            ));
        }
    }
    (m, out)
}

/// Members before position `pos` (the 0-based rank of the member there).
fn count_before(c: &Coll<'_>, m: u8, pos: &[u8]) -> Result<u64, Reply> {
    let mut acc = 0;
    let mut start: Vec<u8> = Vec::new(); // empty: the level's head
    for l in (1..=m).rev() {
        // An empty position is the level's head, the first record.
        let recs = level_scan(
            c,
            l,
            Bound::Included(&start),
            Bound::Included(pos),
            false,
            usize::MAX,
        )?;
        let Some(((last, _), rest)) = recs.split_last() else {
            return Err(Reply::err(
                "corrupt sorted set rank index: a level has no head",
            ));
        };
        acc += rest.iter().map(|(_, s)| s).sum::<u64>();
        start = last.clone();
    }
    Ok(acc
        + level_scan(
            c,
            0,
            Bound::Included(&start),
            Bound::Excluded(pos),
            false,
            usize::MAX,
        )?
        .len() as u64)
}

/// Where the member of 0-based rank `r` is: a position at or before it on
/// level 0 (empty: the start of the set) and how many members to skip
/// from there.
fn seek_rank(c: &Coll<'_>, m: u8, r: u64) -> Result<(Vec<u8>, u64), Reply> {
    const PAGE: usize = 128;
    let mut acc = 0;
    let mut start: Vec<u8> = Vec::new();
    for l in (1..=m).rev() {
        let mut from = Bound::Included(start.clone());
        'level: loop {
            let page = level_scan(
                c,
                l,
                from.as_ref().map(Vec::as_slice),
                Bound::Unbounded,
                false,
                PAGE,
            )?;
            let full = page.len() == PAGE;
            let mut last = None;
            for (pos, span) in page {
                if acc + span > r {
                    start = pos;
                    break 'level;
                }
                acc += span;
                last = Some(pos);
            }
            match last {
                Some(p) if full => from = Bound::Excluded(p),
                // Past the end: the rank is beyond the set.
                _ => return Ok((start, r - acc.min(r))),
            }
        }
    }
    Ok((start, r - acc))
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
    let decode = |(k, _): (Vec<u8>, Vec<u8>)| (k[9..].to_vec(), score_of(&k[1..9]));
    let Some(m) = levels(c).filter(|&m| m > 0 && skip > 0) else {
        return Ok(c
            .scan_prefix(b"s", reverse, skip.saturating_add(limit))?
            .into_iter()
            .skip(skip)
            .map(decode)
            .collect());
    };
    let len = c.meta.len as usize;
    if skip >= len || limit == 0 {
        return Ok(Vec::new());
    }
    // In ascending ranks: [first, first + count).
    let count = limit.min(len - skip);
    let first = if reverse { len - skip - count } else { skip };
    let (start, k) = seek_rank(c, m, first as u64)?;
    let from = level_key(0, &start);
    let mut out: Vec<_> = c
        .scan(
            Bound::Included(from.as_slice()),
            Bound::Excluded(b"t".as_slice()),
            false,
            (k as usize).saturating_add(count),
        )?
        .into_iter()
        .skip(k as usize)
        .map(decode)
        .collect();
    if reverse {
        out.reverse();
    }
    Ok(out)
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
    if let Some(m) = levels(c) {
        let r = count_before(c, m, &position(score, member))?;
        return Ok(if reverse {
            c.meta.len.saturating_sub(r + 1) as i64
        } else {
            r as i64
        });
    }
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
            // Every form takes WITHSCORES and LIMIT, and refuses them
            // below where they do not apply, with Redis' texts.
            b"WITHSCORES" => with_scores = true,
            // Each once, and one of BYSCORE and BYLEX (Redis: syntax error).
            b"BYSCORE" if form.options && by == By::Rank => by = By::Score,
            b"BYLEX" if form.options && by == By::Rank => by = By::Lex,
            b"REV" if form.options && !rev => rev = true,
            b"LIMIT" => {
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
}

/// Removes and returns up to `count` of the lowest (highest, `max`)
/// scored members, in pop order.
fn pop_ranked(c: &mut Coll<'_>, count: usize, max: bool) -> Result<Vec<(Vec<u8>, f64)>, Reply> {
    if c.meta.len == 0 || count == 0 {
        return Ok(Vec::new());
    }
    let items = by_rank(c, 0, count, max)?;
    for (m, s) in &items {
        remove(c, m, *s)?;
    }
    Ok(items)
}

/// ZPOPMIN and ZPOPMAX: `args` = `name key [count]`.
pub async fn pop_command(cx: &Conn, args: &[Vec<u8>], max: bool) -> Result<Reply, Reply> {
    let count = crate::resp::cmd::common::pop_count(args)?.map_or(1, |n| n as usize);
    let popped = cx
        .mutate(&args[1], Kind::ZSet, move |c| pop_ranked(c, count, max))
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

/// BZPOPMIN and BZPOPMAX: `args` = name key [key ...] timeout. Pops the
/// lowest (highest) scored member of the first key (in order) with one,
/// waiting for one up to the timeout; [key, member, score], or a null
/// array on timeout.
pub async fn bpop_command(cx: &Conn, args: &[Vec<u8>], max: bool) -> Result<Reply, Reply> {
    use crate::resp::blocking::{Block, parse_timeout, pop_first};
    let keys = &args[1..args.len() - 1];
    let block = Block::new(cx, keys, parse_timeout(&args[args.len() - 1])?)?;
    let popped = pop_first(cx, keys, Kind::ZSet, Some(&block), move |c| {
        pop_ranked(c, 1, max)
    })
    .await?;
    Ok(match popped {
        Some((k, mut items)) => {
            let (m, s) = items.remove(0);
            Reply::Array(vec![Reply::Bulk(k), Reply::Bulk(m), Reply::Double(s)])
        }
        None => Reply::NullArray,
    })
}

/// ZMPOP and BZMPOP: `args` = `name [timeout] numkeys key [key ...]
/// MIN|MAX [COUNT count]`. Pops up to count of the lowest (highest) scored
/// members of the first key (in order) with any, BZMPOP waiting for one up
/// to the timeout; [key, [[member, score] ...]], or a null array.
pub async fn mpop_command(cx: &Conn, args: &[Vec<u8>], blocking: bool) -> Result<Reply, Reply> {
    use crate::resp::blocking::{mpop_setup, pop_first};
    let m = mpop_setup(cx, args, blocking, [b"MIN", b"MAX"])?;
    let (min, count) = (m.first_side, usize::try_from(m.count).unwrap_or(usize::MAX));
    let popped = pop_first(cx, m.keys, Kind::ZSet, m.block.as_ref(), move |c| {
        pop_ranked(c, count, !min)
    })
    .await?;
    Ok(match popped {
        Some((k, items)) => Reply::Array(vec![
            Reply::Bulk(k),
            Reply::Array(
                items
                    .into_iter()
                    .map(|(m, s)| Reply::Array(vec![Reply::Bulk(m), Reply::Double(s)]))
                    .collect(),
            ),
        ]),
        None => Reply::NullArray,
    })
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
        let mut positions: Vec<Vec<u8>> = members.iter().map(|(m, s)| position(*s, m)).collect();
        positions.sort_unstable();
        let (levels, ranks) = index_records(&positions);
        let meta = Meta {
            len: members.len() as u64,
            head: i64::from(levels),
            ..Meta::fresh(Kind::ZSet)
        };
        let prefix = keyspace::elem_prefix(dst, meta.generation);
        let elements = members.into_iter().flat_map(|(m, s)| {
            [
                (by_member(&m), s.to_bits().to_be_bytes().to_vec()),
                (by_score(s, &m), Vec::new()),
            ]
        });
        for (suffix, value) in elements.chain(ranks) {
            let mut key = prefix.clone();
            key.extend_from_slice(&suffix);
            ops.push(Op::Put {
                key,
                value,
                expires_at_ms: None,
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_keeps_a_level_per_factor_of_64() {
        assert_eq!(levels_for(0), 0);
        assert_eq!(levels_for(63), 0);
        assert_eq!(levels_for(64), 1);
        assert_eq!(levels_for(4095), 1);
        assert_eq!(levels_for(4096), 2);
        assert_eq!(levels_for(u64::MAX), MAX_LEVELS);
    }

    #[test]
    fn about_one_member_in_64_reaches_each_next_level() {
        let n = 1 << 20;
        let mut at = [0u32; 4];
        for i in 0..n {
            let l = level_of(format!("member:{i}").as_bytes()) as usize;
            for c in at.iter_mut().take(l.min(3) + 1) {
                *c += 1;
            }
        }
        assert_eq!(at[0], n);
        // 16,384 expected at level 1, 256 at level 2.
        assert!((15_000..17_800).contains(&at[1]), "{at:?}");
        assert!((180..340).contains(&at[2]), "{at:?}");
        // Fixed, not seeded per process: stored levels stay right.
        assert_eq!(level_of(b"member:1"), level_of(b"member:1"));
    }

    #[test]
    fn an_index_built_at_once_spans_every_member_on_every_level() {
        let mut positions: Vec<Vec<u8>> = (0..10_000)
            .map(|i| position(f64::from(i % 97), format!("m{i}").as_bytes()))
            .collect();
        positions.sort_unstable();
        let (levels, records) = index_records(&positions);
        assert_eq!(levels, 2);
        for l in 1..=levels {
            let mine: Vec<_> = records
                .iter()
                .filter(|(k, _)| k[0] == b'c' && k[1] == l)
                .collect();
            assert_eq!(mine[0].0, level_key(l, b""), "the head comes first");
            let total: u64 = mine.iter().map(|(_, v)| span_of(v)).sum();
            assert_eq!(total, 10_000, "level {l}");
            assert!(mine.len() > 1, "level {l} has nodes");
        }
    }
}
