//! Bearer tokens: a missing or wrong token is 401 with `WWW-Authenticate`, a read-only token
//! reads and gets 403 on every write, a read-write token does both; token files may end in a
//! newline; probes and metrics need no token; no token ever reaches the log.

use std::fs;

use crate::support::headers::{RECORD_TIMEOUT, required};
use crate::support::{Server, TempDir, wait_until};

/// Tokens of the token tests; distinct enough that a log line can be searched for them.
const RW_TOKEN: &str = "rw-token-3f9a1c77e2";
const RO_TOKEN: &str = "ro-token-8b06d45e91";
const WRONG_TOKEN: &str = "wrong-token-51c2aa0d";

/// `Authorization: Bearer TOKEN`.
fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// A server with both tokens from the environment and `doc.txt` holding `v1`.
fn with_tokens() -> Server {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", RW_TOKEN), ("HTTP_NAS_READ_TOKEN", RO_TOKEN)], &[]);
    s.write("doc.txt", "v1");
    s
}

#[test]
fn missing_or_wrong_token_is_401_with_www_authenticate() {
    let s = with_tokens();
    let wrong = bearer(WRONG_TOKEN);
    for response in [s.get("/file/doc.txt"), s.get_with("/file/doc.txt", &[&wrong])] {
        response.assert_error(401);
        if !required(&response, "WWW-Authenticate").starts_with("Bearer") {
            response.fail("WWW-Authenticate must name the Bearer scheme");
        }
    }
    s.send("POST", "/file/doc.txt", b"v2", &[&wrong]).assert_error(401);
    assert_eq!(s.read("doc.txt"), b"v1");
}

#[test]
fn read_write_token_reads_and_writes() {
    let s = with_tokens();
    let rw = bearer(RW_TOKEN);
    s.get_with("/file/doc.txt", &[&rw]).assert_ok_body("v1");
    s.send("POST", "/file/doc.txt", b"v2", &[&rw]).assert_ok_json();
    s.send("PUT", "/file/doc.txt", b"+", &[&rw]).assert_ok_json();
    assert_eq!(s.read("doc.txt"), b"v2+");
    s.curl(&["-X", "DELETE", "-H", &rw, &s.url("/file/doc.txt")])
        .assert_ok_json();
    assert!(!s.exists("doc.txt"));
}

#[test]
fn read_only_token_reads_but_every_write_is_403() {
    let s = with_tokens();
    let ro = bearer(RO_TOKEN);
    s.get_with("/file/doc.txt", &[&ro]).assert_ok_body("v1");
    s.curl(&["-I", "-H", &ro, &s.url("/file/doc.txt")]).assert_status(200);
    let url = s.url("/file/doc.txt");
    let move_body = r#"{"path": "moved.txt"}"#;
    let json = "Content-Type: application/json";
    let writes = [
        s.send("POST", "/file/doc.txt", b"v2", &[&ro]),
        s.send("PUT", "/file/doc.txt", b"+", &[&ro]),
        s.curl(&["-X", "PUT", "-H", &ro, "-H", json, "--data-binary", move_body, &url]),
        s.curl(&["-X", "DELETE", "-H", &ro, &url]),
    ];
    for response in &writes {
        response.assert_error(403);
    }
    assert_eq!(s.read("doc.txt"), b"v1");
    assert!(!s.exists("moved.txt"));
}

#[test]
fn token_files_with_trailing_newline_work() {
    let secrets = TempDir::new();
    let (rw_file, ro_file) = (secrets.path().join("token"), secrets.path().join("read-token"));
    fs::write(&rw_file, format!("{RW_TOKEN}\n")).unwrap();
    fs::write(&ro_file, format!("{RO_TOKEN}\n")).unwrap();
    let (rw_path, ro_path) = (rw_file.to_string_lossy(), ro_file.to_string_lossy());
    let s = Server::start_with(&["--token-file", &rw_path, "--read-token-file", &ro_path]);
    s.send("POST", "/file/doc.txt", b"v1", &[&bearer(RW_TOKEN)])
        .assert_ok_json();
    s.get_with("/file/doc.txt", &[&bearer(RO_TOKEN)]).assert_ok_body("v1");
    s.send("POST", "/file/doc.txt", b"v2", &[&bearer(RO_TOKEN)])
        .assert_error(403);
    s.get("/file/doc.txt").assert_error(401);
}

#[test]
fn probes_and_metrics_need_no_token() {
    let s = with_tokens();
    s.get("/healthz").assert_status(200);
    s.get("/readyz").assert_status(200);
    s.get("/metrics").assert_status(200);
    s.get("/file/doc.txt").assert_error(401);
}

#[test]
fn tokens_never_appear_in_the_log() {
    let s = Server::start_with_env(
        &[("HTTP_NAS_TOKEN", RW_TOKEN), ("HTTP_NAS_READ_TOKEN", RO_TOKEN)],
        &["--log-level", "trace"],
    );
    let tokens = [RW_TOKEN, RO_TOKEN, WRONG_TOKEN];
    for token in tokens {
        let auth = bearer(token);
        s.get_with("/file/doc.txt", &[&auth]);
        s.send("POST", "/file/doc.txt", b"v", &[&auth]);
    }
    let all_logged = wait_until(RECORD_TIMEOUT, || {
        s.log().matches("/file/doc.txt").count() >= 2 * tokens.len()
    });
    assert!(all_logged, "not every request was logged:\n{}", s.log());
    let log = s.log();
    for token in tokens {
        assert!(!log.contains(token), "the log shows token {token:?}:\n{log}");
    }
}
