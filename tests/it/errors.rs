//! Error messages that say what to do: a mistyped URL, an empty path, a directory in the way,
//! a missing token and a body that never came each get a message naming the URL form, the
//! path, the header or the setting at fault and the next step, while the status, the kind and
//! the seed's plain `Not Found` stay as they were.

use crate::support::{Response, Server};

const JSON: &str = "Accept: application/json";

/// The JSON error body's `message`, after checking the status and the contract's error form.
#[track_caller]
fn message(resp: &Response, status: u16) -> String {
    resp.assert_error(status);
    let json: serde_json::Value =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| resp.fail(&format!("expected a JSON error body: {e}")));
    json["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_mistyped_url_is_the_seeds_not_found_for_scripts_and_names_the_file_urls_for_json() {
    let s = Server::start();
    s.write("x", "x");
    for typo in ["/files/x", "/fil/x", "/File/x", "/filex", "/x"] {
        let plain = s.get(typo);
        plain.assert_status(404);
        if plain.body != b"Not Found" {
            plain.fail(&format!("{typo}: a script's 404 body stays exactly `Not Found`"));
        }
        let resp = s.get_with(typo, &[JSON]);
        let text = message(&resp, 404);
        if !text.contains("/file/{path}") {
            resp.fail(&format!("{typo}: the message should name /file/{{path}}: {text:?}"));
        }
    }
    // A missing file under the right URL keeps its own message.
    let text = message(&s.get_with("/file/missing", &[JSON]), 404);
    assert_eq!(text, "no such file or directory");
}

#[test]
fn an_empty_path_says_which_url_form_is_expected() {
    let s = Server::start();
    for resp in [s.post("/file/", "x"), s.append("/file/d/", "x"), s.delete("/file/")] {
        let text = message(&resp, 400);
        if !text.starts_with("path is empty") || !text.contains("/file/{path}") {
            resp.fail(&format!("the message should say the form /file/{{path}}: {text:?}"));
        }
    }
}

#[test]
fn a_directory_in_the_way_is_named() {
    let s = Server::start();
    s.post("/file/data/runs/one.csv", "a,b\n").assert_status(200);
    for resp in [
        s.post("/file/data/runs", "x"),
        s.append("/file/data/runs", "x"),
        s.get("/file/data/runs/wc"),
    ] {
        let text = message(&resp, 409);
        if !text.starts_with("a directory is in the way") || !text.contains("data/runs is a directory") {
            resp.fail(&format!("the message should name data/runs: {text:?}"));
        }
    }
    let resp = s.post("/file/data/runs/one.csv/deeper", "x");
    let text = message(&resp, 409);
    if !text.contains("data/runs/one.csv/deeper") {
        resp.fail(&format!("the message should name the path: {text:?}"));
    }
}

#[test]
fn a_missing_token_is_told_the_header_form() {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", "sesame")], &[]);
    let resp = s.get("/file/x");
    let text = message(&resp, 401);
    if !text.contains("Authorization: Bearer <token>") {
        resp.fail(&format!("the message should show the header: {text:?}"));
    }
    s.get_with("/file/", &["Authorization: Bearer sesame"])
        .assert_status(200);
}

#[test]
fn a_request_that_announces_a_body_and_sends_none_is_told_to_send_it() {
    // `curl -X PUT -H 'Content-Length: 5' URL` with the data forgotten: the server waits
    // --io-timeout, then says what was missing and how to send it.
    let s = Server::start_with(&["--io-timeout", "1"]);
    let mut conn = s.connect();
    conn.send(b"PUT /file/log HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\nContent-Length: 5\r\n\r\n");
    let resp = conn.response();
    let text = message(&resp, 408);
    for hint in ["--io-timeout", "Content-Length or chunked", "curl -T FILE"] {
        if !text.contains(hint) {
            resp.fail(&format!("the 408 should say {hint:?}: {text:?}"));
        }
    }
    assert!(!s.exists("log"), "nothing was written");
}

