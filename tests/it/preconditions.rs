//! Preconditions (RFC 9110 §13) on every method, and the caching rules of file and listing
//! responses: `If-Match` and `If-Unmodified-Since` on uploads, appends, both forms of move,
//! deletes and reads (false → 412 and nothing done; true → done), `If-Modified-Since` through
//! the real `curl -z`, and `Cache-Control: no-cache` on everything a cache could keep.
//!
//! Dates come from GNU `date -u`, not from the server's formatter.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::support::headers::http_date;
use crate::support::{Response, Server};

/// What the file holds before each request of the table.
const ORIGINAL: &[u8] = b"original bytes\n";
/// The body an upload or append of the table sends.
const NEW: &[u8] = b"new bytes\n";

/// The modification time of `root/rel`, in seconds.
fn mtime(s: &Server, rel: &str) -> i64 {
    fs::metadata(s.root().join(rel)).expect("stat").mtime()
}

/// The methods of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Upload,
    Append,
    MoveBySuffix,
    MoveByJson,
    Delete,
    Get,
    Head,
}

const METHODS: [Method; 7] = [
    Method::Upload,
    Method::Append,
    Method::MoveBySuffix,
    Method::MoveByJson,
    Method::Delete,
    Method::Get,
    Method::Head,
];

impl Method {
    /// Sends this method to `/file/t/{name}` with `headers`.
    fn send(self, s: &Server, name: &str, headers: &[String]) -> Response {
        let path = format!("/file/t/{name}");
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut args: Vec<String> = headers.iter().flat_map(|h| ["-H".to_string(), h.to_string()]).collect();
        let moved = format!("{{\"path\": \"t/{name}.moved\"}}");
        match self {
            Method::Upload => return s.send("POST", &path, NEW, &headers),
            Method::Append => return s.send("PUT", &path, NEW, &headers),
            Method::Delete => args.extend(["-X".into(), "DELETE".into(), s.url(&path)]),
            Method::Get => args.push(s.url(&path)),
            Method::Head => args.extend(["-I".into(), s.url(&path)]),
            Method::MoveBySuffix => args.extend(
                ["-X", "PUT", "--data-binary", &moved]
                    .map(String::from)
                    .into_iter()
                    .chain([s.url(&format!("{path}/mv"))]),
            ),
            Method::MoveByJson => args.extend(
                [
                    "-X",
                    "PUT",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    &moved,
                ]
                .map(String::from)
                .into_iter()
                .chain([s.url(&path)]),
            ),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.curl(&args)
    }

    /// Asserts the request was carried out on `t/{name}` (which held [`ORIGINAL`]).
    #[track_caller]
    fn assert_done(self, s: &Server, name: &str, response: &Response) {
        response.assert_status(200);
        let (here, moved) = (format!("t/{name}"), format!("t/{name}.moved"));
        match self {
            Method::Upload => assert_eq!(s.read(&here), NEW, "{self:?} {name}"),
            Method::Append => assert_eq!(s.read(&here), [ORIGINAL, NEW].concat(), "{self:?} {name}"),
            Method::MoveBySuffix | Method::MoveByJson => {
                assert!(!s.exists(&here), "{self:?} {name}: still at the source");
                assert_eq!(s.read(&moved), ORIGINAL, "{self:?} {name}");
            }
            Method::Delete => assert!(!s.exists(&here), "{self:?} {name}: still there"),
            Method::Get => assert_eq!(response.body, ORIGINAL, "{self:?} {name}"),
            Method::Head => {}
        }
    }

    /// Asserts the request was refused with 412 and `t/{name}` is as it was: byte-identical,
    /// still there, not moved (or still missing, if it was).
    #[track_caller]
    fn assert_refused(self, s: &Server, name: &str, response: &Response, existed: bool) {
        response.assert_status(412);
        if self != Method::Head {
            response.assert_error(412);
            assert!(
                response.text().contains("precondition_failed"),
                "{self:?} {name}: {}",
                response.text()
            );
        }
        let (here, moved) = (format!("t/{name}"), format!("t/{name}.moved"));
        if existed {
            assert_eq!(s.read(&here), ORIGINAL, "{self:?} {name}: the file changed");
        } else {
            assert!(!s.exists(&here), "{self:?} {name}: a refused request created the file");
        }
        assert!(!s.exists(&moved), "{self:?} {name}: a refused move moved");
    }
}

/// One precondition of the table, built from the file's current ETag and mtime.
struct Case {
    what: &'static str,
    headers: fn(etag: &str, mtime: i64) -> Vec<String>,
    holds: bool,
}

const CASES: [Case; 10] = [
    Case {
        what: "If-Match with the current ETag",
        headers: |etag, _| vec![format!("If-Match: {etag}")],
        holds: true,
    },
    Case {
        what: "If-Match: *",
        headers: |_, _| vec!["If-Match: *".into()],
        holds: true,
    },
    Case {
        what: "If-Match with a list holding the current ETag",
        headers: |etag, _| vec![format!("If-Match: \"other\", {etag}")],
        holds: true,
    },
    Case {
        what: "If-Match with a stale ETag",
        headers: |_, _| vec!["If-Match: \"stale-etag\"".into()],
        holds: false,
    },
    Case {
        what: "If-Unmodified-Since a second after the file's date",
        headers: |_, mtime| vec![format!("If-Unmodified-Since: {}", http_date(mtime + 1))],
        holds: true,
    },
    Case {
        what: "If-Unmodified-Since the file's own date (it may have changed again within that second)",
        headers: |_, mtime| vec![format!("If-Unmodified-Since: {}", http_date(mtime))],
        holds: false,
    },
    Case {
        what: "If-Unmodified-Since an hour before the file's date",
        headers: |_, mtime| vec![format!("If-Unmodified-Since: {}", http_date(mtime - 3600))],
        holds: false,
    },
    Case {
        what: "If-Unmodified-Since that is not a date (ignored)",
        headers: |_, _| vec!["If-Unmodified-Since: yesterday".into()],
        holds: true,
    },
    Case {
        what: "If-Match true and If-Unmodified-Since false (If-Match wins)",
        headers: |etag, mtime| {
            vec![
                format!("If-Match: {etag}"),
                format!("If-Unmodified-Since: {}", http_date(mtime - 3600)),
            ]
        },
        holds: true,
    },
    Case {
        what: "If-Match false and If-Unmodified-Since true",
        headers: |_, mtime| {
            vec![
                "If-Match: \"stale-etag\"".into(),
                format!("If-Unmodified-Since: {}", http_date(mtime + 1)),
            ]
        },
        holds: false,
    },
];

#[test]
fn every_method_evaluates_if_match_and_if_unmodified_since() {
    let s = Server::start();
    let mut wrong = Vec::new();
    for (c, case) in CASES.iter().enumerate() {
        for method in METHODS {
            let name = format!("c{c}-{method:?}.txt");
            s.write(&format!("t/{name}"), ORIGINAL);
            let etag = s
                .head(&format!("/file/t/{name}"))
                .header("ETag")
                .expect("an ETag")
                .to_string();
            let headers = (case.headers)(&etag, mtime(&s, &format!("t/{name}")));
            let response = method.send(&s, &name, &headers);
            // Every combination is tried, and every wrong one named at the end.
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if case.holds {
                    method.assert_done(&s, &name, &response);
                } else {
                    method.assert_refused(&s, &name, &response, true);
                }
            }));
            if checked.is_err() {
                wrong.push(format!("{method:?} with {}: {}", case.what, response.status));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
}

/// An `If-None-Match` case: what it lists, made from the current ETag, and whether it holds.
type ListedCase = (&'static str, fn(&str) -> String, bool);

#[test]
fn if_none_match_on_a_write_is_412_while_the_file_is_a_listed_version() {
    let s = Server::start();
    let writes = &METHODS[..5];
    assert!(!writes.contains(&Method::Get) && !writes.contains(&Method::Head));
    let cases: [ListedCase; 4] = [
        ("the current ETag", |etag| etag.to_string(), false),
        ("the current ETag, weak", |etag| format!("W/{etag}"), false),
        ("*", |_| "*".to_string(), false),
        ("a stale ETag", |_| "\"stale-etag\"".to_string(), true),
    ];
    let mut wrong = Vec::new();
    for (c, (what, listed, holds)) in cases.iter().enumerate() {
        for &method in writes {
            let name = format!("inm{c}-{method:?}.txt");
            s.write(&format!("t/{name}"), ORIGINAL);
            let etag = s
                .head(&format!("/file/t/{name}"))
                .header("ETag")
                .expect("an ETag")
                .to_string();
            let response = method.send(&s, &name, &[format!("If-None-Match: {}", listed(&etag))]);
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if *holds {
                    method.assert_done(&s, &name, &response);
                } else {
                    method.assert_refused(&s, &name, &response, true);
                }
            }));
            if checked.is_err() {
                wrong.push(format!("{method:?} with If-None-Match {what}: {}", response.status));
            }
        }
    }
    assert!(wrong.is_empty(), "wrong answers:\n{}", wrong.join("\n"));
}

