//! Harness for the integration tests: a [`Server`] per test, a `curl` runner, and raw sockets.
//!
//! Every test starts its own `http-nas` on port 0 in a fresh temp directory and learns the bound
//! address from the server's `listening on` log line, so there is no free-port race and no state
//! shared between tests. The storage root is `<temp>/root`, which leaves `<temp>` itself as an
//! "outside" the traversal tests can plant sentinels in. Requests go through the real `curl` where
//! a user would use curl (its framing is the one that matters in production) and through a raw
//! `TcpStream` (see `raw`) where a test needs bytes curl would never send.
//!
//! The durability tests also need the process itself: [`Server::signal`] sends it a real signal,
//! [`Server::restart`] starts a new process on the same root (as after a crash), and
//! [`Server::start_on`] runs a second server on another's root (replicas sharing a volume).
//!
//! Nothing here asserts on time: every wait is a generous upper bound so that a hang fails the
//! test instead of blocking the suite. When a test panics, the server log is printed on `Drop`, and
//! every [`Response`] carries the exact command (or bytes) and curl's stderr that produced it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::raw::Conn;

/// How long the server gets to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// `--max-time` of every curl run, including the README commands (through `.curlrc`).
pub const CURL_MAX_TIME_SECS: u32 = 30;
/// How long the server may take to clean up after a client that vanished mid-upload.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Name prefix of the server's upload temp files.
pub const TEMP_PREFIX: &str = ".http-nas-";
/// The host the original README's commands talk to; replaced by the test server's address.
pub const README_HOST: &str = "http://http-nas:3000";

