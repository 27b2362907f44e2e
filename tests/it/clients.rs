//! Drop-in compatibility with the original's real clients: the call sites of the Node
//! http-nas's best-known user (the Redactics agent's DAGs, restore scripts, CLI and chart),
//! run as they are written: `curl -s` without `-f`, bodies compared with strings, listings split
//! on whitespace, `/check` read for `.size` and the fields Node's `fs.Stats` serialises, the
//! chart's `helm test` fetching `/`, and a deployment that sets only `PORT` and `STORAGE_PATH`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Server, TempDir, server_binary, skip};

#[test]
fn a_missing_file_answers_the_seeds_exact_not_found_body() {
    let s = Server::start();
    for (method, path) in [
        ("GET", "/file/blah"),
        ("DELETE", "/file/workflow-1"),
        ("GET", "/file/blah/wc"),
        ("GET", "/nothing"),
    ] {
        let response = s.curl(&["-X", method, &s.url(path)]);
        response.assert_status(404);
        assert_eq!(response.text(), "Not Found", "{method} {path}: {}", response.context);
        assert_eq!(
            response.header("Content-Type"),
            Some("text/plain; charset=utf-8"),
            "{method} {path}"
        );
    }
    s.head("/file/blah").assert_status(404);
    let json = s.get_with("/file/blah", &["Accept: application/json"]);
    json.assert_error(404);
    assert_eq!(json.assert_status(404).header("Content-Type"), Some("application/json"));
}

#[test]
fn the_agents_dag_treats_a_missing_workflow_directory_as_deleted() {
    // The DAG's first task: delete the workflow's directory; a 404 is fine only if its body is
    // `Not Found` (what Express's sendStatus(404) sends); anything else fails the task.
    let s = Server::start();
    let task = format!(
        r#"out=$(curl -s -X DELETE "{url}") || exit 1
           case "$out" in *'"deleted":true'*|"Not Found") echo ok ;; *) echo "failed: $out"; exit 1 ;; esac"#,
        url = s.url("/file/workflow-42")
    );
    assert_eq!(s.sh(&task).assert_success().stdout, b"ok\n", "on a missing directory");
    s.post("/file/workflow-42%2Fpart-1.csv", "a,b\n").assert_ok_json();
    assert_eq!(s.sh(&task).assert_success().stdout, b"ok\n", "on an existing one");
    s.get("/file/workflow-42").assert_status(404);
}

#[test]
fn check_answers_node_fs_stats_fields_or_not_found() {
    let s = Server::start();
    let dump = "COPY t FROM stdin;\n1\n\\.\n";
    s.write("dumps/table.sql", dump);
    let stats = s.get("/file/dumps%2Ftable.sql/check").assert_ok_json();
    assert_eq!(stats["size"], dump.len(), "{stats}");
    for field in ["mode", "nlink", "uid", "gid", "ino", "dev", "blksize", "blocks"] {
        assert!(stats[field].is_u64(), "{field} is not a number: {stats}");
    }
    for field in ["atimeMs", "mtimeMs", "ctimeMs", "birthtimeMs"] {
        assert!(stats[field].as_f64().is_some_and(|ms| ms > 0.0), "{field}: {stats}");
    }
    for field in ["atime", "mtime", "ctime", "birthtime"] {
        let date = stats[field].as_str().unwrap_or_else(|| panic!("{field}: {stats}"));
        assert!(
            date.len() == 24 && date.ends_with('Z') && date.as_bytes()[19] == b'.',
            "{field} = {date}"
        );
    }
    assert_eq!(
        stats["mode"].as_u64().map(|m| m & 0o170000),
        Some(0o100000),
        "a regular file"
    );
    let dir = s.get("/file/dumps/check").assert_ok_json();
    assert_eq!(
        dir["mode"].as_u64().map(|m| m & 0o170000),
        Some(0o040000),
        "a directory: {dir}"
    );
    // The restore scripts skip a missing dump by comparing the body with `Not Found`.
    let restore = format!(
        r#"if [ "$(curl -s "{url}")" = "Not Found" ]; then echo skip; else echo restore; fi"#,
        url = s.url("/file/dumps%2Fmissing.sql/check")
    );
    assert_eq!(s.sh(&restore).assert_success().stdout, b"skip\n");
    s.write("d/check", "a file called check");
    s.get("/file/d%2Fcheck").assert_ok_body("a file called check");
}

#[test]
fn check_reports_the_committed_size_like_get() {
    let s = Server::start();
    s.post("/file/f", "12345").assert_ok_json();
    s.append("/file/f", "678").assert_ok_json();
    assert_eq!(s.get("/file/f/check").assert_ok_json()["size"], 8);
}

#[test]
fn the_charts_helm_test_fetches_the_root_page() {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", "secret")], &[]);
    let page = s.get("/");
    page.assert_status(200);
    let text = page.text();
    assert!(text.starts_with("http-nas"), "{text}");
    assert!(text.contains("/file/{path}/check"), "{text}");
    s.head("/").assert_status(200);
}

#[test]
fn the_cli_prints_a_listing_of_bare_names() {
    let s = Server::start();
    s.write("exports/2026-11-30/data.csv", "x");
    s.write("exports/latest.csv", "y");
    let listing = s.sh(&format!("curl -s {} | tr '\\n' ' '", s.url("/file/exports")));
    assert_eq!(listing.assert_success().stdout, b"2026-11-30 latest.csv ");
    s.write("empty/.keep-me-not", "");
    s.delete("/file/empty%2F.keep-me-not").assert_ok_json();
    s.get("/file/empty").assert_ok_body("");
}

#[test]
fn a_deployment_that_sets_only_port_and_storage_path_listens_on_port() {
    let home = TempDir::new();
    let mut child = Command::new(server_binary())
        .env_clear()
        .env("PORT", "0")
        .env("STORAGE_PATH", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn http-nas");
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut listening = None;
    while listening.is_none() && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                listening = line
                    .split("listening on ")
                    .nth(1)
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            }
            _ => break,
        }
    }
    // PORT=0: the kernel picks a free port, so the address is not the 3000 default.
    let port = listening.as_deref().and_then(|a| a.strip_prefix("0.0.0.0:"));
    let answer = port.filter(|p| *p != "3000").map(|port| {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", &format!("http://127.0.0.1:{port}/file")])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        answer.as_deref(),
        Some("OK"),
        "PORT=0 listens on all addresses: {listening:?}"
    );
}

#[test]
fn check_answers_what_node_fs_stats_serialises() {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return skip("node is not installed");
    }
    let s = Server::start();
    s.write("dir/data.csv", "a,b\n1,2\n");
    for (rel, url) in [
        ("dir/data.csv", "/file/dir%2Fdata.csv/check"),
        ("dir", "/file/dir/check"),
    ] {
        let script = "process.stdout.write(JSON.stringify(require('fs').statSync(process.argv[1])))";
        let path = s.root().join(rel);
        let out = Command::new("node")
            .args(["-e", script])
            .arg(&path)
            .output()
            .expect("run node");
        let ours = s.get(url);
        ours.assert_status(200);
        assert_eq!(ours.text().trim_end(), String::from_utf8_lossy(&out.stdout), "{rel}");
    }
}
