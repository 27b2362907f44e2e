//! The lexical jail: whatever it accepts, joined to a root, stays under that root.
#![no_main]
use http_nas::storage::RelPath;
use std::path::{Component, Path};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rel) = RelPath::parse(text) {
        let joined = Path::new("/root").join(rel.as_str());
        assert!(joined.starts_with("/root"));
        assert!(joined.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
    }
});
