//! Security rules of docs/API.md ("Security"), checked with curl and the real binary: writes a
//! browser marks as cross-site are refused, host names not served are refused (DNS rebinding),
//! a blank token source stops the start, Basic credentials count as the token, scoped tokens
//! reach only their prefixes (where a path really leads, symlinks followed), and neither query
//! strings nor a URL's credentials reach the log. The same rules in a real browser are in
//! `browser`.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::raw::only_response;
use crate::support::{Response, Server, TempDir, server_binary, wait_until};

/// How long a start that must fail gets to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request gets to show up in the log.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// `Authorization: Bearer TOKEN`.
fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The server's contents a write test looks at: `f.txt` holding `orig`, nothing else.
fn reset(s: &Server) {
    for name in ["f.txt", "moved.txt"] {
        let _ = fs::remove_file(s.root().join(name));
    }
    s.write("f.txt", "orig");
}

/// The kinds of write: a POST, an append, both forms of move, a DELETE.
const WRITE_KINDS: [&str; 5] = ["POST", "PUT append", "PUT /mv", "PUT json move", "DELETE"];

/// One write of kind `kind` (of [`WRITE_KINDS`]) on `f.txt`, with extra headers.
fn write_kind(s: &Server, kind: &str, headers: &[&str]) -> Response {
    let mut args: Vec<&str> = headers.iter().flat_map(|h| ["-H", *h]).collect();
    let url = s.url("/file/f.txt");
    let mv = s.url("/file/f.txt/mv");
    let json = "Content-Type: application/json";
    let text = "Content-Type: text/plain";
    let move_body = r#"{"path":"moved.txt"}"#;
    args.extend_from_slice(&match kind {
        "POST" => ["-X", "POST", "-H", text, "--data-binary", "new", &url],
        "PUT append" => ["-X", "PUT", "-H", text, "--data-binary", "+", &url],
        "PUT /mv" => ["-X", "PUT", "-H", json, "--data-binary", move_body, &mv],
        "PUT json move" => ["-X", "PUT", "-H", json, "--data-binary", move_body, &url],
        _ => ["-X", "DELETE", "-H", text, "--data-binary", "", &url],
    });
    s.curl(&args)
}

