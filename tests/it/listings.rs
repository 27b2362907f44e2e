//! Directory listings: their forms (sorted bare names as the original printed them, JSON with
//! name, type, size and modified), what they never show (temp files, journals), their memory
//! (100,000 files), their framing (chunked on kept-alive connections), and, as the clients that
//! read them use them, whole under concurrency and every name usable as it is given.
//!
//! - Concurrency: several clients list one directory at once, again and again, in the plain,
//!   JSON and HTML forms, each on its own kept-alive connection; every listing must be exactly
//!   the directory's names, none missing, none twice. The root matters most: its listings are
//!   read through the handle the server keeps open on it.
//! - Names: files another writer made with a space, `%`, `?`, `#`, a tab, a control byte or
//!   invalid UTF-8 in their names, and files named like the suffix routes (`wc`, `check`, `mv`,
//!   `concat`). A script fetches every plain line with `curl "$URL/file/dir/$line"`, exactly as
//!   written (no `--path-as-is`, no `-g`); a program reads the JSON `name` and puts `href` in a
//!   URL; a browser follows the browse page's links. Each must reach the file's bytes.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::Value;

use crate::support::races;
use crate::support::raw::Conn;
use crate::support::{RESERVED_PREFIX, Server, UPLOAD_START_TIMEOUT, random_bytes, wait_until};

/// Clients listing at once.
const CLIENTS: usize = 6;
/// Listings each client asks for, per form, of the large directory.
const ROUNDS: usize = 25;
/// Listings each client asks for, per form, of the small one: each is read in one `getdents`,
/// so two meet less often; more rounds make a shared read position show every time.
const ROUNDS_FEW: usize = 250;
/// Files in the large directory.
const MANY_FILES: usize = 1500;
/// Files in the small directory (the bug showed with as few as 20).
const FEW_FILES: usize = 20;

/// The three forms of a listing: the `Accept` field that asks for it.
#[derive(Clone, Copy, Debug)]
enum Form {
    Plain,
    Json,
    Html,
}

impl Form {
    const ALL: [Form; 3] = [Form::Plain, Form::Json, Form::Html];

    fn accept(self) -> &'static str {
        match self {
            Form::Plain => "*/*",
            Form::Json => "application/json",
            Form::Html => "text/html",
        }
    }
}

/// Percent-decodes `text` once, as the server decodes a path.
fn decode(text: &str) -> Vec<u8> {
    urlencoding::decode_binary(text.as_bytes()).into_owned()
}

/// `&amp;`, `&lt;`, `&gt;`, `&quot;` and `&#39;` back to their characters.
fn html_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every `href` in a page, unescaped, in order.
fn hrefs(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(href, _)| html_unescape(href)))
        .collect()
}

/// The first link of every table row of the browse page: the entries' own links.
fn row_links(page: &str) -> Vec<String> {
    page.split("<tr><td>")
        .skip(1)
        .filter_map(|row| hrefs(row).into_iter().next())
        .collect()
}

/// The names a listing gives, in its order, as raw bytes: each plain line decoded once, each
/// JSON `name`, each row link's last segment decoded once (without a directory's `/`).
fn names_in(form: Form, dir_url: &str, body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(body);
    match form {
        Form::Plain => {
            if !text.is_empty() && !text.ends_with('\n') {
                return Err("the plain listing does not end in a newline".into());
            }
            Ok(text.lines().map(decode).collect())
        }
        Form::Json => {
            let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
            let entries = value.as_array().ok_or("not a JSON array")?;
            entries
                .iter()
                .map(|e| {
                    e["name"]
                        .as_str()
                        .map(|n| n.as_bytes().to_vec())
                        .ok_or_else(|| format!("an entry without a name: {e}"))
                })
                .collect()
        }
        Form::Html => {
            if !text.trim_end().ends_with("</html>") {
                return Err("the page does not end".into());
            }
            row_links(&text)
                .iter()
                .map(|link| {
                    let full = decode(link);
                    let rest = full
                        .strip_prefix(dir_url.as_bytes())
                        .ok_or_else(|| format!("link {link} is not below {dir_url}"))?;
                    Ok(rest.strip_suffix(b"/").unwrap_or(rest).to_vec())
                })
                .collect()
        }
    }
}

