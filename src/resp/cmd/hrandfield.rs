//! `HRANDFIELD key [count [WITHVALUES]]`: random fields; a negative count
//! may repeat fields.

use crate::resp::cmd::common::{rand_count, random_picks};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;
use crate::resp::syntax_error;

command!("hrandfield", -2, ["readonly"], (1, 1, 1), |cx, a| {
    let count = a.get(2).map(|c| rand_count(c)).transpose()?;
    let with_values = match a.get(3) {
        None => false,
        Some(w) if a.len() == 4 && w.eq_ignore_ascii_case(b"WITHVALUES") => true,
        Some(_) => return Err(syntax_error()),
    };
    let Some(h) = cx.read_coll(&a[1], Kind::Hash).await? else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Null
        });
    };
    let all = h.all()?;
    let picks = random_picks(all.len(), count.unwrap_or(1));
    let Some(_) = count else {
        return Ok(picks
            .first()
            .map_or(Reply::Null, |&i| Reply::Bulk(all[i].0.clone())));
    };
    let mut out = Vec::new();
    for i in picks {
        if with_values && cx.proto >= 3 {
            out.push(Reply::Array(vec![
                Reply::Bulk(all[i].0.clone()),
                Reply::Bulk(all[i].1.clone()),
            ]));
            continue;
        }
        out.push(Reply::Bulk(all[i].0.clone()));
        if with_values {
            out.push(Reply::Bulk(all[i].1.clone()));
        }
    }
    Ok(Reply::Array(out))
});
