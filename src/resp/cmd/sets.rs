//! Shared by the multi-key set commands (SMOVE, SINTER, SUNION, SDIFF and
//! their STORE forms, SINTERCARD): whole sets loaded through one view, and
//! one atomic batch that writes several sets (across shards if need be).

use std::collections::BTreeSet;

use crate::keyspace;
use crate::resp::coll::{Found, Kind, Meta, View};
use crate::resp::proto::Reply;
use crate::resp::{Conn, wrong_type};
use crate::storage::{Batch, Condition, Op, Outcome};

/// A key as read: what it held, and its members if it was a set.
#[derive(Default)]
pub struct Loaded {
    /// The string's version, if the key held a string.
    string: u64,
    /// The metadata and its record version, if it held a collection.
    meta: Option<(Meta, u64)>,
    /// Members (empty unless a set).
    pub members: BTreeSet<Vec<u8>>,
}

/// Loads the set at `key` (None: no such key; WRONGTYPE: not a set).
pub fn load(cx: &Conn, view: &View, key: &[u8]) -> Result<Option<Loaded>, Reply> {
    match cx.lookup_in(view, key)? {
        Found::None => Ok(None),
        Found::Coll(m, _) if m.kind == Kind::Set => Ok(Some(load_any(cx, view, key)?)),
        _ => Err(wrong_type()),
    }
}

/// Loads `key` whatever it holds (a destination that is about to be
/// replaced).
pub fn load_any(cx: &Conn, view: &View, key: &[u8]) -> Result<Loaded, Reply> {
    Ok(match cx.lookup_in(view, key)? {
        Found::None => Loaded::default(),
        Found::Str(v) => Loaded {
            string: v.version,
            ..Loaded::default()
        },
        Found::Coll(m, rec) => {
            let members = if m.kind == Kind::Set {
                cx.elements_in(view, key, &m)?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            } else {
                BTreeSet::new()
            };
            Loaded {
                string: 0,
                meta: Some((m, rec.version)),
                members,
            }
        }
    })
}

/// Writes each `(key, as loaded, new members)` in one atomic batch, on the
/// condition that none changed since loading; false if one did. A key that
/// was not a set is replaced by a new set (or deleted if the new set is
/// empty). `keep_ttl`: a set that stays a set keeps its TTL.
pub async fn store(
    cx: &Conn,
    writes: Vec<(Vec<u8>, Loaded, BTreeSet<Vec<u8>>)>,
    keep_ttl: bool,
) -> Result<bool, Reply> {
    let mut ops = Vec::new();
    let mut conditions = Vec::new();
    for (key, old, new) in writes {
        cx.check_key(&key)?;
        let meta_key = keyspace::meta_key(&key);
        conditions.push(Condition {
            key: key.clone(),
            expected_version: old.string,
        });
        conditions.push(Condition {
            key: meta_key.clone(),
            expected_version: old.meta.map_or(0, |(_, v)| v),
        });
        if old.string != 0 {
            ops.push(Op::Delete { key: key.clone() });
        }
        let same_set = old.meta.is_some_and(|(m, _)| m.kind == Kind::Set);
        let (meta, base) = match old.meta {
            Some((m, _)) if same_set => (m, old.members),
            _ => (Meta::fresh(Kind::Set), BTreeSet::new()),
        };
        let prefix = keyspace::elem_prefix(&key, meta.generation);
        let elem = |m: &[u8]| {
            let mut k = prefix.clone();
            k.extend_from_slice(m);
            k
        };
        for m in base.difference(&new) {
            ops.push(Op::Delete { key: elem(m) });
        }
        for m in new.difference(&base) {
            ops.push(Op::Put {
                key: elem(m),
                value: Vec::new(),
                expires_at_ms: None,
            });
        }
        if new.is_empty() {
            if old.meta.is_some() {
                ops.push(Op::Delete { key: meta_key });
            }
        } else {
            let ttl = if keep_ttl && same_set {
                cx.raw_get(&meta_key)?.and_then(|v| v.expires_at_ms)
            } else {
                None
            };
            ops.push(Op::Put {
                key: meta_key,
                value: Meta {
                    len: new.len() as u64,
                    ..meta
                }
                .encode(),
                expires_at_ms: ttl,
            });
        }
    }
    if ops.is_empty() {
        return Ok(true);
    }
    Ok(matches!(
        cx.write_raw(Batch { ops, conditions }).await?,
        Outcome::Committed { .. }
    ))
}

/// Loads the sets named by `keys` (absent keys are empty sets).
pub fn load_all(cx: &Conn, view: &View, keys: &[Vec<u8>]) -> Result<Vec<BTreeSet<Vec<u8>>>, Reply> {
    keys.iter()
        .map(|k| Ok(load(cx, view, k)?.map(|l| l.members).unwrap_or_default()))
        .collect()
}

/// The set algebra of SINTER, SUNION and SDIFF.
#[derive(Clone, Copy)]
pub enum Algebra {
    /// Members of all.
    Inter,
    /// Members of any.
    Union,
    /// Members of the first and of none of the others.
    Diff,
}

/// Applies `op` to `sets` (at least one).
pub fn combine(op: Algebra, mut sets: Vec<BTreeSet<Vec<u8>>>) -> BTreeSet<Vec<u8>> {
    let mut acc = sets.remove(0);
    for s in sets {
        match op {
            Algebra::Inter => acc.retain(|m| s.contains(m)),
            Algebra::Union => acc.extend(s),
            Algebra::Diff => acc.retain(|m| !s.contains(m)),
        }
    }
    acc
}

/// SINTERSTORE, SUNIONSTORE, SDIFFSTORE: `args` = name dst key [key ...];
/// answers the size of the stored set.
pub async fn combine_store(cx: &Conn, args: &[Vec<u8>], op: Algebra) -> Result<Reply, Reply> {
    let dst = &args[1];
    for _ in 0..64 {
        let view = cx.view().await;
        let sets = load_all(cx, &view, &args[2..])?;
        let result = combine(op, sets);
        let n = result.len() as i64;
        let old = load_any(cx, &view, dst)?;
        drop(view);
        if store(cx, vec![(dst.clone(), old, result)], false).await? {
            return Ok(Reply::Int(n));
        }
    }
    Err(Reply::err("the keys kept changing; retry"))
}

/// SINTER, SUNION, SDIFF: `args` = name key [key ...].
pub async fn combine_read(cx: &Conn, args: &[Vec<u8>], op: Algebra) -> Result<Reply, Reply> {
    let view = cx.view().await;
    let sets = load_all(cx, &view, &args[1..])?;
    Ok(Reply::Set(
        combine(op, sets).into_iter().map(Reply::Bulk).collect(),
    ))
}
