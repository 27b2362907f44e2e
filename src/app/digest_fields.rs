//! The digest fields of RFC 9530: `Content-Digest` and `Repr-Digest` a client sends with a
//! write (in the head, or in a chunked body's trailer section) to have its bytes verified
//! before they are committed, `Want-Repr-Digest` asking for the file's digest, and the
//! `Repr-Digest` the service answers.
//!
//! The fields are RFC 8941 dictionaries whose keys are algorithm names and whose values are
//! byte sequences (`sha-256=:BASE64:`). Parsing is strict where it matters (a known algorithm
//! with a malformed or wrong-length value is refused, saying what is wrong: a client that
//! thinks it is verified must not be silently unverified) and lenient where RFC 9530 asks
//! (algorithms the service does not know are ignored, unless only such are named: then
//! `unsupported_digest`, with `Want-Content-Digest` or `Want-Repr-Digest`, by the field, listing
//! those it has). A field sent on several lines is one list (RFC 9110 §5.3), every line checked. The hashing and
//! keeping of digests is the storage's (`storage/digest.rs`); this module turns fields into
//! claims and checks them against what the storage computed.

use super::error::Error;
use crate::http::Head;
use crate::storage::digest::{Algorithm, Kept, Refused, Sums, Wanted};

/// The request fields that carry digests to verify.
const CLAIM_FIELDS: [Field; 2] = [Field::Content, Field::Repr];

/// `Want-Content-Digest` as the service answers it: what it can verify of a body, by
/// preference (RFC 9530 §4).
pub const WANT_DIGEST: &str = "sha-256=10, sha-512=5, crc32c=3";

/// `Want-Repr-Digest` as the service answers it: what it can verify of a whole file on every
/// write (sha-512 only on an upload, whose file is its body: not offered).
pub const WANT_REPR_DIGEST: &str = "sha-256=10, crc32c=3";

/// Which digest a field carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `Content-Digest`: of this request's body.
    Content,
    /// `Repr-Digest`: of the whole file after the write.
    Repr,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Content => "Content-Digest",
            Field::Repr => "Repr-Digest",
        }
    }

    fn lowercase(self) -> &'static str {
        match self {
            Field::Content => "content-digest",
            Field::Repr => "repr-digest",
        }
    }
}

/// One digest a client sent: which field, which algorithm, and the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub field: Field,
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

/// Parses one digest field's value into the claims it makes of known algorithms.
pub fn parse(field: Field, value: &str) -> Result<Vec<Claim>, Refused> {
    let bad = |what: String| Refused::Malformed(format!("{}: {what}", field.name()));
    let mut claims: Vec<Claim> = Vec::new();
    let mut unknown = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            return Err(bad(
                "an empty member (the value must be `algorithm=:BASE64:` entries separated by commas)".into(),
            ));
        }
        let key_end = member.find(['=', ';']).unwrap_or(member.len());
        let key = &member[..key_end];
        if !is_key(key) {
            return Err(bad(format!(
                "`{key}` is not an algorithm name (lowercase letters, digits, `-`, `_`, `.`, `*`)"
            )));
        }
        let Some(algorithm) = Algorithm::from_name(key) else {
            unknown.push(key.to_string());
            continue;
        };
        let value = member[key_end..].strip_prefix('=').unwrap_or("");
        let Some(inner) = value.strip_prefix(':').and_then(|v| v.split_once(':')) else {
            return Err(bad(format!(
                "the {key} digest must be a byte sequence, `{key}=:BASE64:` (colons around base64)"
            )));
        };
        let (encoded, params) = inner;
        if !params.is_empty() && !params.starts_with(';') {
            return Err(bad(format!("unexpected `{params}` after the {key} digest")));
        }
        let digest =
            base64_decode(encoded).ok_or_else(|| bad(format!("the {key} digest `{encoded}` is not base64")))?;
        if digest.len() != algorithm.digest_len() {
            return Err(bad(format!(
                "a {key} digest is {} bytes, this one is {}",
                algorithm.digest_len(),
                digest.len()
            )));
        }
        // RFC 8941 §4.2.2: a key given again replaces the earlier value.
        claims.retain(|c| c.algorithm != algorithm);
        claims.push(Claim {
            field,
            algorithm,
            digest,
        });
    }
    if claims.is_empty() {
        let names = unknown.join(", ");
        return Err(match field {
            Field::Content => Refused::Unsupported(format!(
                "Content-Digest names only algorithms this service does not have ({names}); send one of \
                 sha-256, sha-512, crc32c (Want-Content-Digest lists them)"
            )),
            Field::Repr => Refused::UnsupportedRepr(format!(
                "Repr-Digest names only algorithms this service does not have ({names}); send sha-256 or \
                 crc32c (Want-Repr-Digest lists them; sha-512 is verified on uploads only)"
            )),
        });
    }
    Ok(claims)
}

