//! `SSCAN key cursor [MATCH pattern] [COUNT count]`: members in byte order,
//! about COUNT at a time.

use std::ops::Bound;

use crate::resp::cmd::common::{scan_args, scan_reply, unknown_cursor};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("sscan", -3, ["readonly"], (1, 1, 1), |cx, a| {
    let args = scan_args(cx, a, false)?;
    let s = cx.read_coll(&a[1], Kind::Set).await?;
    let Some(s) = s else {
        return Ok(Reply::Array(vec![Reply::text("0"), Reply::Array(vec![])]));
    };
    if args.stale {
        return Err(unknown_cursor(&a[2]));
    }
    let lower = args
        .after
        .as_deref()
        .map_or(Bound::Unbounded, Bound::Excluded);
    let page = s
        .scan(lower, Bound::Unbounded, false, args.count + 1)?
        .into_iter()
        .map(|(m, _)| (m.clone(), vec![Reply::Bulk(m)]))
        .collect();
    Ok(scan_reply(cx, page, &args, |m| m.to_vec()))
});
