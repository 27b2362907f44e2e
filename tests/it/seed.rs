//! Compatibility with the original Node.js http-nas (the seed), as its users call it.
//!
//! docs/API.md promises that every job script written against the seed keeps working, so the README's
//! commands run here verbatim through `sh` (only the host `http://http-nas:3000` is replaced), and
//! the assertions of the seed's own test suite are ported one behaviour per test, each test
//! building the state the seed suite had reached at that point. Where the seed was wrong and
//! docs/API.md marks the behaviour **fixed** (double percent-decoding, counting an unterminated last
//! line), the tests pin the fixed behaviour.

use crate::support::{Server, assert_same_bytes, random_bytes};

/// The README's upload: a chunked POST of a local file.
const README_UPLOAD: &str = r#"cat /path/to/cat.jpg | curl -X POST -H "Transfer-Encoding: chunked" -s -f -T - http://http-nas:3000/file/cat.jpg"#;
/// The README's append: a chunked PUT.
const README_APPEND: &str = r#"printf "test append" | curl -X PUT -H "Transfer-Encoding: chunked" -s -f -T - http://http-nas:3000/file/mydata.csv"#;
/// The README's move: a PUT with a JSON body on the file's own URL.
const README_MOVE: &str = r#"curl -X PUT http://http-nas:3000/file/cat.jpg --header 'Content-Type: application/json' --data-raw '{ "path": "newcat.jpg" }'"#;

/// Uploads a ~3 MB random "cat.jpg" to `/file/{url_name}` with the README's command.
fn upload_cat(s: &Server, url_name: &str) -> Vec<u8> {
    let cat = random_bytes(3 << 20, 7);
    let local = s.scratch_file("cat.jpg", &cat);
    let command = README_UPLOAD
        .replace("/path/to/cat.jpg", &local.to_string_lossy())
        .replace("/file/cat.jpg", &format!("/file/{url_name}"));
    s.readme(&command);
    cat
}

#[test]
fn readme_chunked_upload_downloads_identical_bytes() {
    let s = Server::start();
    let cat = upload_cat(&s, "cat.jpg");
    let out = s.readme("curl http://http-nas:3000/file/cat.jpg");
    assert_same_bytes(&out.stdout, &cat, "curl of the uploaded cat.jpg");
}

#[test]
fn readme_append_creates_missing_file_then_appends() {
    let s = Server::start();
    s.readme(README_APPEND);
    assert_eq!(s.read("mydata.csv"), b"test append");
    s.readme(README_APPEND);
    assert_eq!(s.read("mydata.csv"), b"test appendtest append");
}

#[test]
fn readme_wc_prints_line_count_without_newline() {
    let s = Server::start();
    s.write("mydata.csv", "a,1\nb,2\nc,3\n");
    let out = s.readme("curl http://http-nas:3000/file/mydata.csv/wc");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3");
}

#[test]
fn wc_does_not_count_unterminated_last_line() {
    let s = Server::start();
    s.write("mydata.csv", "a\nb");
    s.get("/file/mydata.csv/wc").assert_ok_body("1");
}

#[test]
fn wc_of_empty_file_is_zero() {
    let s = Server::start();
    s.write("empty.csv", "");
    s.get("/file/empty.csv/wc").assert_ok_body("0");
}

#[test]
fn readme_upload_to_encoded_path_creates_directory() {
    let s = Server::start();
    let cat = upload_cat(&s, "mydirectory%2Fcat.jpg");
    assert!(s.root().join("mydirectory").is_dir());
    let encoded = s.get("/file/mydirectory%2Fcat.jpg");
    assert_same_bytes(&encoded.assert_status(200).body, &cat, "GET with %2F");
    let plain = s.get("/file/mydirectory/cat.jpg");
    assert_same_bytes(&plain.assert_status(200).body, &cat, "GET with /");
}

#[test]
fn readme_move_with_json_content_type_renames() {
    let s = Server::start();
    let cat = upload_cat(&s, "cat.jpg");
    let out = s.readme(README_MOVE);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("move reply is JSON");
    assert!(reply.get("error").is_none(), "move failed: {reply}");
    assert!(!s.exists("cat.jpg"));
    assert_same_bytes(&s.read("newcat.jpg"), &cat, "newcat.jpg on disk");
}

#[test]
fn move_code_form_renames_within_directory() {
    let s = Server::start();
    s.write("testdir/largefile", "large");
    let body = r#"{"path":"testdir%2Flargefilemoved"}"#;
    s.put_json("/file/testdir%2Flargefile/mv", body).assert_ok_json();
    assert!(!s.exists("testdir/largefile"));
    assert_eq!(s.read("testdir/largefilemoved"), b"large");
}

#[test]
fn move_code_form_creates_target_directory() {
    let s = Server::start();
    s.write("testdir/largefile", "large");
    let body = r#"{"path":"testmoved%2Flargefilemoved"}"#;
    s.put_json("/file/testdir%2Flargefile/mv", body).assert_ok_json();
    assert!(!s.exists("testdir/largefile"));
    assert_eq!(s.read("testmoved/largefilemoved"), b"large");
}

