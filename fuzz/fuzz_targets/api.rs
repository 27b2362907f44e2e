//! URL -> Op: never panics, and every path it accepts is a plain relative path.
#![no_main]
use http_nas::entry::{Op, parse_url as parse};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else { return };
    for method in ["GET", "POST", "PUT", "DELETE"] {
        if let Ok(Op::Read { path } | Op::Upload { path } | Op::Append { path } | Op::Delete { path }) =
            parse(method, target, None)
        {
            use std::path::Component;
            let plain = path.as_path().components().all(|c| matches!(c, Component::Normal(_)));
            let no_nul = !path.as_path().as_os_str().as_encoded_bytes().contains(&0);
            assert!(plain && no_nul, "{target:?} gave {path:?}");
        }
    }
});