#[test]
fn if_match_on_a_missing_file_is_412_for_every_method() {
    let s = Server::start();
    s.write("t/keep", "so that t/ exists");
    for if_match in ["*", "\"some-etag\""] {
        for method in METHODS {
            let name = format!("missing-{method:?}.txt");
            let response = method.send(&s, &name, &[format!("If-Match: {if_match}")]);
            method.assert_refused(&s, &name, &response, false);
        }
    }
}

#[test]
fn if_unmodified_since_is_ignored_for_a_missing_file() {
    let s = Server::start();
    let date = format!("If-Unmodified-Since: {}", http_date(0));
    s.send("POST", "/file/new.txt", NEW, &[&date]).assert_status(200);
    assert_eq!(s.read("new.txt"), NEW);
}

#[test]
fn a_directory_has_no_etag_but_if_match_star_holds() {
    let s = Server::start();
    s.write("d1/f", "x");
    s.write("d2/f", "x");
    s.curl(&["-X", "DELETE", "-H", "If-Match: \"some-etag\"", &s.url("/file/d1")])
        .assert_status(412);
    assert!(s.exists("d1/f"), "a refused delete removed the directory");
    s.get_with("/file/d1/", &["If-Match: \"some-etag\""]).assert_status(412);
    s.curl(&["-X", "DELETE", "-H", "If-Match: *", &s.url("/file/d2")])
        .assert_status(200);
    assert!(!s.exists("d2"));
}

