//! `MSETNX key value [key value ...]`: sets all (1) only if none exists,
//! else nothing (0); atomic, on any number of shards.

use crate::resp::cmd::common::put;
use crate::resp::proto::Reply;
use crate::storage::{Batch, Condition, Outcome};

command!("msetnx", -3, ["write"], (1, -1, 2), |cx, a| {
    if a.len().is_multiple_of(2) {
        return Err(Reply::err("wrong number of arguments for 'msetnx' command"));
    }
    let ops = a[1..]
        .chunks(2)
        .map(|p| put(&p[0], p[1].clone(), None))
        .collect();
    // No key may exist, as a string or as a collection.
    let conditions = a[1..]
        .iter()
        .step_by(2)
        .flat_map(|k| [k.clone(), crate::keyspace::meta_key(k)])
        .map(|key| Condition {
            key,
            expected_version: 0,
        })
        .collect();
    Ok(match cx.write(Batch { ops, conditions }).await? {
        Outcome::Committed { .. } => Reply::Int(1),
        Outcome::ConditionFailed { .. } => Reply::Int(0),
    })
});
