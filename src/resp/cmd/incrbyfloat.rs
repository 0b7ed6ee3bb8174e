//! `INCRBYFLOAT key increment`: the new value as a bulk string, added and
//! printed in long double as Redis does (keeps the TTL).

use crate::resp::cmd::common::put;
use crate::resp::ldouble::LongDouble;
use crate::resp::proto::Reply;

command!("incrbyfloat", 3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let text = cx
        .update(key, {
            let (key, by) = (key.to_vec(), a[2].to_vec());
            move |cur| {
                // As Redis: the stored value is read before the increment.
                let not_float = || Reply::err("value is not a valid float");
                let old = match cur {
                    None => LongDouble::ZERO,
                    Some(v) => LongDouble::parse(&v.value).ok_or_else(not_float)?,
                };
                let by = LongDouble::parse(&by).ok_or_else(not_float)?;
                let text = (old + by)
                    .to_human()
                    .ok_or_else(|| Reply::err("increment would produce NaN or Infinity"))?;
                let op = put(
                    &key,
                    text.clone().into_bytes(),
                    cur.and_then(|v| v.expires_at_ms),
                );
                Ok((Some(op), text))
            }
        })
        .await?;
    Ok(Reply::text(text))
});
