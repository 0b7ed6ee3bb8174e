//! `SRANDMEMBER key [count]`: random members without removing them; a
//! negative count may repeat members.

use crate::resp::cmd::common::{rand_count, random_picks};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("srandmember", -2, ["readonly"], (1, 1, 1), |cx, a| {
    if a.len() > 3 {
        return Err(crate::resp::syntax_error());
    }
    let count = a.get(2).map(|c| rand_count(c)).transpose()?;
    let Some(s) = cx.read_coll(&a[1], Kind::Set).await? else {
        return Ok(if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Null
        });
    };
    let all = s.all()?;
    let picks = random_picks(all.len(), count.unwrap_or(1));
    Ok(match count {
        None => picks
            .first()
            .map_or(Reply::Null, |&i| Reply::Bulk(all[i].0.clone())),
        Some(_) => Reply::Array(
            picks
                .into_iter()
                .map(|i| Reply::Bulk(all[i].0.clone()))
                .collect(),
        ),
    })
});
