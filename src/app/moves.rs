//! `PUT /file/{path}/mv` (or `PUT` with a JSON body: move, the target in `{"path": ...}`) and
//! `DELETE /file/{path}` (a file or a whole directory tree): the operations that take a name
//! away. The move body is read here, bounded by [`MAX_MOVE_BODY_BYTES`], and its target is
//! decoded like a URL path (once) and checked against the token's scope before anything moves.

use super::App;
use super::auth::Grant;
use super::error::Error;
use super::url;
use super::writes::{etag_tests, missing_fails_if_match, preconditions};
use crate::http::{Head, Request, Response};
use crate::path::{Naming, RelPath};
use crate::storage::StorageError;
use serde_json::json;
use std::io::Read;

/// Largest move request body (`{"path": ...}`), in bytes.
pub const MAX_MOVE_BODY_BYTES: u64 = 64 * 1024;

/// Deletes a file or a directory tree, if the preconditions hold.
pub(super) fn delete(app: &App, head: &Head, path: &RelPath, grant: Grant<'_>) -> Result<Response, Error> {
    let tests = etag_tests(head);
    app.storage
        .delete(path, grant.storage_scope(), &preconditions(head, &tests))
        .map_err(|e| missing_fails_if_match(head, e))?;
    Ok(Response::json(
        200,
        &json!({ "path": path.to_string(), "deleted": true }),
    ))
}

/// Moves a file or directory to the path the body names.
pub(super) fn move_file(app: &App, path: &RelPath, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
    // The seed answered 404 for a missing source before looking at the body.
    app.storage
        .exists(path, grant.storage_scope())
        .map_err(|e| missing_fails_if_match(req.head, e))?;
    let mut body = Vec::new();
    req.body
        .take(MAX_MOVE_BODY_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| {
            crate::http::BodyError::of(&e).map_or(Error::BadRequest { message: e.to_string() }, Error::from)
        })?;
    if body.len() as u64 > MAX_MOVE_BODY_BYTES {
        return Err(Error::BadRequest {
            message: format!("move body larger than {MAX_MOVE_BODY_BYTES} bytes"),
        });
    }
    let to = move_target(&body, url::is_json(req.head.header("content-type")))?;
    // A conflict here is at the target: the error body names it.
    let target = app
        .storage
        .move_destination(path, &to, grant.storage_scope())
        .map_err(|e| Error::from(e).with_path(&to))?;
    if !grant.reaches(&target) {
        return Err(Error::out_of_scope(&target, &grant));
    }
    let tests = etag_tests(req.head);
    let size = app
        .storage
        .rename(path, &target, grant.storage_scope(), &preconditions(req.head, &tests))
        .map_err(|e| match e {
            // What is in the way is at the target.
            StorageError::IsADirectory | StorageError::NotADirectory => Error::at(&target, e),
            e => missing_fails_if_match(req.head, e).with_path(&target),
        })?;
    Ok(Response::json(
        200,
        &json!({ "path": target.to_string(), "from": path.to_string(), "size": size }),
    ))
}

/// What a JSON `PUT` without a move target is told: it was taken as a move (the original's
/// API), while its sender most likely meant to append JSON to the file.
const JSON_PUT_IS_A_MOVE: &str = "a PUT with Content-Type: application/json is a move (the original's API); \
     its body must be {\"path\": \"new/name\"}. To append JSON, send it with another Content-Type \
     (e.g. application/x-ndjson) or use POST to replace";

/// Parses the move body `{"path": "new/name"}`; the path is percent-decoded once, like URLs.
/// `json_put`: the request was a move because its Content-Type is JSON, so a body without a
/// target is told how to append JSON instead.
fn move_target(body: &[u8], json_put: bool) -> Result<RelPath, Error> {
    let bad = |message: &str| Error::BadRequest {
        message: if json_put {
            format!("{message}: {JSON_PUT_IS_A_MOVE}")
        } else {
            message.to_string()
        },
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("move body must be JSON like {\"path\": \"new/name\"}"))?;
    let target = value
        .get("path")
        .and_then(|p| p.as_str())
        .ok_or_else(|| bad("move body needs a string \"path\""))?;
    Ok(url::decode(target, Naming::New)?.non_root()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn move_bodies() {
        assert_eq!(
            move_target(br#"{ "path": "newcat.jpg" }"#, false).unwrap().to_string(),
            "newcat.jpg"
        );
        assert_eq!(
            move_target(br#"{"path":"testdir%2Fmoved"}"#, true).unwrap().to_string(),
            "testdir/moved"
        );
        for bad in [
            &br#"{"path":"..%2Fx"}"#[..],
            br#"{"path":"/tmp/x"}"#,
            br#"{"path":""}"#,
            b"nope",
            br#"{"p":1}"#,
        ] {
            assert_eq!(
                move_target(bad, true).unwrap_err().status(),
                400,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