/// Environment that would change the server's or curl's behaviour behind a test's back.
const SCRUBBED_ENV: &[&str] = &[
    "HTTP_NAS_TOKEN",
    "HTTP_NAS_READ_TOKEN",
    "STORAGE_PATH",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Gives every temp dir and scratch file of this process a distinct name.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A fresh directory under the system temp dir, removed (with everything in it) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("http-nas-it-{}-{}-{nanos}", std::process::id(), next_id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // `remove_dir_all` unlinks symlinks rather than following them, so the traversal
        // tests' links to the outside cannot make it delete anything beyond this directory.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running `http-nas` with its own storage root; killed on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    drain: Option<JoinHandle<()>>,
    launch: Launch,
    /// The temp dir holding the root, when this server created it (not for [`Server::start_on`]).
    home: Option<TempDir>,
    scratch: TempDir,
}

/// What a server process is started with, kept so that [`Server::restart`] can repeat it.
struct Launch {
    root: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// A command the server runs under (`strace ...`, `unshare ...`), or empty.
    wrapper: Vec<String>,
}

/// The server binary under test: `HTTP_NAS_TEST_BIN` when set (to check that a new test fails
/// on an older build), else the one cargo built for this test run.
pub fn server_binary() -> PathBuf {
    std::env::var_os("HTTP_NAS_TEST_BIN")
        .filter(|b| !b.is_empty())
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_http-nas")), PathBuf::from)
}

impl Server {
    /// Starts a server with default options on an empty root.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra command-line options (`["--workers", "2"]`).
    pub fn start_with(args: &[&str]) -> Server {
        Server::start_prepared(|_| {}, args)
    }

    /// Lets `prepare` fill the storage root before the server starts.
    pub fn start_prepared(prepare: impl FnOnce(&Path), args: &[&str]) -> Server {
        Server::start_in_new_home(prepare, args, &[])
    }

    /// Starts a server with extra environment variables (`[("HTTP_NAS_TOKEN", "t")]`).
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::start_in_new_home(|_| {}, args, env)
    }

    /// Starts a server on an existing storage root that it does not own: a second process
    /// sharing another server's root, or a mount the test manages. `outside()` is its parent.
    pub fn start_on(root: &Path, args: &[&str]) -> Server {
        Server::launch(None, Launch::new(root.to_path_buf(), args, &[]))
    }

    /// Starts a server on `root` as the last arguments of `wrapper` (`["strace", ...]`), which
    /// must run it as a descendant; [`Server::pid`] and signals then reach the server itself.
    pub fn start_wrapped_on(root: &Path, wrapper: &[String], args: &[&str]) -> Server {
        let mut launch = Launch::new(root.to_path_buf(), args, &[]);
        launch.wrapper = wrapper.to_vec();
        Server::launch(None, launch)
    }

    fn start_in_new_home(prepare: impl FnOnce(&Path), args: &[&str], env: &[(&str, &str)]) -> Server {
        let home = TempDir::new();
        let root = home.path().join("root");
        fs::create_dir(&root).expect("create storage root");
        prepare(&root);
        Server::launch(Some(home), Launch::new(root, args, env))
    }

    fn launch(home: Option<TempDir>, launch: Launch) -> Server {
        let scratch = TempDir::new();
        let curlrc = format!("max-time = {CURL_MAX_TIME_SECS}\nnoproxy = \"*\"\n");
        fs::write(scratch.path().join(".curlrc"), curlrc).expect("write .curlrc");
        let log = Arc::new(Mutex::new(String::new()));
        let (child, addr, drain) = launch.spawn(&log);
        Server {
            child,
            addr,
            log,
            drain: Some(drain),
            launch,
            home,
            scratch,
        }
    }

    /// Kills the process (SIGKILL, if it still runs) and starts a new one on the same root
    /// with the same options; the new one listens on a new port. The log keeps both runs.
    pub fn restart(&mut self) {
        self.stop();
        lock(&self.log).push_str("--- restarted by the test ---\n");
        let (child, addr, drain) = self.launch.spawn(&self.log);
        (self.child, self.addr, self.drain) = (child, addr, Some(drain));
    }

    /// Kills the process if it still runs and collects its log.
    fn stop(&mut self) {
        if !self.launch.wrapper.is_empty() && self.child.try_wait().ok().flatten().is_none() {
            // A tracer that dies detaches its tracee rather than killing it: kill the server.
            // SAFETY: kill(2) takes plain integers; the pid is a live descendant of our child.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }

    // ---- the process ----

    /// The server's process id (under a wrapper, the descendant running the server binary).
    pub fn pid(&self) -> libc::pid_t {
        let child = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        if self.launch.wrapper.is_empty() {
            return child;
        }
        find_descendant(child, &server_binary()).unwrap_or(child)
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGKILL`...) to the server process.
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) takes plain integers. The pid is our own child's, and the child is
        // only reaped by `wait_exit`/`stop`, so the pid cannot have been reused by then.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
        if signal == libc::SIGKILL && !self.launch.wrapper.is_empty() {
            // A thread held in a ptrace stop (an injected delay) only dies once its tracer
            // lets go of it: kill the wrapper too, so the server is gone now, as after kill -9.
            // SAFETY: as above, for our own child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// A numeric field of `/proc/PID/status` (`Threads`, or `VmRSS` in KiB).
    #[track_caller]
    pub fn proc_status(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'));
        let number = value.and_then(|v| v.split_whitespace().next()?.parse().ok());
        number.unwrap_or_else(|| panic!("no numeric {field:?} in {path}:\n{text}"))
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`; `path` starts with `/` and is sent as written.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The storage root (`--storage`).
    pub fn root(&self) -> PathBuf {
        self.launch.root.clone()
    }

    /// The directory that holds the root: outside of it, but writable by the tests.
    pub fn outside(&self) -> &Path {
        let home = self.home.as_ref().map(TempDir::path);
        home.or_else(|| self.launch.root.parent())
            .expect("the root has a parent")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    // ---- the storage root, seen directly on disk ----

    /// Writes `root/rel`, creating its parents.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let path = self.root().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Reads `root/rel`, panicking if it is missing.
    #[track_caller]
    pub fn read(&self, rel: &str) -> Vec<u8> {
        let path = self.root().join(rel);
        fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Whether `root/rel` exists (a dangling symlink counts).
    pub fn exists(&self, rel: &str) -> bool {
        self.root().join(rel).symlink_metadata().is_ok()
    }

    /// Every `.http-nas-*` entry anywhere under the root (symlinks are not followed).
    pub fn temp_files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.root(), &mut |path| {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
                found.push(path.to_path_buf());
            }
        });
        found
    }

    /// Waits for the server to remove every upload temp file; panics if some remain.
    #[track_caller]
    pub fn expect_no_temp_files(&self) {
        let cleaned = wait_until(SETTLE_TIMEOUT, || self.temp_files().is_empty());
        assert!(
            cleaned,
            "temp files still present after {SETTLE_TIMEOUT:?}: {:?}",
            self.temp_files()
        );
    }

    /// `GET /healthz` answers 200.
    #[track_caller]
    pub fn assert_healthy(&self) {
        self.get("/healthz").assert_status(200);
    }

    // ---- curl ----

    /// Runs `curl -q -sS --path-as-is --max-time 30 ARGS`; the body, headers and status are
    /// captured separately (`-o`, `-D`, `-w`), so any body bytes come back unaltered.
    pub fn curl(&self, args: &[&str]) -> Response {
        let id = next_id();
        let body_file = self.scratch.path().join(format!("body-{id}"));
        let head_file = self.scratch.path().join(format!("head-{id}"));
        let max_time = CURL_MAX_TIME_SECS.to_string();
        let mut cmd = Command::new("curl");
        cmd.args(["-q", "-sS", "--path-as-is", "--max-time", &max_time]);
        cmd.arg("-o").arg(&body_file).arg("-D").arg(&head_file);
        cmd.args(["-w", "%{http_code}"]).args(args);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("run curl: {e}"));
        let head = fs::read_to_string(&head_file).unwrap_or_default();
        let body = fs::read(&body_file).unwrap_or_default();
        let _ = fs::remove_file(&head_file);
        let _ = fs::remove_file(&body_file);
        let mut context = format!("command: {}\ncurl: {}", render(&cmd), out.status);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            let _ = write!(context, "\ncurl stderr: {}", stderr.trim_end());
        }
        Response {
            status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0),
            headers: last_header_block(&head),
            body,
            context,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Response {
        self.curl(&[&self.url(path)])
    }

    /// `HEAD path` (`curl -I`); the returned body is always empty.
    pub fn head(&self, path: &str) -> Response {
        Response {
            body: Vec::new(),
            ..self.curl(&["-I", &self.url(path)])
        }
    }

    /// `GET path` with extra request headers (`["Range: bytes=0-9"]`).
    pub fn get_with(&self, path: &str, headers: &[&str]) -> Response {
        let mut args: Vec<&str> = headers.iter().flat_map(|h| ["-H", h]).collect();
        let url = self.url(path);
        args.push(&url);
        self.curl(&args)
    }

    /// `POST path` with `body` as an octet stream (Content-Length framing).
    pub fn post(&self, path: &str, body: impl AsRef<[u8]>) -> Response {
        self.send("POST", path, body.as_ref(), &[])
    }

    /// `PUT path` with `body` as an octet stream: an append.
    pub fn append(&self, path: &str, body: impl AsRef<[u8]>) -> Response {
        self.send("PUT", path, body.as_ref(), &[])
    }

    /// `PUT path` with `Content-Type: application/json` and `json` as the body: a move.
    pub fn put_json(&self, path: &str, json: &str) -> Response {
        let url = self.url(path);
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json,
            &url,
        ])
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Response {
        self.curl(&["-X", "DELETE", &self.url(path)])
    }

    /// `METHOD path` with `body` as an octet stream (Content-Length framing) and extra
    /// request headers (`["Upload-Offset: 3"]`).
    pub fn send(&self, method: &str, path: &str, body: &[u8], headers: &[&str]) -> Response {
        let file = self.scratch_file(&format!("upload-{}", next_id()), body);
        let data = format!("@{}", file.display());
        let url = self.url(path);
        let ctype = "Content-Type: application/octet-stream";
        let mut args = vec!["-X", method, "-H", ctype];
        args.extend(headers.iter().flat_map(|h| ["-H", *h]));
        args.extend(["--data-binary", &data, &url]);
        let response = self.curl(&args);
        let _ = fs::remove_file(file);
        response
    }

    /// `GET /metrics` as `name{labels}` → value, one entry per sample line.
    #[track_caller]
    pub fn scrape(&self) -> HashMap<String, f64> {
        let response = self.get("/metrics");
        let text = response.assert_status(200).text();
        let sample = |line: &str| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        };
        let lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        lines
            .map(|line| sample(line).unwrap_or_else(|| response.fail(&format!("bad sample line {line:?}"))))
            .collect()
    }

    // ---- shell commands ----

    /// Writes a file in the scratch dir (not under the root) and returns its path.
    pub fn scratch_file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.scratch.path().join(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Runs `sh -c SCRIPT` in the scratch dir; curl reads the scratch `.curlrc` (max-time).
    pub fn sh(&self, script: &str) -> ShOutput {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).current_dir(self.scratch.path());
        cmd.env("CURL_HOME", self.scratch.path());
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("run sh -c {script:?}: {e}"));
        ShOutput {
            script: script.to_string(),
            status: out.status,
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a command from the original README verbatim, with its host replaced by this
    /// server, and asserts it succeeded.
    #[track_caller]
    pub fn readme(&self, command: &str) -> ShOutput {
        let out = self.sh(&command.replace(README_HOST, &self.url("")));
        out.assert_success();
        out
    }

    // ---- raw sockets ----

    /// A raw connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- server log ({}) ---\n{}--- end of server log ---",
                self.addr,
                self.log()
            );
        }
    }
}

