//! The Redis serialization protocol: the request parser (multibulk arrays
//! of bulk strings, and inline commands as redis-cli sends by hand) with the
//! limits and error texts of Redis, and the reply encoder for RESP2 and
//! RESP3 (`HELLO 3`).

use std::fmt::Write as _;

/// Longest inline command line (Redis' PROTO_INLINE_MAX_SIZE).
pub const MAX_INLINE: usize = 64 << 10;
/// Most arguments in one command (Redis accepts up to 1024*1024 by default).
pub const MAX_MULTIBULK: i64 = 1024 * 1024;

/// A parsed command (its arguments) and the bytes it took, if complete.
pub type Parsed = Option<(Vec<Vec<u8>>, usize)>;

/// A protocol error: the connection is answered with it and closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Parses one command from the front of `buf`: its arguments and the bytes
/// it used, or None if `buf` holds only part of it. An empty argument list
/// (a blank inline line, `*0`) is a command of no arguments, to be skipped.
pub fn parse(buf: &[u8], max_bulk: usize) -> Result<Parsed, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf);
    }
    let Some((n, mut pos)) = line_int(buf, 1, "multibulk length")? else {
        return Ok(None);
    };
    if n > MAX_MULTIBULK {
        return Err(ProtocolError("invalid multibulk length".into()));
    }
    if n <= 0 {
        return Ok(Some((Vec::new(), pos)));
    }
    let mut args = Vec::with_capacity(n.min(1024) as usize);
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                char::from(buf[pos])
            )));
        }
        let Some((len, start)) = line_int(buf, pos + 1, "bulk length")? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > max_bulk as u64 {
            return Err(ProtocolError("invalid bulk length".into()));
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not terminated by CRLF".into()));
        }
        args.push(buf[start..end].to_vec());
        pos = end + 2;
    }
    Ok(Some((args, pos)))
}

/// An integer written as Redis writes and reads them (its `string2ll`):
/// an optional `-`, then decimal digits without leading zeros ("0" alone
/// is zero), within i64; no `+`, no spaces, nothing else. Rust's `parse`
/// also takes "+5" and "010", which Redis refuses (`INCR` of "010" is
/// "value is not an integer or out of range" there).
pub fn parse_int(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b {
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    // Accumulated negative, so that i64::MIN fits.
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if negative { Some(v) } else { v.checked_neg() }
}

/// An integer line starting at `from` (after the type byte): its value and
/// the position after its CRLF.
fn line_int(buf: &[u8], from: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = &buf[from.min(buf.len())..];
    let Some(nl) = rest.iter().position(|&b| b == b'\r') else {
        if rest.len() > 32 {
            return Err(ProtocolError(format!("invalid {what}")));
        }
        return Ok(None);
    };
    if rest.len() < nl + 2 {
        return Ok(None);
    }
    if rest[nl + 1] != b'\n' {
        return Err(ProtocolError(format!("invalid {what}")));
    }
    let n = parse_int(&rest[..nl]).ok_or_else(|| ProtocolError(format!("invalid {what}")))?;
    Ok(Some((n, from + nl + 2)))
}

/// An inline command: one line of space-separated words, with "double" and
/// 'single' quotes as redis-cli's interactive mode sends them.
fn parse_inline(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError("too big inline request".into()));
        }
        return Ok(None);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args =
        split_inline(line).ok_or_else(|| ProtocolError("unbalanced quotes in request".into()))?;
    Ok(Some((args, nl + 1)))
}

