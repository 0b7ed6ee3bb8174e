//! `HINCRBYFLOAT key field increment`: adds to the number in a field
//! (missing = 0); answers the new value as Redis prints it.

use crate::resp::cmd::common::float;
use crate::resp::coll::Kind;
use crate::resp::proto::{Reply, format_human};

command!(
    "hincrbyfloat",
    4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        let by = float(&a[3]).ok_or_else(|| Reply::err("value is not a valid float"))?;
        let text = cx
            .mutate(&a[1], Kind::Hash, {
                let args = a.to_vec();
                move |h| {
                    let old = match h.get(&args[2])? {
                        None => {
                            h.meta.len += 1;
                            0.0
                        }
                        Some(v) => {
                            float(&v).ok_or_else(|| Reply::err("hash value is not a float"))?
                        }
                    };
                    let new = old + by;
                    if !new.is_finite() {
                        return Err(Reply::err("increment would produce NaN or Infinity"));
                    }
                    let text = format_human(new);
                    h.put(args[2].clone(), text.clone().into_bytes())?;
                    Ok(text)
                }
            })
            .await?;
        Ok(Reply::text(text))
    }
);
