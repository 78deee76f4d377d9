//! The client → backend framing: arbitrary bytes, fed to the Scanner in
//! pieces as a socket would deliver them, with every whole Query and Parse
//! decoded. Neither may panic, and the scanner must always make progress.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pgveil::protocol::frame::{Scanner, Step};
use pgveil::protocol::messages::{decode_parse, decode_query, tag};

/// Messages the client pump inspects whole (the others pass in pieces).
fn inspected(t: u8) -> bool {
    matches!(
        t,
        tag::QUERY | tag::PARSE | tag::SYNC | tag::FUNCTION_CALL | tag::TERMINATE | b'B' | b'E'
    )
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how many bytes each read delivers.
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut scanner = Scanner::new(64 * 1024);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        match scanner.step(&buf, inspected) {
            Err(_) => return,
            Ok(Step::Pass(n)) => {
                assert!(n > 0 && n <= buf.len(), "Pass({n}) of {}", buf.len());
                buf.drain(..n);
            }
            Ok(Step::Whole { tag, len }) => {
                assert!(
                    len >= 5 && len <= buf.len(),
                    "Whole({len}) of {}",
                    buf.len()
                );
                let frame: Vec<u8> = buf.drain(..len).collect();
                assert_eq!(frame[0], tag);
                match tag {
                    tag::QUERY => drop(decode_query(&frame)),
                    tag::PARSE => drop(decode_parse(&frame)),
                    _ => {}
                }
            }
            Ok(Step::NeedMore { at_least }) => {
                assert!(
                    at_least > buf.len(),
                    "NeedMore({at_least}) of {}",
                    buf.len()
                );
                if fed == stream.len() {
                    return;
                }
                let end = (fed + chunk).min(stream.len());
                buf.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
        }
    }
});
