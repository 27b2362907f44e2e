//! `POST /file/{path}` (upload: create or replace, atomically) and `PUT /file/{path}` (append),
//! and what every write, move and delete reads from the request head before it commits: the
//! preconditions (`If-Match`, `If-None-Match`, `If-Unmodified-Since`, RFC 9110 §13.2.2) and an
//! append's `Upload-Offset`. The preconditions are evaluated by the storage at the commit,
//! under its lock ([`Conditions`]), so no other writer can slip in between check and write;
//! this module only turns header text into those tests. Digest fields (RFC 9530) are checked
//! the same way: the storage hashes the body and asks [`digest_fields::check`] before the commit.

use super::App;
use super::auth::Grant;
use super::conditional::{self, Comparison};
use super::digest_fields;
use super::error::Error;
use crate::http::{Head, Request, Response};
use crate::path::RelPath;
use crate::storage::digest::{Plan, Sums};
use crate::storage::{Conditions, StorageError, Version, VersionTest};
use serde_json::json;
use std::fs::{File, Metadata};

/// Creates or replaces the file with the request body, atomically.
pub(super) fn upload(app: &App, path: &RelPath, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
    let tests = etag_tests(req.head);
    let conditions = preconditions(req.head, &tests);
    let claims = digest_fields::head_claims(req.head)?;
    let trailer = req.trailer;
    let check = |content: &Sums, repr: Option<&Sums>| digest_fields::check(&claims, trailer, content, repr);
    let mut digests = Plan {
        wanted: digest_fields::wanted(req.head, &claims),
        check: &check,
        repr: None,
    };
    let size = app
        .storage
        .write_atomic(path, grant.storage_scope(), req.body, &conditions, &mut digests)
        .map_err(|e| Error::at(path, e))?;
    Ok(with_repr_digest(written(path, size), &digests))
}

/// Appends the request body, at the file's size if `Upload-Offset` names it.
pub(super) fn append(app: &App, path: &RelPath, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
    let tests = etag_tests(req.head);
    let conditions = Conditions {
        size: upload_offset(req.head)?,
        ..preconditions(req.head, &tests)
    };
    let claims = digest_fields::head_claims(req.head)?;
    let trailer = req.trailer;
    let check = |content: &Sums, repr: Option<&Sums>| digest_fields::check(&claims, trailer, content, repr);
    let mut digests = Plan {
        wanted: digest_fields::wanted(req.head, &claims),
        check: &check,
        repr: None,
    };
    let size = app
        .storage
        .append(path, grant.storage_scope(), req.body, &conditions, &mut digests)
        .map_err(|e| Error::at(path, e))?;
    Ok(with_repr_digest(written(path, size), &digests).with_header("Upload-Offset", size.to_string()))
}

/// A write's answer with `Repr-Digest` of the whole file, where its digests are known.
fn with_repr_digest(resp: Response, digests: &Plan<'_>) -> Response {
    match &digests.repr {
        Some(sums) => resp.with_header("Repr-Digest", digest_fields::answer_value(sums, digests.wanted)),
        None => resp,
    }
}

/// The success body of a write: the path and the resulting size.
fn written(path: &RelPath, size: u64) -> Response {
    Response::json(200, &json!({ "path": path.to_string(), "size": size }))
}

/// The ETag tests of a write, each if its field is given: `If-Match` (the file has one of the
/// listed ETags, strong comparison) and `If-None-Match` (the same, weak comparison).
pub(super) fn etag_tests(head: &Head) -> [Option<impl Fn(&File, &Metadata, u64) -> bool + '_>; 2] {
    let test = |field, comparison| {
        head.header(field).map(move |listed| {
            move |file: &File, meta: &Metadata, len: u64| conditional::lists_etag(listed, comparison, file, meta, len)
        })
    };
    [
        test("if-match", Comparison::Strong),
        test("if-none-match", Comparison::Weak),
    ]
}

/// The preconditions every write, move and delete evaluates at its commit (RFC 9110 §13.2.2):
/// `If-Match`, else `If-Unmodified-Since` (ignored if not a date); then `If-None-Match`. The
/// ETag tests are [`etag_tests`]'.
pub(super) fn preconditions<'a, F: Fn(&File, &Metadata, u64) -> bool>(
    head: &'a Head,
    tests: &'a [Option<F>; 2],
) -> Conditions<'a> {
    let [if_match, if_none_match] = tests;
    let version = match (head.header("if-match"), if_match) {
        (Some(tags), _) if conditional::matches_any(tags) => Some(Version::Any),
        (Some(_), Some(test)) => Some(Version::Test(test as VersionTest<'_>)),
        _ => None,
    };
    let absent = head.header("if-none-match").is_some_and(conditional::matches_any);
    let none_match = match if_none_match {
        Some(test) if !absent => Some(test as VersionTest<'_>),
        _ => None,
    };
    let unmodified_since = match version {
        None => head
            .header("if-unmodified-since")
            .and_then(conditional::parse_http_date),
        Some(_) => None,
    };
    Conditions {
        version,
        unmodified_since,
        absent,
        none_match,
        ..Conditions::default()
    }
}

/// A missing file fails any `If-Match` (RFC 9110 §13.1.1): 412 rather than 404.
pub(super) fn missing_fails_if_match(head: &Head, e: StorageError) -> Error {
    match e {
        StorageError::NotFound if head.header("if-match").is_some() => StorageError::VersionMismatch.into(),
        e => e.into(),
    }
}

/// The `Upload-Offset` precondition of an append, if given.
pub(super) fn upload_offset(head: &Head) -> Result<Option<u64>, Error> {
    let Some(value) = head.header("upload-offset") else {
        return Ok(None);
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadRequest {
            message: "Upload-Offset must be a decimal byte count".into(),
        });
    }
    value.parse().map(Some).map_err(|_| Error::BadRequest {
        message: "Upload-Offset is too large".into(),
    })
}
