//! URL -> Op: never panics, and every path it accepts is a plain relative path.
#![no_main]
use http_nas::api::{Op, parse};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else { return };
    for method in ["GET", "POST", "PUT", "DELETE"] {
        if let Ok(Op::Read { path } | Op::Upload { path } | Op::Append { path } | Op::Delete { path }) =
            parse(method, target, None)
        {
            assert!(path.segments().all(|s| s != ".." && s != "." && !s.is_empty() && !s.contains('\0')));
        }
    }
});
