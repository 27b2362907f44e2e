//! Command-line flags with environment fallbacks → [`Config`].
//!
//! Every setting has a flag; the ones an operator sets in a pod spec also have an environment
//! variable (the flag wins). Parsing is hand-written: a dozen flags do not need a crate.
//!
//! [`SETTINGS`] is the one place a setting is described: its flag, variables, default, value
//! and help line. Both [`parse`] and [`help`] read it, so a default is written once.

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
    /// Longest a request waits for a file's lock held by another request or replica.
    pub lock_timeout: Duration,
    /// Largest request body in bytes (`None`: unlimited).
    pub max_body: Option<u64>,
    /// Whether writes are fsynced before they are acknowledged.
    pub fsync: bool,
    /// Read-write bearer token.
    pub token: Option<String>,
    /// Read-only bearer token.
    pub read_token: Option<String>,
    /// Scoped tokens from `--tokens-file`.
    pub scoped_tokens: Vec<crate::app::auth::ScopedToken>,
    /// Host names served besides IP addresses and localhost (`None`: not configured).
    pub allowed_hosts: Option<Vec<String>>,
    /// Retention rules (`--expire PREFIX=AGE`, repeatable).
    pub expire: Vec<crate::storage::expire::Rule>,
    /// How often a retention pass runs: `storage::expire::DEFAULT_INTERVAL` (a minute), or for
    /// tests only, the hidden `HTTP_NAS_EXPIRE_INTERVAL_MS` (not in `--help`).
    pub expire_interval: Duration,
    /// The flags whose value came from their environment variable rather than the command
    /// line or the default, so a later error names what was actually set ([`Config::named`]).
    pub from_env: Vec<&'static str>,
}

impl Config {
    /// How a message names the setting `flag`: `VARIABLE (--flag)` when its value came from
    /// its environment variable, else the flag.
    pub fn named(&self, flag: &'static str) -> String {
        let variable = self
            .from_env
            .contains(&flag)
            .then(|| SETTINGS.iter().find(|s| s.flag == flag).and_then(|s| s.env))
            .flatten();
        label(flag, variable)
    }
}

/// `VARIABLE (--flag)` for a value read from `variable`, else `--flag`.
fn label(flag: &str, variable: Option<&str>) -> String {
    match variable {
        Some(variable) => format!("{variable} ({flag})"),
        None => flag.to_string(),
    }
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
pub enum ConfigError {
    /// An argument that is not an option (the text as given).
    UnexpectedArgument(String),
    /// An option at the end of the line, without its value (the text after `--`).
    MissingValue(String),
    /// An option no setting has (its name, without `--` or `=value`).
    UnknownOption(String),
    /// A value its setting refuses.
    Invalid {
        /// What the value was given as: the flag (also for its variable) or a fallback variable.
        name: &'static str,
        /// The setting's own variable, when the value came from it (named with the flag).
        variable: Option<&'static str>,
        /// What is wrong with it.
        problem: Invalid,
    },
}

/// What is wrong with a value; [`ConfigError::Invalid`] adds whose value it was.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not of the form the setting takes: `what` says which (`a whole number`).
    Expected { what: &'static str, got: String },
    /// A number outside the setting's range; `unit` follows the maximum (`" seconds"` or `""`).
    OutOfRange {
        min: u64,
        max: u64,
        unit: &'static str,
        got: u64,
    },
    /// A number in range that does not fit this machine's `usize`.
    TooLarge,
    /// A file that could not be read. Every file setting is a token source, and a token put
    /// where its path belongs is a common slip, so the path given is never repeated.
    Unreadable { error: String },
    /// A token that holds whitespace, a control or an invisible formatting character (inside
    /// it, after a leading byte order mark and surrounding whitespace are dropped): nobody can
    /// type or check such a token, and one made only of them would be blank to a person.
    /// `path` is the file, `None` for a variable.
    Unusable { path: Option<String> },
    /// A token source that is given but holds no token (an empty Secret): refused, because
    /// taking it as "no token" would open the service. `path` is the file, `None` for a variable.
    Blank { path: Option<String> },
    /// A line of the tokens file that cannot be used (the error never holds a token).
    TokensFile {
        path: String,
        error: crate::app::auth::scoped::LineError,
    },
    /// One token given for two roles (`what`: the other setting); it would be ambiguous.
    SameToken { what: &'static str },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::UnexpectedArgument(arg) => write!(f, "unexpected argument {arg:?}; see --help"),
            ConfigError::MissingValue(flag) => write!(f, "--{flag} needs a value"),
            ConfigError::UnknownOption(name) => write!(f, "unknown option --{name}; see --help"),
            ConfigError::Invalid {
                name,
                variable,
                problem,
            } => match (label(name, *variable), problem) {
                (name, Invalid::Expected { what, got }) => write!(f, "{name} must be {what}, got {got:?}"),
                (name, Invalid::OutOfRange { min, max, unit, got }) => {
                    write!(f, "{name} must be between {min} and {max}{unit}, got {got}")
                }
                (name, Invalid::TooLarge) => write!(f, "{name} is too large for this machine"),
                (name, Invalid::Unreadable { error }) => write!(
                    f,
                    "cannot read the file given to {name} ({error}); its path is not shown, as it may be \
                     a token put where the file's path belongs"
                ),
                (name, Invalid::Unusable { path: Some(path) }) => write!(
                    f,
                    "{name} {path} holds a token with whitespace, a control or an invisible formatting \
                     character in it; give a token of visible characters only"
                ),
                (name, Invalid::Unusable { path: None }) => write!(
                    f,
                    "{name} holds a token with whitespace, a control or an invisible formatting \
                     character in it; give a token of visible characters only"
                ),
                (name, Invalid::Blank { path: Some(path) }) => write!(
                    f,
                    "{name} {path} holds no token; a blank token source never opens the service: \
                     put the token in it, or leave {name} out to run without tokens"
                ),
                (name, Invalid::Blank { path: None }) => write!(
                    f,
                    "{name} is set but blank; a blank token source never opens the service: \
                     give it a value, or unset it to run without tokens"
                ),
                (name, Invalid::TokensFile { path, error }) => write!(f, "{name} {path}: {error}"),
                (name, Invalid::SameToken { what }) => write!(
                    f,
                    "{name} gives a token that is also given by {what}: give each token one role"
                ),
            },
        }
    }
}

