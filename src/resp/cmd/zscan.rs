//! `ZSCAN key cursor [MATCH pattern] [COUNT count]`: members and scores,
//! in member order, about COUNT at a time.

use std::ops::Bound;

use crate::resp::cmd::common::{scan_args, scan_reply, unknown_cursor};
use crate::resp::coll::Kind;
use crate::resp::proto::{Reply, format_double};

command!("zscan", -3, ["readonly"], (1, 1, 1), |cx, a| {
    let args = scan_args(cx, a, false)?;
    let z = cx.read_coll(&a[1], Kind::ZSet).await?;
    let Some(z) = z else {
        return Ok(Reply::Array(vec![Reply::text("0"), Reply::Array(vec![])]));
    };
    if args.stale {
        return Err(unknown_cursor(&a[2]));
    }
    // Members are the `m` records; the cursor is the last one's suffix.
    let lower = match &args.after {
        Some(after) => Bound::Excluded(after.as_slice()),
        None => Bound::Included(b"m".as_slice()),
    };
    let page = z
        .scan(
            lower,
            Bound::Excluded(b"n".as_slice()),
            false,
            args.count + 1,
        )?
        .into_iter()
        .map(|(k, v)| {
            let score = f64::from_bits(u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8])));
            let member = k[1..].to_vec();
            // Bulk strings in RESP3 too: a SCAN reply is strings.
            let score = format_double(score).into_bytes();
            (k, vec![Reply::Bulk(member), Reply::Bulk(score)])
        })
        .collect();
    Ok(scan_reply(cx, page, &args, |k| k[1..].to_vec()))
});