/// What is wrong with a listing that should be exactly `want` (sorted), or `None`.
fn wrong(got: &[Vec<u8>], want: &[Vec<u8>]) -> Option<String> {
    if got == want {
        return None;
    }
    let unique: BTreeSet<&Vec<u8>> = got.iter().collect();
    let missing = want.iter().filter(|n| !unique.contains(n)).count();
    Some(format!(
        "{} names ({} distinct, {} repeated, {missing} missing) where {} were expected",
        got.len(),
        unique.len(),
        got.len() - unique.len(),
        want.len()
    ))
}

/// Fills `dir` (under the root, `""` for the root itself) with `count` files and one
/// subdirectory; returns the names a listing must give, sorted.
fn fill(root: &Path, dir: &str, count: usize) -> Vec<Vec<u8>> {
    let at = root.join(dir);
    fs::create_dir_all(&at).unwrap();
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("file-{i:05}.csv");
        fs::write(at.join(&name), format!("{i}\n")).unwrap();
        names.push(name.into_bytes());
    }
    fs::create_dir(at.join("zz-subdir")).unwrap();
    names.push(b"zz-subdir".to_vec());
    names.sort();
    names
}

/// [`CLIENTS`] clients each list `/file/{dir}` [`ROUNDS`] times in every form at once, on their
/// own connections; every listing must be exactly `want`. Returns the failures, described.
fn list_concurrently(s: &Server, dir: &str, want: &[Vec<u8>], rounds: usize) -> Vec<String> {
    let target = format!("/file/{dir}");
    let dir_url = target.clone();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (addr, target, dir_url, want) = (s.addr(), target.clone(), dir_url.clone(), want.to_vec());
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut failures = Vec::new();
                for round in 0..rounds {
                    // Each client starts with a different form, so all three run at once.
                    for k in 0..Form::ALL.len() {
                        let form = Form::ALL[(client + k) % Form::ALL.len()];
                        let request = format!("GET {target} HTTP/1.1\r\nHost: t\r\nAccept: {}\r\n\r\n", form.accept());
                        let response = conn.send(request.as_bytes()).response();
                        let verdict = if response.status != 200 {
                            Some(format!("status {}", response.status))
                        } else {
                            match names_in(form, &dir_url, &response.body) {
                                Ok(got) => wrong(&got, &want),
                                Err(e) => Some(e),
                            }
                        };
                        if let Some(why) = verdict {
                            failures.push(format!("client {client} round {round} {form:?}: {why}"));
                        }
                    }
                }
                failures
            })
        })
        .collect();
    clients
        .into_iter()
        .flat_map(|c| c.join().expect("a listing client panicked"))
        .collect()
}

/// Lists the root and a subdirectory, each holding `count` files, concurrently in every form,
/// `rounds` times per client and form.
fn concurrent_listings_are_whole(count: usize, rounds: usize) {
    let s = Server::start();
    let root_names = fill(&s.root(), "", count);
    // The root also holds the subdirectory listed next.
    let mut root_names = root_names;
    root_names.push(b"deep".to_vec());
    root_names.sort();
    let deep_names = fill(&s.root(), "deep/er", count);
    let mut failures = list_concurrently(&s, "", &root_names, rounds);
    failures.extend(list_concurrently(&s, "deep/er/", &deep_names, rounds));
    let total = 2 * CLIENTS * rounds * Form::ALL.len();
    assert!(
        failures.is_empty(),
        "{} of {total} listings were wrong; the first:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn concurrent_listings_of_1500_files_are_each_whole_in_every_form() {
    concurrent_listings_are_whole(MANY_FILES, ROUNDS);
}

#[test]
fn concurrent_listings_of_20_files_are_each_whole_in_every_form() {
    concurrent_listings_are_whole(FEW_FILES, ROUNDS_FEW);
}

/// Names another writer of the volume made, each with what the file holds: every kind of
/// character that does not stand for itself in a URL segment, suffix-route words, and names
/// that need nothing (whose lines must stay byte-identical).
fn awkward_names() -> Vec<(Vec<u8>, String)> {
    let names: Vec<&[u8]> = vec![
        b"a b.txt",
        b"100%.txt",
        b"a?b",
        b"a#b",
        b"tab\there",
        b"bell\x07.log",
        b"caf\xe9.txt",
        "caf\u{e9} 2.txt".as_bytes(),
        "nb\u{a0}sp".as_bytes(),
        b"[x]{y}.csv",
        b"back\\slash \"q\" <b>^|`",
        b"%41",
        b"wc",
        b"check",
        b"mv",
        b"concat",
        b"plain-name_1.csv",
        "\u{65e5}\u{672c}.txt".as_bytes(),
    ];
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n.to_vec(), format!("contents of file {i}\n")))
        .collect()
}