#[test]
fn a_body_that_stops_halfway_is_told_how_much_came() {
    // A sender that dies mid-upload: the 408 says how far it got, so the user looks at the
    // sender (or its Content-Length) rather than at a request that "sent nothing".
    let s = Server::start_with(&["--io-timeout", "1"]);
    let mut conn = s.connect();
    conn.send(b"PUT /file/log HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\nContent-Length: 10\r\n\r\nabcd");
    let resp = conn.response();
    let text = message(&resp, 408);
    for hint in ["received 4 of 10 bytes", "then nothing for --io-timeout"] {
        if !text.contains(hint) {
            resp.fail(&format!("the 408 should say {hint:?}: {text:?}"));
        }
    }
    let mut conn = s.connect();
    conn.send(
        b"POST /file/chunked HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    let resp = conn.response();
    let text = message(&resp, 408);
    for hint in ["received 3 bytes of a chunked body", "then nothing for --io-timeout"] {
        if !text.contains(hint) {
            resp.fail(&format!("the 408 should say {hint:?}: {text:?}"));
        }
    }
    assert!(!s.exists("log") && !s.exists("chunked"), "nothing was written");
}

/// Starts the binary on a loopback port with `args` and only the variables in `env`, and
/// returns its exit code (`None`: still running after the wait, then killed) and its stderr.
fn start_refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::support::server_binary())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn http-nas");
    let exited = crate::support::wait_until(crate::support::SETTLE_TIMEOUT, || {
        child.try_wait().is_ok_and(|s| s.is_some())
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait for http-nas");
    (
        out.status.code().filter(|_| exited),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_storage_root_that_is_not_a_directory_exits_2_naming_the_setting_used() {
    let home = crate::support::TempDir::new();
    let missing = home.path().join("missing");
    let file = home.path().join("a-file");
    std::fs::write(&file, "x").expect("write a file");
    let (missing, file) = (missing.to_str().unwrap(), file.to_str().unwrap());
    for (case, args, env, names) in [
        ("a missing --storage", vec!["--storage", missing], vec![], "--storage"),
        ("a file as --storage", vec!["--storage", file], vec![], "--storage"),
        (
            "a missing STORAGE_PATH",
            vec![],
            vec![("STORAGE_PATH", missing)],
            "STORAGE_PATH (--storage)",
        ),
    ] {
        let (code, stderr) = start_refused(&args, &env);
        assert_eq!(
            code,
            Some(2),
            "{case}: a configuration mistake exits 2; stderr:\n{stderr}"
        );
        for hint in [names, "must be an existing, writable directory"] {
            assert!(stderr.contains(hint), "{case}: stderr should say {hint:?}:\n{stderr}");
        }
    }
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable_and_its_flag() {
    let home = crate::support::TempDir::new();
    let root = home.path().to_str().unwrap();
    for (var, value, flag) in [
        ("HTTP_NAS_WORKERS", "abc", "--workers"),
        ("HTTP_NAS_IO_TIMEOUT", "0", "--io-timeout"),
        ("HTTP_NAS_FSYNC", "maybe", "--fsync"),
    ] {
        let (code, stderr) = start_refused(&["--storage", root], &[(var, value)]);
        let named = format!("{var} ({flag}) must be");
        assert_eq!(code, Some(2), "{var}={value}: stderr:\n{stderr}");
        assert!(
            stderr.contains(&named),
            "{var}={value}: stderr should say {named:?}:\n{stderr}"
        );
    }
    // Given as a flag, the message names the flag alone, as before.
    let (code, stderr) = start_refused(&["--storage", root, "--workers", "abc"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--workers must be a whole number"), "{stderr}");
}

#[test]
fn a_wrong_token_and_a_malformed_header_are_told_apart_from_a_missing_token() {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", "sesame")], &[]);
    let missing = message(&s.get("/file/x"), 401);
    assert!(
        missing.starts_with("a valid bearer token is required: send it as the header `Authorization: Bearer <token>`"),
        "{missing:?}"
    );
    for (header, says, secret) in [
        (
            "Authorization: Bearer sesam3-typo",
            "this token is not accepted here (check for a typo or an old token)",
            "sesam3-typo",
        ),
        (
            "Authorization: Token sesame",
            "the Authorization header must be `Bearer <token>`",
            "sesame",
        ),
        (
            "Authorization: sesame",
            "the Authorization header must be `Bearer <token>`",
            "sesame",
        ),
    ] {
        let resp = s.get_with("/file/x", &[header]);
        let text = message(&resp, 401);
        if !text.starts_with(says) {
            resp.fail(&format!("{header}: the message should start {says:?}: {text:?}"));
        }
        if text.contains(secret) {
            resp.fail(&format!("{header}: the message echoes the token: {text:?}"));
        }
    }
}

/// The JSON error body's `path` field (`None` when absent), after checking the status.
#[track_caller]
fn error_path(resp: &Response, status: u16) -> Option<String> {
    resp.assert_error(status);
    let json: serde_json::Value =
        serde_json::from_slice(&resp.body).unwrap_or_else(|e| resp.fail(&format!("expected a JSON error body: {e}")));
    json.get("path").and_then(|p| p.as_str()).map(str::to_string)
}

#[test]
fn a_json_404_or_409_names_the_path_in_its_own_field() {
    let s = Server::start();
    s.post("/file/data/runs/one.csv", "a,b\n").assert_status(200);
    for (resp, path) in [
        (s.get_with("/file/nope.txt", &[JSON]), "nope.txt"),
        (s.get_with("/file/nope/wc", &[JSON]), "nope"),
        (s.get_with("/file/dir/nope/check", &[JSON]), "dir/nope"),
        (s.send("DELETE", "/file/nope", b"", &[JSON]), "nope"),
    ] {
        assert_eq!(error_path(&resp, 404).as_deref(), Some(path), "{}", resp.text());
        // The message stays as it was.
        assert_eq!(message(&resp, 404), "no such file or directory");
    }
    // Scripts keep the seed's plain body.
    s.delete("/file/nope").assert_status(404);
    if s.delete("/file/nope").body != b"Not Found" {
        panic!("a script's 404 body stays exactly `Not Found`");
    }
    for (resp, path) in [
        (s.post("/file/data/runs", "x"), "data/runs"),
        (s.append("/file/data/runs", "x"), "data/runs"),
        (s.get("/file/data/runs/wc"), "data/runs"),
        (
            s.put_json("/file/data/runs/one.csv/mv", r#"{"path":"data/runs"}"#),
            "data/runs",
        ),
    ] {
        assert_eq!(error_path(&resp, 409).as_deref(), Some(path), "{}", resp.text());
    }
}

#[test]
fn listing_a_file_says_it_is_a_file_not_a_directory() {
    let s = Server::start();
    s.post("/file/d/a.txt", "a").assert_status(200);
    let resp = s.get_with("/file/d/a.txt/", &[JSON]);
    let text = message(&resp, 404);
    for hint in ["`d/a.txt` is a file, not a directory", "leave out the trailing /"] {
        if !text.contains(hint) {
            resp.fail(&format!("the 404 should say {hint:?}: {text:?}"));
        }
    }
    // Scripts keep the seed's plain body; a missing directory keeps its own message.
    let plain = s.get("/file/d/a.txt/");
    plain.assert_status(404);
    assert_eq!(plain.body, b"Not Found");
    assert_eq!(
        message(&s.get_with("/file/d/none/", &[JSON]), 404),
        "no such file or directory"
    );
}

#[test]
fn a_json_put_without_a_target_says_it_is_a_move_and_how_to_append_json() {
    let s = Server::start();
    s.write("events.json", "{\"n\":0}\n");
    for body in [r#"{"event":"started"}"#, "{\"n\":1}\n{\"n\":2}\n", "[1,2]"] {
        let resp = s.put_json("/file/events.json", body);
        let text = message(&resp, 400);
        for hint in [
            "a PUT with Content-Type: application/json is a move (the original's API)",
            r#"its body must be {"path": "new/name"}"#,
            "another Content-Type (e.g. application/x-ndjson)",
            "POST to replace",
        ] {
            if !text.contains(hint) {
                resp.fail(&format!("{body:?}: the 400 should say {hint:?}: {text:?}"));
            }
        }
    }
    assert_eq!(s.read("events.json"), b"{\"n\":0}\n", "nothing changed");
}

#[test]
fn a_scope_refusal_names_the_path_and_the_tokens_directories_never_the_token() {
    let secrets = crate::support::TempDir::new();
    let tokens = secrets.path().join("tokens");
    std::fs::write(&tokens, "team-tok-S3CRET rw team-a shared\n").expect("write tokens file");
    let s = Server::start_with(&["--tokens-file", tokens.to_str().unwrap()]);
    s.write("team-a/f.txt", "f");
    s.write("team-b/x", "x");
    let auth = "Authorization: Bearer team-tok-S3CRET";
    for (resp, path) in [
        (s.get_with("/file/team-b/x", &[auth]), "team-b/x"),
        (s.send("DELETE", "/file/team-b/x", b"", &[auth]), "team-b/x"),
        (
            s.send("PUT", "/file/team-a/f.txt/mv", br#"{"path":"team-b/f.txt"}"#, &[auth]),
            "team-b/f.txt",
        ),
    ] {
        let text = message(&resp, 403);
        let says = format!("`{path}` is outside this token's directories: team-a/, shared/");
        if !text.contains(&says) {
            resp.fail(&format!("the 403 should say {says:?}: {text:?}"));
        }
        if text.contains("S3CRET") {
            resp.fail(&format!("the message shows the token: {text:?}"));
        }
    }
    // Inside as spelled, outside where a symlink (planted by another writer) leads.
    std::os::unix::fs::symlink("../team-b", s.root().join("team-a/link")).expect("plant a symlink");
    let resp = s.get_with("/file/team-a/link/x", &[auth]);
    let text = message(&resp, 403);
    let says = "`team-a/link/x` leads through a symlink outside this token's directories: team-a/, shared/";
    if !text.contains(says) {
        resp.fail(&format!("the 403 should say {says:?}: {text:?}"));
    }
}
