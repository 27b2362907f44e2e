//! The path jail: no request reaches outside the storage root, and names mean what docs/API.md says.
//!
//! The root is `<temp>/root`; `<temp>` holds two sentinels, `secret.txt` and `victim.txt`. Every
//! verb is sent every spelling of "outside" we know (encoded and raw `..`, double encoding,
//! absolute paths, NUL, `.`, backslashes) with curl `--path-as-is`, so the bytes reach the server
//! unnormalised. A spelling that decodes to a `..`/`.` segment, a NUL or a leading `/` must be a
//! 400 with a JSON error; one that decodes to a legal single name (`..%252F` is the name `..%2F`)
//! may be served like any other name. Either way the sentinels stay byte-identical and nothing
//! new appears beside the root. Each verb test reports all failing spellings at once.
//!
//! Symlinks are the other way out: one leading outside is a 403 whatever the verb, one staying
//! inside works like its target.
//!
//! Also here: names that are not what they seem (a path through a file, reserved `.http-nas-`
//! names, suffix-route names reached with an encoded slash, multibyte endings), and a symlink
//! moved inside the root during an upload.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::thread;
use std::time::Duration;

use crate::support::races::{Attached, shared_root, start_request};
use crate::support::{RESERVED_PREFIX, Response, Server};

const SECRET: &str = "secret";
const VICTIM: &str = "victim";

/// Spellings that decode (once) to a path docs/API.md refuses with 400; relative to `/file/`,
/// each reaching `<temp>/secret.txt` if the server resolved it naively.
const REFUSED: &[&str] = &[
    "..%2Fsecret.txt",
    "%2E%2E%2Fsecret.txt",
    "%2e%2e%2fsecret.txt",
    "%2e%2e/secret.txt",
    ".%2E/secret.txt",
    "../secret.txt",
    "a/../../secret.txt",
    "a%2F..%2F..%2Fsecret.txt",
    "a/%2e%2e/%2e%2e/secret.txt",
    "..",
    "%2E%2E",
    ".",
    "%2E",
    "./x",
    "x/.",
    "a%00b",
    "%00",
];

/// Spellings of system files, only sent to verbs that cannot write.
const REFUSED_READ_ONLY: &[&str] = &[
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
];

/// Spellings that decode to one legal name inside the root (`..%2Fsecret.txt`, `..\secret.txt`,
/// `...`): served or refused as the server likes, but never resolved outside.
const HARMLESS: &[&str] = &[
    "..%252Fsecret.txt",
    "%252E%252E%252Fsecret.txt",
    "..%5Csecret.txt",
    "%2e%2e%5csecret.txt",
    "..%5C..%5Csecret.txt",
    "...",
];

/// What a verb can do, which decides the spellings it gets and whether its errors have a body.
#[derive(Clone, Copy, PartialEq)]
enum Verb {
    Read,
    Head,
    Write,
}

/// A server with the two sentinels beside its root.
fn jail() -> Server {
    let s = Server::start();
    plant_sentinels(&s);
    s
}

fn plant_sentinels(s: &Server) {
    fs::write(s.outside().join("secret.txt"), SECRET).unwrap();
    fs::write(s.outside().join("victim.txt"), VICTIM).unwrap();
}

/// An absolute path to `<temp>/name`, as `/…` and as one `%2F`-encoded segment.
fn absolute_spellings(s: &Server, name: &str) -> [String; 2] {
    let abs = s.outside().join(name).to_string_lossy().into_owned();
    [abs.clone(), abs.replace('/', "%2F")]
}

/// Why the outside of the root is not exactly root + the two sentinels, if it is not.
fn outside_problem(s: &Server) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(s.outside())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names != ["root", "secret.txt", "victim.txt"] {
        return Some(format!("outside the root now holds {names:?}"));
    }
    for (name, expected) in [("secret.txt", SECRET), ("victim.txt", VICTIM)] {
        let found = fs::read(s.outside().join(name)).unwrap_or_default();
        if found != expected.as_bytes() {
            return Some(format!("{name} now holds {:?}", String::from_utf8_lossy(&found)));
        }
    }
    (!s.root().is_dir()).then(|| "the root is gone".to_string())
}

