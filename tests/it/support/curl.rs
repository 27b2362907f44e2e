//! Requests through the real `curl`, where a user would use curl (its framing is the one that
//! matters in production), and shell commands (`sh -c`, the original README's commands verbatim);
//! both turn what came back into a [`Response`] or a [`ShOutput`] that carries the exact command.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use super::bytes::preview;
use super::response::Response;
use super::server::{SCRUBBED_ENV, Server, next_id};

/// `--max-time` of every curl run, including the README commands (through `.curlrc`).
pub const CURL_MAX_TIME_SECS: u32 = 30;
/// The host the original README's commands talk to; replaced by the test server's address.
pub const README_HOST: &str = "http://http-nas:3000";

/// Writes the `.curlrc` that [`Server::sh`] points curl at (through `CURL_HOME`), so that the
/// README's curl commands get the same `--max-time` as [`Server::curl`] and never use a proxy.
pub(super) fn write_curlrc(dir: &Path) {
    let curlrc = format!("max-time = {CURL_MAX_TIME_SECS}\nnoproxy = \"*\"\n");
    fs::write(dir.join(".curlrc"), curlrc).expect("write .curlrc");
}

impl Server {
    /// Runs `curl -q -sS --path-as-is --max-time 30 ARGS`; the body, headers and status are
    /// captured separately (`-o`, `-D`, `-w`), so any body bytes come back unaltered.
    pub fn curl(&self, args: &[&str]) -> Response {
        let id = next_id();
        let body_file = self.scratch().join(format!("body-{id}"));
        let head_file = self.scratch().join(format!("head-{id}"));
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
        let path = self.scratch().join(name);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Runs `sh -c SCRIPT` in the scratch dir; curl reads the scratch `.curlrc` (max-time).
    pub fn sh(&self, script: &str) -> ShOutput {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).current_dir(self.scratch());
        cmd.env("CURL_HOME", self.scratch());
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

/// One `Name: value` header line, both sides trimmed; `None` for a line without a colon.
fn split_header(line: &str) -> Option<(String, String)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim().to_string(), value.trim().to_string()))
}