fn split_inline(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let &c = line.get(i)?;
                    i += 1;
                    if c == q {
                        break;
                    }
                    if c == b'\\' && q == b'"' {
                        let &e = line.get(i)?;
                        i += 1;
                        arg.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                    } else {
                        arg.push(c);
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
    Some(args)
}

/// A reply, encoded for the connection's protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Simple(&'static str),
    /// A status built at run time (`+...`).
    Status(String),
    /// `-CODE message`; the text starts with the error code (`ERR`, `WRONGTYPE`).
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` bytes.
    Bulk(Vec<u8>),
    /// The null bulk string (RESP2 `$-1`, RESP3 `_`).
    Null,
    /// The null array (RESP2 `*-1`, RESP3 `_`).
    NullArray,
    /// `*n` items.
    Array(Vec<Reply>),
    /// An unordered collection (RESP3 `~n`; RESP2 an array).
    Set(Vec<Reply>),
    /// A map (RESP3 `%n`; RESP2 a flat array of keys and values).
    Map(Vec<(Reply, Reply)>),
    /// A double (RESP3 `,x`; RESP2 a bulk string).
    Double(f64),
    /// Out-of-band data, pub/sub's messages and confirmations (RESP3 `>n`;
    /// RESP2 an array).
    Push(Vec<Reply>),
    /// Several replies to one command, one after the other (SUBSCRIBE
    /// confirms each channel).
    Many(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple("OK");

    /// An `ERR ...` error.
    pub fn err(msg: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {msg}"))
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(s.into().into_bytes())
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoding for protocol version `proto` (2 or 3).
    pub fn encode(&self, proto: u8, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(s) => line(out, b'+', s),
            Reply::Status(s) => line(out, b'+', s),
            Reply::Error(s) => line(out, b'-', s),
            Reply::Int(n) => {
                out.push(b':');
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(b) => bulk(out, b),
            Reply::Null if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if proto >= 3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                header(out, b'*', items.len());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Set(items) => {
                header(out, if proto >= 3 { b'~' } else { b'*' }, items.len());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Push(items) => {
                header(out, if proto >= 3 { b'>' } else { b'*' }, items.len());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Many(replies) => {
                for r in replies {
                    r.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if proto >= 3 {
                    header(out, b'%', pairs.len());
                } else {
                    header(out, b'*', pairs.len() * 2);
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Double(d) => {
                let text = format_double(*d);
                if proto >= 3 {
                    line(out, b',', &text);
                } else {
                    bulk(out, text.as_bytes());
                }
            }
        }
    }
}

/// A double reply (a score) as Redis 7.2 and later print one (`d2string`):
/// an integral value within +-2^62 as an integer; otherwise the shortest
/// digits that read back as the same double, laid out as Redis' `fpconv`
/// lays them out: plainly while the exponent is small ("102.1",
/// "0.00001"), in scientific notation beyond ("1.5e-7", "1e+21"); `inf`,
/// `-inf`, `-0`.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.into();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let half = (i64::MAX / 2) as f64;
    if (-half..=half).contains(&d) && d.fract() == 0.0 {
        return (d as i64).to_string();
    }
    // Shortest round-trip digits and their decimal exponent.
    let sci = format!("{:e}", d.abs());
    let (mantissa, exp) = sci.split_once('e').expect("LowerExp writes an exponent");
    let exp: i32 = exp.parse().expect("LowerExp writes an integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    // The value is digits x 10^k.
    let k = exp - (n - 1);
    let mut out = String::with_capacity(24);
    if d < 0.0 {
        out.push('-');
    }
    if k >= 0 && exp < n + 7 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', k as usize));
    } else if k < 0 && (k > -7 || exp.abs() < 4) {
        let point = n + k;
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-point) as usize));
            out.push_str(&digits);
        } else {
            out.push_str(&digits[..point as usize]);
            out.push('.');
            out.push_str(&digits[point as usize..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

fn line(out: &mut Vec<u8>, kind: u8, s: &str) {
    out.push(kind);
    // A status or error must stay on one line.
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    header(out, b'$', b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_print_as_redis_prints_them() {
        for (d, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (3.0, "3"),
            (-12.0, "-12"),
            (1_700_000_000_000.0, "1700000000000"),
            (1e16, "10000000000000000"),
            (4.0e18, "4000000000000000000"),
            (1e19, "1e+19"),
            (1e21, "1e+21"),
            (1.2345678901234567e19, "12345678901234567000"),
            (102.1, "102.1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (0.00001, "0.00001"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (-1.5e-7, "-1.5e-7"),
            (0.00123456789, "0.00123456789"),
            (123.456, "123.456"),
            (1e-300, "1e-300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_double(d), want, "{d:e}");
        }
    }

    #[test]
    fn integers_parse_as_redis_parses_them() {
        for (text, want) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("-7", Some(-7)),
            ("1234567890", Some(1_234_567_890)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("010", None),
            ("00", None),
            ("-0", None),
            ("+5", None),
            (" 5", None),
            ("5 ", None),
            ("-", None),
            ("", None),
            ("1e3", None),
            ("12a", None),
        ] {
            assert_eq!(parse_int(text.as_bytes()), want, "{text:?}");
        }
    }

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_whole_partial_and_pipelined() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n";
        let (a, n) = parse(req, 100).unwrap().unwrap();
        assert_eq!(a, args(&["GET", "k"]));
        let (b, m) = parse(&req[n..], 100).unwrap().unwrap();
        assert_eq!(b, args(&["PING"]));
        assert_eq!(n + m, req.len());
        for cut in 0..n {
            assert_eq!(parse(&req[..cut], 100).unwrap(), None, "cut {cut}");
        }
        // Binary-safe: CRLF inside a bulk string.
        let (c, _) = parse(b"*1\r\n$4\r\na\r\nb\r\n", 100).unwrap().unwrap();
        assert_eq!(c, vec![b"a\r\nb".to_vec()]);
    }

    #[test]
    fn protocol_errors_have_redis_texts() {
        let e = |b: &[u8]| parse(b, 10).unwrap_err().0;
        assert_eq!(e(b"*x\r\n"), "invalid multibulk length");
        assert_eq!(e(b"*99999999\r\n"), "invalid multibulk length");
        assert_eq!(e(b"*1\r\n:3\r\n"), "expected '$', got ':'");
        assert_eq!(e(b"*1\r\n$11\r\n"), "invalid bulk length");
        assert_eq!(e(b"*1\r\n$-1\r\n"), "invalid bulk length");
        assert_eq!(
            e(b"*1\r\n$1\r\nab\r\n"),
            "bulk string not terminated by CRLF"
        );
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(e(&long), "too big inline request");
        assert_eq!(e(b"set k \"unterminated\n"), "unbalanced quotes in request");
    }

    #[test]
    fn inline_commands_with_quotes() {
        let line = b"SET k \"a b\\n\" 'c d'\r\n";
        let mut req = line.to_vec();
        req.extend_from_slice(b"PING\r\n");
        let (a, n) = parse(&req, 100).unwrap().unwrap();
        assert_eq!(a, args(&["SET", "k", "a b\n", "c d"]));
        assert_eq!(n, line.len());
        assert_eq!(parse(b"\r\n", 100).unwrap().unwrap().0.len(), 0);
        assert_eq!(parse(b"PING", 100).unwrap(), None);
    }

    #[test]
    fn replies_in_both_protocols() {
        let enc = |r: &Reply, p| {
            let mut v = Vec::new();
            r.encode(p, &mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(enc(&Reply::OK, 2), "+OK\r\n");
        assert_eq!(enc(&Reply::Null, 2), "$-1\r\n");
        assert_eq!(enc(&Reply::Null, 3), "_\r\n");
        assert_eq!(enc(&Reply::NullArray, 2), "*-1\r\n");
        assert_eq!(enc(&Reply::Int(-3), 2), ":-3\r\n");
        assert_eq!(enc(&Reply::err("x\r\ny"), 2), "-ERR x  y\r\n");
        let m = Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]);
        assert_eq!(enc(&m, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&m, 3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&Reply::Double(1.5), 2), "$3\r\n1.5\r\n");
        assert_eq!(enc(&Reply::Double(1.5), 3), ",1.5\r\n");
    }
}