impl std::error::Error for ConfigError {}

/// What a setting takes, and where it goes: each variant checks its kind of value once, for
/// every setting of that kind, and hands the setter the checked value.
#[derive(Clone, Copy)]
pub enum Value {
    /// A whole number from the first to the second bound that fits a `usize`.
    Count(u64, u64, fn(&mut Config, usize)),
    /// Whole seconds from 1 to [`MAX_DURATION_SECS`].
    Secs(fn(&mut Config, Duration)),
    /// Any whole number.
    Number(fn(&mut Config, u64)),
    /// `true`, `1`, `yes`, `on` or `false`, `0`, `no`, `off`.
    Bool(fn(&mut Config, bool)),
    /// Any text, as given.
    Text(fn(&mut Config, &str)),
    /// The path of a file, whose path and content the setter gets.
    File(fn(&mut Config, &str, String) -> Result<(), Invalid>),
    /// Anything else, checked by its setter.
    Other(fn(&mut Config, &str) -> Result<(), Invalid>),
    /// A repeatable flag: every value given on the command line is passed to the setter, in
    /// order (the variable's, only when the flag is not given).
    List(fn(&mut Config, &str) -> Result<(), Invalid>),
}

/// A variable the original service read, in a format of its own: it ranks below the flag and
/// the setting's own variable, and is checked whenever it is set, even when they win over it.
#[derive(Clone, Copy)]
pub struct Fallback {
    /// The variable; its value is passed as it is, even empty (the setter says what that means).
    pub env: &'static str,
    /// For `--help`, after `; ` (within the default's brackets if there is one): must name `env`.
    pub help: &'static str,
    /// How its value is checked and stored.
    pub value: Value,
}

/// One setting: everything [`parse`] and [`help`] know about it.
#[derive(Clone, Copy)]
pub struct Setting {
    /// `--name`; also given as `--name=VALUE`.
    pub flag: &'static str,
    /// What `--help` calls its value.
    pub metavar: &'static str,
    /// What it does, for `--help`.
    pub help: &'static str,
    /// The variable used when the flag is not given (empty counts as unset).
    pub env: Option<&'static str>,
    /// A further variable, used when neither is set.
    pub fallback: Option<Fallback>,
    /// The value used when nothing is given (`None`: the field stays unset).
    pub default: Option<&'static str>,
    /// Why that default, for `--help` (`": …"`), or empty.
    pub default_note: &'static str,
    /// How the value is checked and stored.
    pub value: Value,
}

