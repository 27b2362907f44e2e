//! `GET`/`HEAD /file/{path}` of a file: its bytes (all, a range, or 304) with its validators,
//! its content type from the extension, and the headers that keep a stored page from acting
//! as the service (sandboxed, markup sent as an attachment). A directory found at the path is
//! handed to [`super::listings`]. What the conditional fields decide is [`super::conditional`]'s.

use super::conditional::{self, ReadAnswer, ReadConditions, Validators};
use super::error::Error;
use super::range::RangeChoice;
use super::writes::missing_fails_if_match;
use super::{App, CACHE_CONTROL, listings};
use crate::app::auth::Grant;
use crate::http::{Head, Response, ResponseBody};
use crate::path::{Naming, RelPath};
use crate::storage::{Opened, StorageError};
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;

/// A file's bytes or, for a directory, its listing.
pub(super) fn read(app: &App, head: &Head, path: &RelPath, grant: Grant<'_>) -> Result<Response, Error> {
    let opened = match app.storage.open_read(path, grant.storage_scope()) {
        // A listing asked of a file: say so. (With If-Match, the missing directory fails the
        // precondition, as before.)
        Err(StorageError::NotFound)
            if path.dir_only() && head.header("if-match").is_none() && is_file(app, path, grant) =>
        {
            return Err(Error::FileNotDirectory { path: path.to_string() });
        }
        opened => opened.map_err(|e| missing_fails_if_match(head, e))?,
    };
    match opened {
        Opened::File {
            file,
            meta,
            len,
            generation,
        } => {
            let kept = || app.storage.kept_digest(path, grant.storage_scope(), &file, &meta, len);
            let repr_digest = super::digest_fields::for_read(head, kept);
            serve_file(head, path, file, &meta, (len, generation), repr_digest)
        }
        // A directory has no ETag: only `If-Match: *` holds for it.
        Opened::Dir(..) if head.header("if-match").is_some_and(|v| !conditional::matches_any(v)) => {
            Err(StorageError::VersionMismatch.into())
        }
        Opened::Dir(..) => listings::list_dir(app, head, path, grant),
    }
}

/// True when `dir`, a path spelled with a trailing `/` that names no directory, names a file
/// without it (a listing asked of a file: the message then says to drop the `/`).
fn is_file(app: &App, dir: &RelPath, grant: Grant<'_>) -> bool {
    RelPath::parse(dir.as_path().as_os_str().as_bytes(), Naming::Existing).is_ok_and(|file| {
        matches!(
            app.storage.open_read(&file, grant.storage_scope()),
            Ok(Opened::File { .. })
        )
    })
}

/// A file's bytes, all or a range, or 304, with its validators: what the conditional fields
/// of the request decide ([`conditional::decide`]).
/// `size` is its committed length, `generation` its inode's where already read, `repr_digest`
/// the `Repr-Digest` a `Want-Repr-Digest` asked for, where one is kept.
fn serve_file(
    head: &Head,
    path: &RelPath,
    file: File,
    meta: &Metadata,
    (size, generation): (u64, Option<u32>),
    repr_digest: Option<String>,
) -> Result<Response, Error> {
    let validators = Validators::of(&file, meta, size, generation);
    let conditions = ReadConditions {
        if_match: head.header("if-match"),
        if_unmodified_since: head.header("if-unmodified-since"),
        if_none_match: head.header("if-none-match"),
        if_modified_since: head.header("if-modified-since"),
        if_range: head.header("if-range"),
        range: head.header("range"),
    };
    let file_part = |status, offset, len| Response::new(status, ResponseBody::File { file, offset, len });
    let resp = match conditional::decide(conditions, &validators, size) {
        ReadAnswer::PreconditionFailed if conditions.if_match.is_some() => {
            return Err(StorageError::VersionMismatch.into());
        }
        ReadAnswer::PreconditionFailed => return Err(StorageError::ModifiedSince.into()),
        ReadAnswer::NotModified => Response::new(304, ResponseBody::Empty),
        ReadAnswer::Send(RangeChoice::Full) => file_part(200, 0, size),
        ReadAnswer::Send(RangeChoice::Partial { start, len }) => {
            file_part(206, start, len).with_header("Content-Range", format!("bytes {start}-{}/{size}", start + len - 1))
        }
        ReadAnswer::Send(RangeChoice::Unsatisfiable) => return Err(Error::RangeNotSatisfiable { size }),
    };
    let kind = content_type(&path.to_string());
    let resp = match kind {
        Some(kind) if resp.status != 304 => resp.with_header("Content-Type", kind),
        _ => resp,
    };
    // A stored file never runs as a page of the service's origin (docs/API.md "Security").
    let resp = resp.with_header("Content-Security-Policy", STORED_FILE_POLICY);
    let resp = match kind.filter(|k| is_markup(k)) {
        Some(_) => resp.with_header("Content-Disposition", attachment(path)),
        None => resp,
    };
    let resp = match repr_digest {
        Some(value) if resp.status != 304 => resp.with_header("Repr-Digest", value),
        _ => resp,
    };
    Ok(resp
        .with_header("ETag", validators.etag)
        .with_header("Last-Modified", validators.last_modified)
        .with_header("Accept-Ranges", "bytes")
        .with_header("Cache-Control", CACHE_CONTROL))
}