impl Launch {
    fn new(root: PathBuf, args: &[&str], env: &[(&str, &str)]) -> Launch {
        Launch {
            root,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            wrapper: Vec::new(),
        }
    }

    /// Starts the process, copying its stderr into `log`, and waits for its `listening on`
    /// line; panics with the log if it does not come.
    fn spawn(&self, log: &Arc<Mutex<String>>) -> (Child, SocketAddr, JoinHandle<()>) {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(server_binary());
                cmd
            }
            None => Command::new(server_binary()),
        };
        cmd.arg("--listen").arg("127.0.0.1:0").arg("--storage").arg(&self.root);
        if !self.args.iter().any(|a| a == "--log-level") {
            cmd.args(["--log-level", "info"]);
        }
        cmd.args(&self.args);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));

        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(log);
        let drain = thread::spawn(move || drain_log(stderr, &sink, tx));
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => (child, addr, drain),
            Err(err) => {
                let _ = child.kill();
                let status = child.wait();
                let _ = drain.join();
                panic!(
                    "http-nas did not log `listening on ADDR` within {STARTUP_TIMEOUT:?} ({err}); \
                     exit status: {status:?}\ncommand: {cmd:?}\n--- server stderr ---\n{}",
                    lock(log)
                );
            }
        }
    }
}