/// Every setting that takes a value, in `--help` order.
pub const SETTINGS: &[Setting] = &[
    Setting {
        flag: "--listen",
        metavar: "ADDR",
        help: "address to listen on",
        env: Some("HTTP_NAS_LISTEN"),
        fallback: Some(Fallback {
            env: "PORT",
            help: "with only PORT set, as the original read it: 0.0.0.0:PORT",
            value: Value::Other(set_port),
        }),
        default: Some("0.0.0.0:3000"),
        default_note: "",
        value: Value::Other(set_listen),
    },
    Setting {
        flag: "--storage",
        metavar: "DIR",
        help: "storage root, an existing writable directory",
        env: Some("STORAGE_PATH"),
        fallback: None,
        default: Some("/mnt/storage"),
        default_note: "",
        value: Value::Text(|c, v| c.storage = PathBuf::from(v)),
    },
    Setting {
        flag: "--workers",
        metavar: "N",
        help: "worker threads, one per request in service",
        env: Some("HTTP_NAS_WORKERS"),
        fallback: None,
        default: Some("128"),
        default_note: ": that many uploads and downloads at once",
        value: Value::Count(1, MAX_WORKERS, |c, n| c.workers = n),
    },
    Setting {
        flag: "--queue",
        metavar: "N",
        help: "requests that may wait for a free worker; beyond it: 503",
        env: Some("HTTP_NAS_QUEUE"),
        fallback: None,
        default: Some("128"),
        default_note: "",
        value: Value::Count(0, MAX_QUEUE, |c, n| c.queue = n),
    },
    Setting {
        flag: "--queue-timeout",
        metavar: "SECS",
        help: "a request waiting longer than this for a worker gets 503",
        env: Some("HTTP_NAS_QUEUE_TIMEOUT"),
        fallback: None,
        default: Some("30"),
        default_note: "",
        value: Value::Secs(|c, d| c.queue_timeout = d),
    },
    Setting {
        flag: "--max-connections",
        metavar: "N",
        help: "open connections at most, idle ones included; beyond it: 503",
        env: Some("HTTP_NAS_MAX_CONNECTIONS"),
        fallback: None,
        default: Some("1024"),
        default_note: "",
        value: Value::Count(1, MAX_CONNECTIONS, |c, n| c.max_connections = n),
    },
    Setting {
        flag: "--log-level",
        metavar: "LEVEL",
        help: "error, warn, info, debug, trace or off",
        env: Some("RUST_LOG"),
        fallback: None,
        default: Some("info"),
        default_note: "",
        value: Value::Other(set_log_level),
    },
    Setting {
        flag: "--idle-timeout",
        metavar: "SECS",
        help: "close idle keep-alive connections after this",
        env: Some("HTTP_NAS_IDLE_TIMEOUT"),
        fallback: None,
        default: Some("60"),
        default_note: "",
        value: Value::Secs(|c, d| c.idle_timeout = d),
    },
    Setting {
        flag: "--head-timeout",
        metavar: "SECS",
        help: "time allowed to send a request head",
        env: Some("HTTP_NAS_HEAD_TIMEOUT"),
        fallback: None,
        default: Some("10"),
        default_note: "",
        value: Value::Secs(|c, d| c.head_timeout = d),
    },
    Setting {
        flag: "--io-timeout",
        metavar: "SECS",
        help: "a request whose client sends or reads nothing for this long is aborted (and its write \
               rolled back)",
        env: Some("HTTP_NAS_IO_TIMEOUT"),
        fallback: None,
        default: Some("130"),
        default_note: ": the original's 120 s, and some margin",
        value: Value::Secs(|c, d| c.io_timeout = d),
    },
    Setting {
        flag: "--shutdown-timeout",
        metavar: "SECS",
        help: "on SIGTERM, wait this long for requests in flight",
        env: Some("HTTP_NAS_SHUTDOWN_TIMEOUT"),
        fallback: None,
        default: Some("25"),
        default_note: "",
        value: Value::Secs(|c, d| c.shutdown_timeout = d),
    },
    Setting {
        flag: "--lock-timeout",
        metavar: "SECS",
        help: "a request waiting longer than this for a file locked by another request or replica \
               (one frozen, say) gets 503",
        env: Some("HTTP_NAS_LOCK_TIMEOUT"),
        fallback: None,
        default: Some("10"),
        default_note: ": far above a commit's disk work, below --queue-timeout",
        value: Value::Secs(|c, d| c.lock_timeout = d),
    },
    Setting {
        flag: "--max-body",
        metavar: "BYTES",
        help: "largest request body, 0 for no limit",
        env: Some("HTTP_NAS_MAX_BODY"),
        fallback: None,
        default: Some("0"),
        default_note: "",
        value: Value::Number(|c, n| c.max_body = (n > 0).then_some(n)),
    },
    Setting {
        flag: "--fsync",
        metavar: "true|false",
        help: "fsync every write before answering",
        env: Some("HTTP_NAS_FSYNC"),
        fallback: None,
        default: Some("true"),
        default_note: "",
        value: Value::Bool(|c, b| c.fsync = b),
    },
    // --token is deliberately not a flag: a token on the command line shows in `ps`.
    Setting {
        flag: "--token-file",
        metavar: "FILE",
        help: "read-write bearer token from a file",
        env: Some("HTTP_NAS_TOKEN_FILE"),
        fallback: Some(Fallback {
            env: "HTTP_NAS_TOKEN",
            help: "or the token itself in HTTP_NAS_TOKEN",
            value: Value::Other(|c, v| {
                c.token = Some(token_value(None, v.to_string())?);
                Ok(())
            }),
        }),
        default: None,
        default_note: "",
        value: Value::File(|c, path, content| {
            c.token = Some(token_value(Some(path), content)?);
            Ok(())
        }),
    },
    Setting {
        flag: "--read-token-file",
        metavar: "FILE",
        help: "read-only bearer token from a file",
        env: Some("HTTP_NAS_READ_TOKEN_FILE"),
        fallback: Some(Fallback {
            env: "HTTP_NAS_READ_TOKEN",
            help: "or the token itself in HTTP_NAS_READ_TOKEN",
            value: Value::Other(|c, v| {
                c.read_token = Some(token_value(None, v.to_string())?);
                Ok(())
            }),
        }),
        default: None,
        default_note: "",
        value: Value::File(|c, path, content| {
            c.read_token = Some(token_value(Some(path), content)?);
            Ok(())
        }),
    },
    Setting {
        flag: "--tokens-file",
        metavar: "FILE",
        help: "scoped tokens, one a line: TOKEN rw|ro [PREFIX...] [# comment]; a token with prefixes \
               reaches only the directories they name; a field starting with # begins a comment",
        env: Some("HTTP_NAS_TOKENS_FILE"),
        fallback: None,
        default: None,
        default_note: "",
        value: Value::File(set_scoped_tokens),
    },
    Setting {
        flag: "--allowed-hosts",
        metavar: "HOSTS",
        help: "host names the service answers to besides IP addresses and localhost, comma-separated \
               (against DNS rebinding); unset: only browsers are held to that",
        env: Some("HTTP_NAS_ALLOWED_HOSTS"),
        fallback: None,
        default: None,
        default_note: "",
        value: Value::Other(set_allowed_hosts),
    },
    Setting {
        flag: "--expire",
        metavar: "PREFIX=AGE",
        help: "delete files under the directory PREFIX not modified for AGE (90m, 12h, 7d), and the \
               directories that leaves empty; repeatable; the variable takes rules separated by commas",
        env: Some("HTTP_NAS_EXPIRE"),
        fallback: None,
        default: None,
        default_note: "",
        value: Value::List(add_expire_rules),
    },
];

