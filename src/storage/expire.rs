//! Retention (`--expire PREFIX=AGE`): a background pass that deletes files under a prefix not
//! modified for an age, the directories that leaves empty, and temp files of abandoned uploads.
//!
//! Why it is safe with live writers and other replicas on the volume:
//! - A file is a candidate when `fstatat` (no symlink followed) shows a regular file older than
//!   the rule. It is removed only under its exclusive lock, taken without waiting
//!   ([`lock::try_lock`]): an append, replace, move or delete in progress on any replica holds
//!   it, and the file is skipped until a later pass. Under the lock its age is read again from
//!   the open file (an append that committed just before has made it young), and the name is
//!   known to still be that file (the lock's own check), so the unlink removes exactly the
//!   version judged old. Every replica may run the pass: whichever takes the lock first
//!   removes the file, the others find the name gone, so each file is removed (and counted)
//!   once.
//! - The crash record of an append that died, if one is beside the removed file, is removed
//!   with it (under the record's own lock, [`journal::remove_if_unlocked`]).
//! - A directory is removed (`unlinkat(AT_REMOVEDIR)`, which refuses one that is not empty)
//!   once the walk leaves it, if this pass removed something in it or it is itself older than
//!   the rule; never the prefix (the top of the walk) and never the root (a prefix is never
//!   empty).
//! - Temp files (`.http-nas-tmp-*`) anywhere under the root are removed, as the start-up sweep
//!   removes them ([`sweep::remove_if_unlocked`]), when nobody holds their lock and they are
//!   older than [`TEMP_MIN_AGE`]: an upload holds its temp file's lock from before its first
//!   byte to its commit.
//!
//! Bounded I/O: one thread runs the passes one after another; a walk holds a bounded number of
//! descriptors ([`super::walk`]); a pass removes at most [`MAX_REMOVALS_PER_PASS`] files and
//! leaves the rest to the next; the whole-root walk for temp files runs only every
//! [`TEMP_WALK_EVERY`] passes.

use super::dir::{Access, Dir};
use super::jail::{RESERVED_PREFIX, RelPath};
use super::lock;
use super::root::Root;
use super::sweep;
use super::temp::TEMP_PREFIX;
use super::walk::{Visitor, entry_kind, walk};
use super::{Result, StorageError, journal};
use crate::sys::EntryType;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a pass runs unless the test-only `HTTP_NAS_EXPIRE_INTERVAL_MS` says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Most files one pass removes; the rest wait for the next pass.
pub const MAX_REMOVALS_PER_PASS: usize = 10_000;
/// A temp file nobody holds is removed only once it is this old (an upload locks its temp file
/// at once; the age only keeps the pass away from the instant between create and lock, which
/// [`super::temp`] handles anyway).
pub const TEMP_MIN_AGE: Duration = Duration::from_secs(600);
/// The whole root is walked for abandoned temp files every this many passes.
pub const TEMP_WALK_EVERY: u64 = 10;
/// Seconds in a day, for ages given in days.
const SECS_PER_DAY: u64 = 86_400;
/// Longest age a rule takes: about ten years, far below any clock overflow.
const MAX_AGE_SECS: u64 = 3650 * SECS_PER_DAY;

/// One `--expire` rule: files under `prefix` not modified for `age` are deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The directory the rule covers (never the root).
    pub prefix: RelPath,
    /// How long a file may go unmodified.
    pub age: Duration,
}

/// Why an `--expire` rule was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RuleError {
    /// Not `PREFIX=AGE`.
    Form,
    /// The prefix is not a plain relative directory path (`..`, `.`, a leading `/`, empty).
    Prefix(String),
    /// The age is not a positive number followed by `s`, `m`, `h` or `d`.
    Age(String),
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuleError::Form => write!(f, "PREFIX=AGE (like runs/=7d)"),
            RuleError::Prefix(why) => write!(
                f,
                "a directory below the storage root as PREFIX (like runs/), not {why}"
            ),
            RuleError::Age(got) => write!(
                f,
                "an AGE above 0 and at most 3650d, with a unit s, m, h or d (like 90m, 12h, 7d), not {got:?}"
            ),
        }
    }
}

impl Rule {
    /// Parses `PREFIX=AGE` (`runs/=7d`).
    pub fn parse(text: &str) -> std::result::Result<Rule, RuleError> {
        let (prefix, age) = text.trim().rsplit_once('=').ok_or(RuleError::Form)?;
        let prefix = prefix.trim();
        let rel = RelPath::parse(prefix.as_bytes(), crate::path::Naming::Existing)
            .map_err(|e| RuleError::Prefix(format!("{prefix:?} ({e})")))?;
        if rel.is_root() {
            return Err(RuleError::Prefix(format!(
                "{prefix:?} (the root itself: name a directory)"
            )));
        }
        Ok(Rule {
            prefix: rel,
            age: parse_age(age.trim()).ok_or_else(|| RuleError::Age(age.trim().to_string()))?,
        })
    }
}

