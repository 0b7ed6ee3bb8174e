//! `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`:
//! adds members or updates scores; how many were added (with CH: added or
//! changed); with INCR, the new score (nil if a condition stopped it).

use crate::resp::cmd::common::float;
use crate::resp::cmd::zsets::{score, set};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;
use crate::resp::syntax_error;

command!(
    "zadd",
    -4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
            (false, false, false, false, false, false);
        let mut i = 2;
        while i < a.len() {
            match a[i].to_ascii_uppercase().as_slice() {
                b"NX" => nx = true,
                b"XX" => xx = true,
                b"GT" => gt = true,
                b"LT" => lt = true,
                b"CH" => ch = true,
                b"INCR" => incr = true,
                _ => break,
            }
            i += 1;
        }
        let pairs = &a[i..];
        if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
            return Err(syntax_error());
        }
        if nx && xx {
            return Err(Reply::err(
                "XX and NX options at the same time are not compatible",
            ));
        }
        if (gt && lt) || (nx && (gt || lt)) {
            return Err(Reply::err(
                "GT, LT, and/or NX options at the same time are not compatible",
            ));
        }
        if incr && pairs.len() != 2 {
            return Err(Reply::err(
                "INCR option supports a single increment-element pair",
            ));
        }
        let mut parsed = Vec::with_capacity(pairs.len() / 2);
        for p in pairs.chunks(2) {
            let s = float(&p[0]).ok_or_else(|| Reply::err("value is not a valid float"))?;
            parsed.push((s, p[1].clone()));
        }
        let outcome = cx
            .mutate(&a[1], Kind::ZSet, {
                move |z| {
                    let (mut added, mut changed) = (0i64, 0i64);
                    let mut last = None;
                    for (s, m) in &parsed {
                        let old = score(z, m)?;
                        if (nx && old.is_some()) || (xx && old.is_none()) {
                            continue;
                        }
                        let new = match (incr, old) {
                            (true, Some(o)) => o + s,
                            _ => *s,
                        };
                        if new.is_nan() {
                            return Err(Reply::err("resulting score is not a number (NaN)"));
                        }
                        if let Some(o) = old
                            && ((gt && new <= o) || (lt && new >= o))
                        {
                            continue;
                        }
                        last = Some(new);
                        match old {
                            None => added += 1,
                            Some(o) if o != new => changed += 1,
                            Some(_) => continue,
                        }
                        set(z, m, old, new)?;
                    }
                    Ok((added, changed, last))
                }
            })
            .await?;
        let (added, changed, last) = outcome;
        if incr {
            return Ok(last.map_or(Reply::Null, Reply::Double));
        }
        Ok(Reply::Int(if ch { added + changed } else { added }))
    }
);
