//! Fuzz target: the RESP request parser.
//!
//! Never panics; a parsed command consumed bytes inside the buffer, every
//! argument fits the bulk limit, and parsing the same bytes in two pieces
//! (as they may arrive from the network) gives the same commands.
#![no_main]

use flashkv::resp::proto::parse;

const MAX_BULK: usize = 512;

fn commands(mut buf: &[u8]) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut out = Vec::new();
    loop {
        match parse(buf, MAX_BULK) {
            Ok(Some((args, n))) => {
                assert!(n > 0 && n <= buf.len());
                assert!(
                    args.iter()
                        .all(|a| a.len() <= MAX_BULK.max(flashkv::resp::proto::MAX_INLINE))
                );
                out.push(args);
                buf = &buf[n..];
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (whole, failed) = commands(data);
    if failed || data.is_empty() {
        return;
    }
    // Feed a prefix first, then everything: a command seen in the prefix
    // must be the same command when the rest has arrived.
    let cut = usize::from(data[0]) % data.len();
    let (first, _) = commands(&data[..cut]);
    assert!(first.len() <= whole.len());
    assert_eq!(first[..], whole[..first.len()]);
});
