//! `POST /file/{path}/concat` (replace `{path}` with the sources joined) and `PUT` (append them
//! as one append): the fan-in of a pipeline's parts without a byte over the network. The JSON
//! body `{"sources": [...], "delete_sources": false}` is read here, bounded by
//! [`MAX_CONCAT_BODY_BYTES`]; each source is decoded like a URL path (once) and checked against
//! the token's scope before anything is read. Digest fields go through the plan of every write
//! ([`DigestFields`]): `Content-Digest` is of the JSON body, `Repr-Digest` of the target after
//! the write. The storage does the rest ([`crate::storage::concat`]).

use super::App;
use super::auth::Grant;
use super::error::Error;
use super::url;
use super::writes::{DigestFields, etag_tests, preconditions, upload_offset, with_repr_digest};
use crate::http::{Request, Response};
use crate::path::{Naming, RelPath};
use crate::storage::concat::{MAX_SOURCES, Mode};
use crate::storage::digest::Hasher;
use crate::storage::{Conditions, StorageError};
use serde_json::json;
use std::io::Read;

/// Largest concatenation body, in bytes: [`MAX_SOURCES`] paths of several hundred bytes each.
pub const MAX_CONCAT_BODY_BYTES: u64 = 8 * 1024 * 1024;

/// What the body asks for.
#[derive(Debug, PartialEq)]
struct Body {
    sources: Vec<RelPath>,
    delete_sources: bool,
}

/// Joins the body's sources into `path`: a replace, or with `append` one append.
pub(super) fn concat(
    app: &App,
    path: &RelPath,
    append: bool,
    grant: Grant<'_>,
    req: &mut Request<'_>,
) -> Result<Response, Error> {
    let mut raw = Vec::new();
    req.body
        .take(MAX_CONCAT_BODY_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| {
            crate::http::BodyError::of(&e).map_or(Error::BadRequest { message: e.to_string() }, Error::from)
        })?;
    if raw.len() as u64 > MAX_CONCAT_BODY_BYTES {
        // 413 naming the limit, like any body over --max-body (the rest is not read).
        return Err(crate::http::BodyError::TooLarge {
            limit: MAX_CONCAT_BODY_BYTES,
        }
        .into());
    }
    // Content-Digest is of this JSON body; Repr-Digest of the target after the write, verified
    // by the storage before its commit, like an upload's (POST) or an append's (PUT).
    let fields = DigestFields::of(req.head, req.trailer)?;
    let mut hasher = Hasher::new(fields.wanted);
    hasher.update(&raw);
    let content = hasher.sums();
    fields.check_content(&content)?;
    let body = parse_body(&raw)?;
    if let Some(out) = body.sources.iter().find(|s| !grant.reaches(s)) {
        return Err(Error::out_of_scope(out, &grant));
    }
    let tests = etag_tests(req.head);
    let conditions = Conditions {
        size: if append { upload_offset(req.head)? } else { None },
        ..preconditions(req.head, &tests)
    };
    let mode = if append { Mode::Append } else { Mode::Replace };
    let (outcome, repr) = fields.verify(fields.wanted_of_file(), Some(&content), |digests| {
        app.storage
            .concat(
                path,
                &body.sources,
                grant.storage_scope(),
                mode,
                &conditions,
                body.delete_sources,
                digests,
                req.client_gone,
            )
            .map_err(|e| match e {
                StorageError::InSource { index, error } => source_error(&body.sources[index], *error),
                e => Error::at(path, e),
            })
    })?;
    let mut answer = json!({ "path": path.to_string(), "size": outcome.size });
    if body.delete_sources {
        let named =
            |indexes: &[usize]| -> Vec<String> { indexes.iter().map(|&i| body.sources[i].to_string()).collect() };
        answer["deleted_sources"] = json!(named(&outcome.deleted));
        answer["kept_sources"] = json!(named(&outcome.kept));
    }
    Ok(with_repr_digest(Response::json(200, &answer), repr).with_header("Upload-Offset", outcome.size.to_string()))
}

/// A source's failure, naming the source.
fn source_error(source: &RelPath, e: StorageError) -> Error {
    let conflict = |why: &str| Error::Conflict {
        message: format!("the source `{source}` {why}; name regular files only (nothing was written)"),
        path: Some(source.to_string()),
    };
    match e {
        StorageError::NotFound => Error::MissingSource {
            path: source.to_string(),
        },
        StorageError::IsADirectory => conflict("is a directory"),
        StorageError::NotRegular => conflict("is not a regular file (a FIFO, socket or device)"),
        StorageError::SourceIsTarget => Error::Conflict {
            message: format!(
                "the source `{source}` is the target itself; concatenate into another name, then move it \
                 (nothing was written)"
            ),
            path: Some(source.to_string()),
        },
        e => Error::at(source, e),
    }
}