#[test]
fn move_replaces_existing_target_file() {
    let s = Server::start();
    s.write("new", "new contents");
    s.write("old", "old contents");
    s.put_json("/file/new/mv", r#"{"path":"old"}"#).assert_ok_json();
    assert!(!s.exists("new"));
    assert_eq!(s.read("old"), b"new contents");
}

#[test]
fn readme_delete_removes_file() {
    let s = Server::start();
    s.write("cat.jpg", "meow");
    s.readme("curl -X DELETE http://http-nas:3000/file/cat.jpg");
    assert!(!s.exists("cat.jpg"));
}

#[test]
fn delete_directory_removes_everything_in_it() {
    let s = Server::start();
    s.write("testdir/a", "1");
    s.write("testdir/sub/b", "2");
    s.delete("/file/testdir").assert_ok_json();
    assert!(!s.exists("testdir"));
}

#[test]
fn percent_decoding_happens_exactly_once() {
    let s = Server::start();
    s.post("/file/a%2525b", "x").assert_ok_json();
    assert_eq!(s.read("a%25b"), b"x");
    assert!(!s.exists("a%b"));
    s.get("/file/a%2525b").assert_ok_body("x");
}

// ---- the seed's own test suite, one behaviour per test ----

#[test]
fn seed_suite_health_probe_answers_ok() {
    let s = Server::start();
    s.get("/file").assert_ok_body("OK");
}

#[test]
fn seed_suite_missing_file_is_404() {
    let s = Server::start();
    s.get("/file/blah").assert_error(404);
}

#[test]
fn seed_suite_post_then_get_returns_contents() {
    let s = Server::start();
    s.post("/file/testfile", "file contents").assert_ok_json();
    s.get("/file/testfile").assert_ok_body("file contents");
}

#[test]
fn seed_suite_post_to_encoded_path_creates_directory_and_lists_it() {
    let s = Server::start();
    s.post("/file/testdir%2Ftestfile2", "file contents in directory")
        .assert_ok_json();
    assert!(s.root().join("testdir").is_dir());
    s.get("/file/testdir%2Ftestfile2")
        .assert_ok_body("file contents in directory");
    s.get("/file/testdir").assert_ok_body("testfile2\n");
}

#[test]
fn seed_suite_wc_then_append_a_line() {
    let s = Server::start();
    s.post("/file/testfileML", "file contents\nline2\nline3\n")
        .assert_ok_json();
    s.get("/file/testfileML/wc").assert_ok_body("3");
    s.append("/file/testfileML", "line4\n").assert_ok_json();
    assert_eq!(s.read("testfileML"), b"file contents\nline2\nline3\nline4\n");
}

#[test]
fn seed_suite_64_mib_upload_round_trips_and_lists_sorted() {
    let s = Server::start();
    let large = random_bytes(64 << 20, 64);
    s.post("/file/testdir%2Ftestfile2", "file contents in directory")
        .assert_ok_json();
    s.post("/file/testdir%2Flargefile", &large).assert_ok_json();
    assert_same_bytes(&s.read("testdir/largefile"), &large, "largefile on disk");
    let download = s.get("/file/testdir%2Flargefile");
    assert_same_bytes(&download.assert_status(200).body, &large, "GET largefile");
    s.get("/file/testdir").assert_ok_body("largefile\ntestfile2\n");
}

#[test]
fn seed_suite_move_of_missing_file_without_body_is_404() {
    let s = Server::start();
    s.curl(&["-X", "PUT", &s.url("/file/nofile.txt/mv")]).assert_error(404);
}

#[test]
fn seed_suite_moves_within_and_into_new_directory() {
    let s = Server::start();
    s.post("/file/testdir%2Flargefile", "large").assert_ok_json();
    let within = r#"{"path":"testdir%2Flargefilemoved"}"#;
    s.put_json("/file/testdir%2Flargefile/mv", within).assert_ok_json();
    assert_eq!(s.read("testdir/largefilemoved"), b"large");
    let across = r#"{"path":"testmoved%2Flargefilemoved"}"#;
    s.put_json("/file/testdir%2Flargefilemoved/mv", across).assert_ok_json();
    assert_eq!(s.read("testmoved/largefilemoved"), b"large");
    assert!(!s.exists("testdir/largefile") && !s.exists("testdir/largefilemoved"));
}

#[test]
fn seed_suite_delete_removes_files_and_directories() {
    let s = Server::start();
    for rel in [
        "largefileinput",
        "testfile",
        "testdir/testfile2",
        "testmoved/largefilemoved",
    ] {
        s.write(rel, "x");
    }
    for name in ["largefileinput", "testfile", "testdir", "testmoved"] {
        s.delete(&format!("/file/{name}")).assert_ok_json();
        assert!(!s.exists(name), "{name} still exists after DELETE");
    }
    s.get("/file/").assert_ok_body("");
}