/// RFC 8941 §3.1.2 key: a lowercase letter or `*`, then lowercase letters, digits, `_-.*`.
fn is_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'*'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'))
}

/// The head's fields a digest write reads; repeated lines of each are one list (RFC 9110 §5.3).
const READ_FIELDS: [&str; 5] = [
    "content-digest",
    "repr-digest",
    "want-repr-digest",
    "want-content-digest",
    "trailer",
];

/// The value of the head's field `name` (lower case): every line of it joined by `, ` (RFC
/// 9110 §5.3: repeated lines are one comma-separated list), `None` if absent. `Err` when a line
/// is not UTF-8 (as text, for the messages).
fn joined(head: &Head, name: &str) -> Result<Option<String>, String> {
    let mut out: Option<String> = None;
    for value in head.values(name) {
        let text = std::str::from_utf8(value)
            .map_err(|_| format!("the {name} field has a byte that is not UTF-8 (digest fields are ASCII)"))?
            .trim();
        out = Some(match out {
            Some(before) => format!("{before}, {text}"),
            None => text.to_string(),
        });
    }
    Ok(out)
}

/// [`joined`], where a line that is not UTF-8 was refused already (by [`head_claims`]).
fn joined_lossy(head: &Head, name: &str) -> Option<String> {
    joined(head, name).ok().flatten()
}

/// The claims in the head's digest fields (every line of each). Refuses a digest field with a
/// byte that is not UTF-8, rather than leave it unchecked.
pub fn head_claims(head: &Head) -> Result<Vec<Claim>, Error> {
    for name in READ_FIELDS {
        joined(head, name).map_err(|m| Error::Digest(Refused::Malformed(m)))?;
    }
    let mut claims = Vec::new();
    for field in CLAIM_FIELDS {
        if let Some(value) = joined_lossy(head, field.lowercase()) {
            claims.extend(parse(field, &value).map_err(Error::Digest)?);
        }
    }
    Ok(claims)
}

/// What a write must compute to verify the head's `claims` (and trailer claims the head
/// announces with `Trailer`) and to answer what `Want-Repr-Digest` asks.
pub fn wanted(head: &Head, claims: &[Claim]) -> Wanted {
    let uses = |a| claims.iter().any(|c| c.algorithm == a);
    let announced = joined_lossy(head, "trailer").is_some_and(|t| {
        t.split(',').any(|f| {
            CLAIM_FIELDS
                .iter()
                .any(|c| f.trim().eq_ignore_ascii_case(c.lowercase()))
        })
    });
    Wanted {
        sha256: uses(Algorithm::Sha256) || announced || wants(head, Algorithm::Sha256),
        sha512: uses(Algorithm::Sha512) || announced,
    }
}

