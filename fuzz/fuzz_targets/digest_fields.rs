//! RFC 9530 digest fields: never panics; every claim it accepts has its algorithm's digest
//! length; base64 decodes what it encodes.
#![no_main]
use http_nas::entry::{DigestField, base64_decode, base64_encode, parse_digest_field};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else { return };
    for field in [DigestField::Content, DigestField::Repr] {
        if let Ok(claims) = parse_digest_field(field, value) {
            assert!(!claims.is_empty());
            for claim in claims {
                assert_eq!(claim.digest.len(), claim.algorithm.digest_len(), "{value:?}");
            }
        }
    }
    assert_eq!(base64_decode(&base64_encode(data)).as_deref(), Some(data));
});
