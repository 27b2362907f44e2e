//! Conditional requests on a file (RFC 9110 §13): its validators, and what a GET's
//! `If-None-Match`, `If-Range` and `Range` ask of it, or whether a write's `If-Match` holds.
//! Pure, beside [`crate::range`], so the tables below cover it.

use crate::range::{self, RangeChoice};
use crate::time::http_date;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// A file's validators: its strong ETag and its `Last-Modified` date.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validators {
    /// `"<inode>-<length>-<mtime ns>"` in hex: changes with every committed write.
    pub etag: String,
    /// The modification time as an HTTP date (empty if the filesystem gives none).
    pub last_modified: String,
}

impl Validators {
    /// The validators of a file of `len` committed bytes (see `Opened::File`).
    pub fn of(meta: &Metadata, len: u64) -> Self {
        Validators {
            etag: etag(meta, len),
            last_modified: meta.modified().map(http_date).unwrap_or_default(),
        }
    }
}

/// The conditional fields of a GET or HEAD.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadConditions<'a> {
    /// `If-None-Match`: the ETags the client has.
    pub if_none_match: Option<&'a str>,
    /// `If-Range`: the version the client has part of (an ETag or a date).
    pub if_range: Option<&'a str>,
    /// `Range`: the part wanted.
    pub range: Option<&'a str>,
}

/// What a GET of a file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAnswer {
    /// 304: the client's copy is current.
    NotModified,
    /// The whole file, a part of it, or 416.
    Send(RangeChoice),
}

/// Decides a GET of a file of `size` bytes with `validators`. A range is served only if the
/// file is still the version the client has part of (`If-Range`); otherwise the whole (new)
/// file, so a resumed download never splices two versions.
pub fn decide(conditions: ReadConditions<'_>, validators: &Validators, size: u64) -> ReadAnswer {
    if conditions
        .if_none_match
        .is_some_and(|v| etag_matches(v, &validators.etag))
    {
        return ReadAnswer::NotModified;
    }
    let same_version = conditions
        .if_range
        .is_none_or(|v| v == validators.etag || (v == validators.last_modified && !v.is_empty()));
    ReadAnswer::Send(range::choose(conditions.range.filter(|_| same_version), size))
}

/// The `If-Match` test of a write: true when the file (`meta`, `len` committed bytes) still
/// has one of the ETags `if_match` lists.
pub fn still_matches(if_match: &str, meta: &Metadata, len: u64) -> bool {
    etag_matches(if_match, &etag(meta, len))
}

/// A strong validator from inode, the length served and modification time.
fn etag(meta: &Metadata, len: u64) -> String {
    let nanos = meta.mtime().wrapping_mul(1_000_000_000).wrapping_add(meta.mtime_nsec());
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), len, nanos)
}

/// True when an `If-None-Match` or `If-Match` value lists `etag` (or is `*`).
fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("\"b\", \"a\"", "\"a\""));
        assert!(etag_matches("W/\"a\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }

    #[test]
    fn decisions() {
        let v = Validators {
            etag: "\"e1\"".into(),
            last_modified: "Tue, 01 Dec 2026 00:00:00 GMT".into(),
        };
        let undated = Validators {
            etag: "\"e1\"".into(),
            last_modified: String::new(),
        };
        // (If-None-Match, If-Range, Range)
        let get = |if_none_match, if_range, range| ReadConditions {
            if_none_match,
            if_range,
            range,
        };
        let part = ReadAnswer::Send(RangeChoice::Partial { start: 0, len: 5 });
        let whole = ReadAnswer::Send(RangeChoice::Full);
        let first5 = Some("bytes=0-4");
        let cases: &[(ReadConditions<'_>, &Validators, ReadAnswer)] = &[
            (get(None, None, None), &v, whole),
            (get(Some("\"e1\""), None, first5), &v, ReadAnswer::NotModified),
            (get(Some("\"old\""), None, None), &v, whole),
            (get(None, None, first5), &v, part),
            (get(None, Some("\"e1\""), first5), &v, part),
            (get(None, Some("\"old\""), first5), &v, whole),
            (get(None, Some("Tue, 01 Dec 2026 00:00:00 GMT"), first5), &v, part),
            (get(None, Some(""), first5), &undated, whole),
            (
                get(None, None, Some("bytes=20-")),
                &v,
                ReadAnswer::Send(RangeChoice::Unsatisfiable),
            ),
        ];
        for (conditions, validators, want) in cases {
            assert_eq!(decide(*conditions, validators, 10), *want, "{conditions:?}");
        }
    }
}
