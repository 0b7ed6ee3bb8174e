//! `SDIFF key [key ...]`: the members of the first set that are in none
//! of the others, in byte order; absent keys are empty sets.

use crate::resp::cmd::sets::{Algebra, combine_read};

command!("sdiff", -2, ["readonly"], (1, -1, 1), |cx, a| {
    combine_read(cx, a, Algebra::Diff).await
});
