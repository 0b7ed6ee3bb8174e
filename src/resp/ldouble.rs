//! Long double numbers for INCRBYFLOAT and HINCRBYFLOAT, as Redis adds and
//! prints them.
//!
//! Redis keeps these in C's `long double` (64-bit mantissa on x86-64, quad
//! precision on aarch64) and stores the sum as `"%.17Lf"` with the trailing
//! zeros cut, so `1.1 + 2.2` is "3.3" there where a double gives
//! "3.3000000000000003", and a sum below 5e-18 prints as "0". Rust has no
//! `long double`, so the parse, the sum and the text come from a small C
//! file (`c/ldouble.c`, compiled by build.rs) that calls the C library's
//! `strtold` and `snprintf` the way Redis' `string2ld` and `ld2string` do:
//! the same bytes as redis-server on the same platform.

use std::ffi::{c_char, c_int};

/// Room for any finite long double in `"%.17Lf"` (Redis'
/// `MAX_LONG_DOUBLE_CHARS`; the largest, about 1.2e4932, takes ~4950).
const MAX_CHARS: usize = 5 * 1024;

/// A C `long double`, held as the bytes C keeps it in (at most 16).
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct LongDouble([u8; 16]);

unsafe extern "C" {
    fn fk_ld_parse(s: *const c_char, len: usize, out: *mut LongDouble) -> c_int;
    fn fk_ld_add(a: *const LongDouble, b: *const LongDouble, out: *mut LongDouble);
    fn fk_ld_is_finite(a: *const LongDouble) -> c_int;
    fn fk_ld_format_human(a: *const LongDouble, buf: *mut c_char, cap: usize) -> usize;
}

impl LongDouble {
    /// Zero (all bits clear is +0 in every `long double` format).
    pub const ZERO: LongDouble = LongDouble([0; 16]);

    /// `text` as Redis' `string2ld` reads it: what `strtold` takes whole
    /// (decimal, hex, `inf`), but not empty, over 5119 bytes, with leading
    /// space, NaN, or out of range.
    pub fn parse(text: &[u8]) -> Option<LongDouble> {
        let mut out = LongDouble::ZERO;
        // SAFETY: `text` is valid for `len` bytes (the C side copies them
        // and stops at `len`); `out` is a writable, aligned 16-byte cell.
        let ok = unsafe { fk_ld_parse(text.as_ptr().cast(), text.len(), &mut out) };
        (ok == 1).then_some(out)
    }

    /// Neither infinite nor NaN.
    pub fn is_finite(&self) -> bool {
        // SAFETY: `self` holds a long double.
        unsafe { fk_ld_is_finite(self) == 1 }
    }

    /// The text Redis stores and answers for a finite value (`ld2string`
    /// with `LD_STR_HUMAN`): 17 decimals, trailing zeros and a bare point
    /// cut, never an exponent, "-0" as "0". None for an infinite or NaN
    /// value.
    pub fn to_human(&self) -> Option<String> {
        if !self.is_finite() {
            return None;
        }
        let mut buf = [0u8; MAX_CHARS];
        // SAFETY: `buf` is writable for its length; the C side writes at
        // most that many bytes and returns how many are the text.
        let n = unsafe { fk_ld_format_human(self, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return None;
        }
        String::from_utf8(buf[..n].to_vec()).ok()
    }
}

impl std::ops::Add for LongDouble {
    type Output = LongDouble;

    /// The sum, in long double.
    fn add(self, other: LongDouble) -> LongDouble {
        let mut out = LongDouble::ZERO;
        // SAFETY: all three are aligned 16-byte cells holding (or taking)
        // a long double.
        unsafe { fk_ld_add(&self, &other, &mut out) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(terms: &[&str]) -> Option<String> {
        terms
            .iter()
            .map(|t| LongDouble::parse(t.as_bytes()).expect("a float"))
            .fold(LongDouble::ZERO, |a, b| a + b)
            .to_human()
    }

    /// Each answer is redis-server 7.0's (Debian) to the same INCRBYFLOATs
    /// from a missing key.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sums_print_as_redis_prints_them() {
        for (terms, want) in [
            (&["1.1", "2.2"][..], "3.3"),
            (&["0.1", "0.2"], "0.3"),
            (&["10.50", "0.1"], "10.6"),
            (&["5.0e3", "2.0e2"], "5200"),
            (&["0x1p3", "1e-20"], "8"),
            (&["-0"], "0"),
            (&["-1e-18"], "0"),
            (&["0.000000000000000005"], "0"),
            (&["9007199254740993"], "9007199254740993"),
            (&["9007199254740993", "1.5"], "9007199254740994.5"),
            (&["123456789.123456789"], "123456789.12345678899873747"),
            (&["1.0000000000000000000001"], "1"),
            (&["10", "0.1"], "10.1"),
        ] {
            assert_eq!(sum(terms).as_deref(), Some(want), "{terms:?}");
        }
        let big = sum(&["1e300"]).expect("finite");
        assert!(
            big.starts_with("1000000000000000000008997324079559193870523944273290747938260082")
                && big.len() == 301,
            "{big}"
        );
        let huge = sum(&["1e4000"]).expect("finite");
        assert!(huge.starts_with("99999999999999999999654638") && huge.len() == 4000);
        assert_eq!(sum(&["1e-4000"]).as_deref(), Some("0"));
    }

    #[test]
    fn parses_what_redis_parses() {
        for ok in [
            "1", "-1.5", "1e3", "1E2", "inf", "-inf", "infinity", "0x10", "1e-4000",
        ] {
            assert!(LongDouble::parse(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "", " 1", "1 ", "abc", "1.5x", "nan", "NaN", "1e5000", "-1e5000", "1e-5000", "1\u{0}",
        ] {
            assert!(LongDouble::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(LongDouble::parse(&[b'1'; MAX_CHARS]).is_none());
        assert!(LongDouble::parse(&[b'1'; 4000]).is_some());
    }

    #[test]
    fn infinities_and_overflow_have_no_text() {
        let inf = LongDouble::parse(b"inf").expect("inf parses");
        assert!(!inf.is_finite());
        assert_eq!(inf.to_human(), None);
        let max = LongDouble::parse(b"1e4932").expect("in range");
        assert!(max.is_finite());
        assert!(!(max + max).is_finite());
        let text = max.to_human().expect("finite");
        assert_eq!(text.len(), 4933);
        assert!(text.chars().all(|c| c.is_ascii_digit()));
    }
}