#[test]
fn writes_a_browser_marks_as_cross_site_are_403_and_change_nothing() {
    let s = Server::start();
    let own = format!("http://{}", s.addr());
    let other_port = format!("http://127.0.0.1:{}", s.addr().port() + 1);
    let origins: [(&str, Option<&str>, bool); 5] = [
        ("no Origin", None, false),
        ("own Origin", Some(&own), false),
        ("other port", Some(&other_port), true),
        ("other site", Some("http://attacker.test"), true),
        ("null", Some("null"), true),
    ];
    let fetch_sites = [
        (None, false),
        (Some("same-origin"), false),
        (Some("none"), false),
        (Some("same-site"), true),
        (Some("cross-site"), true),
    ];
    let mut checked = 0;
    for (what, origin, origin_foreign) in origins {
        for (site, site_foreign) in fetch_sites {
            let origin_header = origin.map(|o| format!("Origin: {o}"));
            let site_header = site.map(|v| format!("Sec-Fetch-Site: {v}"));
            let headers: Vec<&str> = [origin_header.as_deref(), site_header.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            let refused = origin_foreign || site_foreign;
            for kind in WRITE_KINDS {
                reset(&s);
                let response = write_kind(&s, kind, &headers);
                let case = format!("{kind} with {what}, Sec-Fetch-Site {site:?}");
                if refused {
                    response.assert_error(403);
                    if !response.text().contains("another site") {
                        response.fail(&format!("{case}: the message should say why"));
                    }
                    assert_eq!(s.read("f.txt"), b"orig", "{case} changed the file");
                    assert!(!s.exists("moved.txt"), "{case} moved the file");
                } else if response.status != 200 {
                    response.fail(&format!("{case} should pass"));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 125);
    // Reads from another site stay possible (the browser keeps their answers from the page).
    s.get_with(
        "/file/f.txt",
        &["Origin: http://attacker.test", "Sec-Fetch-Site: cross-site"],
    )
    .assert_status(200);
}

#[test]
fn allowed_hosts_refuse_every_other_name_but_probes() {
    let s = Server::start_with(&["--allowed-hosts", "nas, nas.team.svc:3000"]);
    s.write("a.txt", "a");
    let port = s.addr().port();
    let with_host = |path: &str, host: &str| s.get_with(path, &[&format!("Host: {host}")]);
    let served = [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        "nas:3000".to_string(),
        "NAS.team.svc".to_string(),
        "nas.team.svc.:80".to_string(),
    ];
    for host in &served {
        with_host("/file/a.txt", host).assert_ok_body("a");
    }
    let refused = [
        "rebind.attacker.test",
        "nas.team.svc.cluster.local",
        "localhost.attacker.test",
        "127.0.0.1.nip.io",
        "nas.attacker.test",
    ];
    for host in refused {
        for path in ["/file/a.txt", "/file/", "/"] {
            let r = with_host(path, &format!("{host}:{port}"));
            r.assert_error(403);
            if !r.text().contains("--allowed-hosts") {
                r.fail("the message should name --allowed-hosts");
            }
        }
        for probe in ["/healthz", "/readyz", "/metrics", "/file"] {
            with_host(probe, host).assert_status(200);
        }
    }
    assert!(
        !s.log().contains("DNS rebinding can still read"),
        "no warning once the setting is given:\n{}",
        s.log()
    );
}

#[test]
fn without_allowed_hosts_only_browsers_are_held_to_ip_addresses_and_localhost() {
    let s = Server::start();
    s.write("a.txt", "a");
    // curl and scripts call the service by any name, as before.
    for host in ["http-nas:3000", "http-nas.team.svc.cluster.local", "anything.test"] {
        s.get_with("/file/a.txt", &[&format!("Host: {host}")])
            .assert_ok_body("a");
    }
    // A browser (Origin or Sec-Fetch-*) naming another host is a rebinding page.
    let foreign = "Host: rebind.attacker.test:3000";
    for marker in [
        "Sec-Fetch-Mode: navigate",
        "Sec-Fetch-Site: same-origin",
        "Origin: http://rebind.attacker.test:3000",
    ] {
        s.get_with("/file/a.txt", &[foreign, marker]).assert_error(403);
        s.get_with("/file/a.txt", &["Host: localhost:3000", marker])
            .assert_ok_body("a");
    }
    s.get_with("/healthz", &[foreign, "Sec-Fetch-Mode: navigate"])
        .assert_status(200);
    assert!(
        s.log().contains("DNS rebinding can still read"),
        "the start-up log should say what is still open:\n{}",
        s.log()
    );
}

/// Starts the binary with `args` and `env` (nothing else of ours), and returns its exit
/// status (`None`: still running after [`EXIT_TIMEOUT`], then killed) and its stderr.
fn start_outcome(args: &[&str], env: &[(&str, &str)]) -> (Option<ExitStatus>, String) {
    let home = TempDir::new();
    let err_path = home.path().join("stderr");
    let err_file = fs::File::create(&err_path).expect("create stderr file");
    let mut cmd = Command::new(server_binary());
    cmd.args(["--listen", "127.0.0.1:0", "--storage"])
        .arg(home.path())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file);
    let mut child = cmd.spawn().expect("spawn http-nas");
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

#[track_caller]
fn assert_refused_start(case: &str, args: &[&str], env: &[(&str, &str)], names: &str) -> String {
    let (status, stderr) = start_outcome(args, env);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "{case}: the start should stop with exit code 2 (got {status:?}); stderr:\n{stderr}"
    );
    assert!(stderr.contains(names), "{case}: stderr should name {names}:\n{stderr}");
    stderr
}

#[test]
fn a_blank_token_source_stops_the_start_with_exit_code_2() {
    let dir = TempDir::new();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (empty, newline, spaces) = (file("empty", ""), file("newline", "\n"), file("spaces", "   \n"));
    let comments = file("comments", "# no tokens yet\n\n");
    for blank in [&empty, &newline, &spaces] {
        assert_refused_start("--token-file", &["--token-file", blank], &[], "--token-file");
        assert_refused_start(
            "--read-token-file",
            &["--read-token-file", blank],
            &[],
            "--read-token-file",
        );
        assert_refused_start(
            "HTTP_NAS_TOKEN_FILE",
            &[],
            &[("HTTP_NAS_TOKEN_FILE", blank)],
            "--token-file",
        );
        assert_refused_start(
            "HTTP_NAS_READ_TOKEN_FILE",
            &[],
            &[("HTTP_NAS_READ_TOKEN_FILE", blank)],
            "--read-token-file",
        );
        assert_refused_start("--tokens-file", &["--tokens-file", blank], &[], "--tokens-file");
    }
    assert_refused_start(
        "a tokens file of comments",
        &["--tokens-file", &comments],
        &[],
        "--tokens-file",
    );
    for value in ["", " ", "\n"] {
        assert_refused_start("HTTP_NAS_TOKEN", &[], &[("HTTP_NAS_TOKEN", value)], "HTTP_NAS_TOKEN");
        assert_refused_start(
            "HTTP_NAS_READ_TOKEN",
            &[],
            &[("HTTP_NAS_READ_TOKEN", value)],
            "HTTP_NAS_READ_TOKEN",
        );
        assert_refused_start(
            "HTTP_NAS_TOKEN_FILE set empty",
            &[],
            &[("HTTP_NAS_TOKEN_FILE", value)],
            "HTTP_NAS_TOKEN_FILE",
        );
        assert_refused_start(
            "HTTP_NAS_TOKENS_FILE set empty",
            &[],
            &[("HTTP_NAS_TOKENS_FILE", value)],
            "HTTP_NAS_TOKENS_FILE",
        );
    }
    // A blank source is refused even when another token is given.
    assert_refused_start(
        "a blank read token beside a good one",
        &[],
        &[("HTTP_NAS_TOKEN", "good"), ("HTTP_NAS_READ_TOKEN", "")],
        "HTTP_NAS_READ_TOKEN",
    );
}

#[test]
fn tokens_file_errors_stop_the_start_naming_the_line_never_the_token() {
    let dir = TempDir::new();
    let cases = [
        (
            "# team tokens\nS3CRET-alpha rw team-a\nS3CRET-beta rx team-b\n",
            "line 3",
        ),
        ("S3CRET-alpha\n", "line 1"),
        ("\n\nS3CRET-alpha ro ../etc\n", "line 3"),
        ("S3CRET-alpha rw team-a\nS3CRET-alpha ro team-b\n", "line 2"),
        ("rw S3CRET-alpha team-a\n", "line 1"),
    ];
    for (i, (text, line)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("tokens-{i}"));
        fs::write(&path, text).unwrap();
        let path = path.to_string_lossy().into_owned();
        let stderr = assert_refused_start(text, &["--tokens-file", &path], &[], line);
        assert!(stderr.contains("--tokens-file"), "{text:?}:\n{stderr}");
        assert!(!stderr.contains("S3CRET"), "the error shows a token:\n{stderr}");
    }
    // One token for two roles is ambiguous.
    let path = dir.path().join("tokens-shared");
    fs::write(&path, "S3CRET-alpha ro team-a\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    let stderr = assert_refused_start(
        "the read-write token again in the file",
        &["--tokens-file", &path],
        &[("HTTP_NAS_TOKEN", "S3CRET-alpha")],
        "--tokens-file",
    );
    assert!(!stderr.contains("S3CRET"), "the error shows a token:\n{stderr}");
}

/// A server with an unscoped read-write token `admin`, and scoped `team-rw` (rw) and
/// `team-ro` (ro), both reaching only `team-a`.
fn scoped_server() -> Server {
    let secrets = TempDir::new();
    let path = secrets.path().join("tokens");
    fs::write(&path, "# team a\nteam-rw rw team-a/\nteam-ro ro /team-a\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", "admin")], &["--tokens-file", &path]);
    // The file is read at start; the server keeps no handle on it.
    drop(secrets);
    s
}