/// Copies the server's stderr into `log`; sends the address of the `listening on` line once.
fn drain_log(stderr: ChildStderr, log: &Mutex<String>, tx: Sender<SocketAddr>) {
    let mut reader = BufReader::new(stderr);
    let mut tx = Some(tx);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        lock(log).push_str(&text);
        if let Some(addr) = tx.as_ref().and_then(|_| parse_listening(&text)) {
            let _ = tx.take().map(|tx| tx.send(addr));
        }
    }
}

/// The first descendant of `pid` (depth first) whose executable is `binary`.
fn find_descendant(pid: libc::pid_t, binary: &Path) -> Option<libc::pid_t> {
    let want = fs::canonicalize(binary).ok()?;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if p != pid && fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|exe| exe == want) {
            return Some(p);
        }
        let children = fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        stack.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<libc::pid_t>().ok()),
        );
    }
    None
}

/// The address in `... listening on 127.0.0.1:PORT ...`.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on ")?;
    let token = rest.split_whitespace().next()?;
    token.trim_start_matches("http://").parse().ok()
}

fn lock(log: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A command line as it could be pasted into a shell.
fn render(cmd: &Command) -> String {
    let quote = |s: &str| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:@%=".contains(&b)) {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut out = quote(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        out.push(' ');
        out.push_str(&quote(&arg.to_string_lossy()));
    }
    out
}

/// Headers of the final response in a `curl -D` dump (skipping `100 Continue` blocks).
fn last_header_block(dump: &str) -> Vec<(String, String)> {
    let start = dump.rfind("HTTP/").unwrap_or(0);
    dump[start..].lines().skip(1).filter_map(split_header).collect()
}

