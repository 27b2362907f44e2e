//! Request heads: never panics, and a head `check_head` calls complete always parses, unless
//! it breaks the one rule beyond syntax that `parse_head` adds (exactly one `Host`, RFC 9112
//! §3.2), which the server answers with 400.
#![no_main]
use http_nas::entry::{HeadError, HeadStatus, check_head, parse_head};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(HeadStatus::Complete(len)) = check_head(data) {
        match parse_head(data) {
            Ok((_, parsed_len)) => assert_eq!(len, parsed_len),
            Err(HeadError::Host) => {}
            Err(e) => panic!("a complete head does not parse: {e:?}"),
        }
    }
});
