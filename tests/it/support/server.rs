//! The server under test: a fresh temp directory per test, the `http-nas` process started,
//! restarted, signalled and killed, its log, and the files under its storage root as seen on disk.
//!
//! Every test starts its own `http-nas` on port 0 in a fresh temp directory and learns the bound
//! address from the server's `listening on` log line, so there is no free-port race and no state
//! shared between tests. The storage root is `<temp>/root`, which leaves `<temp>` itself as an
//! "outside" the traversal tests can plant sentinels in.
//!
//! The recovery, shutdown and replica tests also need the process itself: [`Server::signal`]
//! sends it a real signal, [`Server::restart`] starts a new process on the same root (as after a
//! crash), and [`Server::start_on`] runs a second server on another's root (replicas sharing a volume).
//! When a test panics, the server log is printed on `Drop`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::curl::write_curlrc;
use super::wait::{SETTLE_TIMEOUT, wait_until};

/// How long the server gets to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's reserved namespace (`RESERVED_PREFIX` in `src/path.rs`): its upload
/// temp files, crash-journal records, trash and storage-check probe files are all named under
/// it, and a client may not name a path in it. [`Server::temp_files`] looks for it.
pub const RESERVED_PREFIX: &str = ".http-nas-";
/// The names of appends' crash record slots (`JOURNAL_PREFIX` in `src/storage/journal.rs`).
pub const JOURNAL_PREFIX: &str = ".http-nas-journal-";

/// Environment that would change the server's or curl's behaviour behind a test's back.
pub(super) const SCRUBBED_ENV: &[&str] = &[
    "HTTP_NAS_TOKEN",
    "HTTP_NAS_READ_TOKEN",
    "HTTP_NAS_TOKEN_FILE",
    "HTTP_NAS_READ_TOKEN_FILE",
    "HTTP_NAS_TOKENS_FILE",
    "HTTP_NAS_ALLOWED_HOSTS",
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

pub(super) fn next_id() -> usize {
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
        write_curlrc(scratch.path());
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
            // An appended file's crash record slot stays beside it by design (idle between
            // appends; docs/write-protocol.md): not a leftover.
            if name.is_some_and(|n| n.starts_with(RESERVED_PREFIX) && !n.starts_with(JOURNAL_PREFIX)) {
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

    /// The directory for this server's scratch files (curl's bodies, `.curlrc`, `sh` scripts):
    /// outside the root, so nothing there is served or swept.
    pub(super) fn scratch(&self) -> &Path {
        self.scratch.path()
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