/// A server whose `dir/` holds [`awkward_names`], created on disk directly.
fn with_awkward_names() -> (Server, Vec<(Vec<u8>, String)>) {
    let s = Server::start();
    let names = awkward_names();
    fs::create_dir(s.root().join("dir")).unwrap();
    for (name, contents) in &names {
        fs::write(s.root().join("dir").join(OsStr::from_bytes(name)), contents).unwrap();
    }
    (s, names)
}

#[test]
fn every_plain_listing_line_fetches_its_file_with_curl() {
    let (s, names) = with_awkward_names();
    // A user's script, verbatim but for the tab that marks where each answer starts.
    let script = format!(
        "URL={}\ncurl -sS \"$URL/file/dir/\" | while IFS= read -r line; do \
         printf '%s\\t' \"$line\"; curl -sS \"$URL/file/dir/$line\"; done",
        s.url("")
    );
    let out = s.sh(&script);
    out.assert_success();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut fetched = BTreeSet::new();
    for line in text.lines() {
        let (listed, contents) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("curl printed no file for the line in {line:?}\nall:\n{text}"));
        let name = decode(listed);
        let want = names
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("line {listed:?} names no file\nall:\n{text}"));
        assert_eq!(
            format!("{contents}\n"),
            want.1,
            "curl \"$URL/file/dir/{listed}\" did not fetch {:?}\nall:\n{text}\nstderr: {}",
            String::from_utf8_lossy(&name),
            out.stderr
        );
        fetched.insert(name);
    }
    assert_eq!(fetched.len(), names.len(), "every file, once:\n{text}");
    // A name that needs nothing is listed as it is, as the seed listed it.
    let listing = s.get("/file/dir").assert_status(200).text();
    for plain in ["plain-name_1.csv", "\u{65e5}\u{672c}.txt"] {
        assert!(
            listing.lines().any(|l| l == plain),
            "{plain} not listed as itself:\n{listing}"
        );
    }
}

#[test]
fn json_listing_gives_each_name_itself_and_an_href_that_fetches_it() {
    let (s, names) = with_awkward_names();
    let response = s.get_with("/file/dir/", &["Accept: application/json"]);
    let entries = response.assert_ok_json();
    let entries = entries.as_array().unwrap_or_else(|| response.fail("not an array"));
    assert_eq!(entries.len(), names.len(), "{entries:?}");
    for entry in entries {
        let keys: BTreeSet<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["name", "href", "type", "size", "modified"]),
            "{entry}"
        );
        let href = entry["href"].as_str().unwrap();
        let (raw, contents) = names
            .iter()
            .find(|(n, _)| *n == decode(href))
            .unwrap_or_else(|| panic!("href {href:?} decodes to no file: {entry}"));
        assert_eq!(
            entry["name"].as_str().unwrap(),
            String::from_utf8_lossy(raw),
            "name must be the name itself: {entry}"
        );
        s.get(&format!("/file/dir/{href}")).assert_ok_body(contents);
    }
    let name_of = |href: &str| {
        entries
            .iter()
            .find(|e| e["href"] == href)
            .map(|e| e["name"].as_str().unwrap().to_string())
    };
    assert_eq!(name_of("100%25.txt").as_deref(), Some("100%.txt"));
    assert_eq!(name_of("caf%E9.txt").as_deref(), Some("caf\u{FFFD}.txt"));
    assert_eq!(name_of("a%20b.txt").as_deref(), Some("a b.txt"));
}