/// What the file after a write must be hashed with when the request's body is not the bytes
/// written (a concatenation, whose body is JSON): the algorithms of its `Repr-Digest` claims
/// (and of a trailer the head announces), and the sha-256 that `Want-Repr-Digest` asks for or
/// that a sha-256 `Content-Digest` (of the JSON) implies, since every write that carries a
/// sha-256 digest answers the file's sha-256 (API.md, "Verified writes").
pub fn repr_wanted(head: &Head, claims: &[Claim]) -> Wanted {
    let uses = |a| claims.iter().any(|c| c.field == Field::Repr && c.algorithm == a);
    let carries_sha256 = claims.iter().any(|c| c.algorithm == Algorithm::Sha256);
    let announced = head.header("trailer").is_some_and(|t| {
        t.split(',')
            .any(|f| f.trim().eq_ignore_ascii_case(Field::Repr.lowercase()))
    });
    Wanted {
        sha256: carries_sha256 || announced || wants(head, Algorithm::Sha256),
        sha512: uses(Algorithm::Sha512) || announced,
    }
}

/// Highest preference `Want-Repr-Digest` can give (RFC 9530 §4: integers 0 to 10).
const MAX_PREFERENCE: i64 = 10;

/// True when `Want-Repr-Digest` (every line of it) names `algorithm` with a preference above 0
/// (RFC 9530 §4).
pub fn wants(head: &Head, algorithm: Algorithm) -> bool {
    joined_lossy(head, "want-repr-digest").is_some_and(|value| preference_asks(&value, algorithm))
}

/// True when the `Want-*-Digest` dictionary `value` asks for `algorithm`: as RFC 8941 reads a
/// dictionary, the last member with its key wins (`sha-256=1, sha-256=0` does not ask), and RFC
/// 9530 §4 makes its value an integer 1 to 10 (leading zeros allowed, as RFC 8941 integers have
/// them). 0 says "not wanted"; a value that is no such integer (`-1`, `11`, `?0`, `x`) asks for
/// nothing. A bare key (RFC 8941's `true`) still asks, as this service always took it.
fn preference_asks(value: &str, algorithm: Algorithm) -> bool {
    let mut asked = false;
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        let item = member.split(';').next().unwrap_or_default();
        let (key, pref) = match item.split_once('=') {
            Some((key, pref)) => (key, Some(pref)),
            None => (item, None),
        };
        if key != algorithm.name() {
            continue;
        }
        asked = match pref {
            None => true,
            Some(pref) => {
                let digits = pref.strip_prefix('-').unwrap_or(pref);
                !digits.is_empty()
                    && digits.len() <= 15
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && pref.parse::<i64>().is_ok_and(|p| (1..=MAX_PREFERENCE).contains(&p))
            }
        };
    }
    asked
}

