//! Attack review of the browser and token rules (docs/API.md "Security"): one test per problem
//! found, each failing on the build it was found on. Scoped tokens through symlinks, a blank
//! token source that is not blank to the parser, credentials in the access log, a tokens file
//! with a trailing comment, and the host check read off the wrong field.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::support::raw::only_response;
use crate::support::{Server, TempDir, server_binary, wait_until};

/// How long a start that must fail gets to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request gets to show up in the log.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// A server whose tokens file is `text`, with `admin` as the unscoped read-write token.
fn with_tokens_file(text: &str) -> Server {
    let secrets = TempDir::new();
    let path = secrets.path().join("tokens");
    fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    Server::start_with_env(&[("HTTP_NAS_TOKEN", "admin")], &["--tokens-file", &path])
}

/// Starts the binary with `args` and `env` only; its exit status (`None`: still running after
/// [`EXIT_TIMEOUT`], then killed) and its stderr.
fn start_outcome(args: &[&str], env: &[(&str, &str)]) -> (Option<ExitStatus>, String) {
    let home = TempDir::new();
    let err_path = home.path().join("stderr");
    let err_file = fs::File::create(&err_path).expect("create stderr file");
    let mut child = Command::new(server_binary())
        .args(["--listen", "127.0.0.1:0", "--storage"])
        .arg(home.path())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("spawn http-nas");
    let mut status = None;
    wait_until(EXIT_TIMEOUT, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status, fs::read_to_string(&err_path).unwrap_or_default())
}