/// Resolves `href` against the page at `page_path` (both origin-relative), as a browser would
/// for the forms the page uses: an absolute path, or a path relative to the page's directory.
fn resolve(page_path: &str, href: &str) -> String {
    if href.starts_with('/') {
        return href.to_string();
    }
    let base = &page_path[..=page_path.rfind('/').unwrap_or(0)];
    format!("{base}{href}")
}

#[test]
fn browse_page_links_reach_files_named_like_suffix_routes() {
    let s = Server::start();
    let files: [(&str, &str); 8] = [
        ("wc", "w\nc\n"),
        ("check", "check me\n"),
        ("mv", "move me\n"),
        ("concat", "joined\n"),
        ("a b", "spaced\n"),
        ("100%", "all of it\n"),
        ("a?b#c", "query\n"),
        ("plain.txt", "plain\n"),
    ];
    // `docs/sub/mv` is a directory named like a suffix route, holding the same names.
    for dir in ["docs", "docs/sub/mv"] {
        for (name, contents) in files {
            s.write(&format!("{dir}/{name}"), format!("{dir}: {contents}"));
        }
    }
    for dir in ["docs", "docs/sub", "docs/sub/mv"] {
        let page_path = format!("/file/{dir}/");
        let page = s.get_with(&page_path, &["Accept: text/html"]);
        let text = page.assert_status(200).text();
        let links = hrefs(&text);
        let mut reached = BTreeSet::new();
        for row in row_links(&text) {
            let url = resolve(&page_path, &row);
            if url.ends_with('/') {
                // The subdirectory `mv`: its link lists it.
                let listing = s.get_with(&url, &["Accept: application/json"]).assert_ok_json();
                assert!(listing.is_array(), "{url} is not a listing: {listing}");
                continue;
            }
            let response = s.get(&url);
            let body = response.assert_status(200).text();
            let Some((name, _)) = files.iter().find(|(_, c)| body == format!("{dir}: {c}")) else {
                response.fail(&format!("link {row} on {page_path} fetched no file of {dir}"))
            };
            reached.insert(*name);
            // The row's line count and stat links are of this file too.
            let wc = resolve(&page_path, &format!("{row}/wc"));
            assert!(links.contains(&format!("{row}/wc")), "no wc link for {row}");
            let lines = body.matches('\n').count().to_string();
            s.get(&wc).assert_ok_body(lines);
            let check = resolve(&page_path, &format!("{row}/check"));
            assert!(links.contains(&format!("{row}/check")), "no check link for {row}");
            let stat = s.get(&check).assert_ok_json();
            assert_eq!(stat["size"], body.len(), "{check}: {stat}");
        }
        let want: BTreeSet<&str> = match dir {
            "docs/sub" => BTreeSet::new(),
            _ => files.iter().map(|(n, _)| *n).collect(),
        };
        assert_eq!(reached, want, "every file of {dir} reached through its link:\n{text}");
        // The breadcrumbs lead to listings too.
        for crumb in links.iter().filter(|l| l.ends_with('/')) {
            let url = resolve(&page_path, crumb);
            s.get_with(&url, &["Accept: application/json"]).assert_ok_json();
        }
    }
}

#[test]
fn browse_page_shows_names_as_they_are() {
    let (s, names) = with_awkward_names();
    let page = s
        .get_with("/file/dir/", &["Accept: text/html"])
        .assert_status(200)
        .text();
    for shown in [
        "100%.txt",
        "a?b",
        "a#b",
        "a b.txt",
        "wc",
        "caf\u{FFFD}.txt",
        "tab%09here",
    ] {
        let cell = format!(">{}</a>", shown.replace('&', "&amp;"));
        assert!(page.contains(&cell), "{shown:?} not shown as itself:\n{page}");
    }
    assert_eq!(row_links(&page).len(), names.len(), "{page}");
}

