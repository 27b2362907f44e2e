//! Runs an [`Op`] against [`Storage`] and builds the reply. The only place where the HTTP
//! request and the storage meet: it reads headers, calls one storage operation, and returns a
//! [`Response`] value (framing is the HTTP layer's job).

use crate::api::{self, Op, OpKind};
use crate::auth::browser::{self, BrowserRules};
use crate::auth::{Access, Grant, OUT_OF_SCOPE, Tokens};
use crate::conditional::{self, Comparison, ReadAnswer, ReadConditions, Validators};
use crate::error::Error;
use crate::http::{Exchange, Handler, Head, Request, Response, ResponseBody, Stats};
use crate::listing::{Form, HTML_POLICY, ListingBody};
use crate::metrics::Metrics;
use crate::probes::ProbeState;
use crate::range::RangeChoice;
use crate::storage::{Conditions, Naming, Opened, RelPath, Storage, StorageError, Version, VersionTest};
use crate::time::{js_date, js_millis, js_number};
use serde_json::json;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
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

/// Files and listings change under one URL: a cache may keep them but must ask (cheaply, by
/// ETag) before every use, so it never shows a version from before a write. A listing has no
/// validator (it is streamed as the directory is read, so nothing sums it up beforehand): a
/// cache then fetches it anew every time, which is what it must do.
const CACHE_CONTROL: &str = "no-cache";

/// Largest move request body (`{"path": ...}`), in bytes.
pub const MAX_MOVE_BODY_BYTES: u64 = 64 * 1024;

/// The application: storage, tokens and metrics behind the HTTP layer.
pub struct App {
    storage: Storage,
    tokens: Tokens,
    browser: BrowserRules,
    metrics: Metrics,
    stats: Arc<Stats>,
    probes: ProbeState,
}

