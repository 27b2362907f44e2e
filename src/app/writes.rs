//! `POST /file/{path}` (upload: create or replace, atomically) and `PUT /file/{path}` (append),
//! and what every write, move and delete reads from the request head before it commits: the
//! preconditions (`If-Match`, `If-None-Match`, `If-Unmodified-Since`, RFC 9110 §13.2.2) and an
//! append's `Upload-Offset`. The preconditions are evaluated by the storage at the commit,
//! under its lock ([`Conditions`]), so no other writer can slip in between check and write;
//! this module only turns header text into those tests. Digest fields (RFC 9530) are checked
//! the same way: the storage hashes the body and asks [`digest_fields::check`] before the commit,
//! through one plan for every write ([`DigestFields`]: uploads, appends, concatenations).

use super::App;
use super::auth::Grant;
use super::conditional::{self, Comparison};
use super::digest_fields::{self, Claim};
use super::error::Error;
use crate::http::{Head, Request, Response};
use crate::path::RelPath;
use crate::storage::digest::{Plan, Sums, Wanted};
use crate::storage::{Conditions, StorageError, Version, VersionTest};
use serde_json::json;
use std::fs::{File, Metadata};

/// Creates or replaces the file with the request body, atomically.
pub(super) fn upload(app: &App, path: &RelPath, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
    let tests = etag_tests(req.head);
    let conditions = preconditions(req.head, &tests);
    let fields = DigestFields::of(req.head, req.trailer)?;
    let (size, repr) = fields.verify(fields.wanted, None, |digests| {
        app.storage
            .write_atomic(path, grant.storage_scope(), req.body, &conditions, digests)
            .map_err(|e| Error::at(path, e))
    })?;
    Ok(with_repr_digest(written(path, size), repr))
}

/// Appends the request body, at the file's size if `Upload-Offset` names it.
pub(super) fn append(app: &App, path: &RelPath, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
    let tests = etag_tests(req.head);
    let conditions = Conditions {
        size: upload_offset(req.head)?,
        ..preconditions(req.head, &tests)
    };
    let fields = DigestFields::of(req.head, req.trailer)?;
    let (size, repr) = fields.verify(fields.wanted, None, |digests| {
        app.storage
            .append(path, grant.storage_scope(), req.body, &conditions, digests)
            .map_err(|e| Error::at(path, e))
    })?;
    Ok(with_repr_digest(written(path, size), repr).with_header("Upload-Offset", size.to_string()))
}

/// The digest fields of a write (RFC 9530), for every write that verifies them: upload, append
/// and concatenation. The head's claims are parsed once; the trailer's are looked up at the
/// check, once the body has ended.
pub(super) struct DigestFields<'r> {
    head: &'r Head,
    claims: Vec<Claim>,
    trailer: &'r dyn Fn(&str) -> Option<String>,
    /// What the request's body is hashed with: to verify its claims, and to answer what
    /// `Want-Repr-Digest` asks.
    pub wanted: Wanted,
}

impl<'r> DigestFields<'r> {
    /// The digest fields of a request (`trailer` looks its trailer fields up).
    pub(super) fn of(head: &'r Head, trailer: &'r dyn Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let claims = digest_fields::head_claims(head)?;
        let wanted = digest_fields::wanted(head, &claims);
        Ok(DigestFields {
            head,
            claims,
            trailer,
            wanted,
        })
    }

    /// What the file's digests after a write must be computed with when the request's body is
    /// not the bytes written (a concatenation): what its `Repr-Digest` claims and
    /// `Want-Repr-Digest` ask.
    pub(super) fn wanted_of_file(&self) -> Wanted {
        digest_fields::repr_wanted(self.head, &self.claims)
    }

    /// Checks the head's `Content-Digest` against `content`, the body's digests, as soon as they
    /// are known (before any work a refusal would waste).
    pub(super) fn check_content(&self, content: &Sums) -> Result<(), Error> {
        let of_body: Vec<Claim> = self
            .claims
            .iter()
            .filter(|c| c.field == digest_fields::Field::Content)
            .cloned()
            .collect();
        digest_fields::check(&of_body, &|_| None, content, None).map_err(Error::Digest)
    }

    /// Runs `write` with the plan that has the storage compute `wanted` and verify every claim
    /// before its commit: `Content-Digest` against `content` where the caller hashed the body
    /// itself (a concatenation's JSON), else against what the storage computed of the body;
    /// `Repr-Digest` against the file's digests after the write. Returns what `write` returns,
    /// and the `Repr-Digest` to answer (where the file's digests are known).
    pub(super) fn verify<T>(
        &self,
        wanted: Wanted,
        content: Option<&Sums>,
        write: impl FnOnce(&mut Plan<'_>) -> Result<T, Error>,
    ) -> Result<(T, Option<String>), Error> {
        let check = |body: &Sums, repr: Option<&Sums>| {
            digest_fields::check(&self.claims, self.trailer, content.unwrap_or(body), repr)
        };
        let mut digests = Plan {
            wanted,
            check: &check,
            repr: None,
        };
        let done = write(&mut digests)?;
        let answer = digests
            .repr
            .as_ref()
            .map(|sums| digest_fields::answer_value(sums, wanted));
        Ok((done, answer))
    }
}

/// A write's answer with `Repr-Digest` of the whole file, where its digests are known.
pub(super) fn with_repr_digest(resp: Response, repr: Option<String>) -> Response {
    match repr {
        Some(value) => resp.with_header("Repr-Digest", value),
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