/// `secs` since the epoch in RFC 3339 UTC, as GNU `date -u` writes it.
fn rfc3339_by_date(secs: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The modification time of `root/rel` in whole seconds since the epoch.
fn mtime_secs(s: &Server, rel: &str) -> u64 {
    let modified = fs::metadata(s.root().join(rel))
        .and_then(|m| m.modified())
        .expect("mtime");
    modified.duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A server whose root holds `list/{a.csv, b.txt, c, sub/inner}`, plus reserved-name files a
/// listing must never show (planted after the start-up sweep).
fn with_listing() -> Server {
    let s = Server::start();
    for (name, body) in [
        ("list/b.txt", "bb"),
        ("list/a.csv", "a,1\n"),
        ("list/c", ""),
        ("list/sub/inner", "i"),
    ] {
        s.write(name, body);
    }
    s.write("list/.http-nas-tmp-999-1", "partial upload");
    s.write("list/.http-nas-journal-12345", "journal");
    s
}

#[test]
fn plain_listing_is_sorted_bare_names_as_the_seed_printed() {
    let s = with_listing();
    let response = s.get("/file/list");
    let text = response.assert_status(200).text();
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["a.csv", "b.txt", "c", "sub"],
        "{}",
        response.context
    );
}

#[test]
fn json_listing_has_name_type_size_and_modified() {
    let s = with_listing();
    let response = s.get_with("/file/list", &["Accept: application/json"]);
    let entries: Value = serde_json::from_slice(&response.assert_status(200).body).expect("JSON listing");
    let expected = [
        ("a.csv", "file", 4),
        ("b.txt", "file", 2),
        ("c", "file", 0),
        ("sub", "directory", 0),
    ];
    let entries = entries
        .as_array()
        .unwrap_or_else(|| response.fail("the listing is not an array"));
    assert_eq!(entries.len(), expected.len(), "{entries:?}");
    for (entry, (name, kind, size)) in entries.iter().zip(expected) {
        assert_eq!(entry["name"], name, "{entry}");
        assert_eq!(entry["type"], kind, "{entry}");
        assert!(entry["size"].is_u64(), "size must be a number: {entry}");
        if kind == "file" {
            assert_eq!(entry["size"], size, "{entry}");
        }
        let modified = rfc3339_by_date(mtime_secs(&s, &format!("list/{name}")));
        assert_eq!(entry["modified"], modified.as_str(), "{entry}");
    }
}

#[test]
fn listings_never_show_temp_files_or_journals() {
    let s = with_listing();
    for accept in ["Accept: */*", "Accept: application/json"] {
        let response = s.get_with("/file/list", &[accept]);
        if response.assert_status(200).text().contains(RESERVED_PREFIX) {
            response.fail("the listing shows a reserved .http-nas- file");
        }
    }
}

#[test]
fn root_listing_lists_top_level_entries() {
    let s = Server::start();
    s.write("top.txt", "t");
    s.write("dir/inner.txt", "i");
    s.write(".http-nas-tmp-999-2", "partial upload");
    let response = s.get("/file/");
    let text = response.assert_status(200).text();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["dir", "top.txt"],
        "{}",
        response.context
    );
}

#[test]
fn listing_hides_temp_file_of_upload_in_progress() {
    let s = Server::start();
    let mut conn = s.connect();
    conn.send(b"POST /file/inprogress HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n");
    conn.send(&random_bytes(1 << 20, 6));
    let has_temp = wait_until(UPLOAD_START_TIMEOUT, || !s.temp_files().is_empty());
    assert!(
        has_temp,
        "no {RESERVED_PREFIX} temp file under the root while uploading"
    );
    for accept in ["Accept: */*", "Accept: application/json"] {
        let listing = s.curl(&["-H", accept, &s.url("/file/")]);
        if listing.assert_status(200).text().contains(RESERVED_PREFIX) {
            listing.fail("the listing shows an upload temp file");
        }
    }
    drop(conn);
    s.expect_no_temp_files();
}

