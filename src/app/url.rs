//! The URL surface of docs/API.md: method + request target (+ Content-Type) → an [`Op`]. Pure: no
//! I/O, so every route is unit-tested in the table below.
//!
//! Names after `/file/` are percent-decoded exactly once (the Node original decoded twice).
//! A plain `/wc`, `/mv` or `/check` suffix selects the line count, move or stat of what
//! precedes it; a file whose own name is `wc`, `mv` or `check` is reached with the encoded
//! form (`dir%2Fwc`), because the suffix is recognised before decoding. A path a request reads,
//! deletes, appends to or moves away names something that exists and may be any name another
//! writer made ([`Naming::Existing`]); one it uploads or moves to must be a name safe to show
//! ([`Naming::New`]), and so must one an append creates (checked where it is created).

use crate::app::error::Error;
use crate::path::{Naming, PathError, RelPath};

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `GET /file`: the seed's health answer, `OK`.
    StorageHealth,
    /// `GET`/`HEAD /file/{path}`: a file's bytes or a directory listing.
    Read { path: RelPath },
    /// `GET /file/{path}/wc`: the number of `\n` bytes.
    LineCount { path: RelPath },
    /// `GET /file/{path}/check`: the stat of a file or directory, as Node's `fs.Stats`.
    Stat { path: RelPath },
    /// `GET /`: a short page naming the service and its entry points.
    Index,
    /// `POST /file/{path}`: create or replace atomically.
    Upload { path: RelPath },
    /// `PUT /file/{path}` (not JSON): append.
    Append { path: RelPath },
    /// `PUT /file/{path}` with JSON, or `PUT /file/{path}/mv`: move; the target is in the body.
    Move { path: RelPath },
    /// `POST /file/{path}/concat` (replace) or `PUT` (append): join the files the JSON body
    /// names into `path`.
    Concat { path: RelPath, append: bool },
    /// `DELETE /file/{path}`.
    Delete { path: RelPath },
    /// `OPTIONS` on any known URL: which methods it takes.
    Options { allow: &'static str },
    /// `GET /healthz`: the process is alive.
    Alive,
    /// `GET /readyz`: the storage is usable.
    Ready,
    /// `GET /metrics`: Prometheus exposition.
    Metrics,
}

impl Op {
    /// True for operations that change storage (refused for the read-only token).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Op::Upload { .. } | Op::Append { .. } | Op::Move { .. } | Op::Delete { .. } | Op::Concat { .. }
        )
    }

    /// True for operations under `/file`, which bearer tokens protect.
    pub fn needs_auth(&self) -> bool {
        !matches!(
            self,
            Op::Alive | Op::Ready | Op::Metrics | Op::Options { .. } | Op::Index
        )
    }

    /// What kind of operation this is, for metrics.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::StorageHealth => OpKind::StorageHealth,
            Op::Read { .. } => OpKind::Read,
            Op::LineCount { .. } => OpKind::LineCount,
            Op::Stat { .. } => OpKind::Stat,
            Op::Index => OpKind::Index,
            Op::Upload { .. } => OpKind::Upload,
            Op::Append { .. } => OpKind::Append,
            Op::Move { .. } => OpKind::Move,
            Op::Delete { .. } => OpKind::Delete,
            Op::Concat { .. } => OpKind::Concat,
            Op::Options { .. } => OpKind::Options,
            Op::Alive => OpKind::Alive,
            Op::Ready => OpKind::Ready,
            Op::Metrics => OpKind::Metrics,
        }
    }
}

/// Declares [`OpKind`], its list [`OpKind::ALL`] and its labels from one table, so a kind
/// cannot be missing from the list metrics count by.
macro_rules! op_kinds {
    ($($kind:ident => $label:literal,)*) => {
        /// An operation without its arguments: what metrics count requests by.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum OpKind {
            $(
                #[doc = concat!("Labelled `", $label, "`.")]
                $kind,
            )*
        }

        impl OpKind {
            /// Every kind, in the order metrics list them.
            pub const ALL: &[OpKind] = &[$(OpKind::$kind),*];

            /// A short, fixed label for metrics and logs (never a file name).
            pub fn label(self) -> &'static str {
                match self {
                    $(OpKind::$kind => $label,)*
                }
            }

            /// The kind a label names (labels travel through the HTTP layer as text).
            pub fn from_label(label: &str) -> Option<OpKind> {
                match label {
                    $($label => Some(OpKind::$kind),)*
                    _ => None,
                }
            }
        }
    };
}

