//! The chunked decoder: never panics, and never decodes more data bytes than it was given.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some((body, used))) = http_nas::http::chunked::decode_all(data) {
        assert!(used <= data.len() && body.len() <= used);
    }
});
