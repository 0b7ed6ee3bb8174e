//! `HINCRBYFLOAT key field increment`: adds to the number in a field
//! (missing = 0) in long double, and answers the new value, as Redis does.

use crate::resp::coll::Kind;
use crate::resp::ldouble::LongDouble;
use crate::resp::proto::Reply;

command!(
    "hincrbyfloat",
    4,
    ["write", "denyoom", "fast"],
    (1, 1, 1),
    |cx, a| {
        // As Redis: the increment is checked before the key's type.
        let by =
            LongDouble::parse(&a[3]).ok_or_else(|| Reply::err("value is not a valid float"))?;
        if !by.is_finite() {
            return Err(Reply::err("value is NaN or Infinity"));
        }
        let text = cx
            .mutate(&a[1], Kind::Hash, {
                let args = a.to_vec();
                move |h| {
                    let old = match h.get(&args[2])? {
                        None => {
                            h.meta.len += 1;
                            LongDouble::ZERO
                        }
                        Some(v) => LongDouble::parse(&v)
                            .ok_or_else(|| Reply::err("hash value is not a float"))?,
                    };
                    let text = (old + by)
                        .to_human()
                        .ok_or_else(|| Reply::err("increment would produce NaN or Infinity"))?;
                    h.put(args[2].clone(), text.clone().into_bytes())?;
                    Ok(text)
                }
            })
            .await?;
        Ok(Reply::text(text))
    }
);