op_kinds! {
    StorageHealth => "health",
    Read => "read",
    LineCount => "wc",
    Stat => "check",
    Upload => "upload",
    Append => "append",
    Move => "move",
    Delete => "delete",
    Options => "options",
    Index => "index",
    Alive => "healthz",
    Ready => "readyz",
    Metrics => "metrics",
    Concat => "concat",
}

const ALLOW_FILE: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
const ALLOW_READ_ONLY: &str = "GET, HEAD, OPTIONS";
const ALLOW_MOVE: &str = "PUT, OPTIONS";
const ALLOW_CONCAT: &str = "POST, PUT, OPTIONS";

/// Maps a request to an operation. `content_type` is the request's Content-Type, if any.
pub fn parse(method: &str, target: &str, content_type: Option<&str>) -> Result<Op, Error> {
    // RFC 9110 §9.3.7: `OPTIONS *` asks what the server as a whole supports.
    if target == "*" {
        return match method {
            "OPTIONS" => Ok(Op::Options { allow: ALLOW_FILE }),
            _ => Err(Error::BadRequest {
                message: "the target * is only for OPTIONS".into(),
            }),
        };
    }
    let target = origin_form(target);
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let read_only = |op: Op| match method {
        "GET" | "HEAD" => Ok(op),
        "OPTIONS" => Ok(Op::Options { allow: ALLOW_READ_ONLY }),
        _ => Err(Error::MethodNotAllowed { allow: ALLOW_READ_ONLY }),
    };
    match path {
        "/healthz" => return read_only(Op::Alive),
        "/readyz" => return read_only(Op::Ready),
        "/metrics" => return read_only(Op::Metrics),
        "/file" => return read_only(Op::StorageHealth),
        "/" => return read_only(Op::Index),
        _ => {}
    }
    let Some(raw) = path.strip_prefix("/file/") else {
        return Err(Error::NoSuchUrl);
    };
    if let Some(base) = raw.strip_suffix("/wc").filter(|b| !b.is_empty()) {
        return read_only(Op::LineCount {
            path: decode(base, Naming::Existing)?.non_root()?,
        });
    }
    if let Some(base) = raw.strip_suffix("/check").filter(|b| !b.is_empty()) {
        return read_only(Op::Stat {
            path: decode(base, Naming::Existing)?.non_root()?,
        });
    }
    if let Some(base) = raw.strip_suffix("/mv").filter(|b| !b.is_empty()) {
        return match method {
            "PUT" => Ok(Op::Move {
                path: decode(base, Naming::Existing)?.non_root()?,
            }),
            "OPTIONS" => Ok(Op::Options { allow: ALLOW_MOVE }),
            _ => Err(Error::MethodNotAllowed { allow: ALLOW_MOVE }),
        };
    }
    // Like `/mv`, before the JSON-means-move rule: the suffix decides.
    if let Some(base) = raw.strip_suffix("/concat").filter(|b| !b.is_empty()) {
        let target = |naming| {
            let rel = decode(base, naming)?;
            if rel.dir_only() {
                return Err(Error::BadPath(PathError::Empty));
            }
            Ok(rel.non_root()?)
        };
        return match method {
            "POST" => Ok(Op::Concat {
                path: target(Naming::New)?,
                append: false,
            }),
            // Like an append: any existing name; one it creates is checked where it is created.
            "PUT" => Ok(Op::Concat {
                path: target(Naming::Existing)?,
                append: true,
            }),
            "OPTIONS" => Ok(Op::Options { allow: ALLOW_CONCAT }),
            _ => Err(Error::MethodNotAllowed { allow: ALLOW_CONCAT }),
        };
    }
    // An upload names what it creates. An append names an existing file, or one it creates
    // (the storage checks the new-name rules then: `RelPath::creatable`); a move names what it
    // moves away; both accept any name a listing shows.
    let naming = match method {
        "POST" => Naming::New,
        _ => Naming::Existing,
    };
    let rel = decode(raw, naming)?;
    let writable = || {
        // A trailing slash names a directory; writes need a file name.
        if rel.dir_only() {
            Err(Error::BadPath(PathError::Empty))
        } else {
            rel.clone().non_root().map_err(Error::from)
        }
    };
    match method {
        "GET" | "HEAD" => Ok(Op::Read { path: rel }),
        "POST" => Ok(Op::Upload { path: writable()? }),
        "PUT" if is_json(content_type) => Ok(Op::Move { path: writable()? }),
        "PUT" => Ok(Op::Append { path: writable()? }),
        "DELETE" => Ok(Op::Delete { path: rel.non_root()? }),
        // The root is only ever read: writes and deletes of it are refused.
        "OPTIONS" if rel.is_root() => Ok(Op::Options { allow: ALLOW_READ_ONLY }),
        "OPTIONS" => Ok(Op::Options { allow: ALLOW_FILE }),
        _ => Err(Error::MethodNotAllowed { allow: ALLOW_FILE }),
    }
}