/// Verifies `claims` and those in the trailer section (`trailer` looks a field up) against the
/// body's digests (`content`) and the file's after the write (`repr`, `None` when no digest is
/// kept for it).
pub fn check(
    claims: &[Claim],
    trailer: &dyn Fn(&str) -> Option<String>,
    content: &Sums,
    repr: Option<&Sums>,
) -> Result<(), Refused> {
    let mut all = claims.to_vec();
    for field in CLAIM_FIELDS {
        if let Some(value) = trailer(field.lowercase()) {
            all.extend(parse(field, &value)?);
        }
    }
    for claim in &all {
        let (of, sums) = match claim.field {
            Field::Content => ("the request body", Some(content)),
            Field::Repr => ("the file after this write", repr),
        };
        let Some(sums) = sums else {
            return Err(Refused::Malformed(
                "Repr-Digest cannot be verified for this append: no digest is kept for the file (it \
                 was written before digests were kept or by another writer since, or the volume's \
                 timestamps are whole seconds, where none are kept); send Content-Digest for the body \
                 instead, or replace the file"
                    .into(),
            ));
        };
        let Some(computed) = sums.get(claim.algorithm) else {
            let name = claim.algorithm.name();
            return Err(Refused::Malformed(match claim.field {
                // Computed for the request, so asked in time: the file keeps none to extend.
                Field::Repr if claim.algorithm == Algorithm::Sha256 && content.sha256.is_some() => {
                    "a sha-256 Repr-Digest cannot be verified for this append: the file keeps no \
                     sha-256 (it was last replaced without one being asked for); send a crc32c \
                     Repr-Digest or a sha-256 Content-Digest instead, or replace the file once with \
                     `Want-Repr-Digest: sha-256=1` to have its sha-256 kept"
                        .into()
                }
                Field::Repr if claim.algorithm == Algorithm::Sha512 => {
                    "a sha-512 Repr-Digest cannot be verified on an append (only sha-256 and crc32c are \
                     kept per file); send sha-256 or crc32c, or a sha-512 Content-Digest of the body"
                        .into()
                }
                // The body's was computed, so the file's is missing because none is kept: an
                // append extends only the sha-256 state an earlier write kept.
                Field::Repr if content.get(claim.algorithm).is_some() => format!(
                    "a {name} Repr-Digest cannot be verified for this append: no {name} is kept for this \
                     file (only its crc32c). Send a crc32c Repr-Digest or a {name} Content-Digest of the \
                     body instead; to have the file keep a {name}, store it with \
                     `Want-Repr-Digest: {name}=1` (or a {name} digest) on its upload"
                ),
                _ => format!(
                    "the {name} {} came in the trailer section, unannounced: name it in the head's \
                     `Trailer` field so it is computed as the body arrives",
                    claim.field.name()
                ),
            }));
        };
        if computed != claim.digest {
            return Err(Refused::Mismatch(format!(
                "{} {} does not match {of}: the client sent {}=:{}:, the server computed {}=:{}:; \
                 nothing was stored",
                claim.field.name(),
                claim.algorithm.name(),
                claim.algorithm.name(),
                base64_encode(&claim.digest),
                claim.algorithm.name(),
                base64_encode(&computed)
            )));
        }
    }
    Ok(())
}

/// The `Repr-Digest` value a write answers: `crc32c` always, `sha-256` when computed for this
/// request (it carried one, or asked with `Want-Repr-Digest`), `sha-512` when the client sent one.
pub fn answer_value(sums: &Sums, wanted: Wanted) -> String {
    let mut parts = Vec::new();
    for algorithm in Algorithm::ALL {
        let asked = match algorithm {
            Algorithm::Sha256 => wanted.sha256,
            Algorithm::Sha512 => wanted.sha512,
            Algorithm::Crc32c => true,
        };
        if let Some(digest) = sums.get(algorithm).filter(|_| asked) {
            parts.push(format!("{}=:{}:", algorithm.name(), base64_encode(&digest)));
        }
    }
    parts.join(", ")
}

/// The `Repr-Digest` of a read that asked with `Want-Repr-Digest`, from the digest kept at the
/// file's last commit (never by reading the file): the algorithms asked for that are kept, or,
/// if none of them is, the crc32c. `None` when not asked, or when nothing is kept for this
/// version of the file.
pub fn for_read(head: &Head, kept: impl FnOnce() -> Option<Kept>) -> Option<String> {
    head.values("want-repr-digest").next()?;
    let kept = kept()?;
    let sums = kept.sums();
    let sha256 = wants(head, Algorithm::Sha256) && sums.sha256.is_some();
    let crc = wants(head, Algorithm::Crc32c) || !sha256;
    let mut parts = Vec::new();
    if sha256 {
        parts.push(format!("sha-256=:{}:", base64_encode(&sums.sha256?)));
    }
    if crc {
        parts.push(format!("crc32c=:{}:", base64_encode(&sums.crc32c.to_be_bytes())));
    }
    Some(parts.join(", "))
}