/// HIGH. A scoped token's prefix is compared lexically, but the storage follows symlinks that
/// stay inside the root. Another writer of the volume inside `team-a` (a team-a job with the
/// volume's `team-a` subPath mounted: `ln -s ../team-b team-a/link`) thereby gives the team-a
/// token read, list, stat, write, append, replace, delete and move-into access to `team-b`.
#[test]
fn scoped_token_does_not_reach_outside_its_prefix_through_a_symlink() {
    let s = with_tokens_file("team-a-tok rw team-a\n");
    s.write("team-a/own.txt", "mine");
    s.write("team-b/secret.txt", "team b only");
    s.write("team-b/victim.txt", "kept");
    // Another writer, inside team-a, plants links that stay inside the root.
    symlink("../team-b", s.root().join("team-a/dirlink")).unwrap();
    symlink("../team-b/secret.txt", s.root().join("team-a/filelink")).unwrap();
    let a = bearer("team-a-tok");
    // The direct route is refused, as documented.
    s.get_with("/file/team-b/secret.txt", &[&a]).assert_status(403);

    let mut reached = Vec::new();
    let mut check = |what: &str, status: u16| {
        if (200..300).contains(&status) {
            reached.push(format!("{what} -> {status}"));
        }
    };
    check(
        "GET dirlink/secret.txt",
        s.get_with("/file/team-a/dirlink/secret.txt", &[&a]).status,
    );
    check("GET filelink", s.get_with("/file/team-a/filelink", &[&a]).status);
    check("list dirlink/", s.get_with("/file/team-a/dirlink/", &[&a]).status);
    check(
        "check filelink",
        s.get_with("/file/team-a/filelink/check", &[&a]).status,
    );
    check("wc filelink", s.get_with("/file/team-a/filelink/wc", &[&a]).status);
    check(
        "POST dirlink/planted.txt",
        s.send("POST", "/file/team-a/dirlink/planted.txt", b"planted", &[&a])
            .status,
    );
    check(
        "append filelink",
        s.send("PUT", "/file/team-a/filelink", b"+appended", &[&a]).status,
    );
    check(
        "move own.txt to dirlink/moved.txt",
        s.send(
            "PUT",
            "/file/team-a/own.txt/mv",
            br#"{"path":"team-a/dirlink/moved.txt"}"#,
            &[&a],
        )
        .status,
    );
    check(
        "DELETE dirlink/victim.txt",
        s.send("DELETE", "/file/team-a/dirlink/victim.txt", b"", &[&a]).status,
    );
    check(
        "POST filelink (replace)",
        s.send("POST", "/file/team-a/filelink", b"replaced", &[&a]).status,
    );

    let mut on_disk: Vec<String> = fs::read_dir(s.root().join("team-b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let secret = String::from_utf8_lossy(&s.read("team-b/secret.txt")).into_owned();
    assert!(
        reached.is_empty() && secret == "team b only" && on_disk == ["secret.txt", "victim.txt"],
        "the team-a token reached team-b through a symlink inside team-a:\n{}\n\
         team-b now holds {on_disk:?}, secret.txt = {secret:?}",
        reached.join("\n")
    );
}

/// MEDIUM. A token file holding only a UTF-8 byte order mark (what Windows PowerShell 5's
/// `Set-Content -Encoding UTF8 token.txt ""` writes, then `kubectl create secret --from-file`)
/// is blank to a person, but `str::trim` keeps U+FEFF: the service starts with the BOM as its
/// token, and anyone sending `Authorization: Bearer <EF BB BF>` reads and writes everything.
#[test]
fn a_token_file_of_only_a_byte_order_mark_is_blank_and_stops_the_start() {
    let dir = TempDir::new();
    let path = dir.path().join("token");
    fs::write(&path, b"\xef\xbb\xbf\r\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    let (status, stderr) = start_outcome(&["--token-file", &path], &[]);
    let (env_status, env_stderr) = start_outcome(&[], &[("HTTP_NAS_TOKEN", "\u{feff}")]);
    if status.and_then(|s| s.code()) == Some(2) && env_status.and_then(|s| s.code()) == Some(2) {
        return;
    }
    // Show what it means: the invisible token opens the service.
    let s = Server::start_with(&["--token-file", &path]);
    s.write("private.txt", "private");
    let open = s.get_with("/file/private.txt", &["Authorization: Bearer \u{feff}"]);
    panic!(
        "a token source holding only a byte order mark should stop the start with exit code 2 \
         (--token-file: {status:?}, stderr {stderr:?}; HTTP_NAS_TOKEN: {env_status:?}, stderr \
         {env_stderr:?}); it started, and `Authorization: Bearer <BOM>` got {} {:?}",
        open.status,
        open.text()
    );
}

/// LOW. A request in absolute form with user info (`GET http://user:SECRET@host/file/x`, what
/// some clients and proxies send) is served, and its target, credentials included, is written
/// to the access log: the log strips the query but not the user info.
#[test]
fn credentials_in_an_absolute_form_target_never_reach_the_log() {
    let s = Server::start();
    s.write("a.txt", "a");
    let request = b"GET http://user:PASSWORD-IN-URL@127.0.0.1/file/a.txt HTTP/1.1\r\n\
        Host: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let response = only_response(&crate::support::raw::raw(s.addr(), request, false));
    assert!(response.status != 0);
    let logged = wait_until(LOG_TIMEOUT, || s.log().contains("/file/a.txt"));
    let log = s.log();
    assert!(logged, "the request should be logged:\n{log}");
    assert!(
        !log.contains("PASSWORD-IN-URL"),
        "the log shows a URL's credentials:\n{log}"
    );
}

/// LOW. An operator who puts the token itself where its file belongs (`HTTP_NAS_TOKEN_FILE`
/// set to the Secret's value, or `--token-file TOKEN`) gets the start refused, rightly, but the
/// error repeats the value, so the token lands in the pod log.
#[test]
fn a_token_given_where_its_file_belongs_is_not_repeated_in_the_error() {
    let token = "s3cr3t-Token-Value-42";
    for (case, args, env) in [
        ("HTTP_NAS_TOKEN_FILE", vec![], vec![("HTTP_NAS_TOKEN_FILE", token)]),
        (
            "HTTP_NAS_READ_TOKEN_FILE",
            vec![],
            vec![("HTTP_NAS_READ_TOKEN_FILE", token)],
        ),
        ("--token-file", vec!["--token-file", token], vec![]),
        ("--tokens-file", vec!["--tokens-file", token], vec![]),
    ] {
        let (status, stderr) = start_outcome(&args, &env);
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{case}: {stderr}");
        assert!(!stderr.contains(token), "{case}: the error shows the token:\n{stderr}");
    }
}

/// LOW. `#` starts a comment only at the start of a line; a trailing comment
/// (`tok rw team-a   # CI of team-a, never team-b`) is read as more prefixes, so the token
/// silently reaches `#`, `CI`, ... and `team-b`. Such a line should stop the start (or the
/// comment should end the line), never widen the token.
#[test]
fn a_trailing_comment_in_the_tokens_file_never_widens_a_token() {
    let dir = TempDir::new();
    let path = dir.path().join("tokens");
    fs::write(&path, "team-a-tok rw team-a   # CI of team-a, never team-b\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    let (status, _) = start_outcome(&["--tokens-file", &path], &[]);
    if status.and_then(|s| s.code()) == Some(2) {
        return;
    }
    let s = with_tokens_file("team-a-tok rw team-a   # CI of team-a, never team-b\n");
    s.write("team-b/secret.txt", "team b only");
    let a = bearer("team-a-tok");
    let read = s.get_with("/file/team-b/secret.txt", &[&a]);
    let wrote = s.send("POST", "/file/team-b/planted.txt", b"x", &[&a]);
    assert!(
        read.status == 403 && wrote.status == 403,
        "a trailing comment widened the token: GET team-b/secret.txt -> {} {:?}, \
         POST team-b/planted.txt -> {}",
        read.status,
        read.text(),
        wrote.status
    );
}

/// INFO. With `--allowed-hosts`, the host check reads only a UTF-8 `Host`: a request in
/// absolute form names another host (RFC 9112 §3.2.2: the target's authority wins, Host is
/// ignored) and is answered; a Host that starts with a bracketed IPv6 literal passes whatever
/// follows it (`[::1].attacker.example`); and a Host that is not UTF-8 counts as no Host at all
/// (an HTTP/1.0 tool), so it passes too. None is a name a browser sends, so no rebinding comes
/// of it today, but each request names a host that is not served and is answered.
#[test]
fn allowed_hosts_judge_the_host_the_request_names() {
    let s = Server::start_with(&["--allowed-hosts", "nas.example"]);
    s.write("a.txt", "a");
    let ask = |request: &[u8]| only_response(&crate::support::raw::raw(s.addr(), request, false)).status;
    let cases: [(&str, &[u8]); 3] = [
        (
            "absolute-form target naming attacker.example, Host 127.0.0.1",
            b"GET http://attacker.example/file/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "Host [::1].attacker.example",
            b"GET /file/a.txt HTTP/1.1\r\nHost: [::1].attacker.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "Host attacker\\xff.example (not UTF-8)",
            b"GET /file/a.txt HTTP/1.1\r\nHost: attacker\xff.example\r\nConnection: close\r\n\r\n",
        ),
    ];
    let answered: Vec<String> = cases
        .iter()
        .map(|(case, request)| (case, ask(request)))
        .filter(|(_, status)| *status != 403)
        .map(|(case, status)| format!("{case} -> {status}"))
        .collect();
    assert!(
        answered.is_empty(),
        "hosts not served were answered (each should be 403):\n{}",
        answered.join("\n")
    );
}

/// INFO. A write whose `Origin` or `Sec-Fetch-Site` is not UTF-8 is taken as one without
/// them, and goes through: the cross-site check fails open on a value it cannot read. Browsers
/// send both as ASCII, so no page can do this today; a value that cannot be read should count
/// as another site's.
#[test]
fn a_write_with_an_unreadable_origin_is_refused() {
    let s = Server::start();
    let ask = |request: &[u8]| only_response(&crate::support::raw::raw(s.addr(), request, false)).status;
    let origin = ask(
        b"POST /file/o.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://attacker\xff.example\r\n\
          Content-Length: 1\r\nConnection: close\r\n\r\nx",
    );
    let fetch_site = ask(
        b"POST /file/f.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: cross-site\xff\r\n\
          Content-Length: 1\r\nConnection: close\r\n\r\nx",
    );
    assert!(
        origin == 403 && fetch_site == 403 && !s.exists("o.txt") && !s.exists("f.txt"),
        "writes with an unreadable Origin ({origin}) or Sec-Fetch-Site ({fetch_site}) went through"
    );
}