/// The variable that sets the retention pass's period in milliseconds, for tests only (not a
/// setting: operators have no reason to change the one-minute period).
pub const EXPIRE_INTERVAL_ENV: &str = "HTTP_NAS_EXPIRE_INTERVAL_MS";

/// `--expire`: one rule, or several separated by commas, added to those given before. An empty
/// rule (`--expire ''`, `HTTP_NAS_EXPIRE=','`) is refused, not skipped: it would start a
/// service that expires nothing and says nothing. So is a second rule for one prefix (which
/// age was meant?), naming both.
fn add_expire_rules(c: &mut Config, v: &str) -> Result<(), Invalid> {
    use crate::storage::expire::{Rule, RuleError};
    for text in v.split(',') {
        if text.trim().is_empty() {
            return Err(Invalid::Expected {
                what: "PREFIX=AGE (like runs/=7d), not an empty rule (leave the flag out for none)",
                got: v.to_string(),
            });
        }
        let rule = Rule::parse(text).map_err(|e| Invalid::Expected {
            what: match e {
                RuleError::Form => "PREFIX=AGE (like runs/=7d)",
                RuleError::Prefix(_) => {
                    "PREFIX=AGE with PREFIX a directory below the storage root (like runs/), without . or .. \
                     and not a reserved .http-nas-* name"
                }
                RuleError::Age(_) => {
                    "PREFIX=AGE with AGE above 0 and at most 3650d (ten years), with a unit s, m, h or d \
                     (like 90m, 12h, 7d)"
                }
            },
            got: text.to_string(),
        })?;
        if let Some(before) = c.expire.iter().find(|r| r.prefix.as_path() == rule.prefix.as_path()) {
            return Err(Invalid::Expected {
                what: "one rule per PREFIX",
                got: format!(
                    "{}/={}s and {} for the same prefix",
                    before.prefix,
                    before.age.as_secs(),
                    text.trim()
                ),
            });
        }
        c.expire.push(rule);
    }
    Ok(())
}

/// A token as given in a variable (`path` `None`) or a file, without a leading byte order
/// mark (what Windows editors put at the start of a UTF-8 file): refused when blank, so that
/// an empty Secret never opens the service, and when what is left after trimming holds
/// whitespace, a control or a formatting character ([`is_invisible`]), which a file of only a
/// BOM or a zero-width space would otherwise make the token.
fn token_value(path: Option<&str>, value: String) -> Result<String, Invalid> {
    let value = match value.strip_prefix('\u{FEFF}') {
        Some(rest) => rest.to_string(),
        None => value,
    };
    let path = || path.map(str::to_string);
    let token = value.trim();
    if token.is_empty() || token.chars().all(is_invisible) {
        return Err(Invalid::Blank { path: path() });
    }
    if token.chars().any(is_invisible) {
        return Err(Invalid::Unusable { path: path() });
    }
    Ok(value)
}

/// True for a character that shows nothing a person could read back: Unicode White_Space,
/// controls, and the formatting characters (general category Cf: zero-width spaces and
/// joiners, bidirectional marks, the byte order mark, soft hyphen, tags...).
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

/// `--tokens-file`: every line parsed; a file without a single token is blank, like an empty
/// token file.
fn set_scoped_tokens(c: &mut Config, path: &str, content: String) -> Result<(), Invalid> {
    let content = content.strip_prefix('\u{FEFF}').unwrap_or(&content);
    let tokens = crate::app::auth::scoped::parse(content).map_err(|error| Invalid::TokensFile {
        path: path.to_string(),
        error,
    })?;
    if tokens.is_empty() {
        return Err(Invalid::Blank {
            path: Some(path.to_string()),
        });
    }
    c.scoped_tokens = tokens;
    Ok(())
}