const BASE64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), as RFC 8941 byte sequences write it.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64_ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64, padded or not (RFC 8941 §4.2.7 lets parsers accept either);
/// `None` for any other byte, or a length no encoding has.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 || (text.len() != trimmed.len() && !text.len().is_multiple_of(4)) {
        return None;
    }
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in trimmed.bytes() {
        let v = BASE64_ALPHABET.iter().position(|&a| a == b)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_HELLO: &str = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";

    #[test]
    fn base64_round_trips_and_refuses_what_is_not() {
        for n in 0..70 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(base64_decode(&text), Some(bytes.clone()), "{text}");
            assert_eq!(base64_decode(text.trim_end_matches('=')), Some(bytes), "unpadded");
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        for bad in ["a", "ab=c", "a===", "ab-_", "ab cd", "abc=="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn fields_parse_into_claims_or_say_what_is_wrong() {
        let ok = |v: &str| parse(Field::Content, v).map(|c| c.iter().map(|c| c.algorithm).collect::<Vec<_>>());
        let table: &[(&str, Result<Vec<Algorithm>, &str>)] = &[
            (&format!("sha-256=:{SHA256_HELLO}:"), Ok(vec![Algorithm::Sha256])),
            (
                &format!("sha-256=:{SHA256_HELLO}:, crc32c=:AAAAAA==:"),
                Ok(vec![Algorithm::Sha256, Algorithm::Crc32c]),
            ),
            ("md5=:AAAA:, crc32c=:AAAAAA==:", Ok(vec![Algorithm::Crc32c])),
            ("crc32c=:AAAAAA==:;x=1", Ok(vec![Algorithm::Crc32c])),
            ("crc32c=:AAAAAA==:,crc32c=:AAAAAQ==:", Ok(vec![Algorithm::Crc32c])),
            ("md5=:AAAA:", Err("unsupported")),
            ("unixsum=3, id-sha-256=:AAAA:", Err("unsupported")),
            ("", Err("empty member")),
            ("crc32c=:AAAAAA==:,", Err("empty member")),
            ("SHA-256=:AAAA:", Err("not an algorithm name")),
            ("sha-256=AAAA", Err("byte sequence")),
            ("sha-256", Err("byte sequence")),
            ("sha-256=:AAAA", Err("byte sequence")),
            ("sha-256=:!!!!:", Err("not base64")),
            ("sha-256=:AAAA:", Err("32 bytes, this one is 3")),
            ("crc32c=:AAAAAA==:x", Err("unexpected")),
        ];
        for (value, want) in table {
            match (ok(value), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{value}"),
                (Err(Refused::Unsupported(_) | Refused::UnsupportedRepr(_)), Err("unsupported")) => {}
                (Err(Refused::Malformed(m)), Err(part)) => assert!(m.contains(part), "{value}: {m}"),
                (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_claim_is_checked_against_the_computed_digest_and_a_mismatch_names_both() {
        let mut hasher = crate::storage::digest::Hasher::new(Wanted {
            sha256: true,
            sha512: false,
        });
        hasher.update(b"hello");
        let sums = hasher.sums();
        let none = |_: &str| None;
        let right = parse(Field::Content, &format!("sha-256=:{SHA256_HELLO}:")).unwrap();
        assert_eq!(check(&right, &none, &sums, None), Ok(()));
        let repr = parse(Field::Repr, &format!("sha-256=:{SHA256_HELLO}:")).unwrap();
        assert_eq!(check(&repr, &none, &sums, Some(&sums)), Ok(()));
        assert!(matches!(check(&repr, &none, &sums, None), Err(Refused::Malformed(_))));
        let wrong = parse(Field::Content, "crc32c=:AAAAAA==:").unwrap();
        match check(&wrong, &none, &sums, None) {
            Err(Refused::Mismatch(m)) => assert!(
                m.contains("crc32c=:AAAAAA==:") && m.contains("crc32c=:mnG7TA==:"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        let trailer = |name: &str| (name == "content-digest").then(|| "crc32c=:AAAAAA==:".to_string());
        assert!(matches!(
            check(&right, &trailer, &sums, None),
            Err(Refused::Mismatch(_))
        ));
    }

    fn head(fields: &[(&str, &[u8])]) -> Head {
        Head {
            method: "PUT".into(),
            target: "/file/f".into(),
            minor_version: 1,
            headers: fields
                .iter()
                .map(|(name, value)| crate::http::head::Header {
                    name: name.to_string(),
                    value: value.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn repeated_field_lines_are_one_list_and_every_claim_is_checked() {
        let right = format!("sha-256=:{SHA256_HELLO}:");
        let two = head(&[
            ("content-digest", b"crc32c=:mnG7TA==:"),
            (
                "content-digest",
                b"sha-256=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:",
            ),
        ]);
        let claims = head_claims(&two).unwrap();
        assert_eq!(claims.len(), 2, "{claims:?}");
        let mut hasher = crate::storage::digest::Hasher::new(wanted(&two, &claims));
        hasher.update(b"hello");
        assert!(matches!(
            check(&claims, &|_| None, &hasher.sums(), None),
            Err(Refused::Mismatch(m)) if m.contains("sha-256")
        ));
        let md5_then_sha = head(&[("content-digest", b"md5=:AAAA:"), ("content-digest", right.as_bytes())]);
        let claims = head_claims(&md5_then_sha).unwrap();
        assert_eq!(
            claims.iter().map(|c| c.algorithm).collect::<Vec<_>>(),
            [Algorithm::Sha256]
        );
        let repr = head(&[("repr-digest", b"crc32c=:mnG7TA==:"), ("repr-digest", right.as_bytes())]);
        assert_eq!(head_claims(&repr).unwrap().len(), 2);
        let trailer = head(&[("trailer", b"X-Other"), ("trailer", b"Content-Digest")]);
        assert!(
            wanted(&trailer, &[]).sha256,
            "a Trailer line after the first announces too"
        );
        let want = head(&[("want-repr-digest", b"crc32c=1"), ("want-repr-digest", b"sha-256=2")]);
        assert!(wants(&want, Algorithm::Sha256));
        for name in READ_FIELDS {
            let bad = head(&[(name, b"sha-256=:\xff:")]);
            assert!(
                matches!(head_claims(&bad), Err(Error::Digest(Refused::Malformed(m))) if m.contains("UTF-8")),
                "{name}"
            );
        }
    }

    #[test]
    fn want_repr_digest_reads_as_an_rfc_8941_dictionary_of_preferences() {
        let table: &[(&str, bool)] = &[
            ("sha-256=1", true),
            ("sha-256=10", true),
            ("sha-256=010", true),
            ("sha-256", true),
            ("sha-256=1;p=2", true),
            ("crc32c=3, sha-256=5", true),
            ("sha-256=0", false),
            ("sha-256=00", false),
            ("sha-256=1, sha-256=0", false),
            ("sha-256=0, sha-256=4", true),
            ("sha-256=-1", false),
            ("sha-256=11", false),
            ("sha-256=?0", false),
            ("sha-256=?1", false),
            ("sha-256=1.5", false),
            ("sha-256=", false),
            ("sha-512=3", false),
            ("sha-2567=3", false),
        ];
        for (value, asked) in table {
            assert_eq!(preference_asks(value, Algorithm::Sha256), *asked, "{value}");
        }
    }

    #[test]
    fn an_unsupported_repr_digest_is_told_apart_and_a_missing_kept_sha256_is_named() {
        assert!(matches!(
            parse(Field::Repr, "md5=:AAAA:"),
            Err(Refused::UnsupportedRepr(_))
        ));
        assert!(matches!(
            parse(Field::Content, "md5=:AAAA:"),
            Err(Refused::Unsupported(_))
        ));
        let mut body = crate::storage::digest::Hasher::new(Wanted {
            sha256: true,
            sha512: false,
        });
        body.update(b"hello");
        let file_crc_only = crate::storage::digest::Hasher::new(Wanted::default()).sums();
        let repr = parse(Field::Repr, &format!("sha-256=:{SHA256_HELLO}:")).unwrap();
        match check(&repr, &|_| None, &body.sums(), Some(&file_crc_only)) {
            Err(Refused::Malformed(m)) => assert!(
                m.contains("keeps no sha-256") && m.contains("Want-Repr-Digest: sha-256") && !m.contains("trailer"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
