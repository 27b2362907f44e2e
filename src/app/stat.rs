//! `GET /file/{path}/check` and `GET /file/{path}/wc`: what the seed's clients ask about a
//! file without reading it. `/check` answers the stat as Node's `fs.Stats` serialises it
//! (clients read it with `jq .size`); `/wc` counts `\n` bytes, stopping if the client leaves.

use super::App;
use super::auth::Grant;
use super::error::Error;
use crate::http::{Request, Response, ResponseBody};
use crate::path::RelPath;
use crate::storage::Opened;
use crate::time::{js_date, js_millis, js_number};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// The number of `\n` bytes in a file, as text.
pub(super) fn line_count(app: &App, path: &RelPath, grant: Grant<'_>, req: &Request<'_>) -> Result<Response, Error> {
    let lines = app
        .storage
        .count_lines(path, grant.storage_scope(), req.client_gone)
        .map_err(|e| Error::at(path, e))?;
    Ok(Response::text(200, lines.to_string()))
}

/// The stat of a file or directory as Node's `fs.Stats` serialises (`JSON.stringify`): its
/// fields in their order, times in milliseconds and as dates. The seed's `/check` answered
/// it and its clients read it (`jq .size`); a file's size is its committed size, like a GET.
pub(super) fn stat(app: &App, path: &RelPath, grant: Grant<'_>) -> Result<Response, Error> {
    let (meta, size, born) = match app.storage.open_read(path, grant.storage_scope())? {
        Opened::File { file, meta, len, .. } => {
            let born = crate::sys::created(file.as_fd(), &meta);
            (meta, len, born)
        }
        Opened::Dir(meta, born) => {
            let size = meta.len();
            (meta, size, born)
        }
    };
    let birth = born
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