// ---- If-Modified-Since ----

#[test]
fn curl_z_skips_the_download_of_an_unchanged_file_and_fetches_a_changed_one() {
    let s = Server::start();
    s.write("data.csv", "a,b\n1,2\n");
    // Written a minute ago, so that a local copy dated a later second is not in the future.
    let a_minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(s.root().join("data.csv"))
        .and_then(|f| f.set_modified(a_minute_ago))
        .expect("date data.csv");
    let server_mtime = mtime(&s, "data.csv");
    let url = s.url("/file/data.csv");
    // curl itself hides a 200 whose Last-Modified is not newer (it says 304 and writes nothing):
    // the status line the server sent and the bytes that crossed the network tell.
    let curl_z = format!(
        "curl -sS -z local.csv -o local.csv -D head.txt -w '%{{size_download}}' '{url}' && echo && head -n1 head.txt | tr -d '\\r' && cat local.csv"
    );
    // A local copy dated after the server's (as `curl -z local -o local` without `-R` leaves
    // it: dated when it was downloaded): curl asks If-Modified-Since, gets 304, keeps it.
    let later = server_mtime + 1;
    let same = s.sh(&format!(
        "printf 'LOCAL COPY' > local.csv && touch -d @{later} local.csv && {curl_z}"
    ));
    same.assert_success();
    assert_eq!(
        String::from_utf8_lossy(&same.stdout),
        "0\nHTTP/1.1 304 Not Modified\nLOCAL COPY",
        "unchanged: no download"
    );
    // An older local copy is replaced by the server's.
    let older = server_mtime - 3600;
    let old = s.sh(&format!("touch -d @{older} local.csv && {curl_z}"));
    old.assert_success();
    assert_eq!(
        String::from_utf8_lossy(&old.stdout),
        "8\nHTTP/1.1 200 OK\na,b\n1,2\n",
        "changed: downloaded"
    );
}

/// A date later than the server's clock is invalid (RFC 9110 §13.1.3): the header is ignored
/// and the file sent, never a 304 that a client with a clock ahead would take for "current".
#[test]
fn if_modified_since_a_date_in_the_future_is_ignored() {
    let s = Server::start();
    s.write("data.csv", "a,b\n1,2\n");
    let tomorrow = mtime(&s, "data.csv") + 86_400;
    s.get_with(
        "/file/data.csv",
        &[&format!("If-Modified-Since: {}", http_date(tomorrow))],
    )
    .assert_ok_body(b"a,b\n1,2\n");
}

/// Rounds of the same-second replacement tests.
const SAME_SECOND_ROUNDS: usize = 5;

