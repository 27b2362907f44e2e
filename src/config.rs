//! Command-line flags with environment fallbacks → [`Config`].
//!
//! Every setting has a flag; the ones an operator sets in a pod spec also have an environment
//! variable (the flag wins). Parsing is hand-written: a dozen flags do not need a crate.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the service is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Storage root directory.
    pub storage: PathBuf,
    /// Worker threads.
    pub workers: usize,
    /// Requests that may wait for a worker.
    pub queue: usize,
    /// Longest a request may wait in that queue before it is answered 503.
    pub queue_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Log level (error, warn, info, debug, trace, off).
    pub log_level: log::LevelFilter,
    /// Idle keep-alive (and new connection) timeout.
    pub idle_timeout: Duration,
    /// Time allowed to send a whole request head.
    pub head_timeout: Duration,
    /// Socket read/write timeout while serving a request.
    pub io_timeout: Duration,
    /// How long SIGTERM waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Largest request body in bytes (`None`: unlimited).
    pub max_body: Option<u64>,
    /// Whether writes are fsynced before they are acknowledged.
    pub fsync: bool,
    /// Read-write bearer token.
    pub token: Option<String>,
    /// Read-only bearer token.
    pub read_token: Option<String>,
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the server.
    Run(Box<Config>),
    /// Print help and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// The `--help` text.
pub const HELP: &str = "\
http-nas: shared storage for Kubernetes jobs over plain HTTP

USAGE: http-nas [OPTIONS]