/// The path-and-query of a request target: RFC 9112 §3.2.2 has servers accept the
/// absolute form (`http://host/file/x`, as sent to proxies) like the origin form (`/file/x`).
fn origin_form(target: &str) -> &str {
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|s| target.get(..s.len()).is_some_and(|t| t.eq_ignore_ascii_case(s)))
        .map(|s| s.len());
    match scheme_len {
        Some(n) => target[n..].find('/').map_or("/", |i| &target[n + i..]),
        None => target,
    }
}

/// Percent-decodes a path once and validates it as `naming` asks. A segment ending in an
/// encoded `/` (`f%2F`) is refused before decoding: decoded, it would look like a trailing
/// slash the client never typed.
pub fn decode(raw: &str, naming: Naming) -> Result<RelPath, Error> {
    // By bytes: the last three bytes of a segment may end inside a multi-byte character.
    let ends_in_encoded_slash = |segment: &str| {
        let bytes = segment.as_bytes();
        bytes.len() >= 3 && bytes[bytes.len() - 3..].eq_ignore_ascii_case(b"%2F")
    };
    if raw.split('/').any(ends_in_encoded_slash) {
        return Err(Error::BadPath(PathError::EncodedSlash));
    }
    let bytes = urlencoding::decode_binary(raw.as_bytes());
    Ok(RelPath::parse(&bytes, naming)?)
}

