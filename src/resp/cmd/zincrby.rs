//! `ZINCRBY key increment member`: adds to a member's score (missing
//! members start at 0); the new score.

use crate::resp::cmd::common::float;
use crate::resp::cmd::zsets::{score, set};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!(
    "zincrby",
    4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        let by = float(&a[2]).ok_or_else(|| Reply::err("value is not a valid float"))?;
        let new = cx
            .mutate(&a[1], Kind::ZSet, {
                let args = a.to_vec();
                move |z| {
                    let old = score(z, &args[3])?;
                    let new = old.unwrap_or(0.0) + by;
                    if new.is_nan() {
                        return Err(Reply::err("resulting score is not a number (NaN)"));
                    }
                    set(z, &args[3], old, new)?;
                    Ok(new)
                }
            })
            .await?;
        Ok(Reply::Double(new))
    }
);
