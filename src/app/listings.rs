//! `GET /file/{path}/` of a directory, answered by [`list_dir`]: the listing as a response body,
//! rendered while it is sent: the plain form (one
//! name per line, as the original wrote it, each line usable as a URL segment), JSON
//! (`[{"href","modified","name","size","type"}]`, the keys in the order `serde_json` writes
//! them: `name` the name itself, `href` the segment to put in a URL), or an HTML page for
//! people with a browser (breadcrumbs, a row per entry, no script, nothing loaded from
//! elsewhere; every name escaped, every link leading to its entry whatever the name). Entries
//! are rendered a batch at a time into a small buffer, so a listing of any size costs its
//! names (kept by the storage listing for sorting) and one buffer.
//! The root's page opens with the volume's size, used and free space in bytes and inodes
//! (`fstatvfs`, as `df` and `df -i` count them), which only `/metrics` told before.
//!
//! Sizes are committed sizes, like a GET serves, and a listing never waits for a lock: a
//! replica frozen while it holds the locks of many files in the directory would otherwise cost
//! the bound once per file. Each file's shared lock is tried without waiting
//! (`storage::lock::glimpse`); a file a writer holds is listed at the committed size its
//! append's crash record names (read without the lock, and only when the same record is there
//! before and after its size is read), else with its size unknown: JSON `"size": null`, the
//! page "—". Never at its size on disk, which may count an uncommitted append's bytes. The
//! plain listing names entries only and is unchanged.
//!
//! How a name becomes a line, an `href` or a link is decided in one place,
//! [`crate::path::listed_name`] (and [`url_path`] for the page's absolute links).

use super::auth::Grant;
use super::error::Error;
use super::{App, CACHE_CONTROL, wants_html, wants_json};
use crate::http::{Head, Response, ResponseBody};
use crate::path::{RelPath, is_suffix_word, listed_name, readable_name};
use crate::storage::{EntryKind, Listing, VolumeUsage};
use crate::time::rfc3339;
use serde_json::json;
use std::io::{self, Read};

/// What the browse page shows for a size that is not known now.
const UNKNOWN_SIZE: &str = "\u{2014}";

/// Rendered bytes buffered at most before the writer takes them.
const BATCH_BYTES: usize = 32 * 1024;

/// Which form the listing takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Form {
    /// Bare names, each followed by `\n`.
    Plain,
    /// One JSON array of objects.
    Json,
    /// An HTML page of the directory `path` (its bytes relative to the root, empty for the
    /// root itself); the root's page also shows the `volume`'s size and use.
    Html { path: Vec<u8>, volume: Option<VolumeUsage> },
}

