//! `SPOP key [count]`: removes and returns random members (one as a bulk
//! string without count, an array with it).

use crate::resp::cmd::common::{pop_count, random_picks};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("spop", -2, ["write", "fast"], (1, 1, 1), |cx, a| {
    let count = pop_count(a)?.map(|n| n as i64);
    let popped = cx
        .mutate(&a[1], Kind::Set, {
            let args = a.to_vec();
            move |s| {
                let want = count.unwrap_or(1);
                if s.meta.len == 0 || want == 0 {
                    return Ok(Vec::new());
                }
                // One member: the first at or after a random point between
                // the first and the last member (a scan from a random point
                // does not walk the tombstones of earlier pops, as a scan from
                // the start would).
                let members: Vec<Vec<u8>> = if want == 1 && s.meta.len > 16 {
                    vec![random_member(s)?]
                } else {
                    let all = s.all()?;
                    random_picks(all.len(), want)
                        .into_iter()
                        .map(|i| all[i].0.clone())
                        .collect()
                };
                for m in &members {
                    s.del(m.clone());
                    s.meta.len -= 1;
                }
                Ok(members)
            }
        })
        .await?;
    Ok(match count {
        None => popped.into_iter().next().map_or(Reply::Null, Reply::Bulk),
        Some(_) => Reply::Array(popped.into_iter().map(Reply::Bulk).collect()),
    })
});

/// A member of a non-empty set, at a random point of its key range.
fn random_member(s: &crate::resp::coll::Coll<'_>) -> Result<Vec<u8>, Reply> {
    use std::ops::Bound;
    let first = s.scan(Bound::Unbounded, Bound::Unbounded, false, 1)?;
    let last = s.scan(Bound::Unbounded, Bound::Unbounded, true, 1)?;
    let (Some((lo, _)), Some((hi, _))) = (first.into_iter().next(), last.into_iter().next()) else {
        return Err(Reply::err("set metadata and members disagree"));
    };
    let common = lo.iter().zip(&hi).take_while(|(a, b)| a == b).count();
    let from = u64::from(lo.get(common).copied().unwrap_or(0));
    let to = u64::from(hi.get(common).copied().unwrap_or(255));
    let mut point = lo[..common].to_vec();
    point.push((from + crate::resp::cmd::common::random() % (to - from + 1)) as u8);
    point.extend_from_slice(&crate::resp::cmd::common::random().to_be_bytes());
    let at = s.scan(Bound::Included(&point), Bound::Unbounded, false, 1)?;
    Ok(at.into_iter().next().map_or(lo, |(m, _)| m))
}
