//! Request heads: never panics, and a head `check_head` calls complete always parses.
#![no_main]
use http_nas::http::head::{HeadStatus, check_head, parse_head};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(HeadStatus::Complete(len)) = check_head(data) {
        let (_, parsed_len) = parse_head(data).expect("a complete head parses");
        assert_eq!(len, parsed_len);
    }
});