/// `--allowed-hosts`: names separated by commas or spaces, each a host name with an optional
/// port (ignored); an empty value lists none, so only IP addresses and localhost are served.
fn set_allowed_hosts(c: &mut Config, v: &str) -> Result<(), Invalid> {
    let mut hosts = Vec::new();
    for name in v.split([',', ' ']).filter(|n| !n.trim().is_empty()) {
        let host = crate::app::auth::browser::host_name(name).ok_or_else(|| Invalid::Expected {
            what: "host names separated by commas",
            got: name.to_string(),
        })?;
        hosts.push(host);
    }
    c.allowed_hosts = Some(hosts);
    Ok(())
}

/// Refuses a token given for two roles (the read-write and the read-only token, or a line of
/// the tokens file and either): which access it grants would depend on the order of a check.
fn check_distinct_tokens(c: &Config) -> Result<(), ConfigError> {
    fn trimmed(t: &Option<String>) -> Option<&str> {
        t.as_deref().map(str::trim).filter(|t| !t.is_empty())
    }
    let rw = trimmed(&c.token);
    let ro = trimmed(&c.read_token);
    let same = |name: &'static str, what: &'static str| ConfigError::Invalid {
        name,
        variable: None,
        problem: Invalid::SameToken { what },
    };
    if rw.is_some() && rw == ro {
        return Err(same("--read-token-file", "--token-file (or HTTP_NAS_TOKEN)"));
    }
    for scoped in &c.scoped_tokens {
        if rw == Some(scoped.secret.as_str()) {
            return Err(same("--tokens-file", "--token-file (or HTTP_NAS_TOKEN)"));
        }
        if ro == Some(scoped.secret.as_str()) {
            return Err(same("--tokens-file", "--read-token-file (or HTTP_NAS_READ_TOKEN)"));
        }
    }
    Ok(())
}

/// `PORT`, as the original read it: a port number to listen on at 0.0.0.0; blank is unset.
fn set_port(c: &mut Config, p: &str) -> Result<(), Invalid> {
    if p.trim().is_empty() {
        return Ok(());
    }
    let port: u16 = p.trim().parse().map_err(|_| Invalid::Expected {
        what: "a port number",
        got: p.to_string(),
    })?;
    c.listen = format!("0.0.0.0:{port}");
    Ok(())
}

/// `--listen`: `HOST:PORT`, the host an IPv4 address, a bracketed IPv6 address or a host name,
/// the port a number. Checked here, so a typo stops the service with exit 2 naming the setting
/// before any work (the start-up sweep), not later when binding fails.
fn set_listen(c: &mut Config, v: &str) -> Result<(), Invalid> {
    let bad = || Invalid::Expected {
        what: "HOST:PORT (like 0.0.0.0:3000 or [::1]:3000)",
        got: v.to_string(),
    };
    if v.parse::<std::net::SocketAddr>().is_err() {
        let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
        let name_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
        if host.is_empty() || !host.bytes().all(name_char) || port.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    c.listen = v.to_string();
    Ok(())
}

/// RUST_LOG may carry module filters (`info,foo=debug`): the first plain level is taken.
fn set_log_level(c: &mut Config, v: &str) -> Result<(), Invalid> {
    c.log_level = v
        .split(',')
        .find_map(|part| part.trim().parse().ok())
        .ok_or_else(|| Invalid::Expected {
            what: "error, warn, info, debug, trace or off",
            got: v.to_string(),
        })?;
    Ok(())
}

fn whole_number(v: &str) -> Result<u64, Invalid> {
    v.trim().parse().map_err(|_| Invalid::Expected {
        what: "a whole number",
        got: v.to_string(),
    })
}

impl Value {
    /// Checks `v` and stores it in `c`.
    fn apply(self, c: &mut Config, v: &str) -> Result<(), Invalid> {
        let in_range = |min, max, unit| {
            let n = whole_number(v)?;
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(Invalid::OutOfRange { min, max, unit, got: n })
            }
        };
        match self {
            Value::Count(min, max, set) => set(
                c,
                usize::try_from(in_range(min, max, "")?).map_err(|_| Invalid::TooLarge)?,
            ),
            Value::Secs(set) => set(c, Duration::from_secs(in_range(1, MAX_DURATION_SECS, " seconds")?)),
            Value::Number(set) => set(c, whole_number(v)?),
            Value::Bool(set) => match v.trim() {
                "true" | "1" | "yes" | "on" => set(c, true),
                "false" | "0" | "no" | "off" => set(c, false),
                // Quoted trimmed, as it was before the settings table.
                other => {
                    return Err(Invalid::Expected {
                        what: "true or false",
                        got: other.to_string(),
                    });
                }
            },
            Value::Text(set) => set(c, v),
            Value::File(set) => match std::fs::read_to_string(v) {
                Ok(content) => set(c, v, content)?,
                Err(e) => return Err(Invalid::Unreadable { error: e.to_string() }),
            },
            Value::Other(set) | Value::List(set) => set(c, v)?,
        }
        Ok(())
    }
}

