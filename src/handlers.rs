//! Runs an [`Op`] against [`Storage`] and builds the reply. The only place where the HTTP
//! request and the storage meet: it reads headers, calls one storage operation, and returns a
//! [`Response`] value (framing is the HTTP layer's job).

use crate::api::{self, Op, OpKind};
use crate::auth::{Access, Tokens};
use crate::conditional::{self, ReadAnswer, ReadConditions, Validators};
use crate::error::Error;
use crate::http::{Exchange, Handler, Head, Request, Response, ResponseBody, Stats};
use crate::listing::{Form, HTML_POLICY, ListingBody};
use crate::metrics::Metrics;
use crate::probes::ProbeState;
use crate::range::RangeChoice;
use crate::storage::{Conditions, Naming, Opened, RelPath, Storage, VersionTest};
use crate::time::{js_date, js_millis, js_number};
use serde_json::json;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

/// The `GET /` page: what this is and where its entry points are (the seed chart's `helm test`
/// fetches `/`).
const INDEX_PAGE: &str = "\
http-nas: shared storage for jobs over plain HTTP

GET    /file/{path}          download a file, or list a directory (one name per line)
HEAD   /file/{path}          a file's headers
POST   /file/{path}          upload: create or replace, atomically
PUT    /file/{path}          append (Upload-Offset: N to append only at size N)
PUT    /file/{path}/mv       move; body {\"path\": \"new/name\"}
DELETE /file/{path}          delete a file or a directory tree
GET    /file/{path}/wc       line count
GET    /file/{path}/check    stat as JSON
GET    /file                 OK while the storage is there
GET    /healthz  /readyz  /metrics
";

/// Largest move request body (`{"path": ...}`), in bytes.
pub const MAX_MOVE_BODY_BYTES: u64 = 64 * 1024;

/// The application: storage, tokens and metrics behind the HTTP layer.
pub struct App {
    storage: Storage,
    tokens: Tokens,
    metrics: Metrics,
    stats: Arc<Stats>,
    probes: ProbeState,
}

impl App {
    /// Creates the application over `storage`.
    pub fn new(storage: Storage, tokens: Tokens, stats: Arc<Stats>) -> Self {
        App {
            storage,
            tokens,
            metrics: Metrics::default(),
            stats,
            probes: ProbeState::default(),
        }
    }

    /// Looks at the storage once and records what the probes should say (run by the checker
    /// thread every [`crate::probes::CHECK_INTERVAL`], never on a request).
    pub fn check_storage(&self) {
        let writable = self.storage.check_writable().map_err(|e| {
            let why = format!("storage is not writable: {e}");
            log::warn!("{why}");
            why
        });
        self.probes.record(self.storage.root_is_dir(), writable);
    }

    /// The operation a head asks for, if the head alone allows it: a parseable URL and, where
    /// tokens protect it, the right token. Also the operation's kind, whatever the outcome, so
    /// the answer (a 401 too) is counted under it.
    fn gate(&self, head: &Head) -> (Option<OpKind>, Result<Op, Error>) {
        let op = match api::parse(&head.method, &head.target, head.header("content-type")) {
            Ok(op) => op,
            Err(e) => return (None, Err(e)),
        };
        let kind = Some(op.kind());
        if op.needs_auth() {
            match self.tokens.check(head.header("authorization")) {
                Access::Denied => return (kind, Err(Error::Unauthorized)),
                Access::ReadOnly if op.writes() => {
                    let message = "the read-only token cannot write";
                    return (kind, Err(Error::Forbidden { message }));
                }
                _ => {}
            }
        }
        (kind, Ok(op))
    }

    /// `/readyz`: the storage was found writable recently, and a new request would be taken
    /// now (a worker is free or the queue has room).
    fn readiness(&self) -> Result<Response, Error> {
        self.probes
            .writable()
            .map_err(|message| Error::Unavailable { message })?;
        if !self.stats.pool.has_room() {
            return Err(Error::Unavailable {
                message: "every worker is busy and the queue is full".into(),
            });
        }
        Ok(Response::text(200, "ready"))
    }

    /// The answer to a probe, from the state the checker keeps (never the disk); `None` for
    /// any other operation.
    fn probe(&self, op: &Op) -> Option<Result<Response, Error>> {
        Some(match op {
            Op::Alive => Ok(Response::text(200, "ok")),
            Op::Ready => self.readiness(),
            Op::StorageHealth if self.probes.root_there() => Ok(Response::text(200, "OK")),
            Op::StorageHealth => Err(Error::Unavailable {
                message: "the storage root is not a directory".into(),
            }),
            _ => return None,
        })
    }

    fn route(&self, op: Op, req: &mut Request<'_>) -> Result<Response, Error> {
        let head = req.head;
        match op {
            Op::Alive | Op::Ready | Op::StorageHealth => self.probe(&op).unwrap_or(Err(Error::NotFound)),
            Op::Read { path } => self.read(head, &path),
            Op::LineCount { path } => Ok(Response::text(200, self.storage.count_lines(&path)?.to_string())),
            Op::Stat { path } => self.stat(&path),
            // A browser asking for the service's front page gets the root's browse page, which
            // lists files: only with a token where tokens are set, like `/file/`.
            Op::Index if wants_html(head) => match self.tokens.check(head.header("authorization")) {
                Access::Denied => Err(Error::Unauthorized),
                _ => self.read(head, &RelPath::root()),
            },
            Op::Index => Ok(Response::text(200, INDEX_PAGE)),
            Op::Upload { path } => {
                let version = if_match(head);
                let conditions = Conditions {
                    version: version.as_ref().map(|test| test as VersionTest<'_>),
                    absent: head.header("if-none-match") == Some("*"),
                    ..Conditions::default()
                };
                let size = self.storage.write_atomic(&path, req.body, &conditions)?;
                Ok(written(&path, size))
            }
            Op::Append { path } => {
                let version = if_match(head);
                let conditions = Conditions {
                    version: version.as_ref().map(|test| test as VersionTest<'_>),
                    size: upload_offset(head)?,
                    ..Conditions::default()
                };
                let size = self.storage.append(&path, req.body, &conditions)?;
                Ok(written(&path, size).with_header("Upload-Offset", size.to_string()))
            }
            Op::Move { path } => self.move_file(&path, req),
            Op::Delete { path } => {
                self.storage.delete(&path)?;
                Ok(Response::json(
                    200,
                    &json!({ "path": path.to_string(), "deleted": true }),
                ))
            }
            Op::Options { allow } => Ok(Response::new(204, ResponseBody::Empty).with_header("Allow", allow)),
            Op::Metrics => {
                let text = self.metrics.render(&self.stats, self.storage.free_bytes().ok());
                Ok(Response::text(200, text).with_header("Content-Type", "text/plain; version=0.0.4"))
            }
        }
    }

    fn read(&self, head: &Head, path: &RelPath) -> Result<Response, Error> {
        match self.storage.open_read(path)? {
            Opened::File { file, meta, len } => serve_file(head, path, file, &meta, len),
            Opened::Dir(_) => self.list_dir(head, path),
        }
    }

    /// A directory's listing: bare names (the seed's format), JSON, or the browse page,
    /// streamed.
    fn list_dir(&self, head: &Head, path: &RelPath) -> Result<Response, Error> {
        let listing = self.storage.list(path)?;
        let (form, content_type) = if wants_json(head) {
            (Form::Json, "application/json")
        } else if wants_html(head) {
            let raw = std::os::unix::ffi::OsStrExt::as_bytes(path.as_path().as_os_str()).to_vec();
            (Form::Html { path: raw }, "text/html; charset=utf-8")
        } else {
            // The seed's format: bare names, one per line (clients split it on whitespace).
            (Form::Plain, "text/plain; charset=utf-8")
        };
        let body = ResponseBody::Stream(Box::new(ListingBody::new(listing, form)));
        let mut resp = Response::new(200, body).with_header("Content-Type", content_type);
        if content_type.starts_with("text/html") {
            resp = resp
                .with_header("Content-Security-Policy", HTML_POLICY)
                .with_header("X-Content-Type-Options", "nosniff");
        }
        // An HTTP/1.0 client cannot take chunks: the connection's end ends the body.
        Ok(if head.minor_version == 0 { resp.closing() } else { resp })
    }

    /// The stat of a file or directory as Node's `fs.Stats` serialises (`JSON.stringify`): its
    /// fields in their order, times in milliseconds and as dates. The seed's `/check` answered
    /// it and its clients read it (`jq .size`); a file's size is its committed size, like a GET.
    fn stat(&self, path: &RelPath) -> Result<Response, Error> {
        let (meta, size) = match self.storage.open_read(path)? {
            Opened::File { meta, len, .. } => (meta, len),
            Opened::Dir(meta) => {
                let size = meta.len();
                (meta, size)
            }
        };
        let birth = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs() as i64, i64::from(d.subsec_nanos())));
        let times = [
            ("atime", (meta.atime(), meta.atime_nsec())),
            ("mtime", (meta.mtime(), meta.mtime_nsec())),
            ("ctime", (meta.ctime(), meta.ctime_nsec())),
            ("birthtime", birth),
        ];
        let mut fields: Vec<(String, String)> = [
            ("dev", meta.dev()),
            ("mode", u64::from(meta.mode())),
            ("nlink", meta.nlink()),
            ("uid", u64::from(meta.uid())),
            ("gid", u64::from(meta.gid())),
            ("rdev", meta.rdev()),
            ("blksize", meta.blksize()),
            ("ino", meta.ino()),
            ("size", size),
            ("blocks", meta.blocks()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        fields.extend(times.iter().map(|(k, t)| (format!("{k}Ms"), js_number(js_millis(*t)))));
        fields.extend(
            times
                .iter()
                .map(|(k, t)| (k.to_string(), format!("\"{}\"", js_date(js_millis(*t))))),
        );
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        Ok(Response::new(
            200,
            ResponseBody::Bytes(format!("{{{}}}\n", body.join(",")).into_bytes()),
        )
        .with_header("Content-Type", "application/json"))
    }

    fn move_file(&self, path: &RelPath, req: &mut Request<'_>) -> Result<Response, Error> {
        // The seed answered 404 for a missing source before looking at the body.
        self.storage.exists(path)?;
        let mut body = Vec::new();
        req.body
            .take(MAX_MOVE_BODY_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| {
                crate::http::BodyError::of(&e).map_or(Error::BadRequest { message: e.to_string() }, Error::BadBody)
            })?;
        if body.len() as u64 > MAX_MOVE_BODY_BYTES {
            return Err(Error::BadRequest {
                message: format!("move body larger than {MAX_MOVE_BODY_BYTES} bytes"),
            });
        }
        let target = self.storage.move_destination(path, &move_target(&body)?)?;
        let size = self.storage.rename(path, &target)?;
        Ok(Response::json(
            200,
            &json!({ "path": target.to_string(), "from": path.to_string(), "size": size }),
        ))
    }
}

impl Handler for App {
    fn handle(&self, req: &mut Request<'_>) -> Response {
        let head = req.head;
        let (kind, op) = self.gate(head);
        let answer = op.and_then(|op| self.route(op, req));
        labelled(kind, answer.unwrap_or_else(|e| e.into_response(wants_json(head))))
    }

    /// Probes, from the state the checker keeps; refusals a head alone decides (no such URL,
    /// no or a wrong token), so an unauthenticated client never holds a worker.
    fn answer_early(&self, head: &Head) -> Option<Response> {
        let (kind, op) = self.gate(head);
        let answer = match op {
            Err(e) => Err(e),
            Ok(op) => self.probe(&op)?,
        };
        Some(labelled(
            kind,
            answer.unwrap_or_else(|e| e.into_response(wants_json(head))),
        ))
    }

    fn label(&self, head: &Head) -> Option<&'static str> {
        let op = api::parse(&head.method, &head.target, head.header("content-type")).ok()?;
        Some(op.kind().label())
    }

    fn completed(&self, x: &Exchange<'_>) {
        let op = x.label.and_then(OpKind::from_label);
        self.metrics.record(op, x.status, x.bytes_in, x.bytes_out, x.duration);
    }
}

/// A file's bytes, all or a range, or 304, with its validators: what the conditional fields
/// of the request decide ([`conditional::decide`]).
fn serve_file(head: &Head, path: &RelPath, file: File, meta: &Metadata, size: u64) -> Result<Response, Error> {
    let validators = Validators::of(meta, size);
    let conditions = ReadConditions {
        if_none_match: head.header("if-none-match"),
        if_range: head.header("if-range"),
        range: head.header("range"),
    };
    let file_part = |status, offset, len| Response::new(status, ResponseBody::File { file, offset, len });
    let resp = match conditional::decide(conditions, &validators, size) {
        ReadAnswer::NotModified => Response::new(304, ResponseBody::Empty),
        ReadAnswer::Send(RangeChoice::Full) => file_part(200, 0, size),
        ReadAnswer::Send(RangeChoice::Partial { start, len }) => {
            file_part(206, start, len).with_header("Content-Range", format!("bytes {start}-{}/{size}", start + len - 1))
        }
        ReadAnswer::Send(RangeChoice::Unsatisfiable) => return Err(Error::RangeNotSatisfiable { size }),
    };
    let resp = match content_type(&path.to_string()) {
        Some(kind) if resp.status != 304 => resp.with_header("Content-Type", kind),
        _ => resp,
    };
    Ok(resp
        .with_header("ETag", validators.etag)
        .with_header("Last-Modified", validators.last_modified)
        .with_header("Accept-Ranges", "bytes"))
}

/// `resp` labelled with the kind of operation it answered, if the URL named one.
fn labelled(kind: Option<OpKind>, resp: Response) -> Response {
    match kind {
        Some(kind) => resp.labelled(kind.label()),
        None => resp,
    }
}

/// True when the client asked for HTML (a browser): directories then come as a browse page.
fn wants_html(head: &Head) -> bool {
    head.header("accept").is_some_and(|a| a.contains("text/html"))
}

/// True when the client asked for JSON (errors then come as JSON, 404s too).
fn wants_json(head: &Head) -> bool {
    head.header("accept").is_some_and(|a| a.contains("application/json"))
}

/// The success body of a write: the path and the resulting size.
fn written(path: &RelPath, size: u64) -> Response {
    Response::json(200, &json!({ "path": path.to_string(), "size": size }))
}

/// Parses the move body `{"path": "new/name"}`; the path is percent-decoded once, like URLs.
fn move_target(body: &[u8]) -> Result<RelPath, Error> {
    let bad = |message: &str| Error::BadRequest {
        message: message.to_string(),
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| bad("move body must be JSON like {\"path\": \"new/name\"}"))?;
    let target = value
        .get("path")
        .and_then(|p| p.as_str())
        .ok_or_else(|| bad("move body needs a string \"path\""))?;
    Ok(api::decode(target, Naming::New)?.non_root()?)
}

/// The `If-Match` test of a write (the file still has one of the listed ETags), if given.
fn if_match(head: &Head) -> Option<impl Fn(&Metadata, u64) -> bool + '_> {
    let wanted = head.header("if-match")?;
    Some(move |meta: &Metadata, len: u64| conditional::still_matches(wanted, meta, len))
}

/// The `Upload-Offset` precondition of an append, if given.
fn upload_offset(head: &Head) -> Result<Option<u64>, Error> {
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

    #[test]
    fn move_bodies() {
        assert_eq!(
            move_target(br#"{ "path": "newcat.jpg" }"#).unwrap().to_string(),
            "newcat.jpg"
        );
        assert_eq!(
            move_target(br#"{"path":"testdir%2Fmoved"}"#).unwrap().to_string(),
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
                move_target(bad).unwrap_err().status(),
                400,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("d/x.CSV"), Some("text/csv"));
        assert_eq!(content_type("a.txt"), Some("text/plain"));
        assert_eq!(content_type("noext"), None);
        assert_eq!(content_type("dump.sql"), None);
    }
}
