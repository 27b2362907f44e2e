//! The lexical jail: whatever it accepts, as an existing or a new name, joined to a root stays
//! under that root; and a listed name decodes back to the name it shows.
#![no_main]
use http_nas::entry::{Naming, RelPath, listed_name};
use std::path::{Component, Path};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for naming in [Naming::Existing, Naming::New] {
        if let Ok(rel) = RelPath::parse(data, naming) {
            let joined = Path::new("/root").join(rel.as_path());
            assert!(joined.starts_with("/root"));
            assert!(joined.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
        }
    }
    let listed = listed_name(data);
    assert!(!listed.contains('\n') && !listed.contains('\r'));
    if listed.as_bytes() != data {
        assert_eq!(urlencoding::decode_binary(listed.as_bytes()), data);
    }
});