#[test]
fn listing_100000_files_stays_within_a_few_mib_plain_and_json() {
    let s = Server::start_prepared(
        |root| {
            let dir = root.join("many");
            fs::create_dir(&dir).unwrap();
            for i in 0..100_000 {
                fs::write(dir.join(format!("part-{i:06}.csv")), b"").unwrap();
            }
        },
        &[],
    );
    s.get("/healthz").assert_status(200);
    let before = s.proc_status("VmHWM").max(s.proc_status("VmRSS"));
    let plain = s.get("/file/many");
    plain.assert_status(200);
    let lines: Vec<&[u8]> = plain.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 100_000);
    assert_eq!(lines[0], b"part-000000.csv");
    assert_eq!(lines[99_999], b"part-099999.csv");
    let json = s.get_with("/file/many", &["Accept: application/json"]).assert_ok_json();
    assert_eq!(json.as_array().map(Vec::len), Some(100_000));
    assert_eq!(json[12345]["name"], "part-012345.csv");
    let grown_kib = s.proc_status("VmHWM").saturating_sub(before);
    eprintln!("listing 100,000 entries raised the peak RSS by {grown_kib} KiB");
    assert!(
        grown_kib < 8 * 1024,
        "peak RSS grew by {grown_kib} KiB listing 100,000 entries"
    );
}

#[test]
fn listings_are_chunked_on_kept_alive_connections_and_end_with_the_connection_for_http_1_0() {
    use std::io::Read;
    let s = Server::start();
    s.write("d/a", "1");
    s.write("d/b", "2");
    // HTTP/1.1: chunked, and the connection serves the next request.
    let mut conn = s.connect();
    conn.send(b"GET /file/d HTTP/1.1\r\nHost: t\r\n\r\nGET /file/d/a HTTP/1.1\r\nHost: t\r\n\r\n");
    let listing = conn.response();
    listing.assert_ok_body("a\nb\n");
    assert_eq!(listing.header("Transfer-Encoding"), Some("chunked"));
    assert!(listing.header("Content-Length").is_none());
    conn.response().assert_ok_body("1");
    // HTTP/1.0 (even asking for keep-alive): no chunks; the body ends when the server closes.
    let mut stream = std::net::TcpStream::connect(s.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut stream, b"GET /file/d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .expect("the server closes after an HTTP/1.0 listing");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding"), "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(body, "a\nb\n");
}

/// One figure of the browse page's volume line: the `value` of its `<data class="CLASS">`.
fn volume_figure(page: &str, class: &str) -> Option<u64> {
    let at = page.find(&format!("<data class=\"{class}\" value=\""))?;
    let rest = &page[at..];
    let value = rest.split('"').nth(3)?;
    value.parse().ok()
}

/// What `df` says of the filesystem holding `dir`: size, used, available bytes; inodes, used,
/// free inodes.
fn df(dir: &Path) -> Option<[u64; 6]> {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=size,used,avail,itotal,iused,iavail"])
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    numbers.try_into().ok()
}

/// The root's browse page tells the volume's size, used and free space in bytes and inodes, as
/// `df` does (within what other writers of the machine's disk change meanwhile); a
/// subdirectory's page and the other forms of the listing do not.
#[test]
fn the_root_browse_page_shows_the_volume_size_used_and_free() {
    let s = Server::start();
    s.write("d/a.txt", "a");
    let page = s.get_with("/file/", &["Accept: text/html"]);
    page.assert_status(200);
    let page = page.text();
    let classes = [
        "size-bytes",
        "used-bytes",
        "free-bytes",
        "inodes",
        "used-inodes",
        "free-inodes",
    ];
    let shown: Vec<u64> = classes
        .iter()
        .map(|c| volume_figure(&page, c).unwrap_or_else(|| panic!("no figure {c} on the page:\n{page}")))
        .collect();
    eprintln!("browse page: {shown:?}");
    assert!(
        shown[0] > 0 && shown[1] <= shown[0] && shown[2] <= shown[0],
        "{shown:?}"
    );
    assert!(shown[4] <= shown[3] && shown[5] <= shown[3], "{shown:?}");
    match df(&s.root()) {
        Some(df) => {
            eprintln!("df:          {df:?}");
            // Other processes write to the same disk: allow 2% of the volume's size.
            for (i, class) in classes.iter().enumerate() {
                let whole = if i < 3 { df[0] } else { df[3] };
                let slack = whole / 50 + 1;
                assert!(
                    shown[i].abs_diff(df[i]) <= slack,
                    "{class}: the page says {}, df says {}",
                    shown[i],
                    df[i]
                );
            }
        }
        None => eprintln!("skipped: the comparison with df (df did not run)"),
    }
    let sub = s.get_with("/file/d/", &["Accept: text/html"]).text();
    assert!(
        !sub.contains("class=\"volume\""),
        "only the root's page shows the volume:\n{sub}"
    );
    let plain = s.get("/file/").text();
    assert!(!plain.contains("volume"), "the plain listing stays bare names: {plain}");
}

