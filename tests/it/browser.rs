//! The browse page, in a real browser, and the security rules of docs/API.md that only a
//! browser can show (cross-site writes, DNS rebinding, stored pages, Basic login): what a
//! browser renders and sends cannot be checked with curl.
//!
//! Debian's `chromium` loads the page headless from the real binary on loopback. The test reads
//! the DOM the browser built (`--dump-dom`): one row per entry, links that lead to the files and
//! directories, a name with `<`, `&` and quotes shown as text (never as markup), no script. It
//! also takes a screenshot, kept at `<target>/browse-page.png` (CI keeps it as an artifact).
//!
//! The attacks run from pages a tiny server in the test serves ([`PageServer`]) on another
//! loopback port, which is another origin: they try writes with and without credentials the
//! browser cached from a Basic login (a popup to `http://user:TOKEN@...`, as a user signing in
//! in another tab); a rebinding page reads through a name Chromium resolves to 127.0.0.1
//! (`--host-resolver-rules`). Each checks both the disk and the service's log, so a request the
//! browser never sent cannot make it pass. Skipped, saying why, where chromium is not installed
//! (`.ci/run` installs it).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::support::{Server, TempDir, skip, wait_until};

/// Longest one chromium run may take, in seconds (`timeout(1)` ends it then).
const CHROMIUM_LIMIT_SECS: &str = "60";

