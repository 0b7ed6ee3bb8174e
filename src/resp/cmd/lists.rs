//! Shared by the list commands: positions, ranges and the pop/push steps.
//! Element `i` (0-based) of a list is at position `head + i`; pushing on
//! the left takes `head - 1`, on the right `tail`.

use std::ops::Bound;

use crate::resp::coll::{Coll, Kind, pos_key};
use crate::resp::proto::Reply;

/// The element positions `[start, stop]` of a list of `len` elements cover
/// after Redis' index rules (negative from the end, clamped), as 0-based
/// indexes; None if empty.
pub fn range(start: i64, stop: i64, len: i64) -> Option<(i64, i64)> {
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len && stop >= 0).then_some((start, stop))
}

/// Elements `[from, to]` (0-based, inclusive) in order.
pub fn slice(c: &Coll<'_>, from: i64, to: i64) -> Result<Vec<Vec<u8>>, Reply> {
    let (lo, hi) = (pos_key(c.meta.head + from), pos_key(c.meta.head + to));
    Ok(c.scan(
        Bound::Included(&lo),
        Bound::Included(&hi),
        false,
        usize::MAX,
    )?
    .into_iter()
    .map(|(_, v)| v)
    .collect())
}

/// Every element in order.
pub fn all(c: &Coll<'_>) -> Result<Vec<Vec<u8>>, Reply> {
    Ok(c.all()?.into_iter().map(|(_, v)| v).collect())
}

/// Pops up to `n` elements from the left (or right), in pop order.
pub fn pop(c: &mut Coll<'_>, n: u64, left: bool) -> Result<Vec<Vec<u8>>, Reply> {
    let n = n.min(c.meta.len) as i64;
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = c.meta.len as i64;
    let mut out = if left {
        slice(c, 0, n - 1)?
    } else {
        slice(c, len - n, len - 1)?
    };
    if !left {
        out.reverse();
    }
    for i in 0..n {
        let p = if left {
            c.meta.head + i
        } else {
            c.meta.tail - 1 - i
        };
        c.del(pos_key(p));
    }
    if left {
        c.meta.head += n;
    } else {
        c.meta.tail -= n;
    }
    c.meta.len -= n as u64;
    Ok(out)
}

/// Pushes one element on the left (or right).
pub fn push(c: &mut Coll<'_>, e: Vec<u8>, left: bool) -> Result<(), Reply> {
    let p = if left {
        c.meta.head -= 1;
        c.meta.head
    } else {
        c.meta.tail += 1;
        c.meta.tail - 1
    };
    c.put(pos_key(p), e)?;
    c.meta.len += 1;
    Ok(())
}

/// Replaces the whole list with `elems` (LREM, LINSERT): positions from
/// the current head, the old ones beyond the new tail deleted.
pub fn rewrite(c: &mut Coll<'_>, old: &[Vec<u8>], elems: Vec<Vec<u8>>) -> Result<(), Reply> {
    let head = c.meta.head;
    let n = elems.len() as i64;
    for (i, e) in elems.into_iter().enumerate() {
        if old.get(i) != Some(&e) {
            c.put(pos_key(head + i as i64), e)?;
        }
    }
    for i in n..old.len() as i64 {
        c.del(pos_key(head + i));
    }
    c.meta.tail = head + n;
    c.meta.len = n as u64;
    Ok(())
}

/// LPUSH, RPUSH, LPUSHX, RPUSHX: `args` = name key element [element ...];
/// answers the new length (0 for the X forms on a missing key).
pub async fn push_command(
    cx: &crate::resp::Conn,
    args: &[Vec<u8>],
    left: bool,
    only_existing: bool,
) -> Result<Reply, Reply> {
    let len = cx
        .mutate(&args[1], crate::resp::coll::Kind::List, {
            let args = args.to_vec();
            move |c| {
                if only_existing && c.meta.len == 0 {
                    return Ok(0);
                }
                for e in &args[2..] {
                    push(c, e.clone(), left)?;
                }
                Ok(c.meta.len as i64)
            }
        })
        .await?;
    Ok(Reply::Int(len))
}

