//! `HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]`: fields (and
//! values) in field order, about COUNT at a time.

use std::ops::Bound;

use crate::resp::cmd::common::{scan_args, scan_reply, unknown_cursor};
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;

command!("hscan", -3, ["readonly"], (1, 1, 1), |cx, a| {
    let args = scan_args(cx, a, true)?;
    let h = cx.read_coll(&a[1], Kind::Hash).await?;
    let Some(h) = h else {
        return Ok(Reply::Array(vec![Reply::text("0"), Reply::Array(vec![])]));
    };
    if args.stale {
        return Err(unknown_cursor(&a[2]));
    }
    let lower = args
        .after
        .as_deref()
        .map_or(Bound::Unbounded, Bound::Excluded);
    let page = h
        .scan(lower, Bound::Unbounded, false, args.count + 1)?
        .into_iter()
        .map(|(f, v)| {
            let mut r = vec![Reply::Bulk(f.clone())];
            if !args.novalues {
                r.push(Reply::Bulk(v));
            }
            (f, r)
        })
        .collect();
    Ok(scan_reply(cx, page, &args, |f| f.to_vec()))
});