/// The flags this machine's closed network needs (no background lookups) and a fresh profile.
fn chromium(profile: &TempDir, args: &[&str]) -> Option<std::process::Output> {
    let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|b| std::path::Path::new(b).exists());
    let Some(binary) = binary else {
        skip("chromium is not installed (apt-get install chromium)");
        return None;
    };
    // Bounded: a page the browser downloads instead of showing (a stored file sent as an
    // attachment) can leave `--dump-dom` waiting for ever; what it printed by then is the answer.
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", CHROMIUM_LIMIT_SECS, binary]);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.path().display()));
    // Downloads (a stored file sent as an attachment) land in the profile, not in $HOME.
    cmd.env("HOME", profile.path());
    cmd.args(args);
    Some(cmd.output().expect("run chromium"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

#[test]
fn the_browse_page_in_a_real_browser_lists_links_and_escapes_names() {
    let s = Server::start();
    s.write("reports/2026-12/part-1.csv", "a,b\n1,2\n");
    s.write("reports/2026-12/<b>&\"quoted\" 'name'.csv", "x\n");
    s.write("reports/2026-12/big.bin", vec![b'z'; 3 << 20]);
    s.write("reports/2026-12/sub/inner.txt", "inner\n");
    let url = s.url("/file/reports/2026-12/");
    let profile = TempDir::new();
    let Some(out) = chromium(&profile, &["--dump-dom", &url]) else {
        return;
    };
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = dom.matches("<tr><td>").count();
    assert_eq!(rows, 4, "one row per entry:\n{dom}");
    for href in [
        "href=\"/file/reports/2026-12/part-1.csv\"",
        "href=\"/file/reports/2026-12/sub/\"",
        "href=\"/file/reports/2026-12/part-1.csv/wc\"",
        "href=\"/file/reports/2026-12/part-1.csv/check\"",
        "href=\"/file/reports/\"",
    ] {
        assert!(dom.contains(href), "missing {href}:\n{dom}");
    }
    // The odd name is text in the DOM (the browser re-escapes it when dumping), not markup.
    assert!(dom.contains("&lt;b&gt;&amp;\"quoted\" 'name'.csv"), "{dom}");
    assert!(!dom.contains("<b>&amp;"), "the name became markup:\n{dom}");
    assert!(dom.contains("3.0 MiB"), "human sizes:\n{dom}");
    assert!(!dom.contains("<script"), "{dom}");
    // The odd name's link leads to its bytes.
    let odd = s.get("/file/reports/2026-12/%3Cb%3E%26%22quoted%22%20%27name%27.csv");
    odd.assert_ok_body("x\n");
    // What the page is allowed to load: nothing remote, no script.
    let head = s.curl(&["-I", "-H", "Accept: text/html", &url]);
    let policy = head.header("Content-Security-Policy").unwrap_or_default().to_string();
    assert!(
        policy.contains("default-src 'none'") && !policy.contains("script-src"),
        "{policy}"
    );
    // curl and scripts keep the exact text listing; the odd name as one URL segment (docs/API.md).
    s.get("/file/reports/2026-12/")
        .assert_ok_body("%3Cb%3E&%22quoted%22%20'name'.csv\nbig.bin\npart-1.csv\nsub\n");
    // A screenshot for people (kept by CI).
    let shot = target_dir().join("browse-page.png");
    let _ = fs::create_dir_all(target_dir());
    let arg = format!("--screenshot={}", shot.display());
    chromium(&profile, &[&arg, "--window-size=900,360", &url]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn the_front_page_in_a_browser_is_the_roots_browse_page_and_respects_tokens() {
    let s = Server::start_with_env(&[("HTTP_NAS_READ_TOKEN", "look")], &[]);
    s.write("a.txt", "a\n");
    // What a browser gets for `path`, with the read-only token or without one.
    let browse = |path: &str, token: bool| {
        let auth = if token {
            "Authorization: Bearer look"
        } else {
            "X-No-Token: 1"
        };
        s.curl(&["-H", "Accept: text/html", "-H", auth, &s.url(path)])
    };
    // Without the token: 401, even for the browse page.
    assert_eq!(browse("/file/", false).status, 401);
    let page = browse("/file/", true);
    page.assert_status(200);
    assert!(page.text().contains("href=\"/file/a.txt\""), "{}", page.text());
    // GET / answers the text page to curl without a token; to a browser it is the root's
    // browse page, which needs the token like `/file/` does.
    assert!(s.get("/").text().contains("http-nas"));
    assert_eq!(
        browse("/", false).status,
        401,
        "the front page listed files without a token"
    );
    let front = browse("/", true);
    assert!(front.text().contains("href=\"/file/a.txt\""), "{}", front.text());
}

// ---- attacks from other origins ----

/// How long a page's script gets (Chromium's virtual time: network waits do not count).
const PAGE_BUDGET_MS: &str = "--virtual-time-budget=10000";
/// How long a page server waits between looking for connections, and for a request head.
const PAGE_POLL: Duration = Duration::from_millis(10);
const PAGE_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head the page server reads.
const PAGE_MAX_HEAD: usize = 64 * 1024;

/// A page server on its own loopback port (so another origin than the service): it answers
/// `/attack.html` with `page`, and forwards every other request to `forward` if given (a
/// rebinding: the browser's name now leads to the service), else answers 404.
struct PageServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PageServer {
    fn start(page: String, forward: Option<SocketAddr>) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("page server address");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let page = page.clone();
                        thread::spawn(move || serve_page(stream, &page, forward));
                    }
                    Err(_) => thread::sleep(PAGE_POLL),
                }
            }
        });
        PageServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/attack.html", self.addr.port())
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection of a [`PageServer`]: the page, a forwarded request, or 404; then closed.
fn serve_page(mut stream: TcpStream, page: &str, forward: Option<SocketAddr>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(PAGE_IO_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < PAGE_MAX_HEAD {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let target = text.split(' ').nth(1).unwrap_or("");
    if target.starts_with("/attack.html") {
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = stream.write_all(resp.as_bytes());
        return;
    }
    let Some(service) = forward else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    // The request as the browser sent it (its Host too), asking the service to close after it.
    let mut lines: Vec<&str> = text.split("\r\n").take_while(|l| !l.is_empty()).collect();
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let rewritten = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
    let Ok(mut upstream) = TcpStream::connect(service) else {
        return;
    };
    let _ = upstream.set_read_timeout(Some(PAGE_IO_TIMEOUT));
    if upstream.write_all(rewritten.as_bytes()).is_ok() {
        let _ = std::io::copy(&mut upstream, &mut stream);
    }
}

/// `TOKEN` of the services the attacks run against.
const TOKEN: &str = "browser-token-5d1e";

/// The attacker page: optionally signs in to the service in a popup first (the browser then
/// holds Basic credentials for it), proves they are sent cross-site with a read, then tries a
/// no-cors POST, a DELETE and a form POST; it writes what it saw into `#out`.
fn attack_page(service: SocketAddr, login: bool) -> String {
    let svc = format!("http://{service}");
    let login_url = format!("http://user:{TOKEN}@{service}/file/");
    format!(
        r#"<!doctype html><html><body><iframe name="sink"></iframe>
<form id="form" method="POST" action="{svc}/file/form.txt" enctype="text/plain" target="sink"><input name="a" value="b"></form>
<pre id="out"></pre>
<script>
const out = (t) => document.getElementById("out").textContent += t + "\n";
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
async function run() {{
  if ({login}) {{ out("popup " + (window.open("{login_url}", "login") ? "open" : "blocked")); await sleep(2000); }}
  try {{ await fetch("{svc}/file/probe.txt", {{mode: "no-cors", credentials: "include"}}); out("read sent"); }} catch (e) {{ out("read " + e); }}
  try {{ await fetch("{svc}/file/pwned.txt", {{method: "POST", mode: "no-cors", credentials: "include", headers: {{"Content-Type": "text/plain"}}, body: "pwned"}}); out("post sent"); }} catch (e) {{ out("post " + e); }}
  try {{ await fetch("{svc}/file/victim.txt", {{method: "DELETE", credentials: "include"}}); out("delete sent"); }} catch (e) {{ out("delete " + e); }}
  document.getElementById("form").submit();
  await sleep(2000);
  out("attack done");
}}
run();
</script></body></html>"#
    )
}

/// Runs [`attack_page`] against `s` in Chromium; returns the DOM, or `None` when skipped.
fn run_attack(s: &Server, login: bool) -> Option<String> {
    let attacker = PageServer::start(attack_page(s.addr(), login), None);
    let profile = TempDir::new();
    let url = attacker.url("127.0.0.1");
    let out = chromium(
        &profile,
        &["--disable-popup-blocking", PAGE_BUDGET_MS, "--dump-dom", &url],
    )?;
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("attack done"),
        "the attack page did not finish:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dom)
}

/// What a page wrote into its `#out`.
fn page_output(dom: &str) -> &str {
    let start = dom.find("<pre id=\"out\">").map_or(0, |i| i + "<pre id=\"out\">".len());
    let end = dom[start..].find("</pre>").map_or(dom.len(), |i| start + i);
    &dom[start..end]
}

/// Waits until the service's log has `line`; panics with the log if it does not come.
#[track_caller]
fn expect_logged(s: &Server, line: &str, case: &str) {
    if !wait_until(PAGE_IO_TIMEOUT, || s.log().contains(line)) {
        panic!("{case}: the service never logged {line:?}:\n{}", s.log());
    }
}

#[test]
fn a_page_on_another_origin_cannot_write_with_or_without_cached_credentials() {
    for (case, token, login) in [
        ("open service", false, false),
        ("token, no credentials", true, false),
        ("token, credentials cached by a login", true, true),
    ] {
        let env: &[(&str, &str)] = if token { &[("HTTP_NAS_TOKEN", TOKEN)] } else { &[] };
        let s = Server::start_with_env(env, &[]);
        s.write("victim.txt", "keep me");
        s.write("probe.txt", "p");
        let Some(dom) = run_attack(&s, login) else {
            return;
        };
        eprintln!("{case}: the page says {:?}", page_output(&dom));
        // The browser did send the writes (the log shows them), and each was refused.
        expect_logged(&s, "POST /file/pwned.txt 403", case);
        expect_logged(&s, "POST /file/form.txt 403", case);
        // A DELETE from another origin needs a CORS preflight, which the service never grants.
        expect_logged(&s, "OPTIONS /file/victim.txt", case);
        if login {
            // The credentials really were cached and sent with the cross-site requests.
            expect_logged(&s, "GET /file/probe.txt 200", case);
        }
        let log = s.log();
        for line in log.lines().filter(|l| l.contains("[access]")) {
            eprintln!("  {case}: {}", line.split("[access] ").nth(1).unwrap_or(line));
        }
        assert!(
            !log.contains("DELETE /file/victim.txt"),
            "{case}: a DELETE got through:\n{log}"
        );
        assert!(
            !s.exists("pwned.txt") && !s.exists("form.txt"),
            "{case}: a file was written"
        );
        assert_eq!(s.read("victim.txt"), b"keep me", "{case}");
    }
}

/// A rebinding page: same-origin reads of a file, a listing and the front page, each result
/// written into `#out`.
const REBIND_PAGE: &str = r#"<!doctype html><html><body><pre id="out"></pre><script>
const out = (t) => document.getElementById("out").textContent += t + "\n";
async function run() {
  for (const path of ["/file/secret.txt", "/file/", "/"]) {
    try { const r = await fetch(path); out(path + " " + r.status + " " + (await r.text()).slice(0, 300)); }
    catch (e) { out(path + " " + e); }
  }
  out("rebind done");
}
run();
</script></body></html>"#;

#[test]
fn a_dns_rebinding_page_reads_nothing_with_allowed_hosts() {
    for (case, args) in [
        ("without --allowed-hosts", &[][..]),
        (
            "with --allowed-hosts",
            &["--allowed-hosts", "http-nas,http-nas.team.svc"][..],
        ),
    ] {
        let s = Server::start_with(args);
        s.write("secret.txt", "TOP-SECRET-42");
        // The page's name first led to the attacker; now Chromium resolves it to 127.0.0.1,
        // and the forwarder stands in for the service on the page's port.
        let rebound = PageServer::start(REBIND_PAGE.to_string(), Some(s.addr()));
        let profile = TempDir::new();
        let url = rebound.url("rebind.attacker.test");
        let rules = "--host-resolver-rules=MAP rebind.attacker.test 127.0.0.1";
        let Some(out) = chromium(&profile, &[rules, PAGE_BUDGET_MS, "--dump-dom", &url]) else {
            return;
        };
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(dom.contains("rebind done"), "{case}: the page did not finish:\n{dom}");
        eprintln!("{case}: the page says {:?}", page_output(&dom));
        expect_logged(&s, "GET /file/secret.txt", case);
        if args.is_empty() {
            // The gap the start-up log names: plain requests from a page on a name that is
            // not localhost carry no browser marker, so only the setting closes it. (This
            // also shows the page really reaches the service.)
            assert!(
                dom.contains("TOP-SECRET-42"),
                "{case}: expected the read to get through:\n{dom}"
            );
            assert!(s.log().contains("DNS rebinding can still read"), "{}", s.log());
        } else {
            assert!(!dom.contains("TOP-SECRET-42"), "{case}: the page read the file:\n{dom}");
            assert!(dom.contains("/file/secret.txt 403"), "{case}:\n{dom}");
            assert!(
                dom.contains("/file/ 403") && !dom.contains("secret.txt\n"),
                "{case}:\n{dom}"
            );
        }
    }
}

#[test]
fn a_stored_html_page_opened_from_the_browse_page_runs_no_script() {
    let s = Server::start();
    let page = r#"<!doctype html><html><body><p id="p">stored page</p><script>
document.getElementById("p").textContent = "SCRIPT" + "-RAN";
fetch("/file/written-back.txt", {method: "POST", headers: {"Content-Type": "text/plain"}, body: "from the page"});
</script></body></html>"#;
    s.post("/file/pages/evil.html", page).assert_ok_json();
    let profile = TempDir::new();
    let Some(out) = chromium(&profile, &["--dump-dom", &s.url("/file/pages/")]) else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let href = "href=\"/file/pages/evil.html\"";
    assert!(
        listing.contains(href),
        "the browse page should link the page:\n{listing}"
    );
    // Follow the link as the browse page gives it.
    let out = chromium(
        &profile,
        &[PAGE_BUDGET_MS, "--dump-dom", &s.url("/file/pages/evil.html")],
    )
    .expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "stored page as the browser shows it: {:?}",
        dom.lines().find(|l| l.contains("id=\"p\"")).unwrap_or("(not rendered)")
    );
    // Let a write the script may have started arrive before looking.
    expect_logged(&s, "GET /file/pages/evil.html", "stored page");
    thread::sleep(PAGE_POLL * 20);
    assert!(!dom.contains("SCRIPT-RAN"), "the stored page's script ran:\n{dom}");
    assert!(
        !s.exists("written-back.txt"),
        "the stored page wrote a file back:\n{}",
        s.log()
    );
    assert!(!s.log().contains("POST /file/written-back.txt"), "{}", s.log());
}

#[test]
fn basic_login_in_a_real_browser_lists_and_downloads() {
    let s = Server::start_with_env(&[("HTTP_NAS_TOKEN", TOKEN)], &[]);
    s.write("reports/a.txt", "alpha line\n");
    s.write("reports/b.csv", "x,y\n1,2\n");
    let profile = TempDir::new();
    // Without credentials: a 401 with a Basic challenge (headless Chromium, which has no
    // prompt to show, shows nothing of the directory).
    let Some(out) = chromium(&profile, &["--dump-dom", &s.url("/file/reports/")]) else {
        return;
    };
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!dom.contains("a.txt"), "listed without credentials:\n{dom}");
    expect_logged(&s, "GET /file/reports/ 401", "no credentials");
    let challenge = s.curl(&["-H", "Accept: text/html", &s.url("/file/reports/")]);
    challenge.assert_status(401);
    assert!(
        challenge
            .header("WWW-Authenticate")
            .is_some_and(|c| c.starts_with("Basic"))
    );
    // With the token as the password: the browse page, then a file.
    let with = |path: &str| format!("http://user:{TOKEN}@{}{path}", s.addr());
    let profile = TempDir::new();
    let out = chromium(&profile, &["--dump-dom", &with("/file/reports/")]).expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("href=\"/file/reports/a.txt\"") && dom.contains("href=\"/file/reports/b.csv\""),
        "{dom}"
    );
    let out = chromium(&profile, &["--dump-dom", &with("/file/reports/a.txt")]).expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(dom.contains("alpha line"), "the download did not show:\n{dom}");
    expect_logged(&s, "GET /file/reports/ 200", "login");
    expect_logged(&s, "GET /file/reports/a.txt 200", "download");
    let shot = target_dir().join("browse-basic-auth.png");
    let _ = fs::create_dir_all(target_dir());
    let arg = format!("--screenshot={}", shot.display());
    chromium(&profile, &[&arg, "--window-size=900,360", &with("/file/reports/")]);
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}