/// Puts the outside back as `jail` left it, so one failure does not cascade.
fn restore_outside(s: &Server) {
    for entry in fs::read_dir(s.outside()).unwrap().flatten() {
        if entry.file_name() != "root" {
            let path = entry.path();
            let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir_all(&path));
        }
    }
    fs::create_dir_all(s.root()).unwrap();
    plant_sentinels(s);
}

/// Why `response` to a spelling that must be refused is wrong, if it is.
fn refusal_problem(response: &Response, verb: Verb) -> Option<String> {
    match verb {
        Verb::Head => (response.status != 400).then(|| format!("expected 400, got {}", response.status)),
        _ => response.error_problem(400),
    }
}

/// Why `response` to a legal-name spelling is wrong, if it is.
fn harmless_problem(response: &Response) -> Option<String> {
    (![200, 400, 404].contains(&response.status))
        .then(|| format!("expected 200, 400 or 404 for a legal name, got {}", response.status))
}

/// Sends every spelling through `send` on one server; panics listing every one that failed.
fn check_spellings(verb: Verb, send: impl Fn(&Server, &str) -> Response) {
    let s = jail();
    let mut spellings: Vec<(String, bool)> = REFUSED.iter().map(|p| (p.to_string(), true)).collect();
    let [abs, encoded] = absolute_spellings(&s, "secret.txt");
    spellings.extend([(abs, true), (encoded, true)]);
    if verb != Verb::Write {
        spellings.extend(REFUSED_READ_ONLY.iter().map(|p| (p.to_string(), true)));
    }
    spellings.extend(HARMLESS.iter().map(|p| (p.to_string(), false)));

    let mut failures = Vec::new();
    for (spelling, refused) in &spellings {
        let response = send(&s, spelling);
        let problem = if *refused {
            refusal_problem(&response, verb)
        } else {
            harmless_problem(&response)
        };
        let leaked = (response.body == SECRET.as_bytes()).then(|| "the body is the secret".to_string());
        if let Some(problem) = problem.or(leaked).or_else(|| outside_problem(&s)) {
            failures.push(format!("/file/{spelling}: {problem}\n{}", response.context));
            restore_outside(&s);
        }
    }
    assert!(
        failures.is_empty(),
        "{} spelling(s) escaped or were mishandled:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ---- every verb, every spelling ----

#[test]
fn get_never_reads_outside_root() {
    check_spellings(Verb::Read, |s, p| s.get(&format!("/file/{p}")));
}

#[test]
fn head_never_reads_outside_root() {
    check_spellings(Verb::Head, |s, p| s.head(&format!("/file/{p}")));
}

#[test]
fn wc_never_reads_outside_root() {
    check_spellings(Verb::Read, |s, p| s.get(&format!("/file/{p}/wc")));
}

#[test]
fn post_never_writes_outside_root() {
    check_spellings(Verb::Write, |s, p| s.post(&format!("/file/{p}"), "pwned"));
}

#[test]
fn append_never_writes_outside_root() {
    check_spellings(Verb::Write, |s, p| s.append(&format!("/file/{p}"), "pwned"));
}

#[test]
fn delete_never_deletes_outside_root() {
    check_spellings(Verb::Write, |s, p| s.delete(&format!("/file/{p}")));
}

#[test]
fn move_readme_form_never_moves_from_outside_root() {
    check_spellings(Verb::Write, |s, p| {
        s.put_json(&format!("/file/{p}"), r#"{"path":"moved.txt"}"#)
    });
}

#[test]
fn move_code_form_never_moves_from_outside_root() {
    check_spellings(Verb::Write, |s, p| {
        s.put_json(&format!("/file/{p}/mv"), r#"{"path":"moved.txt"}"#)
    });
}

#[test]
fn move_refuses_json_targets_outside_root() {
    let s = jail();
    s.write("src.txt", "src");
    let [abs, encoded] = absolute_spellings(&s, "victim.txt");
    let plain = [
        "../victim.txt",
        "..%2Fvictim.txt",
        "%2E%2E%2Fvictim.txt",
        "a/../../victim.txt",
        "/tmp/x",
        ".",
        "..",
        "",
        "a%00b",
        "a\0b",
    ];
    for target in plain.iter().copied().chain([abs.as_str(), encoded.as_str()]) {
        for url in ["/file/src.txt", "/file/src.txt/mv"] {
            let response = s.put_json(url, &serde_json::json!({ "path": target }).to_string());
            let problem = response.error_problem(400).or_else(|| outside_problem(&s));
            let source = fs::read(s.root().join("src.txt")).unwrap_or_default();
            let problem = problem.or_else(|| (source != b"src").then(|| "the source changed".into()));
            if let Some(problem) = problem {
                response.fail(&format!("move of src.txt to {target:?} via {url}: {problem}"));
            }
        }
    }
}

#[test]
fn delete_of_root_is_refused() {
    let s = jail();
    s.write("keep", "kept");
    let response = s.delete("/file/");
    if !(400..500).contains(&response.status) {
        response.fail("DELETE /file/ must not delete the root");
    }
    assert_eq!(s.read("keep"), b"kept");
    assert_eq!(outside_problem(&s), None);
}

// ---- symlinks ----

/// A jail with `root/link -> <temp>` and `root/s -> <temp>/secret.txt`.
fn jail_with_escaping_links() -> Server {
    let s = jail();
    symlink(s.outside(), s.root().join("link")).unwrap();
    symlink(s.outside().join("secret.txt"), s.root().join("s")).unwrap();
    s.write("src.txt", "src");
    s
}

/// Every response is a 403 with a JSON error, and the outside is intact.
#[track_caller]
fn assert_forbidden(s: &Server, responses: &[Response]) {
    for response in responses {
        if let Some(problem) = response.error_problem(403).or_else(|| outside_problem(s)) {
            response.fail(&problem);
        }
    }
}

#[test]
fn reads_through_escaping_symlinks_are_403() {
    let s = jail_with_escaping_links();
    let responses = [
        s.get("/file/link/secret.txt"),
        s.get("/file/link%2Fsecret.txt"),
        s.get("/file/link"),
        s.get("/file/s"),
        s.get("/file/s/wc"),
        s.get("/file/link/secret.txt/wc"),
    ];
    assert_forbidden(&s, &responses);
    s.head("/file/s").assert_status(403);
}

#[test]
fn writes_through_escaping_symlinks_are_403() {
    let s = jail_with_escaping_links();
    let responses = [
        s.post("/file/link/new.txt", "pwned"),
        s.post("/file/link/secret.txt", "pwned"),
        s.post("/file/s", "pwned"),
        s.append("/file/s", "pwned"),
        s.append("/file/link/secret.txt", "pwned"),
    ];
    assert_forbidden(&s, &responses);
}

#[test]
fn deletes_through_escaping_symlinks_are_403() {
    let s = jail_with_escaping_links();
    let responses = [s.delete("/file/link/secret.txt"), s.delete("/file/s")];
    assert_forbidden(&s, &responses);
}

#[test]
fn moves_through_escaping_symlinks_are_403() {
    let s = jail_with_escaping_links();
    let responses = [
        s.put_json("/file/link%2Fsecret.txt/mv", r#"{"path":"stolen.txt"}"#),
        s.put_json("/file/s/mv", r#"{"path":"stolen.txt"}"#),
        s.put_json("/file/src.txt/mv", r#"{"path":"link/planted.txt"}"#),
        s.put_json("/file/src.txt/mv", r#"{"path":"link%2Fvictim.txt"}"#),
    ];
    assert_forbidden(&s, &responses);
    assert_eq!(s.read("src.txt"), b"src");
}

/// A jail with `real.txt`, `dir/f.txt`, and links staying inside: `alias -> real.txt` and
/// `dirlink -> <root>/dir`.
fn jail_with_inside_links() -> Server {
    let s = jail();
    s.write("real.txt", "one\ntwo\n");
    s.write("dir/f.txt", "in dir");
    symlink("real.txt", s.root().join("alias")).unwrap();
    symlink(s.root().join("dir"), s.root().join("dirlink")).unwrap();
    s
}

#[test]
fn symlinks_inside_root_work_like_their_target() {
    let s = jail_with_inside_links();
    s.get("/file/alias").assert_ok_body("one\ntwo\n");
    s.get("/file/alias/wc").assert_ok_body("2");
    s.get("/file/dirlink/f.txt").assert_ok_body("in dir");
}

#[test]
fn listings_show_nothing_of_what_escaping_symlinks_point_at() {
    let s = jail_with_escaping_links();
    let listing = s.get_with("/file/", &["Accept: application/json"]);
    let entries = listing.assert_ok_json();
    let entry = |name: &str| {
        let found = entries.as_array().and_then(|a| a.iter().find(|e| e["name"] == name));
        found
            .cloned()
            .unwrap_or_else(|| listing.fail(&format!("no entry {name:?}")))
    };
    // `s` leads to the secret file and `link` to the directory outside: neither shows.
    for name in ["s", "link"] {
        let e = entry(name);
        if e["type"] != "file" || e["size"] != 0 {
            listing.fail(&format!("{name:?} describes what it points at outside the root: {e}"));
        }
    }
    s.get("/file/").assert_ok_body("link\ns\nsrc.txt\n");
}

#[test]
fn listings_follow_symlinks_that_stay_inside_the_root() {
    let s = jail_with_inside_links();
    s.get("/file/").assert_ok_body("alias\ndir\ndirlink\nreal.txt\n");
    let entries = s.get_with("/file/", &["Accept: application/json"]).assert_ok_json();
    assert_eq!(entries[0]["size"], 8, "{entries}");
}

#[test]
fn moving_a_symlink_onto_its_own_target_is_409_and_keeps_the_file() {
    let s = jail();
    s.write("data.txt", "important");
    s.write("d2/real", "also important");
    symlink("data.txt", s.root().join("alias")).unwrap();
    symlink("d2/real", s.root().join("lnk2")).unwrap();
    s.put_json("/file/alias", r#"{"path":"data.txt"}"#).assert_error(409);
    s.put_json("/file/lnk2/mv", r#"{"path":"d2%2Freal"}"#).assert_error(409);
    s.put_json("/file/data.txt/mv", r#"{"path":"alias"}"#).assert_error(409);
    s.get("/file/data.txt").assert_ok_body("important");
    s.get("/file/d2/real").assert_ok_body("also important");
}

#[test]
fn a_planted_journal_cannot_make_the_start_up_sweep_touch_files_outside_the_root() {
    use std::os::unix::fs::MetadataExt;
    let mut s = jail();
    let victim = s.outside().join("victim.txt");
    let ino = fs::metadata(&victim).unwrap().ino();
    symlink(&victim, s.root().join("lnk")).unwrap();
    let root = s.root();
    let plant = |dir: &str, name: &str, before: u64, created: u8| {
        let journal = root.join(dir).join(format!(".http-nas-journal-{ino}"));
        fs::create_dir_all(journal.parent().unwrap()).unwrap();
        let text = format!("http-nas append journal v1\n{before}\n{created}\n{name}\n");
        fs::write(journal, text).unwrap();
    };
    plant("", "../victim.txt", 0, 1);
    plant("k", "../../victim.txt", 1, 0);
    plant("m", "../lnk", 2, 0);
    s.restart();
    assert!(outside_problem(&s).is_none(), "{:?}", outside_problem(&s));
    plant("", "lnk", 1, 0);
    s.restart();
    assert!(outside_problem(&s).is_none(), "{:?}", outside_problem(&s));
    assert_eq!(fs::read(&victim).unwrap(), VICTIM.as_bytes());
}

// ---- names ----

#[test]
fn wc_suffix_counts_lines_of_the_file_before_it() {
    let s = Server::start();
    s.write("dir", "a\nb\nc\n");
    s.get("/file/dir/wc").assert_ok_body("3");
}

#[test]
fn file_named_wc_is_reached_with_encoded_slash() {
    let s = Server::start();
    s.write("dir/wc", "I am a file called wc");
    s.get("/file/dir%2Fwc").assert_ok_body("I am a file called wc");
    s.get("/file/dir/wc").assert_error(409);
}

#[test]
fn file_named_mv_is_reached_with_encoded_slash() {
    let s = Server::start();
    s.post("/file/dir%2Fmv", "I am a file called mv").assert_ok_json();
    assert_eq!(s.read("dir/mv"), b"I am a file called mv");
    s.get("/file/dir%2Fmv").assert_ok_body("I am a file called mv");
}

#[test]
fn reserved_temp_prefix_is_refused() {
    let s = Server::start();
    let name = format!("{RESERVED_PREFIX}mine");
    s.post(&format!("/file/{name}"), "x").assert_error(400);
    s.post(&format!("/file/dir%2F{name}"), "x").assert_error(400);
    s.append(&format!("/file/{name}"), "x").assert_error(400);
    s.get(&format!("/file/{name}")).assert_error(400);
    s.delete(&format!("/file/{name}")).assert_error(400);
    s.write("src.txt", "src");
    s.put_json("/file/src.txt/mv", &format!(r#"{{"path":"{name}"}}"#))
        .assert_error(400);
    assert!(s.temp_files().is_empty(), "created {:?}", s.temp_files());
}

#[test]
fn listing_never_shows_reserved_names() {
    let s = Server::start();
    s.write("dir/visible", "v");
    s.write(&format!("dir/{RESERVED_PREFIX}leftover"), "partial");
    s.get("/file/dir").assert_ok_body("visible\n");
}

#[test]
fn moving_an_in_root_symlink_during_an_upload_never_writes_outside_the_root() {
    // x/y/s -> ../outside points inside the root; moved to b2 (while an upload into b2 is in
    // flight and b2 itself was moved away), the same relative link points outside.
    let s = Server::start();
    let root = s.root();
    fs::create_dir_all(root.join("b2")).unwrap();
    fs::create_dir_all(root.join("x/y")).unwrap();
    fs::create_dir_all(root.join("x/outside")).unwrap();
    std::os::unix::fs::symlink("../outside", root.join("x/y/s")).unwrap();
    let escaped = s.outside().join("outside");
    fs::create_dir_all(&escaped).unwrap();
    for (method, path) in [("POST", "/file/b2/secret.txt"), ("PUT", "/file/b2/appended.txt")] {
        fs::create_dir_all(root.join("b2")).unwrap();
        let body = b"uploaded through the API\n";
        let mut conn = start_request(&s, method, path, &[], body, 5);
        thread::sleep(Duration::from_millis(200));
        s.put_json("/file/b2/mv", r#"{"path": "b3"}"#).assert_ok_json();
        s.put_json("/file/x%2Fy%2Fs/mv", r#"{"path": "b2"}"#).assert_ok_json();
        conn.send(&body[5..]);
        let answer = conn.response();
        let outside: Vec<_> = fs::read_dir(&escaped)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            outside.is_empty(),
            "{method} wrote outside the root: {outside:?} (answered {})",
            answer.status
        );
        assert_eq!(answer.status, 403, "{method}: {}", answer.text());
        fs::remove_file(root.join("b2")).unwrap();
        fs::rename(root.join("b3"), root.join("b2")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("x/y/s")).unwrap();
    }
}

#[test]
fn a_listing_or_stat_never_shows_a_directory_outside_the_root() {
    // a/secretdir is listed while another replica moves `a` away and an in-root link
    // `q/l -> ../releases` to `a`, where it points outside. Every directory is opened by handle
    // from the root, so the listing is of the in-root directory or refused, never the outside.
    let (home, root) = shared_root();
    let outside = home.path().join("releases/secretdir/OUTSIDE-private-dir");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(root.join("releases")).unwrap();
    fs::create_dir_all(root.join("q")).unwrap();
    // One worker, whose third openat (the listing) or statx (the stat) is slowed: after the
    // checks of the path, where a re-walk of it by name would follow the moved link.
    let a = Server::start_on(&root, &["--workers", "1"]);
    let b = Server::start_on(&root, &[]);
    for (i, (path, call)) in [("/file/a/secretdir/", "openat"), ("/file/a/secretdir/check", "statx")]
        .into_iter()
        .enumerate()
    {
        fs::create_dir_all(root.join("a/secretdir/inroot-dir")).unwrap();
        std::os::unix::fs::symlink("../releases", root.join("q/l")).unwrap();
        let slow = Attached::inject(a.pid(), call, "delay_enter=1500000:when=3");
        thread::scope(|scope| {
            let read = scope.spawn(|| a.get_with(path, &["Accept: application/json"]));
            thread::sleep(Duration::from_millis(500));
            b.put_json("/file/a/mv", &format!(r#"{{"path": "a.old{i}"}}"#))
                .assert_ok_json();
            b.put_json("/file/q%2Fl/mv", r#"{"path": "a"}"#).assert_ok_json();
            let got = read.join().unwrap();
            assert!(
                !got.text().contains("OUTSIDE"),
                "{path} showed the outside: {}",
                got.text()
            );
            let outside_ino = fs::metadata(&outside).unwrap().ino().to_string();
            assert!(
                !got.text().contains(&format!("\"ino\":{outside_ino}")),
                "{path} stat the outside"
            );
        });
        drop(slow);
        fs::remove_file(root.join("a")).unwrap();
    }
}

#[test]
fn links_inside_the_root_work_like_their_targets_even_when_dangling() {
    let s = Server::start();
    let root = s.root();
    s.write("sub/inner.txt", "in");
    std::os::unix::fs::symlink("sub", root.join("dlink")).unwrap();
    s.get("/file/dlink").assert_ok_body("inner.txt\n");
    s.get("/file/dlink/").assert_ok_body("inner.txt\n");
    std::os::unix::fs::symlink("target.txt", root.join("dangling")).unwrap();
    s.get("/file/dangling").assert_status(404).assert_error(404);
    s.get("/file/dangling/check").assert_error(404);
    s.put_json("/file/dangling/mv", r#"{"path": "moved-link"}"#)
        .assert_ok_json();
    assert!(fs::symlink_metadata(root.join("moved-link")).is_ok_and(|m| m.file_type().is_symlink()));
    s.delete("/file/moved-link").assert_ok_json();
    assert!(!s.exists("moved-link"));
}

#[test]
fn a_path_through_a_file_names_nothing() {
    let s = Server::start();
    s.write("plain.txt", "x");
    for path in ["/file/plain.txt/x", "/file/plain.txt/x/check", "/file/plain.txt/x/wc"] {
        let got = s.get(path);
        assert_eq!((got.status, got.text().as_str()), (404, "Not Found"), "GET {path}");
    }
    let deleted = s.delete("/file/plain.txt/x");
    assert_eq!((deleted.status, deleted.text().as_str()), (404, "Not Found"));
    s.post("/file/plain.txt/x", "y").assert_error(409);
}

#[test]
fn a_name_ending_in_a_multibyte_character_never_stops_the_server() {
    // Found by fuzzing api::parse: slicing the last three bytes of "éé" as a str panicked, in
    // the reactor, the one thread every client needs.
    let s = Server::start();
    s.write("\u{e9}\u{e9}", "accents\n");
    let mut conn = s.connect();
    conn.send("GET /file/\u{e9}\u{e9} HTTP/1.1\r\nHost: t\r\n\r\n".as_bytes());
    conn.response().assert_ok_body("accents\n");
    let mut conn = s.connect();
    conn.send("POST /file/x\u{e9}\u{e9}%2F HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx".as_bytes());
    assert_eq!(conn.response().status, 400);
    s.assert_healthy();
}