/// `90m`, `12h`, `7d`, `30s`: a whole number above 0 and a unit.
pub fn parse_age(text: &str) -> Option<Duration> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => SECS_PER_DAY,
        _ => return None,
    };
    let number: u64 = text[..text.len() - 1].parse().ok()?;
    let secs = number.checked_mul(unit)?;
    (1..=MAX_AGE_SECS).contains(&secs).then(|| Duration::from_secs(secs))
}

/// One file a pass removed.
#[derive(Debug)]
pub struct Removal {
    /// Its path relative to the root.
    pub path: PathBuf,
    /// How long it had gone unmodified.
    pub age: Duration,
    /// Its size in bytes.
    pub size: u64,
}

/// Runs one pass of `rules` over `root` (and, when `temp_walk`, the whole root for abandoned
/// temp files), calling `removed` for every file removed. Returns how many files it removed.
pub fn pass(root: &Root, rules: &[Rule], temp_walk: bool, removed: &mut dyn FnMut(&Removal)) -> usize {
    let mut budget = MAX_REMOVALS_PER_PASS;
    let mut count = 0;
    for rule in rules {
        let top = match root.open_dir(rule.prefix.as_path()) {
            Ok(top) => {
                unavailable(&rule.prefix, None);
                top
            }
            Err(e @ (StorageError::NotFound | StorageError::NotADirectory | StorageError::OutsideRoot)) => {
                unavailable(&rule.prefix, Some(&e));
                continue;
            }
            Err(e) => {
                log::warn!("retention of {}: cannot open it: {e}", rule.prefix);
                continue;
            }
        };
        let mut expirer = Expirer::new(Some(rule.age), rule.prefix.as_path().to_path_buf(), budget, removed);
        if let Err(e) = walk(&top, &mut expirer) {
            log::warn!("retention pass of {} stopped early: {e}", rule.prefix);
        }
        budget -= expirer.removed;
        count += expirer.removed;
    }
    if temp_walk {
        let mut expirer = Expirer::new(None, PathBuf::new(), budget, removed);
        if let Err(e) = walk(root.dir(), &mut expirer) {
            log::warn!("retention pass for abandoned temp files stopped early: {e}");
        }
    }
    count
}

/// Prefixes whose absence was already logged, so a rule for a directory not made yet (or a
/// typo) is said once, not on every pass; forgotten once the directory is there, so it is said
/// again if it goes.
static UNAVAILABLE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Logs once why the rule's `prefix` cannot be walked (`why`), or with `None` notes it can.
fn unavailable(prefix: &RelPath, why: Option<&StorageError>) {
    let Ok(mut said) = UNAVAILABLE.lock() else {
        return;
    };
    let name = prefix.to_string();
    let Some(why) = why else {
        said.retain(|p| *p != name);
        return;
    };
    if said.contains(&name) {
        return;
    }
    match why {
        StorageError::OutsideRoot => log::warn!(
            "retention of {name}/: it is a symlink (or leads through one), which retention never follows; \
             the rule removes nothing until {name} is a real directory"
        ),
        _ => log::info!("retention of {name}/: no such directory yet; the rule applies when it appears"),
    }
    said.push(name);
}

/// A pass's work in each directory: files older than `age` (if any) and stale temp files.
struct Expirer<'a> {
    /// The rule's age; `None` for the walk that only clears temp files.
    age: Option<Duration>,
    now: SystemTime,
    /// The path of the directory being visited, relative to the root, one name per level.
    path: Vec<OsString>,
    /// Where the walk started, relative to the root.
    top: PathBuf,
    /// Directories (device, inode) in which this pass removed something.
    emptied: HashSet<(u64, u64)>,
    removed: usize,
    budget: usize,
    report: &'a mut dyn FnMut(&Removal),
}

impl<'a> Expirer<'a> {
    fn new(age: Option<Duration>, top: PathBuf, budget: usize, report: &'a mut dyn FnMut(&Removal)) -> Self {
        Expirer {
            age,
            now: SystemTime::now(),
            path: Vec::new(),
            top,
            emptied: HashSet::new(),
            removed: 0,
            budget,
            report,
        }
    }

