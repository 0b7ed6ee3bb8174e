//! `SINTERCARD numkeys key [key ...] [LIMIT limit]`: the size of the
//! intersection (at most LIMIT when given and non-zero).

use crate::resp::cmd::sets::{Algebra, combine, load_all};
use crate::resp::int_arg;
use crate::resp::proto::Reply;

command!("sintercard", -3, ["readonly"], (2, -1, 1), |cx, a| {
    // Not a number and not positive get the same error, as in Redis.
    let n = match crate::resp::proto::parse_int(&a[1]) {
        Some(n) if n > 0 => n,
        _ => return Err(Reply::err("numkeys should be greater than 0")),
    };
    let n = n as usize;
    if a.len() < 2 + n {
        return Err(Reply::err(
            "Number of keys can't be greater than number of args",
        ));
    }
    let mut limit = 0usize;
    let rest = &a[2 + n..];
    match rest {
        [] => {}
        [l, v] if l.eq_ignore_ascii_case(b"LIMIT") => {
            let v = int_arg(v)?;
            if v < 0 {
                return Err(Reply::err("LIMIT can't be negative"));
            }
            limit = v as usize;
        }
        _ => return Err(crate::resp::syntax_error()),
    }
    let view = cx.view().await;
    let sets = load_all(cx, &view, &a[2..2 + n])?;
    let size = combine(Algebra::Inter, sets).len();
    Ok(Reply::Int(
        if limit > 0 { size.min(limit) } else { size } as i64
    ))
});