impl App {
    /// Creates the application over `storage`.
    pub fn new(storage: Storage, tokens: Tokens, browser: BrowserRules, stats: Arc<Stats>) -> Self {
        App {
            storage,
            tokens,
            browser,
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

    /// The operation a head asks for, if the head alone allows it: a parseable URL, a host
    /// this service serves, no write a browser marks as from another site, and, where tokens
    /// protect it, a token that may do it there. Also the operation's kind, whatever the
    /// outcome, so the answer (a 401 too) is counted under it; and the token's grant, for the
    /// checks only the body allows (a move's target).
    fn gate(&self, head: &Head) -> (Option<OpKind>, Result<(Op, Grant<'_>), Error>) {
        let op = match api::parse(&head.method, &head.target, head.header("content-type")) {
            Ok(op) => op,
            Err(e) => return (None, Err(e)),
        };
        let kind = Some(op.kind());
        let probe = matches!(op, Op::Alive | Op::Ready | Op::Metrics | Op::StorageHealth);
        if let Err(message) = self.browser.check(head, op.writes(), probe) {
            return (kind, Err(Error::Forbidden { message }));
        }
        if !op.needs_auth() {
            return (kind, Ok((op, Grant::everything())));
        }
        let grant = self.tokens.check(head.header("authorization"));
        match grant.access {
            Access::Denied => return (kind, Err(Error::Unauthorized)),
            Access::ReadOnly if op.writes() => {
                let message = "the read-only token cannot write";
                return (kind, Err(Error::Forbidden { message }));
            }
            _ => {}
        }
        if op_path(&op).is_some_and(|path| !grant.reaches(path)) {
            return (kind, Err(Error::Forbidden { message: OUT_OF_SCOPE }));
        }
        (kind, Ok((op, grant)))
    }

    /// `/readyz`: the storage was found writable recently, and a new request would be taken
    /// now (a worker is free or the queue has room) and not just wait (not every worker is
    /// stuck waiting for a lock another replica holds).
    fn readiness(&self) -> Result<Response, Error> {
        self.probes
            .writable()
            .map_err(|message| Error::Unavailable { message })?;
        if !self.stats.pool.has_room() {
            return Err(Error::Unavailable {
                message: "every worker is busy and the queue is full".into(),
            });
        }
        let workers = self.stats.pool.workers.load(std::sync::atomic::Ordering::Relaxed);
        if crate::storage::lock::waiters() >= workers.max(1) {
            return Err(Error::Unavailable {
                message: "every worker is waiting for a file locked by another request or replica".into(),
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

    fn route(&self, op: Op, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
        let head = req.head;
        match op {
            Op::Alive | Op::Ready | Op::StorageHealth => self.probe(&op).unwrap_or(Err(Error::NotFound)),
            Op::Read { path } => self.read(head, &path, grant),
            Op::LineCount { path } => {
                let lines = self
                    .storage
                    .count_lines(&path, grant.storage_scope(), req.client_gone)?;
                Ok(Response::text(200, lines.to_string()))
            }
            Op::Stat { path } => self.stat(&path, grant),
            // A browser asking for the service's front page gets the root's browse page, which
            // lists files: only with a token where tokens are set, like `/file/`; a scoped
            // token is sent to its first directory.
            Op::Index if wants_html(head) => {
                let grant = self.tokens.check(head.header("authorization"));
                match (grant.access, grant.home()) {
                    (Access::Denied, _) => Err(Error::Unauthorized),
                    (_, Some(home)) => {
                        Ok(Response::new(303, ResponseBody::Empty).with_header("Location", format!("/file/{home}/")))
                    }
                    _ => self.read(head, &RelPath::root(), grant),
                }
            }
            Op::Index => Ok(Response::text(200, INDEX_PAGE)),
            Op::Upload { path } => {
                let tests = etag_tests(head);
                let conditions = preconditions(head, &tests);
                let size = self
                    .storage
                    .write_atomic(&path, grant.storage_scope(), req.body, &conditions)?;
                Ok(written(&path, size))
            }
            Op::Append { path } => {
                let tests = etag_tests(head);
                let conditions = Conditions {
                    size: upload_offset(head)?,
                    ..preconditions(head, &tests)
                };
                let size = self
                    .storage
                    .append(&path, grant.storage_scope(), req.body, &conditions)?;
                Ok(written(&path, size).with_header("Upload-Offset", size.to_string()))
            }
            Op::Move { path } => self.move_file(&path, grant, req),
            Op::Delete { path } => {
                let tests = etag_tests(head);
                self.storage
                    .delete(&path, grant.storage_scope(), &preconditions(head, &tests))
                    .map_err(|e| missing_fails_if_match(head, e))?;
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

    fn read(&self, head: &Head, path: &RelPath, grant: Grant<'_>) -> Result<Response, Error> {
        match self
            .storage
            .open_read(path, grant.storage_scope())
            .map_err(|e| missing_fails_if_match(head, e))?
        {
            Opened::File { file, meta, len } => serve_file(head, path, file, &meta, len),
            // A directory has no ETag: only `If-Match: *` holds for it.
            Opened::Dir(_) if head.header("if-match").is_some_and(|v| !conditional::matches_any(v)) => {
                Err(StorageError::VersionMismatch.into())
            }
            Opened::Dir(_) => self.list_dir(head, path, grant),
        }
    }

    /// A directory's listing: bare names (the seed's format), JSON, or the browse page,
    /// streamed.
    fn list_dir(&self, head: &Head, path: &RelPath, grant: Grant<'_>) -> Result<Response, Error> {
        let listing = self.storage.list(path, grant.storage_scope())?;
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
        let mut resp = Response::new(200, body)
            .with_header("Content-Type", content_type)
            .with_header("Cache-Control", CACHE_CONTROL);
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
    fn stat(&self, path: &RelPath, grant: Grant<'_>) -> Result<Response, Error> {
        let (meta, size) = match self.storage.open_read(path, grant.storage_scope())? {
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

    fn move_file(&self, path: &RelPath, grant: Grant<'_>, req: &mut Request<'_>) -> Result<Response, Error> {
        // The seed answered 404 for a missing source before looking at the body.
        self.storage
            .exists(path, grant.storage_scope())
            .map_err(|e| missing_fails_if_match(req.head, e))?;
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
        let target = self
            .storage
            .move_destination(path, &move_target(&body)?, grant.storage_scope())?;
        if !grant.reaches(&target) {
            return Err(Error::Forbidden { message: OUT_OF_SCOPE });
        }
        let tests = etag_tests(req.head);
        let size = self
            .storage
            .rename(path, &target, grant.storage_scope(), &preconditions(req.head, &tests))
            .map_err(|e| missing_fails_if_match(req.head, e))?;
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
        let answer = op.and_then(|(op, grant)| self.route(op, grant, req));
        labelled(kind, answer.unwrap_or_else(|e| refusal(e, head)))
    }

    /// Probes, from the state the checker keeps; refusals a head alone decides (no such URL,
    /// no or a wrong token), so an unauthenticated client never holds a worker.
    fn answer_early(&self, head: &Head) -> Option<Response> {
        let (kind, op) = self.gate(head);
        let answer = match op {
            Err(e) => Err(e),
            Ok((op, _)) => self.probe(&op)?,
        };
        Some(labelled(kind, answer.unwrap_or_else(|e| refusal(e, head))))
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
    let validators = Validators::of(&file, meta, size);
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
    Ok(resp
        .with_header("ETag", validators.etag)
        .with_header("Last-Modified", validators.last_modified)
        .with_header("Accept-Ranges", "bytes")
        .with_header("Cache-Control", CACHE_CONTROL))
}

/// `resp` labelled with the kind of operation it answered, if the URL named one.
fn labelled(kind: Option<OpKind>, resp: Response) -> Response {
    match kind {
        Some(kind) => resp.labelled(kind.label()),
        None => resp,
    }
}

/// An error as its response; a 401 to a browser is its login prompt (a Basic challenge).
fn refusal(e: Error, head: &Head) -> Response {
    match e {
        Error::Unauthorized if wants_html(head) => browser::login_required(),
        e => e.into_response(wants_json(head)),
    }
}

/// The path an operation reads, writes, lists or moves away, which a scoped token must reach.
fn op_path(op: &Op) -> Option<&RelPath> {
    match op {
        Op::Read { path }
        | Op::LineCount { path }
        | Op::Stat { path }
        | Op::Upload { path }
        | Op::Append { path }
        | Op::Move { path }
        | Op::Delete { path } => Some(path),
        Op::StorageHealth | Op::Index | Op::Options { .. } | Op::Alive | Op::Ready | Op::Metrics => None,
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

/// The ETag tests of a write, each if its field is given: `If-Match` (the file has one of the
/// listed ETags, strong comparison) and `If-None-Match` (the same, weak comparison).
fn etag_tests(head: &Head) -> [Option<impl Fn(&File, &Metadata, u64) -> bool + '_>; 2] {
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
fn preconditions<'a, F: Fn(&File, &Metadata, u64) -> bool>(
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
fn missing_fails_if_match(head: &Head, e: StorageError) -> Error {
    match e {
        StorageError::NotFound if head.header("if-match").is_some() => StorageError::VersionMismatch.into(),
        e => e.into(),
    }
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
