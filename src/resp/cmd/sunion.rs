//! `SUNION key [key ...]`: the union of the sets, in byte order; absent
//! keys are empty sets.

use crate::resp::cmd::sets::{Algebra, combine_read};

command!("sunion", -2, ["readonly"], (1, -1, 1), |cx, a| {
    combine_read(cx, a, Algebra::Union).await
});