/// True when a Content-Type names JSON (`application/json`, parameters allowed).
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .map(|ct| ct.split(';').next().unwrap_or("").trim())
        .is_some_and(|media| media.eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s.as_bytes(), Naming::Existing).unwrap()
    }

    #[test]
    fn routes() {
        let json = Some("application/json");
        let cases: Vec<(&str, &str, Option<&str>, Op)> = vec![
            ("GET", "/file", None, Op::StorageHealth),
            ("GET", "/file/", None, Op::Read { path: RelPath::root() }),
            ("GET", "/file/cat.jpg", None, Op::Read { path: rel("cat.jpg") }),
            ("HEAD", "/file/cat.jpg?x=1", None, Op::Read { path: rel("cat.jpg") }),
            (
                "GET",
                "/file/mydirectory%2Fcat.jpg",
                None,
                Op::Read {
                    path: rel("mydirectory/cat.jpg"),
                },
            ),
            (
                "GET",
                "/file/mydirectory/cat.jpg",
                None,
                Op::Read {
                    path: rel("mydirectory/cat.jpg"),
                },
            ),
            ("GET", "/file/dir/", None, Op::Read { path: rel("dir/") }),
            (
                "GET",
                "/file/caf%E9",
                None,
                Op::Read {
                    path: RelPath::parse(b"caf\xe9", Naming::Existing).unwrap(),
                },
            ),
            ("GET", "/file/a%0Ab", None, Op::Read { path: rel("a\nb") }),
            // Appends and moves name what a listing shows; creating such a name is refused
            // where it would be created (the storage, `RelPath::creatable`; moves.rs's target).
            ("PUT", "/file/a%0Ab", None, Op::Append { path: rel("a\nb") }),
            (
                "PUT",
                "/file/caf%E9",
                json,
                Op::Move {
                    path: RelPath::parse(b"caf\xe9", Naming::Existing).unwrap(),
                },
            ),
            ("DELETE", "/file/..%5Cx", None, Op::Delete { path: rel("..\\x") }),
            ("GET", "/file/a%2525b", None, Op::Read { path: rel("a%25b") }),
            (
                "GET",
                "/file/mydata.csv/wc",
                None,
                Op::LineCount {
                    path: rel("mydata.csv"),
                },
            ),
            (
                "GET",
                "/file/d%2Fdata.csv/wc",
                None,
                Op::LineCount {
                    path: rel("d/data.csv"),
                },
            ),
            ("GET", "/file/dir%2Fwc", None, Op::Read { path: rel("dir/wc") }),
            ("GET", "/file/wc", None, Op::Read { path: rel("wc") }),
            (
                "GET",
                "/file/\u{e9}\u{e9}",
                None,
                Op::Read {
                    path: rel("\u{e9}\u{e9}"),
                },
            ),
            ("GET", "/file/d/f.csv/check", None, Op::Stat { path: rel("d/f.csv") }),
            ("HEAD", "/file/d%2Ff.csv/check", None, Op::Stat { path: rel("d/f.csv") }),
            ("GET", "/file/d%2Fcheck", None, Op::Read { path: rel("d/check") }),
            ("GET", "/", None, Op::Index),
            ("GET", "http://nas", None, Op::Index),
            ("POST", "/file/cat.jpg", None, Op::Upload { path: rel("cat.jpg") }),
            (
                "PUT",
                "/file/mydata.csv",
                Some("application/x-www-form-urlencoded"),
                Op::Append {
                    path: rel("mydata.csv"),
                },
            ),
            ("PUT", "/file/cat.jpg", json, Op::Move { path: rel("cat.jpg") }),
            (
                "PUT",
                "/file/cat.jpg",
                Some("Application/JSON; charset=utf-8"),
                Op::Move { path: rel("cat.jpg") },
            ),
            (
                "PUT",
                "/file/testdir%2Flargefile/mv",
                json,
                Op::Move {
                    path: rel("testdir/largefile"),
                },
            ),
            ("PUT", "/file/x/mv", None, Op::Move { path: rel("x") }),
            (
                "POST",
                "/file/run/all.csv/concat",
                json,
                Op::Concat {
                    path: rel("run/all.csv"),
                    append: false,
                },
            ),
            (
                "PUT",
                "/file/run%2Fall.csv/concat",
                json,
                Op::Concat {
                    path: rel("run/all.csv"),
                    append: true,
                },
            ),
            (
                "POST",
                "/file/run%2Fconcat",
                None,
                Op::Upload {
                    path: rel("run/concat"),
                },
            ),
            ("PUT", "/file/concat", None, Op::Append { path: rel("concat") }),
            ("DELETE", "/file/testdir", None, Op::Delete { path: rel("testdir") }),
            ("GET", "/healthz", None, Op::Alive),
            ("GET", "/readyz", None, Op::Ready),
            ("GET", "/metrics", None, Op::Metrics),
            ("OPTIONS", "/file/x", None, Op::Options { allow: ALLOW_FILE }),
            ("OPTIONS", "/file/", None, Op::Options { allow: ALLOW_READ_ONLY }),
            ("GET", "http://nas:3000/healthz", None, Op::Alive),
            ("OPTIONS", "*", None, Op::Options { allow: ALLOW_FILE }),
            ("GET", "HTTP://nas/file/a%2Fb", None, Op::Read { path: rel("a/b") }),
        ];
        for (method, target, ct, want) in cases {
            let op = parse(method, target, ct).unwrap();
            assert_eq!(op, want, "{method} {target}");
        }
    }

    #[test]
    fn refusals() {
        let cases: Vec<(&str, &str, u16)> = vec![
            ("GET", "/other", 404),
            ("GET", "http://nas/file/..%2Fx", 400),
            ("GET", "/filex", 404),
            ("POST", "/file", 405),
            ("DELETE", "/file/", 400),
            ("POST", "/file/", 400),
            ("POST", "/file/dir/", 400),
            ("PATCH", "/file/x", 405),
            ("POST", "/file/x/wc", 405),
            ("GET", "/file/x/mv", 405),
            ("PUT", "/file/x/check", 405),
            ("GET", "/file/x/concat", 405),
            ("DELETE", "/file/x/concat", 405),
            ("POST", "/file/d//concat", 400),
            ("POST", "/file/..%2Fx/concat", 400),
            ("POST", "/", 405),
            ("POST", "/healthz", 405),
            ("GET", "/file/..%2Fsecret", 400),
            ("GET", "/file/%2E%2E%2Fsecret", 400),
            ("GET", "/file/a/../../secret", 400),
            ("GET", "/file/%2Fetc%2Fpasswd", 400),
            ("GET", "/file//etc/passwd", 400),
            ("GET", "/file/a%00b", 400),
            ("POST", "/file/..%5Csecret", 400),
            ("POST", "/file/%FF", 400),
            ("POST", "/file/a%0Ab", 400),
            ("POST", "/file/x%E2%80%AEtxt.exe", 400),
            ("POST", "/file/d/f%2F", 400),
            ("POST", "/file/d/f%2f", 400),
            ("GET", "/file/d%2F", 400),
            ("GET", "/file/d%2F/x", 400),
            ("GET", "/file/.HTTP-NAS-tmp-1", 400),
            ("POST", "/file/\u{e9}\u{e9}%2F", 400),
            ("PUT", "/file/..%2Fx/mv", 400),
            ("GET", "/file/..%2Fx/wc", 400),
            ("DELETE", "/file/.", 400),
            ("POST", "/file/.http-nas-tmp-1", 400),
            ("GET", "*", 400),
        ];
        for (method, target, status) in cases {
            let err = parse(method, target, None).unwrap_err();
            assert_eq!(err.status(), status, "{method} {target}: {err}");
        }
    }
}
