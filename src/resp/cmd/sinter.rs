//! `SINTER key [key ...]`: the intersection of the sets, in byte order;
//! absent keys are empty sets.

use crate::resp::cmd::sets::{Algebra, combine_read};

command!("sinter", -2, ["readonly"], (1, -1, 1), |cx, a| {
    combine_read(cx, a, Algebra::Inter).await
});
