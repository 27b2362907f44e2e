//! Security rules of docs/API.md ("Security"), checked with curl and the real binary: writes a
//! browser marks as cross-site are refused, host names not served are refused (DNS rebinding),
//! a blank token source stops the start, Basic credentials count as the token, scoped tokens
//! reach only their prefixes, and query strings never reach the log. The same rules in a real
//! browser are in `browser`.

use std::fs;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

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