    /// How long ago `mtime` (seconds, nanoseconds since the epoch) was; zero for the future.
    fn age_of(&self, mtime: (i64, i64)) -> Duration {
        let (Ok(secs), Ok(nanos)) = (u64::try_from(mtime.0), u32::try_from(mtime.1)) else {
            return Duration::ZERO;
        };
        let then = UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999));
        self.now.duration_since(then).unwrap_or(Duration::ZERO)
    }

    fn rel(&self, name: &OsStr) -> PathBuf {
        let mut path = self.top.clone();
        path.extend(&self.path);
        path.push(name);
        path
    }

    /// Removes the file `name` in `dir` if it is still older than `age` under its lock, taken
    /// without waiting. True if removed.
    fn remove_file(&mut self, dir: &Dir, name: &OsStr, age: Duration) -> bool {
        let held = match lock::try_lock(dir, name, Access::Lock) {
            Ok(Some(held)) => held,
            // Held by a writer (here or on another replica), or gone: not ours this pass.
            Ok(None) | Err(StorageError::NotRegular | StorageError::IsADirectory) => return false,
            Err(e) => {
                log::warn!("retention: cannot lock {}: {e}", self.rel(name).display());
                return false;
            }
        };
        let seen = held
            .meta
            .modified()
            .map(|m| self.now.duration_since(m).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::ZERO);
        if seen < age {
            return false;
        }
        // The lock's check made sure the name is the locked file, and nobody renames or removes
        // a name whose file we hold locked.
        if let Err(e) = dir.remove_file(name) {
            log::warn!("retention: cannot remove {}: {e}", self.rel(name).display());
            return false;
        }
        let record = journal::name_for(held.meta.ino());
        let _ = journal::remove_if_unlocked(dir, OsStr::new(&record));
        let removal = Removal {
            path: self.rel(name),
            age: seen,
            size: held.meta.len(),
        };
        drop(held);
        log::info!(
            "expired {} (unmodified for {} s, {} bytes)",
            removal.path.display(),
            removal.age.as_secs(),
            removal.size
        );
        (self.report)(&removal);
        true
    }
}

impl Visitor for Expirer<'_> {
    fn visit(&mut self, dir: &Dir, name: &OsStr, depth: usize) -> Result<Vec<OsString>> {
        if depth > 0 {
            self.path.truncate(depth - 1);
            self.path.push(name.to_os_string());
        }
        let entries = match dir.entries() {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!("retention: cannot read {}: {e}", self.rel(OsStr::new("")).display());
                return Ok(Vec::new());
            }
        };
        let mut subdirs = Vec::new();
        let mut removed_here = false;
        for (entry, kind, _) in entries.flatten() {
            if self.removed >= self.budget {
                break;
            }
            let text = entry.to_string_lossy();
            let kind = entry_kind(dir, &entry, kind);
            if kind == EntryType::Dir {
                if !text.starts_with(RESERVED_PREFIX) {
                    subdirs.push(entry);
                }
                continue;
            }
            let Ok(st) = dir.stat(&entry) else { continue };
            if !st.is_file() {
                continue;
            }
            let age = self.age_of(st.mtime);
            if text.starts_with(TEMP_PREFIX) {
                if age >= TEMP_MIN_AGE && sweep::remove_if_unlocked(dir, &entry) {
                    log::info!("removed the abandoned temp file {}", self.rel(&entry).display());
                }
                continue;
            }
            if text.starts_with(RESERVED_PREFIX) {
                continue;
            }
            if let Some(rule_age) = self.age
                && age >= rule_age
                && self.remove_file(dir, &entry, rule_age)
            {
                self.removed += 1;
                removed_here = true;
            }
        }
        if removed_here && let Ok(id) = dir.id() {
            self.emptied.insert(id);
        }
        Ok(subdirs)
    }

    fn leave(&mut self, parent: &Dir, name: &OsStr) -> Result<()> {
        // The directory left is the last on the path (its subdirectories were left before it);
        // anything else (a walk that lost its way) is set right by the next visit.
        if self.path.last().is_some_and(|last| last == name) {
            self.path.pop();
        }
        let Some(age) = self.age else { return Ok(()) };
        let Ok(st) = parent.stat(name) else { return Ok(()) };
        if !st.is_dir() || !(self.emptied.contains(&(st.dev, st.ino)) || self.age_of(st.mtime) >= age) {
            return Ok(());
        }
        // Refused unless empty (ENOTEMPTY): a directory something was written into stays.
        if parent.remove_dir(name).is_ok() {
            if let Ok(id) = parent.id() {
                self.emptied.insert(id);
            }
            log::info!("expired the empty directory {}", self.rel(name).display());
        }
        Ok(())
    }

    fn cannot_open(&mut self, _parent: &Dir, name: &OsStr, error: StorageError) -> Result<()> {
        log::warn!("retention: cannot open {}: {error}", self.rel(name).display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_unit_and_must_be_positive() {
        assert_eq!(parse_age("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_age("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_age("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_age("30s"), Some(Duration::from_secs(30)));
        for bad in ["0d", "0", "7", "d", "", "-1d", "1.5h", "7w", "99999999999999999999d"] {
            assert_eq!(parse_age(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rules_name_a_directory_below_the_root() {
        let rule = Rule::parse("runs/=7d").unwrap();
        assert_eq!(rule.prefix.to_string(), "runs");
        assert_eq!(rule.age, Duration::from_secs(604_800));
        assert!(matches!(Rule::parse("../x=1d"), Err(RuleError::Prefix(_))));
        assert!(matches!(Rule::parse("a/../b=1d"), Err(RuleError::Prefix(_))));
        assert!(matches!(Rule::parse("/abs=1d"), Err(RuleError::Prefix(_))));
        assert!(matches!(Rule::parse("=1d"), Err(RuleError::Prefix(_))));
        assert!(matches!(Rule::parse("runs=0h"), Err(RuleError::Age(_))));
        assert!(matches!(Rule::parse("runs"), Err(RuleError::Form)));
    }
}