/// LPOP and RPOP: `args` = `name key [count]`.
pub async fn pop_command(
    cx: &crate::resp::Conn,
    args: &[Vec<u8>],
    left: bool,
) -> Result<Reply, Reply> {
    if args.len() > 3 {
        // Redis counts this as arity (SPOP and ZPOP* as syntax).
        return Err(Reply::err(format!(
            "wrong number of arguments for '{}' command",
            String::from_utf8_lossy(&args[0]).to_ascii_lowercase()
        )));
    }
    let count = crate::resp::cmd::common::pop_count(args)?;
    let (existed, popped) = cx
        .mutate(&args[1], crate::resp::coll::Kind::List, move |c| {
            Ok((c.meta.len > 0, pop(c, count.unwrap_or(1), left)?))
        })
        .await?;
    Ok(match count {
        None => popped.into_iter().next().map_or(Reply::Null, Reply::Bulk),
        Some(_) if !existed => Reply::NullArray,
        Some(_) => Reply::Array(popped.into_iter().map(Reply::Bulk).collect()),
    })
}

/// BLPOP and BRPOP: `args` = name key [key ...] timeout. Pops from the
/// first key (in order) with an element, waiting for one up to the
/// timeout; [key, element], or a null array on timeout.
pub async fn bpop_command(
    cx: &crate::resp::Conn,
    args: &[Vec<u8>],
    left: bool,
) -> Result<Reply, Reply> {
    use crate::resp::blocking::{Block, parse_timeout, pop_first};
    let keys = &args[1..args.len() - 1];
    let block = Block::new(cx, keys, parse_timeout(&args[args.len() - 1])?)?;
    let popped = pop_first(cx, keys, Kind::List, Some(&block), move |c| pop(c, 1, left)).await?;
    Ok(match popped {
        Some((k, mut e)) => Reply::Array(vec![Reply::Bulk(k), Reply::Bulk(e.remove(0))]),
        None => Reply::NullArray,
    })
}

/// LMPOP and BLMPOP: `args` = `name [timeout] numkeys key [key ...]
/// LEFT|RIGHT [COUNT count]`. Pops up to count elements from the first key
/// (in order) with any, BLMPOP waiting for one up to the timeout;
/// [key, [element ...]], or a null array.
pub async fn mpop_command(
    cx: &crate::resp::Conn,
    args: &[Vec<u8>],
    blocking: bool,
) -> Result<Reply, Reply> {
    use crate::resp::blocking::{mpop_setup, pop_first};
    let m = mpop_setup(cx, args, blocking, [b"LEFT", b"RIGHT"])?;
    let (left, count) = (m.first_side, m.count);
    let popped = pop_first(cx, m.keys, Kind::List, m.block.as_ref(), move |c| {
        pop(c, count, left)
    })
    .await?;
    Ok(match popped {
        Some((k, es)) => Reply::Array(vec![
            Reply::Bulk(k),
            Reply::Array(es.into_iter().map(Reply::Bulk).collect()),
        ]),
        None => Reply::NullArray,
    })
}

/// BLMOVE and BRPOPLPUSH: LMOVE, waiting up to `timeout` for `src` to have
/// an element; the element, or nil on timeout.
pub async fn bmove_command(
    cx: &crate::resp::Conn,
    src: &[u8],
    dst: &[u8],
    from_left: bool,
    to_left: bool,
    timeout: &[u8],
) -> Result<Reply, Reply> {
    use crate::resp::blocking::{Block, parse_timeout};
    let timeout = parse_timeout(timeout)?;
    let src_key = [src.to_vec()];
    let block = Block::new(cx, &src_key, timeout)?;
    cx.check_key(dst)?;
    loop {
        match move_element(cx, src, dst, from_left, to_left).await? {
            Reply::Null => {}
            moved => return Ok(moved),
        }
        if !block.wait().await? {
            return Ok(Reply::Null);
        }
    }
}

/// Parses LEFT or RIGHT.
pub fn side(b: &[u8]) -> Result<bool, Reply> {
    match b.to_ascii_uppercase().as_slice() {
        b"LEFT" => Ok(true),
        b"RIGHT" => Ok(false),
        _ => Err(crate::resp::syntax_error()),
    }
}

