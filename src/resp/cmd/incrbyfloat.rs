//! `INCRBYFLOAT key increment`: the new value as a bulk string, as Redis
//! prints it (keeps the TTL).

use crate::resp::cmd::common::{float, put};
use crate::resp::proto::{Reply, format_human};

command!("incrbyfloat", 3, ["write", "fast"], (1, 1, 1), |cx, a| {
    let key = &a[1];
    let by = float(&a[2]).ok_or_else(|| Reply::err("value is not a valid float"))?;
    let text = cx
        .update(key, {
            let key = key.to_vec();
            move |cur| {
                let old = match cur {
                    None => 0.0,
                    Some(v) => {
                        float(&v.value).ok_or_else(|| Reply::err("value is not a valid float"))?
                    }
                };
                let new = old + by;
                if !new.is_finite() {
                    return Err(Reply::err("increment would produce NaN or Infinity"));
                }
                let text = format_human(new);
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