/// In each of [`SAME_SECOND_ROUNDS`] rounds, a client reads `path` (holding `v1`) and keeps its
/// `Last-Modified`; then another client replaces it with `v2` at once, within the same second
/// as a rule, so the date cannot tell the two versions apart. `wrong(round, date)` makes the
/// first client's conditional request with that date and says whether the server got it
/// wrong. Returns in how many rounds it did.
fn rounds_wrong_after_a_replacement(
    server: &Server,
    path: &str,
    (v1, v2): (&[u8], &[u8]),
    mut wrong: impl FnMut(usize, &str) -> bool,
) -> usize {
    (0..SAME_SECOND_ROUNDS)
        .filter(|&round| {
            server.post(path, v1).assert_status(200);
            let date = server
                .get(path)
                .header("Last-Modified")
                .expect("Last-Modified")
                .to_string();
            server.post(path, v2).assert_status(200);
            wrong(round, &date)
        })
        .count()
}

/// A file replaced within the second its client fetched it: a date cannot tell the two versions
/// apart (If-Modified-Since answers as RFC 9110 defines it, to the second), but the ETag the
/// client was given can: revalidating with `If-None-Match`, as caches and browsers do, is never
/// answered 304 for the replaced file, and it wins over a date sent beside it.
#[test]
fn if_none_match_tells_apart_a_file_replaced_in_the_same_second_where_a_date_cannot() {
    let server = Server::start();
    let path = "/file/status.txt";
    let stale = (0..SAME_SECOND_ROUNDS)
        .filter(|_| {
            server.post(path, b"running\n").assert_status(200);
            let first = server.get(path);
            let etag = first.header("ETag").expect("ETag").to_string();
            let date = first.header("Last-Modified").expect("Last-Modified").to_string();
            server.post(path, b"failed!\n").assert_status(200);
            let both = [format!("If-None-Match: {etag}"), format!("If-Modified-Since: {date}")];
            let both: Vec<&str> = both.iter().map(String::as_str).collect();
            server.get_with(path, &both).status == 304
        })
        .count();
    assert_eq!(
        stale, 0,
        "{stale} of {SAME_SECOND_ROUNDS} revalidations of a replaced file answered 304 (not modified)"
    );
}

/// The exact `Last-Modified` a client was given, sent back as `If-Modified-Since` for a file
/// that has not changed, is answered 304 (what `curl -R -z`, caches and REDbot expect).
#[test]
fn if_modified_since_the_last_modified_given_answers_304_while_unchanged() {
    let server = Server::start();
    server.post("/file/steady.txt", b"same\n").assert_status(200);
    let date = server
        .get("/file/steady.txt")
        .header("Last-Modified")
        .expect("Last-Modified")
        .to_string();
    let again = server.get_with("/file/steady.txt", &[&format!("If-Modified-Since: {date}")]);
    again.assert_status(304);
}

/// The same for a write: `If-Unmodified-Since` with the date a client read refuses (412) a
/// write over someone else's change made in the same second, rather than let it silently
/// replace a version the client never saw.
#[test]
fn if_unmodified_since_refuses_a_write_over_a_change_made_in_the_same_second() {
    let server = Server::start();
    let path = "/file/conf";
    let lost = rounds_wrong_after_a_replacement(&server, path, (b"v1\n", b"v2\n"), |i, date| {
        let mine = format!("mine{i}\n");
        let header = format!("If-Unmodified-Since: {date}");
        server.send("POST", path, mine.as_bytes(), &[&header]).status == 200
    });
    assert_eq!(
        lost, 0,
        "{lost} of {SAME_SECOND_ROUNDS} conditional writes overwrote a version they never saw"
    );
}

// ---- Cache-Control ----

#[test]
fn file_and_listing_responses_say_no_cache() {
    let s = Server::start();
    s.write("d/f.txt", "0123456789");
    let etag = s.head("/file/d/f.txt").header("ETag").expect("an ETag").to_string();
    let responses = [
        ("200", s.get("/file/d/f.txt")),
        ("HEAD", s.head("/file/d/f.txt")),
        ("206", s.get_with("/file/d/f.txt", &["Range: bytes=2-4"])),
        ("304", s.get_with("/file/d/f.txt", &[&format!("If-None-Match: {etag}")])),
        ("listing", s.get("/file/d")),
        ("JSON listing", s.get_with("/file/d", &["Accept: application/json"])),
        ("browse page", s.get_with("/file/d/", &["Accept: text/html"])),
    ];
    for (what, response) in &responses {
        assert!(response.status < 400, "{what}: {}", response.status);
        assert_eq!(response.header("Cache-Control"), Some("no-cache"), "{what}");
    }
}