/// Parses `{"sources": ["a", ...], "delete_sources": false}`; each source is percent-decoded
/// once, like a URL path.
fn parse_body(raw: &[u8]) -> Result<Body, Error> {
    const FORM: &str = "the body must be JSON like {\"sources\": [\"run/part-1.csv\", \"run/part-2.csv\"], \
                        \"delete_sources\": false}";
    let bad = |why: String| Error::BadRequest {
        message: format!("{why}: {FORM}"),
    };
    let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| bad(format!("not JSON ({e})")))?;
    // A repeated key would silently lose one of its values, an unknown one (a misspelt
    // `delete_source`) silently do nothing: both are refused, naming the key.
    let mut seen: Vec<String> = Vec::new();
    for key in top_level_keys(raw) {
        if !KEYS.contains(&key.as_str()) {
            return Err(bad(format!(
                "unknown key {key:?} (the keys are \"sources\" and \"delete_sources\")"
            )));
        }
        if seen.contains(&key) {
            return Err(bad(format!("the key {key:?} is given twice")));
        }
        seen.push(key);
    }
    let list = value
        .get("sources")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("no \"sources\" list".into()))?;
    if list.is_empty() {
        return Err(bad("\"sources\" is empty".into()));
    }
    if list.len() > MAX_SOURCES {
        return Err(Error::BadRequest {
            message: format!(
                "{} sources; at most {MAX_SOURCES} are joined at once (concatenate in batches, appending \
                 with PUT .../concat)",
                list.len()
            ),
        });
    }
    let mut sources = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let text = item
            .as_str()
            .ok_or_else(|| bad(format!("source {index} is not a string")))?;
        if text.len() > 1 && text.ends_with('/') {
            return Err(bad(format!(
                "source {index} ({text:?}) ends with `/`, which names a directory; a concatenation joins \
                 files: drop the trailing `/`"
            )));
        }
        let rel = url::decode(text, Naming::Existing)
            .and_then(|rel| rel.non_root().map_err(Error::from))
            .map_err(|e| bad(format!("source {index} ({text:?}) is not a valid path ({e})")))?;
        sources.push(rel);
    }
    let delete_sources = match value.get("delete_sources") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(bad("\"delete_sources\" must be true or false".into())),
    };
    Ok(Body {
        sources,
        delete_sources,
    })
}

/// The keys a concatenation body may have.
const KEYS: [&str; 2] = ["sources", "delete_sources"];

/// The keys of the top-level object of `raw`, already known to be valid JSON, in order and
/// with repeats (which a parsed [`serde_json::Value`] no longer shows).
fn top_level_keys(raw: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < raw.len() {
        match raw[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i;
                i += 1;
                while i < raw.len() && raw[i] != b'"' {
                    i += if raw[i] == b'\\' { 2 } else { 1 };
                }
                let end = (i + 1).min(raw.len());
                let next = raw[end..].iter().find(|b| !b.is_ascii_whitespace());
                if depth == 1
                    && next == Some(&b':')
                    && let Ok(key) = serde_json::from_slice::<String>(&raw[start..end])
                {
                    keys.push(key);
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let body = parse_body(br#"{"sources": ["a%2Fb", "c"], "delete_sources": true}"#).unwrap();
        let names: Vec<String> = body.sources.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["a/b", "c"]);
        assert!(body.delete_sources);
        // Keys inside values, escaped quotes and nesting are not top-level keys.
        let nested = br#"{"sources": ["a\"b", "{\"x\": 1}"], "delete_sources": false}"#;
        assert_eq!(top_level_keys(nested), ["sources", "delete_sources"]);
        assert!(!parse_body(br#"{"sources": ["a"]}"#).unwrap().delete_sources);
        for bad in [
            &b"nope"[..],
            br#"{"sources": []}"#,
            br#"{"sources": "a"}"#,
            br#"{"sources": [1]}"#,
            br#"{"sources": ["../x"]}"#,
            br#"{"sources": [""]}"#,
            br#"{"sources": ["a"], "delete_sources": "yes"}"#,
            br#"{"sources": ["a"], "sources": ["b"]}"#,
            br#"{"sources": ["a"], "delete_source": true}"#,
            br#"{"sources": ["d/t/"]}"#,
        ] {
            let err = parse_body(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{}", String::from_utf8_lossy(bad));
        }
        let many = format!("{{\"sources\": [{}]}}", vec!["\"a\""; MAX_SOURCES + 1].join(","));
        assert_eq!(parse_body(many.as_bytes()).unwrap_err().status(), 400);
    }
}
