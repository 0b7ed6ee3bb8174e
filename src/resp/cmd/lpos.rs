//! `LPOS key element [RANK rank] [COUNT num] [MAXLEN len]`: the index of
//! matches (the first, or COUNT of them as an array; RANK skips matches,
//! negative from the tail; MAXLEN bounds the elements compared).

use crate::resp::cmd::lists::all;
use crate::resp::coll::Kind;
use crate::resp::proto::Reply;
use crate::resp::{int_arg, syntax_error};

command!("lpos", -3, ["readonly"], (1, 1, 1), |cx, a| {
    let (mut rank, mut count, mut maxlen) = (1i64, None, 0i64);
    let mut i = 3;
    while i < a.len() {
        let v = int_arg(a.get(i + 1).ok_or_else(syntax_error)?)?;
        match a[i].to_ascii_uppercase().as_slice() {
            b"RANK" => {
                // As Redis 7.2 and later (7.0 takes i64::MIN as -i64::MAX).
                if v == i64::MIN {
                    return Err(Reply::err(
                        "value is out of range, value must between -9223372036854775807 and 9223372036854775807",
                    ));
                }
                if v == 0 {
                    return Err(Reply::err(
                        "RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                    ));
                }
                rank = v;
            }
            b"COUNT" => {
                if v < 0 {
                    return Err(Reply::err("COUNT can't be negative"));
                }
                count = Some(v);
            }
            b"MAXLEN" => {
                if v < 0 {
                    return Err(Reply::err("MAXLEN can't be negative"));
                }
                maxlen = v;
            }
            _ => return Err(syntax_error()),
        }
        i += 2;
    }
    let none = || {
        if count.is_some() {
            Reply::Array(vec![])
        } else {
            Reply::Null
        }
    };
    let Some(l) = cx.read_coll(&a[1], Kind::List).await? else {
        return Ok(none());
    };
    let elems = all(&l)?;
    let n = elems.len();
    let order: Box<dyn Iterator<Item = usize>> = if rank < 0 {
        Box::new((0..n).rev())
    } else {
        Box::new(0..n)
    };
    let want = match count {
        Some(0) => usize::MAX,
        Some(c) => c as usize,
        None => 1,
    };
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    for (compared, idx) in order.enumerate() {
        if maxlen > 0 && compared as i64 >= maxlen {
            break;
        }
        if elems[idx] == a[2] {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(Reply::Int(idx as i64));
            if found.len() >= want {
                break;
            }
        }
    }
    Ok(match count {
        Some(_) => Reply::Array(found),
        None => found.into_iter().next().unwrap_or(Reply::Null),
    })
});