pub fn split_header(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim().to_string(), value.trim().to_string()))
}

/// Calls `visit` for every entry under `dir`, without following symlinks.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        visit(&path);
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, visit);
        }
    }
}

/// Polls `done` every 20 ms until it holds or `timeout` passes; returns its last value.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic incompressible bytes (xorshift64*), so a failure is reproducible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts two byte strings are equal without dumping megabytes when they are not.
#[track_caller]
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let first_diff = actual.iter().zip(expected).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, expected {}; first difference at {:?}\n got: {}\nwant: {}",
        actual.len(),
        expected.len(),
        first_diff.unwrap_or(actual.len().min(expected.len())),
        preview(actual),
        preview(expected)
    );
}

/// At most 300 bytes of `bytes`, escaped, with the total length if cut.
pub fn preview(bytes: &[u8]) -> String {
    const LIMIT: usize = 300;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(LIMIT)]);
    if bytes.len() > LIMIT {
        format!("{shown:?}... ({} bytes)", bytes.len())
    } else {
        format!("{shown:?}")
    }
}

/// The output of [`Server::sh`].
pub struct ShOutput {
    pub script: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl ShOutput {
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "command failed ({}): sh -c '{}'\nstdout: {}\nstderr: {}",
            self.status,
            self.script,
            preview(&self.stdout),
            self.stderr
        );
        self
    }
}

/// One HTTP response, from curl or parsed off a raw socket.
#[derive(Debug)]
pub struct Response {
    /// 0 when curl got no response at all.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What produced this response (command, curl stderr, raw bytes), for failure messages.
    pub context: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panics with `what`, this response and its context.
    #[track_caller]
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nstatus: {}\nheaders: {:?}\nbody: {}\n{}",
            self.status,
            self.headers,
            preview(&self.body),
            self.context
        )
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        if self.status != status {
            self.fail(&format!("expected status {status}, got {}", self.status));
        }
        self
    }

    /// Status 200 and exactly `expected` as the body.
    #[track_caller]
    pub fn assert_ok_body(&self, expected: impl AsRef<[u8]>) -> &Self {
        self.assert_status(200);
        if self.body != expected.as_ref() {
            self.fail(&format!("expected body {}", preview(expected.as_ref())));
        }
        self
    }

    /// Status 200 and a JSON body (the success reply of writes, moves and deletes).
    #[track_caller]
    pub fn assert_ok_json(&self) -> serde_json::Value {
        self.assert_status(200);
        serde_json::from_slice(&self.body).unwrap_or_else(|e| self.fail(&format!("body is not JSON: {e}")))
    }

    /// Status `status` with the contract's error body: `application/json`
    /// `{"error": KIND, "message": TEXT}`; a 404 is the seed's `text/plain` `Not Found`
    /// (or, asked for with `Accept: application/json`, KIND `not_found`).
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> &Self {
        if let Some(problem) = self.error_problem(status) {
            self.fail(&problem);
        }
        self
    }

    /// Why this is not a well-formed error response with `status`, if it is not.
    pub fn error_problem(&self, status: u16) -> Option<String> {
        if self.status != status {
            return Some(format!("expected status {status}, got {}", self.status));
        }
        let ctype = self.header("Content-Type").unwrap_or("");
        if status == 404 && ctype.starts_with("text/plain") {
            return (self.body != b"Not Found")
                .then(|| format!("a 404's text body should be `Not Found`, got {}", preview(&self.body)));
        }
        if !ctype.starts_with("application/json") {
            return Some(format!("expected Content-Type application/json, got {ctype:?}"));
        }
        let json: serde_json::Value = match serde_json::from_slice(&self.body) {
            Ok(json) => json,
            Err(e) => return Some(format!("error body is not JSON: {e}")),
        };
        let (Some(kind), Some(_)) = (json["error"].as_str(), json["message"].as_str()) else {
            return Some("error body lacks string `error` and `message` keys".to_string());
        };
        if status == 404 && kind != "not_found" {
            return Some(format!("a 404's error kind should be `not_found`, got {kind:?}"));
        }
        None
    }
}