/// The `Content-Security-Policy` of the HTML page: no script, no remote anything; only its
/// own inline style.
pub const HTML_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's style: inline, so it needs nothing from anywhere.
const HTML_STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em}\
table{border-collapse:collapse}td,th{padding:.2em 1em .2em 0;text-align:left}\
td.size{text-align:right}nav a{margin-right:.2em}.tools a{color:#666;margin-right:.5em}\
.volume{color:#666}";

/// `text` with the five characters that mean something in HTML replaced by entities.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A name (or path) as it is on disk, as a URL path: every byte but unreserved characters and
/// `/` percent-encoded, so an `href`, decoded once like every request path, leads back to
/// exactly these bytes.
pub fn url_path(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A size for people: bytes up to 1 KiB, then KiB, MiB, GiB, TiB with one decimal.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The volume's size, used and free space, in bytes and inodes: each figure a `<data>` element
/// whose `value` is the exact count (bytes or inodes) and whose text is for people.
fn html_volume(v: &VolumeUsage) -> String {
    let bytes = |class: &str, n: u64| format!("<data class=\"{class}\" value=\"{n}\">{}</data>", human_size(n));
    let inodes = |class: &str, n: u64| format!("<data class=\"{class}\" value=\"{n}\">{n}</data>");
    format!(
        "<p class=\"volume\">volume: size {}, used {}, free {}; inodes: {}, used {}, free {}</p>\n",
        bytes("size-bytes", v.size_bytes),
        bytes("used-bytes", v.used_bytes),
        bytes("free-bytes", v.free_bytes),
        inodes("inodes", v.inodes),
        inodes("used-inodes", v.used_inodes),
        inodes("free-inodes", v.free_inodes),
    )
}

/// The page's head and breadcrumbs for the directory `path` (bytes relative to the root), and
/// the `volume`'s size and use where given.
fn html_start(path: &[u8], volume: Option<VolumeUsage>) -> String {
    let shown = readable_name(path);
    let title = if path.is_empty() {
        "/".to_string()
    } else {
        format!("/{shown}/")
    };
    let mut crumbs = String::from("<a href=\"/file/\">root</a>");
    let mut at: Vec<u8> = Vec::new();
    for segment in path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        at.extend_from_slice(segment);
        at.push(b'/');
        crumbs.push_str(&format!(
            " / <a href=\"/file/{}\">{}</a>",
            url_path(&at),
            html_escape(&readable_name(segment))
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>http-nas {}</title><style>{HTML_STYLE}</style></head>\n<body>\
         <nav>{crumbs}</nav>\n{}<table><thead><tr><th>name</th><th>size</th><th>modified</th>\
         <th></th></tr></thead><tbody>\n",
        html_escape(&title),
        volume.as_ref().map(html_volume).unwrap_or_default()
    )
}

/// A [`Listing`] read as bytes of the chosen [`Form`].
pub struct ListingBody {
    listing: Listing,
    form: Form,
    buf: Vec<u8>,
    at: usize,
    started: bool,
    finished: bool,
}

impl ListingBody {
    /// The body for `listing` in `form`.
    pub fn new(listing: Listing, form: Form) -> Self {
        ListingBody {
            listing,
            form,
            buf: Vec::with_capacity(BATCH_BYTES + 1024),
            at: 0,
            started: false,
            finished: false,
        }
    }

    /// Renders the next entries into `buf` (emptied first), up to about [`BATCH_BYTES`].
    fn refill(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.at = 0;
        if !self.started {
            match &self.form {
                Form::Json => self.buf.push(b'['),
                Form::Html { path, volume } => self.buf.extend_from_slice(html_start(path, *volume).as_bytes()),
                Form::Plain => {}
            }
        }
        while self.buf.len() < BATCH_BYTES {
            let wrote = match &self.form {
                Form::Plain => match self.listing.next_name() {
                    Some(name) => {
                        let line = listed_name(std::os::unix::ffi::OsStrExt::as_bytes(name));
                        self.buf.extend_from_slice(line.as_bytes());
                        self.buf.push(b'\n');
                        true
                    }
                    None => false,
                },
                Form::Json => match self.listing.next_entry() {
                    Some(e) => {
                        if self.started {
                            self.buf.push(b',');
                        }
                        let kind = match e.kind {
                            EntryKind::Directory => "directory",
                            EntryKind::File => "file",
                            EntryKind::Other => "other",
                        };
                        let raw = std::os::unix::ffi::OsStrExt::as_bytes(e.name.as_os_str());
                        let item = json!({
                            "name": String::from_utf8_lossy(raw),
                            "href": listed_name(raw),
                            "type": kind,
                            "size": e.size,
                            "modified": rfc3339(e.modified),
                        });
                        serde_json::to_writer(&mut self.buf, &item).map_err(io::Error::other)?;
                        true
                    }
                    None => false,
                },
                Form::Html { path, .. } => match self.listing.next_entry() {
                    Some(e) => {
                        let row = html_row(path, &e);
                        self.buf.extend_from_slice(row.as_bytes());
                        true
                    }
                    None => false,
                },
            };
            if !wrote {
                match self.form {
                    Form::Json => self.buf.extend_from_slice(b"]\n"),
                    Form::Html { .. } => self.buf.extend_from_slice(b"</tbody></table>\n</body></html>\n"),
                    Form::Plain => {}
                }
                self.finished = true;
                break;
            }
            self.started = true;
        }
        self.started = true;
        Ok(())
    }
}

/// The absolute link to the entry `name` of the directory `dir` (bytes relative to the root):
/// every byte but unreserved ones percent-encoded ([`url_path`]), and the `/` before a name
/// that is a suffix word ([`is_suffix_word`]) encoded too (`/file/dir%2Fwc`, docs/API.md
/// "Names"), so the link reaches the file `wc`, not the line count of `dir`.
pub fn entry_href(dir: &[u8], name: &[u8]) -> String {
    let mut href = format!("/file/{}", url_path(dir));
    if !dir.is_empty() {
        href.push_str(if is_suffix_word(name) { "%2F" } else { "/" });
    }
    href.push_str(&url_path(name));
    href
}

/// One table row of the HTML page: the entry's name as a link (a directory's ends in `/`), its
/// size, its modification time, and for a file the links to its line count and stat.
fn html_row(dir: &[u8], e: &crate::storage::Entry) -> String {
    let raw = std::os::unix::ffi::OsStrExt::as_bytes(e.name.as_os_str());
    let name = readable_name(raw);
    let href = entry_href(dir, raw);
    let (shown, link, size, tools) = match e.kind {
        EntryKind::Directory => (format!("{name}/"), format!("{href}/"), String::new(), String::new()),
        EntryKind::File => (
            name.to_string(),
            href.clone(),
            // Unknown while a writer holds the file (see the module doc).
            e.size.map_or_else(|| UNKNOWN_SIZE.to_string(), human_size),
            format!("<a href=\"{href}/wc\">wc</a><a href=\"{href}/check\">check</a>"),
        ),
        EntryKind::Other => (name.to_string(), href.clone(), String::new(), String::new()),
    };
    format!(
        "<tr><td><a href=\"{}\">{}</a></td><td class=\"size\">{size}</td><td>{}</td><td class=\"tools\">{tools}</td></tr>\n",
        html_escape(&link),
        html_escape(&shown),
        rfc3339(e.modified)
    )
}

impl Read for ListingBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buf.len() {
            if self.finished {
                return Ok(0);
            }
            self.refill()?;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A directory's listing: bare names (the seed's format), JSON, or the browse page,
/// streamed.
pub(super) fn list_dir(app: &App, head: &Head, path: &RelPath, grant: Grant<'_>) -> Result<Response, Error> {
    let listing = app.storage.list(path, grant.storage_scope())?;
    let (form, content_type) = if wants_json(head) {
        (Form::Json, "application/json")
    } else if wants_html(head) {
        let raw = std::os::unix::ffi::OsStrExt::as_bytes(path.as_path().as_os_str()).to_vec();
        // The front of the browse page tells how full the volume is (as `df` would).
        let volume = if path.is_root() {
            app.storage.volume_usage().ok()
        } else {
            None
        };
        (Form::Html { path: raw, volume }, "text/html; charset=utf-8")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_encodes_and_sizes() {
        assert_eq!(
            html_escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(url_path(b"d/a b&c<\"'.csv"), "d/a%20b%26c%3C%22%27.csv");
        assert_eq!(url_path(b"a%41"), "a%2541");
        assert_eq!(url_path(b"caf\xe9"), "caf%E9");
        assert_eq!(entry_href(b"", b"wc"), "/file/wc");
        assert_eq!(entry_href(b"d/e", b"wc"), "/file/d/e%2Fwc");
        assert_eq!(entry_href(b"d", b"mv"), "/file/d%2Fmv");
        assert_eq!(entry_href(b"d", b"wc.txt"), "/file/d/wc.txt");
        assert_eq!(entry_href(b"d", b"a b%"), "/file/d/a%20b%25");
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }
}