/// Before the settings are applied: placeholders, not defaults. Each is overwritten by its
/// setting's default (`tests::defaults` checks the result), except the tokens, which stay
/// unset unless given.
fn unconfigured() -> Config {
    Config {
        listen: String::new(),
        storage: PathBuf::new(),
        workers: 0,
        queue: 0,
        queue_timeout: Duration::ZERO,
        max_connections: 0,
        log_level: log::LevelFilter::Off,
        idle_timeout: Duration::ZERO,
        head_timeout: Duration::ZERO,
        io_timeout: Duration::ZERO,
        shutdown_timeout: Duration::ZERO,
        lock_timeout: Duration::ZERO,
        max_body: None,
        fsync: false,
        token: None,
        read_token: None,
        scoped_tokens: Vec::new(),
        allowed_hosts: None,
        expire: Vec::new(),
        expire_interval: crate::storage::expire::DEFAULT_INTERVAL,
        from_env: Vec::new(),
    }
}

/// Parses `args` (without the program name), falling back to `env` for unset flags.
///
/// For each setting, in table order: its default, then its fallback variable if set, then its
/// flag if given, else its variable if set and not empty; each one applied overwrites the one
/// before, and the first value refused is the error.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, ConfigError> {
    let mut given: Vec<(&'static Setting, String)> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError::UnexpectedArgument(arg.clone()));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, v.to_string()),
            None => (
                flag,
                iter.next()
                    .ok_or_else(|| ConfigError::MissingValue(flag.to_string()))?
                    .clone(),
            ),
        };
        let Some(setting) = SETTINGS.iter().find(|s| s.flag.strip_prefix("--") == Some(name)) else {
            return Err(ConfigError::UnknownOption(name.to_string()));
        };
        given.push((setting, value));
    }
    let mut config = unconfigured();
    for setting in SETTINGS {
        if let Some(default) = setting.default {
            setting
                .value
                .apply(&mut config, default)
                .map_err(invalid(setting.flag, None))?;
        }
        if let Some(fallback) = setting.fallback
            && let Some(v) = env(fallback.env)
        {
            fallback
                .value
                .apply(&mut config, &v)
                .map_err(invalid(fallback.env, None))?;
        }
        // A repeatable flag takes every value given; the others, the last.
        if matches!(setting.value, Value::List(_)) {
            let all: Vec<&String> = given
                .iter()
                .filter(|(s, _)| s.flag == setting.flag)
                .map(|(_, v)| v)
                .collect();
            if all.len() > 1 {
                for v in &all[..all.len() - 1] {
                    setting
                        .value
                        .apply(&mut config, v)
                        .map_err(invalid(setting.flag, None))?;
                }
            }
        }
        // The last of a repeated flag wins; the variable is named if it gave the value.
        let value = match given.iter().rev().find(|(s, _)| s.flag == setting.flag) {
            Some((_, v)) => Some((v.clone(), None)),
            None => setting
                .env
                .and_then(|name| {
                    let v = env(name)?;
                    // A file variable set but empty is a token source given blank (an empty
                    // Secret key): refused, never read as "no token".
                    if matches!(setting.value, Value::File(_)) && v.trim().is_empty() {
                        return Some(Err(ConfigError::Invalid {
                            name,
                            variable: None,
                            problem: Invalid::Blank { path: None },
                        }));
                    }
                    (!v.is_empty()).then_some(Ok((v, Some(name))))
                })
                .transpose()?,
        };
        if let Some((v, variable)) = value {
            setting
                .value
                .apply(&mut config, &v)
                .map_err(invalid(setting.flag, variable))?;
            if variable.is_some() {
                config.from_env.push(setting.flag);
            }
        }
    }
    check_distinct_tokens(&config)?;
    if let Some(ms) = env(EXPIRE_INTERVAL_ENV)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0)
    {
        config.expire_interval = Duration::from_millis(ms);
    }
    Ok(Command::Run(Box::new(config)))
}

/// Names the setting (or fallback variable) whose value `problem` is about, and the setting's
/// own variable when the value came from it.
fn invalid(name: &'static str, variable: Option<&'static str>) -> impl Fn(Invalid) -> ConfigError {
    move |problem| ConfigError::Invalid {
        name,
        variable,
        problem,
    }
}

/// Longest a `--help` line gets.
const HELP_WIDTH: usize = 99;