/// LMOVE and RPOPLPUSH: pops from `src` (left or right) and pushes onto
/// `dst`, in one atomic batch; nil if `src` is empty.
pub async fn move_element(
    cx: &crate::resp::Conn,
    src: &[u8],
    dst: &[u8],
    from_left: bool,
    to_left: bool,
) -> Result<Reply, Reply> {
    use crate::keyspace;
    use crate::resp::coll::{Found, Kind, Meta};
    use crate::storage::{Batch, Condition, Op, Outcome};
    if src == dst {
        let e = cx
            .mutate(src, Kind::List, move |c| {
                let Some(e) = pop(c, 1, from_left)?.pop() else {
                    return Ok(None);
                };
                push(c, e.clone(), to_left)?;
                Ok(Some(e))
            })
            .await?;
        return Ok(e.map_or(Reply::Null, Reply::Bulk));
    }
    cx.check_key(dst)?;
    for _ in 0..64 {
        let view = cx.view().await;
        let list = |k: &[u8]| -> Result<Option<(Meta, crate::storage::Value)>, Reply> {
            match cx.lookup_in(&view, k)? {
                Found::None => Ok(None),
                Found::Coll(m, rec) if m.kind == Kind::List => Ok(Some((m, rec))),
                _ => Err(crate::resp::wrong_type()),
            }
        };
        let Some((from, from_rec)) = list(src)? else {
            return Ok(Reply::Null);
        };
        let to = list(dst)?;
        let p = if from_left { from.head } else { from.tail - 1 };
        let mut ek = keyspace::elem_prefix(src, from.generation);
        ek.extend_from_slice(&pos_key(p));
        let Some(e) = cx.view_get(&view, &ek)? else {
            continue;
        };
        drop(view);
        let mut ops = vec![Op::Delete { key: ek }];
        let src_meta = keyspace::meta_key(src);
        if from.len == 1 {
            ops.push(Op::Delete {
                key: src_meta.clone(),
            });
        } else {
            let m = Meta {
                len: from.len - 1,
                head: if from_left { from.head + 1 } else { from.head },
                tail: if from_left { from.tail } else { from.tail - 1 },
                ..from
            };
            ops.push(Op::Put {
                key: src_meta.clone(),
                value: m.encode(),
                expires_at_ms: from_rec.expires_at_ms,
            });
        }
        let (mut to_meta, to_ttl, to_version) = match &to {
            Some((m, rec)) => (*m, rec.expires_at_ms, rec.version),
            None => (Meta::fresh(Kind::List), None, 0),
        };
        let q = if to_left {
            to_meta.head -= 1;
            to_meta.head
        } else {
            to_meta.tail += 1;
            to_meta.tail - 1
        };
        to_meta.len += 1;
        let mut dk = keyspace::elem_prefix(dst, to_meta.generation);
        dk.extend_from_slice(&pos_key(q));
        ops.push(Op::Put {
            key: dk,
            value: e.value.clone(),
            expires_at_ms: None,
        });
        ops.push(Op::Put {
            key: keyspace::meta_key(dst),
            value: to_meta.encode(),
            expires_at_ms: to_ttl,
        });
        let conditions = vec![
            Condition {
                key: src_meta,
                expected_version: from_rec.version,
            },
            Condition {
                key: keyspace::meta_key(dst),
                expected_version: to_version,
            },
            Condition {
                key: dst.to_vec(),
                expected_version: 0,
            },
        ];
        if let Outcome::Committed { .. } = cx.write_raw(Batch { ops, conditions }).await? {
            return Ok(Reply::Bulk(e.value));
        }
    }
    Err(Reply::err("the keys kept changing; retry"))
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges_follow_redis_index_rules() {
        assert_eq!(range(0, -1, 5), Some((0, 4)));
        assert_eq!(range(-2, -1, 5), Some((3, 4)));
        assert_eq!(range(-100, 100, 5), Some((0, 4)));
        assert_eq!(range(3, 1, 5), None);
        assert_eq!(range(5, 10, 5), None);
        assert_eq!(range(0, -6, 5), None);
        assert_eq!(range(0, 0, 0), None);
    }
}