/// The `Content-Security-Policy` of every stored file served: a page or image opened from the
/// service runs sandboxed (an opaque origin: no script, no forms, none of the service's
/// cookies or storage), so an uploaded page cannot act as the service.
const STORED_FILE_POLICY: &str = "sandbox";

/// True for the types a browser renders as a document that can run script or load things
/// (HTML, SVG, any XML, which may embed XHTML): such files are sent as attachments.
fn is_markup(kind: &str) -> bool {
    kind == "text/html" || kind.ends_with("/xml") || kind.ends_with("+xml")
}

/// `Content-Disposition: attachment` naming the file's last segment (RFC 6266): `filename=`
/// an ASCII stand-in (quotes, backslashes, `%` and anything outside printable ASCII as `_`),
/// `filename*=` the name itself, UTF-8 and percent-encoded (invalid UTF-8 as U+FFFD).
fn attachment(path: &RelPath) -> String {
    let raw = path.as_path().file_name().map_or(&[][..], |n| n.as_bytes());
    let name = String::from_utf8_lossy(raw);
    let plain: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if !matches!(c, '"' | '\\' | '%') => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}")
}

/// Content-Type from the file extension, for well-known types only and without a charset the
/// server cannot know; none otherwise, as the seed sent none (Node clients such as superagent
/// then read the body as text).
fn content_type(name: &str) -> Option<&'static str> {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    Some(match ext.as_str() {
        "txt" | "log" | "md" => "text/plain",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "json" => "application/json",
        "ndjson" | "jsonl" => "application/x-ndjson",
        "xml" => "application/xml",
        "html" | "htm" => "text/html",
        "xhtml" | "xht" => "application/xhtml+xml",
        "yaml" | "yml" => "application/yaml",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "parquet" => "application/vnd.apache.parquet",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Naming;

    #[test]
    fn content_types() {
        assert_eq!(content_type("d/x.CSV"), Some("text/csv"));
        assert_eq!(content_type("a.txt"), Some("text/plain"));
        assert_eq!(content_type("noext"), None);
        assert_eq!(content_type("dump.sql"), None);
        for markup in ["a.html", "a.HTM", "a.svg", "a.xml", "a.xhtml"] {
            assert!(content_type(markup).is_some_and(is_markup), "{markup}");
        }
        for inline in ["a.txt", "a.json", "a.png", "a.csv"] {
            assert!(!content_type(inline).is_some_and(is_markup), "{inline}");
        }
    }

    #[test]
    fn attachments_name_the_file_safely() {
        let at = |p: &[u8]| attachment(&RelPath::parse(p, Naming::Existing).unwrap());
        assert_eq!(
            at(b"d/page.html"),
            "attachment; filename=\"page.html\"; filename*=UTF-8''page.html"
        );
        assert_eq!(
            at("d/\"x\" caf\u{e9} 100%.svg".as_bytes()),
            "attachment; filename=\"_x_ caf_ 100_.svg\"; filename*=UTF-8''%22x%22%20caf%C3%A9%20100%25.svg"
        );
        assert_eq!(
            at(b"a\xff;\r\n.xml"),
            "attachment; filename=\"a_;__.xml\"; filename*=UTF-8''a%EF%BF%BD%3B%0D%0A.xml"
        );
    }
}