/// The `--help` text, from the settings table (`SETTINGS`).
pub fn help() -> String {
    let heads: Vec<String> = SETTINGS.iter().map(|s| format!("{} {}", s.flag, s.metavar)).collect();
    let indent = 2 + heads.iter().map(String::len).max().unwrap_or(0) + 2;
    let mut out = String::from(
        "http-nas: shared storage for Kubernetes jobs over plain HTTP\n\n\
         USAGE: http-nas [OPTIONS]\n\n\
         OPTIONS (environment variable in brackets; the flag wins):\n",
    );
    for (s, head) in SETTINGS.iter().zip(&heads) {
        let mut parts = vec![s.help.to_string()];
        if let Some(var) = s.env {
            parts.push(format!("[{var}]"));
        }
        let range = match s.value {
            Value::Count(min, max, _) => format!("{min} to {max}, "),
            _ => String::new(),
        };
        // A fallback is a default of sorts: it goes with the default if there is one.
        match (s.default, s.fallback) {
            (Some(default), fallback) => {
                let fallback = fallback.map(|f| format!("; {}", f.help)).unwrap_or_default();
                parts.push(format!("({range}default {default}{}{fallback})", s.default_note));
            }
            (None, Some(fallback)) => {
                if let Some(last) = parts.last_mut() {
                    last.push(';');
                }
                parts.push(fallback.help.to_string());
            }
            (None, None) => {}
        }
        help_row(&mut out, indent, head, &parts);
    }
    out += &format!("  Durations are whole seconds from 1 to {MAX_DURATION_SECS} (a day).\n");
    help_row(&mut out, indent, "-h, --help", &["print this help".into()]);
    help_row(&mut out, indent, "-V, --version", &["print the version".into()]);
    out
}

