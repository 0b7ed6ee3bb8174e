//! `SMOVE source destination member`: moves a member between sets (1), or
//! 0 if it is not in the source; one atomic batch, across shards if the
//! sets live on different ones.

use crate::keyspace;
use crate::resp::coll::{Found, Kind, Meta};
use crate::resp::proto::Reply;
use crate::resp::wrong_type;
use crate::storage::{Batch, Condition, Op, Outcome};

command!("smove", 4, ["write", "fast"], (1, 2, 1), |cx, a| {
    let (src, dst, m) = (&a[1], &a[2], &a[3]);
    cx.check_key(dst)?;
    for _ in 0..64 {
        let view = cx.view().await;
        let (from, from_rec) = match cx.lookup_in(&view, src)? {
            Found::None => return Ok(Reply::Int(0)),
            Found::Coll(meta, rec) if meta.kind == Kind::Set => (meta, rec),
            _ => return Err(wrong_type()),
        };
        let to = match cx.lookup_in(&view, dst)? {
            Found::None => None,
            Found::Coll(meta, rec) if meta.kind == Kind::Set => Some((meta, rec)),
            _ => return Err(wrong_type()),
        };
        let elem = |key: &[u8], meta: &Meta| {
            let mut k = keyspace::elem_prefix(key, meta.generation);
            k.extend_from_slice(m);
            k
        };
        if cx.view_get(&view, &elem(src, &from))?.is_none() {
            return Ok(Reply::Int(0));
        }
        if src == dst {
            return Ok(Reply::Int(1));
        }
        let mut ops = vec![Op::Delete {
            key: elem(src, &from),
        }];
        if from.len == 1 {
            ops.push(Op::Delete {
                key: keyspace::meta_key(src),
            });
        } else {
            ops.push(Op::Put {
                key: keyspace::meta_key(src),
                value: Meta {
                    len: from.len - 1,
                    ..from
                }
                .encode(),
                expires_at_ms: from_rec.expires_at_ms,
            });
        }
        let (to_meta, to_ttl, to_version) = match &to {
            Some((meta, rec)) => (*meta, rec.expires_at_ms, rec.version),
            None => (Meta::fresh(Kind::Set), None, 0),
        };
        let present = to.is_some() && cx.view_get(&view, &elem(dst, &to_meta))?.is_some();
        if !present {
            ops.push(Op::Put {
                key: elem(dst, &to_meta),
                value: Vec::new(),
                expires_at_ms: None,
            });
            ops.push(Op::Put {
                key: keyspace::meta_key(dst),
                value: Meta {
                    len: to_meta.len + 1,
                    ..to_meta
                }
                .encode(),
                expires_at_ms: to_ttl,
            });
        }
        drop(view);
        let conditions = vec![
            Condition {
                key: keyspace::meta_key(src),
                expected_version: from_rec.version,
            },
            Condition {
                key: keyspace::meta_key(dst),
                expected_version: to_version,
            },
            Condition {
                key: dst.clone(),
                expected_version: 0,
            },
        ];
        if let Outcome::Committed { .. } = cx.write_raw(Batch { ops, conditions }).await? {
            return Ok(Reply::Int(1));
        }
    }
    Err(Reply::err("the keys kept changing; retry"))
});