OPTIONS (environment variable in brackets; the flag wins):
  --listen ADDR            address to listen on [HTTP_NAS_LISTEN] (default 0.0.0.0:3000;
                           with only PORT set, as the original read it: 0.0.0.0:PORT)
  --storage DIR            storage root, an existing writable directory [STORAGE_PATH]
                           (default /mnt/storage)
  --workers N              worker threads, one per request in service [HTTP_NAS_WORKERS]
                           (default 128: that many uploads and downloads at once)
  --queue N                requests that may wait for a free worker; beyond it: 503
                           [HTTP_NAS_QUEUE] (default 128)
  --queue-timeout SECS     a request waiting longer than this for a worker gets 503
                           [HTTP_NAS_QUEUE_TIMEOUT] (default 30)
  --max-connections N      open connections at most, idle ones included; beyond it: 503
                           [HTTP_NAS_MAX_CONNECTIONS] (default 1024)
  --log-level LEVEL        error, warn, info, debug, trace or off [RUST_LOG] (default info)
  --idle-timeout SECS      close idle keep-alive connections after this [HTTP_NAS_IDLE_TIMEOUT]
                           (default 60)
  --head-timeout SECS      time allowed to send a request head [HTTP_NAS_HEAD_TIMEOUT] (default 10)
  --io-timeout SECS        a request whose client sends or reads nothing for this long is
                           aborted (and its write rolled back) [HTTP_NAS_IO_TIMEOUT]
                           (default 130: the original's 120 s, and some margin)
  --shutdown-timeout SECS  on SIGTERM, wait this long for requests in flight
                           [HTTP_NAS_SHUTDOWN_TIMEOUT] (default 25)
  --max-body BYTES         largest request body, 0 for no limit [HTTP_NAS_MAX_BODY] (default 0)
  --fsync true|false       fsync every write before answering [HTTP_NAS_FSYNC] (default true)
  --token-file FILE        read-write bearer token from a file [HTTP_NAS_TOKEN_FILE];
                           or the token itself in HTTP_NAS_TOKEN
  --read-token-file FILE   read-only bearer token from a file [HTTP_NAS_READ_TOKEN_FILE];
                           or the token itself in HTTP_NAS_READ_TOKEN
  Durations are whole seconds from 1 to 86400 (a day).
  -h, --help               print this help
  -V, --version            print the version
";

/// Longest duration any setting takes, in seconds (a day): far beyond any sensible timeout,
/// and far from where adding it to a clock could overflow.
pub const MAX_DURATION_SECS: u64 = 86_400;
/// Most worker threads (each is a thread; beyond this a machine runs out of them first).
pub const MAX_WORKERS: u64 = 4096;
/// Most requests waiting for a worker.
pub const MAX_QUEUE: u64 = 65_536;
/// Most open connections (each is a file descriptor).
pub const MAX_CONNECTIONS: u64 = 1 << 20;

/// Why the command line could not be used.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// (flag, environment variable) pairs of settings that take a value.
const SETTINGS: [(&str, &str); 16] = [
    ("listen", "HTTP_NAS_LISTEN"),
    ("storage", "STORAGE_PATH"),
    ("workers", "HTTP_NAS_WORKERS"),
    ("queue", "HTTP_NAS_QUEUE"),
    ("queue-timeout", "HTTP_NAS_QUEUE_TIMEOUT"),
    ("max-connections", "HTTP_NAS_MAX_CONNECTIONS"),
    ("log-level", "RUST_LOG"),
    ("idle-timeout", "HTTP_NAS_IDLE_TIMEOUT"),
    ("head-timeout", "HTTP_NAS_HEAD_TIMEOUT"),
    ("io-timeout", "HTTP_NAS_IO_TIMEOUT"),
    ("shutdown-timeout", "HTTP_NAS_SHUTDOWN_TIMEOUT"),
    ("max-body", "HTTP_NAS_MAX_BODY"),
    ("fsync", "HTTP_NAS_FSYNC"),
    ("token-file", "HTTP_NAS_TOKEN_FILE"),
    ("read-token-file", "HTTP_NAS_READ_TOKEN_FILE"),
    ("token", "HTTP_NAS_TOKEN"),
];

/// Parses `args` (without the program name), falling back to `env` for unset flags.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, ConfigError> {
    let mut given: Vec<(String, String)> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError(format!("unexpected argument {arg:?}; see --help")));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let value = iter
                    .next()
                    .ok_or_else(|| ConfigError(format!("--{flag} needs a value")))?;
                (flag.to_string(), value.clone())
            }
        };
        // --token is deliberately not a flag: a token on the command line shows in `ps`.
        if name == "token" || !SETTINGS.iter().any(|(f, _)| *f == name) {
            return Err(ConfigError(format!("unknown option --{name}; see --help")));
        }
        given.push((name, value));
    }
    let get = |name: &str| -> Option<String> {
        given
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                let var = SETTINGS.iter().find(|(f, _)| *f == name).map(|(_, v)| *v)?;
                env(var).filter(|v| !v.is_empty())
            })
    };
    let number = |name: &str, default: u64| -> Result<u64, ConfigError> {
        match get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| ConfigError(format!("--{name} must be a whole number, got {v:?}"))),
        }
    };
    let secs = |name: &str, default: u64| -> Result<Duration, ConfigError> {
        let n = number(name, default)?;
        if !(1..=MAX_DURATION_SECS).contains(&n) {
            return Err(ConfigError(format!(
                "--{name} must be between 1 and {MAX_DURATION_SECS} seconds, got {n}"
            )));
        }
        Ok(Duration::from_secs(n))
    };
    let count = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| -> Result<usize, ConfigError> {
        let n = number(name, default)?;
        if !range.contains(&n) {
            return Err(ConfigError(format!(
                "--{name} must be between {} and {}, got {n}",
                range.start(),
                range.end()
            )));
        }
        usize::try_from(n).map_err(|_| ConfigError(format!("--{name} is too large for this machine")))
    };
    let log_level = match get("log-level") {
        None => log::LevelFilter::Info,
        // RUST_LOG may carry module filters (`info,foo=debug`): take the first plain level.
        Some(v) => v.split(',').find_map(|part| part.trim().parse().ok()).ok_or_else(|| {
            ConfigError(format!(
                "--log-level must be error, warn, info, debug, trace or off, got {v:?}"
            ))
        })?,
    };
    let fsync = match get("fsync").as_deref().map(str::trim) {
        None | Some("true" | "1" | "yes" | "on") => true,
        Some("false" | "0" | "no" | "off") => false,
        Some(v) => return Err(ConfigError(format!("--fsync must be true or false, got {v:?}"))),
    };
    let token_from = |file_setting: &str, env_var: &str| -> Result<Option<String>, ConfigError> {
        match get(file_setting) {
            Some(path) => std::fs::read_to_string(&path)
                .map(Some)
                .map_err(|e| ConfigError(format!("cannot read --{file_setting} {path}: {e}"))),
            None => Ok(env(env_var)),
        }
    };
    let max_body = number("max-body", 0)?;
    // The original listened on PORT; flags and HTTP_NAS_LISTEN win over it.
    let port = match env("PORT").filter(|p| !p.trim().is_empty()) {
        None => None,
        Some(p) => match p.trim().parse::<u16>() {
            Ok(port) => Some(port),
            Err(_) => return Err(ConfigError(format!("PORT must be a port number, got {p:?}"))),
        },
    };
    let listen = get("listen").or_else(|| port.map(|p| format!("0.0.0.0:{p}")));
    Ok(Command::Run(Box::new(Config {
        listen: listen.unwrap_or_else(|| "0.0.0.0:3000".into()),
        storage: PathBuf::from(get("storage").unwrap_or_else(|| "/mnt/storage".into())),
        workers: count("workers", 128, 1..=MAX_WORKERS)?,
        queue: count("queue", 128, 0..=MAX_QUEUE)?,
        queue_timeout: secs("queue-timeout", 30)?,
        max_connections: count("max-connections", 1024, 1..=MAX_CONNECTIONS)?,
        log_level,
        idle_timeout: secs("idle-timeout", 60)?,
        head_timeout: secs("head-timeout", 10)?,
        io_timeout: secs("io-timeout", 130)?,
        shutdown_timeout: secs("shutdown-timeout", 25)?,
        max_body: (max_body > 0).then_some(max_body),
        fsync,
        token: token_from("token-file", "HTTP_NAS_TOKEN")?,
        read_token: token_from("read-token-file", "HTTP_NAS_READ_TOKEN")?,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match parse(&args, &lookup)? {
            Command::Run(c) => Ok(*c),
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:3000");
        assert_eq!(c.storage, PathBuf::from("/mnt/storage"));
        assert_eq!((c.workers, c.queue, c.max_body, c.fsync), (128, 128, None, true));
        assert_eq!(c.io_timeout, Duration::from_secs(130), "the original tolerated 120 s");
        assert_eq!(c.queue_timeout, Duration::from_secs(30));
    }

    #[test]
    fn flags_win_over_env() {
        let env = [
            ("STORAGE_PATH", "/env"),
            ("HTTP_NAS_LISTEN", "1.2.3.4:5"),
            ("RUST_LOG", "debug,x=trace"),
        ];
        let c = run(&["--storage", "/flag", "--workers=3", "--fsync", "false"], &env).unwrap();
        assert_eq!(c.storage, PathBuf::from("/flag"));
        assert_eq!(c.listen, "1.2.3.4:5");
        assert_eq!(c.workers, 3);
        assert!(!c.fsync);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn port_from_the_original_and_what_wins_over_it() {
        assert_eq!(run(&[], &[("PORT", "8080")]).unwrap().listen, "0.0.0.0:8080");
        let both = [("PORT", "8080"), ("HTTP_NAS_LISTEN", "127.0.0.1:9")];
        assert_eq!(run(&[], &both).unwrap().listen, "127.0.0.1:9");
        assert_eq!(run(&["--listen", "[::1]:7"], &both).unwrap().listen, "[::1]:7");
        assert_eq!(run(&[], &[("PORT", "")]).unwrap().listen, "0.0.0.0:3000");
        for bad in ["http", "70000", "-1"] {
            assert!(run(&[], &[("PORT", bad)]).is_err(), "PORT={bad}");
        }
    }

    #[test]
    fn refusals() {
        for args in [
            &["--workers", "0"][..],
            &["--workers", "x"],
            &["--bogus", "1"],
            &["--token", "secret"],
            &["--idle-timeout", "0"],
            &["--idle-timeout", "18446744073709551615"],
            &["--io-timeout", "86401"],
            &["--queue-timeout", "0"],
            &["--workers", "100000"],
            &["--max-connections", "0"],
            &["--queue", "99999999999999999999"],
            &["--fsync", "maybe"],
            &["--listen"],
            &["stray"],
        ] {
            assert!(run(args, &[]).is_err(), "{args:?}");
        }
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(parse(&["--help".into()], &|_| None), Ok(Command::Help)));
        assert!(matches!(parse(&["-V".into()], &|_| None), Ok(Command::Version)));
    }
}