/// Appends `head` and `parts` to `out`, the parts from column `indent` and wrapped at
/// [`HELP_WIDTH`]: a part that does not fit the line but fits a line of its own starts one.
fn help_row(out: &mut String, indent: usize, head: &str, parts: &[String]) {
    let fits = |line: &str, len: usize| line.len() == indent || line.len() + 1 + len <= HELP_WIDTH;
    let mut line = format!("  {head:<width$}", width = indent - 2);
    for part in parts {
        if !fits(&line, part.len()) && indent + part.len() <= HELP_WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
        }
        for word in part.split(' ') {
            if !fits(&line, word.len()) {
                out.push_str(&line);
                out.push('\n');
                line = " ".repeat(indent);
            }
            if line.len() > indent {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    out.push_str(&line);
    out.push('\n');
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
        assert_eq!(c.lock_timeout, crate::storage::lock::DEFAULT_TIMEOUT);
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

    #[test]
    fn every_default_is_what_its_setter_makes_of_it_and_what_help_shows() {
        let defaults = format!("{:?}", run(&[], &[]).unwrap());
        let help = help();
        for s in SETTINGS {
            let Some(default) = s.default else { continue };
            // Given explicitly, the default changes nothing: it is the value used, not a twin.
            let mut c = run(&[], &[]).unwrap();
            s.value.apply(&mut c, default).unwrap();
            assert_eq!(format!("{c:?}"), defaults, "{}", s.flag);
            assert_eq!(
                format!("{:?}", run(&[s.flag, default], &[]).unwrap()),
                defaults,
                "{}",
                s.flag
            );
            assert!(help.contains(&format!("default {default}")), "{} {default}", s.flag);
        }
    }

    #[test]
    fn help_names_every_flag_and_variable() {
        let help = help();
        for s in SETTINGS {
            assert!(help.contains(&format!("  {} {} ", s.flag, s.metavar)), "{}", s.flag);
            if let Some(var) = s.env {
                assert!(help.contains(&format!("[{var}]")), "{var}");
            }
            if let Some(fallback) = s.fallback {
                assert!(help.contains(fallback.env), "{}", fallback.env);
            }
            if let Value::Count(min, max, _) = s.value {
                assert!(help.contains(&format!("{min} to {max}")), "{}", s.flag);
            }
        }
        for flag in ["-h, --help", "-V, --version", "1 to 86400"] {
            assert!(help.contains(flag), "{flag}");
        }
        assert!(help.lines().all(|l| l.len() <= HELP_WIDTH), "{help}");
    }

    #[test]
    fn errors_name_the_flag_or_variable() {
        let error = |args: &[&str], env: &[(&str, &str)]| run(args, env).unwrap_err().to_string();
        assert_eq!(
            error(&["--workers", "0"], &[]),
            "--workers must be between 1 and 4096, got 0"
        );
        assert_eq!(
            error(&[], &[("HTTP_NAS_WORKERS", "x")]),
            "HTTP_NAS_WORKERS (--workers) must be a whole number, got \"x\""
        );
        assert_eq!(
            error(&["--io-timeout", "86401"], &[]),
            "--io-timeout must be between 1 and 86400 seconds, got 86401"
        );
        assert_eq!(
            error(&["--fsync", "maybe"], &[]),
            "--fsync must be true or false, got \"maybe\""
        );
        assert_eq!(
            error(&["--fsync", " maybe "], &[]),
            "--fsync must be true or false, got \"maybe\"",
            "the value is quoted trimmed, as before the settings table"
        );
        assert_eq!(
            error(&[], &[("RUST_LOG", "x=trace")]),
            "RUST_LOG (--log-level) must be error, warn, info, debug, trace or off, got \"x=trace\""
        );
        assert_eq!(error(&["--token", "s"], &[]), "unknown option --token; see --help");
        assert_eq!(error(&["--listen"], &[]), "--listen needs a value");
        for bad in ["nope:xx", "3000", ":3000", "1.2.3.4", "[::1]", "a b:1", "host:70000"] {
            assert!(
                error(&["--listen", bad], &[]).starts_with("--listen must be HOST:PORT"),
                "{bad}"
            );
        }
        for good in ["localhost:3000", "127.0.0.1:0", "[::]:80"] {
            assert_eq!(run(&["--listen", good], &[]).unwrap().listen, good);
        }
        assert_eq!(error(&["stray"], &[]), "unexpected argument \"stray\"; see --help");
        let unreadable = error(&["--token-file", "/nonexistent"], &[]);
        assert!(
            unreadable.starts_with("cannot read the file given to --token-file (")
                && !unreadable.contains("/nonexistent"),
            "{unreadable}"
        );
        // PORT is checked even when --listen or HTTP_NAS_LISTEN wins over it, as it always was.
        assert_eq!(
            error(&["--listen", "[::1]:7"], &[("PORT", "http")]),
            "PORT must be a port number, got \"http\""
        );
        assert_eq!(run(&[], &[("PORT", " 81 ")]).unwrap().listen, "0.0.0.0:81");
    }

    #[test]
    fn a_value_from_a_variable_is_named_by_the_variable_and_its_flag() {
        let c = run(&[], &[("STORAGE_PATH", "/env")]).unwrap();
        assert_eq!(c.named("--storage"), "STORAGE_PATH (--storage)");
        assert_eq!(c.named("--workers"), "--workers");
        let c = run(&["--storage", "/flag"], &[("STORAGE_PATH", "/env")]).unwrap();
        assert_eq!(c.named("--storage"), "--storage", "the flag won");
        let blank = run(&[], &[("HTTP_NAS_TOKEN_FILE", "/nonexistent")])
            .unwrap_err()
            .to_string();
        assert!(
            blank.starts_with("cannot read the file given to HTTP_NAS_TOKEN_FILE (--token-file) ("),
            "{blank}"
        );
    }

    #[test]
    fn blank_token_sources_and_allowed_hosts() {
        let error = |args: &[&str], env: &[(&str, &str)]| run(args, env).unwrap_err().to_string();
        assert!(error(&[], &[("HTTP_NAS_TOKEN", " ")]).starts_with("HTTP_NAS_TOKEN is set but blank"));
        assert!(error(&[], &[("HTTP_NAS_TOKENS_FILE", "")]).starts_with("HTTP_NAS_TOKENS_FILE is set but blank"));
        for invisible in [
            "\u{FEFF}",
            "\u{FEFF}\r\n",
            "\u{200B}",
            " \u{2060}\u{00A0}\t",
            "\u{FEFF}\u{FEFF}",
        ] {
            assert!(
                error(&[], &[("HTTP_NAS_TOKEN", invisible)]).starts_with("HTTP_NAS_TOKEN is set but blank"),
                "{invisible:?}"
            );
        }
        for inside in ["a b", "a\u{200B}b", "a\u{FEFF}", "tok\u{202E}en", "a\u{0007}b"] {
            assert!(
                error(&[], &[("HTTP_NAS_READ_TOKEN", inside)]).starts_with("HTTP_NAS_READ_TOKEN holds a token with"),
                "{inside:?}"
            );
        }
        let c = run(&[], &[("HTTP_NAS_TOKEN", "\u{FEFF}s3cret\n")]).unwrap();
        assert_eq!(
            c.token.as_deref().map(str::trim),
            Some("s3cret"),
            "a leading BOM is dropped"
        );
        assert_eq!(run(&[], &[]).unwrap().allowed_hosts, None);
        let c = run(&["--allowed-hosts", "Nas:3000, nas.team.svc,,[::1]"], &[]).unwrap();
        assert_eq!(c.allowed_hosts.unwrap(), ["nas", "nas.team.svc", "[::1]"]);
        assert_eq!(run(&["--allowed-hosts", ""], &[]).unwrap().allowed_hosts, Some(vec![]));
        assert!(error(&["--allowed-hosts", "http://nas/"], &[]).starts_with("--allowed-hosts must be host names"));
        let same = error(&[], &[("HTTP_NAS_TOKEN", "s3cret"), ("HTTP_NAS_READ_TOKEN", "s3cret")]);
        assert!(
            same.starts_with("--read-token-file gives a token") && !same.contains("s3cret"),
            "{same}"
        );
    }

    #[test]
    fn tokens_from_a_file_win_over_the_variable() {
        let path = std::env::temp_dir().join(format!("http-nas-config-test-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").unwrap();
        let file = path.to_str().unwrap();
        let c = run(
            &[],
            &[("HTTP_NAS_TOKEN", "from-env"), ("HTTP_NAS_READ_TOKEN_FILE", file)],
        )
        .unwrap();
        assert_eq!(c.token.as_deref(), Some("from-env"));
        assert_eq!(c.read_token.as_deref(), Some("from-file\n"));
        let c = run(&["--token-file", file], &[("HTTP_NAS_TOKEN", "from-env")]).unwrap();
        assert_eq!(c.token.as_deref(), Some("from-file\n"));
        let _ = std::fs::remove_file(&path);
    }
}