/// With a frozen replica holding the locks of three files in `d` (each in the middle of an
/// append: bytes written, not committed), a JSON listing of `d` on the other replica waits for
/// none of them (not the lock bound once per locked file), and lists each at its committed size
/// (read from its append's crash record), never at its size on disk, which counts the frozen
/// append's uncommitted bytes (a state no GET ever serves).
#[test]
fn a_listing_beside_a_frozen_replica_never_waits_and_shows_only_committed_sizes() {
    if !crate::support::strace_usable() {
        return;
    }
    let (_home, a, b, _appends) = races::frozen_with_three_appends_in_d();
    let started = Instant::now();
    let listing = b.get_with("/file/d", &["Accept: application/json"]);
    let took = started.elapsed();
    let get = b.get("/file/d/f1");
    a.signal(libc::SIGCONT);
    eprintln!("JSON listing: {} after {took:?}: {}", listing.status, listing.text());
    eprintln!("GET of a locked file: {}", get.status);
    let sizes: Vec<u64> = listing
        .assert_ok_json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["size"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.iter().all(|&s| s == 4),
        "the listing shows sizes {sizes:?}: the committed size of each file is 4 (\"one\\n\"), 8 counts a \
         frozen append's uncommitted bytes"
    );
    assert!(
        took < Duration::from_secs(4),
        "one listing took {took:?} with a 2 s lock bound (the bound once per locked file)"
    );
}

/// A file another writer of the volume named with invalid UTF-8, a control byte or a backslash
/// is listed (its `href` percent-encoded) and can be read, appended to and moved (to a plain
/// name, which is how a user would fix it) by that `href`, like any listed name. Only names the
/// service would create are held to the new-name rules.
#[test]
fn a_listed_name_with_invalid_utf8_a_control_byte_or_a_backslash_can_be_moved_and_appended_to() {
    use std::os::unix::ffi::OsStrExt;
    let server = Server::start();
    let names: [&[u8]; 3] = [b"latin1-caf\xe9.csv", b"tab\there.csv", b"back\\slash.csv"];
    for name in names {
        fs::write(server.root().join(std::ffi::OsStr::from_bytes(name)), b"data\n").unwrap();
    }
    let listing = server
        .get_with("/file/", &["Accept: application/json"])
        .assert_ok_json();
    let mut refused = Vec::new();
    for (i, entry) in listing.as_array().unwrap().iter().enumerate() {
        let href = entry["href"].as_str().unwrap();
        server.get(&format!("/file/{href}")).assert_ok_body(b"data\n");
        let appended = server.append(&format!("/file/{href}"), b"more\n");
        let moved = server.put_json(&format!("/file/{href}"), &format!("{{\"path\":\"fixed-{i}.csv\"}}"));
        if appended.status != 200 || moved.status != 200 {
            refused.push(format!(
                "{href}: append {} move {} {}",
                appended.status,
                moved.status,
                moved.text().trim()
            ));
        }
    }
    assert!(refused.is_empty(), "listed names refused:\n{}", refused.join("\n"));
}