#[test]
fn scoped_tokens_reach_only_their_prefixes_on_every_route() {
    let s = scoped_server();
    let json = "Content-Type: application/json";
    let text = "Content-Type: text/plain";
    let mut n = 0;
    // (route, in scope, token) → the request; the expected status follows from the last two.
    for token in ["team-rw", "team-ro"] {
        let auth = bearer(token);
        for (dir, inside) in [("team-a", true), ("team-ab", false), ("other/team-a", false)] {
            n += 1;
            let file = format!("{dir}/f{n}.txt");
            s.write(&file, "one\ntwo\n");
            let url = |p: &str| s.url(&format!("/file/{p}"));
            let read = |args: &[&str]| {
                let mut all = vec!["-H", auth.as_str()];
                all.extend_from_slice(args);
                s.curl(&all)
            };
            let reads = [
                ("GET file", read(&[&url(&file)])),
                ("GET listing", read(&[&url(&format!("{dir}/"))])),
                (
                    "GET listing as JSON",
                    read(&["-H", "Accept: application/json", &url(dir)]),
                ),
                ("HEAD", read(&["-I", &url(&file)])),
                ("wc", read(&[&url(&format!("{file}/wc"))])),
                ("check", read(&[&url(&format!("{file}/check"))])),
            ];
            for (route, r) in reads {
                let case = format!("{route} {dir} with {token}");
                match inside {
                    true if r.status != 200 => r.fail(&format!("{case} should pass")),
                    false if r.status != 403 => r.fail(&format!("{case} should be 403")),
                    _ => {}
                }
            }
            let body_move = |to: &str| format!(r#"{{"path":"{to}"}}"#);
            let new = format!("{dir}/new{n}.txt");
            let moved = format!("{dir}/moved{n}.txt");
            let moved2 = format!("{dir}/moved2-{n}.txt");
            let writes = [
                (
                    "POST",
                    read(&["-X", "POST", "-H", text, "--data-binary", "x", &url(&new)]),
                ),
                (
                    "PUT append",
                    read(&["-X", "PUT", "-H", text, "--data-binary", "x", &url(&file)]),
                ),
                (
                    "PUT /mv",
                    read(&[
                        "-X",
                        "PUT",
                        "-H",
                        json,
                        "--data-binary",
                        &body_move(&moved),
                        &url(&format!("{file}/mv")),
                    ]),
                ),
                (
                    "JSON move",
                    read(&[
                        "-X",
                        "PUT",
                        "-H",
                        json,
                        "--data-binary",
                        &body_move(&moved2),
                        &url(&moved),
                    ]),
                ),
            ];
            let write_passes = inside && token == "team-rw";
            for (route, r) in writes {
                let case = format!("{route} {dir} with {token}");
                if write_passes {
                    if r.status != 200 {
                        r.fail(&format!("{case} should pass"));
                    }
                } else {
                    r.assert_error(403);
                }
            }
            let delete_target = if write_passes { moved2 } else { file.clone() };
            let r = read(&["-X", "DELETE", &url(&delete_target)]);
            if write_passes {
                r.assert_ok_json();
                assert!(!s.exists(&delete_target));
            } else {
                r.assert_error(403);
                assert_eq!(s.read(&file), b"one\ntwo\n", "a refused write changed {file}");
                assert!(!s.exists(&new) && !s.exists(&format!("{dir}/moved{n}.txt")));
            }
        }
        // A listing above the prefix: the root.
        s.get_with("/file/", &[&auth]).assert_error(403);
    }
    // Moves need both ends inside.
    s.write("team-a/src.txt", "s");
    s.write("team-ab/src.txt", "s");
    let rw = bearer("team-rw");
    let move_to = |from: &str, to: &str| {
        let body = format!(r#"{{"path":"{to}"}}"#);
        s.curl(&[
            "-X",
            "PUT",
            "-H",
            &rw,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
            &s.url(&format!("/file/{from}/mv")),
        ])
    };
    move_to("team-a/src.txt", "team-ab/stolen.txt").assert_error(403);
    move_to("team-ab/src.txt", "team-a/stolen.txt").assert_error(403);
    assert!(s.exists("team-a/src.txt") && s.exists("team-ab/src.txt"));
    assert!(!s.exists("team-ab/stolen.txt") && !s.exists("team-a/stolen.txt"));
    // The unscoped token reaches everything; no token is 401.
    s.get_with("/file/", &[&bearer("admin")]).assert_status(200);
    s.get("/file/team-a/src.txt").assert_error(401);
}

#[test]
fn basic_credentials_count_as_the_token_and_a_browser_gets_a_login_prompt() {
    let s = scoped_server();
    s.write("team-a/a.txt", "a");
    let page = s.get_with("/file/team-a/", &["Accept: text/html"]);
    page.assert_status(401);
    let challenge = page.header("WWW-Authenticate").unwrap_or_default();
    if !challenge.starts_with("Basic realm=\"http-nas\"") {
        page.fail("a browser's 401 must carry a Basic challenge");
    }
    assert!(page.text().contains("<h1>") && page.header("Content-Type").unwrap_or_default().starts_with("text/html"));
    // Scripts keep the JSON 401 with the Bearer challenge.
    let script = s.get("/file/team-a/a.txt");
    script.assert_error(401);
    assert!(
        script
            .header("WWW-Authenticate")
            .unwrap_or_default()
            .starts_with("Bearer")
    );
    // Any user name, the token as the password (curl -u sends Basic).
    s.curl(&["-u", "anyone:team-rw", &s.url("/file/team-a/a.txt")])
        .assert_ok_body("a");
    s.curl(&["-u", ":team-ro", &s.url("/file/team-a/")])
        .assert_ok_body("a.txt\n");
    s.curl(&["-u", "team-rw:wrong", &s.url("/file/team-a/a.txt")])
        .assert_error(401);
    s.curl(&["-u", "x:team-ro", "-X", "DELETE", &s.url("/file/team-a/a.txt")])
        .assert_error(403);
    s.curl(&["-u", "x:admin", &s.url("/file/")]).assert_ok_body("team-a\n");
    s.get_with("/file/team-a/a.txt", &[&bearer("team-ro")])
        .assert_ok_body("a");
    // A scoped token's browser opening the front page is sent to its directory.
    let front = s.curl(&["-u", "x:team-ro", "-H", "Accept: text/html", &s.url("/")]);
    front.assert_status(303);
    assert_eq!(front.header("Location"), Some("/file/team-a/"));
}

#[test]
fn query_strings_never_reach_the_log() {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", "t0ken")], &[]);
    s.write("a.txt", "a");
    // Answered by a worker, and refused from the head (401 without a token).
    s.get_with("/file/a.txt?token=SECRET-ONE&x=1", &[&bearer("t0ken")])
        .assert_ok_body("a");
    s.get("/file/a.txt?token=SECRET-TWO").assert_error(401);
    let logged = wait_until(LOG_TIMEOUT, || s.log().matches("GET /file/a.txt ").count() >= 2);
    let log = s.log();
    assert!(logged, "both requests should be logged by path:\n{log}");
    assert!(!log.contains("SECRET"), "the log shows a query string:\n{log}");
}

/// A server whose tokens file is `text`, with `admin` as the unscoped read-write token.
fn with_tokens_file(text: &str) -> Server {
    let secrets = TempDir::new();
    let path = secrets.path().join("tokens");
    fs::write(&path, text).unwrap();
    let path = path.to_string_lossy().into_owned();
    Server::start_with_env(&[("HTTP_NAS_TOKEN", "admin")], &["--tokens-file", &path])
}

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

/// A link inside a prefix is a name of the prefix like any other: listed, moved and deleted
/// as itself (never what it leads to), and followed where it stays inside the prefix; where it
/// leads out, the listing describes the link itself (no size or time of the file outside),
/// and a move into the directory it leads to is refused.
#[test]
fn a_link_inside_a_prefix_is_listed_moved_and_deleted_as_itself() {
    let s = with_tokens_file("team-a-tok rw team-a\n");
    s.write("team-a/own.txt", "mine");
    s.write("team-b/secret.txt", "team b only, 27 bytes long");
    symlink("../team-b", s.root().join("team-a/dirlink")).unwrap();
    symlink("../team-b/secret.txt", s.root().join("team-a/filelink")).unwrap();
    symlink("own.txt", s.root().join("team-a/inner")).unwrap();
    let a = bearer("team-a-tok");

    let listing = s.get_with("/file/team-a/", &[&a, "Accept: application/json"]);
    let entries: Value = serde_json::from_slice(&listing.assert_status(200).body).expect("JSON listing");
    let entry = |name: &str| {
        let e = entries
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == name))
            .unwrap_or_else(|| panic!("{name} is not listed: {entries}"));
        (e["type"].as_str().unwrap_or_default().to_string(), e["size"].as_u64())
    };
    assert_eq!(
        entry("inner"),
        ("file".into(), Some(4)),
        "a link inside the prefix is followed"
    );
    assert_eq!(
        entry("filelink"),
        ("file".into(), Some(0)),
        "described as itself: {entries}"
    );
    assert_eq!(
        entry("dirlink"),
        ("file".into(), Some(0)),
        "described as itself: {entries}"
    );
    assert_eq!(
        s.get_with("/file/team-a/inner", &[&a]).assert_status(200).text(),
        "mine"
    );

    let into = s.send(
        "PUT",
        "/file/team-a/own.txt/mv",
        br#"{"path":"team-a/dirlink/"}"#,
        &[&a],
    );
    assert_eq!(into.status, 403, "{}", into.text());
    assert!(s.exists("team-a/own.txt") && !s.exists("team-b/own.txt"));

    s.send(
        "PUT",
        "/file/team-a/filelink/mv",
        br#"{"path":"team-a/renamed-link"}"#,
        &[&a],
    )
    .assert_status(200);
    let renamed = fs::symlink_metadata(s.root().join("team-a/renamed-link")).unwrap();
    assert!(renamed.file_type().is_symlink(), "the link itself moved");
    s.send("DELETE", "/file/team-a/renamed-link", b"", &[&a])
        .assert_status(200);
    s.send("DELETE", "/file/team-a/dirlink", b"", &[&a]).assert_status(200);
    assert!(!s.root().join("team-a/dirlink").exists() && !s.root().join("team-a/renamed-link").exists());
    assert_eq!(s.read("team-b/secret.txt"), b"team b only, 27 bytes long");
}

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
