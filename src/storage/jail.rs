//! The path jail: the only way a request path becomes a filesystem path.
//!
//! Defences, in order, each assuming the ones before it held:
//! 1. [`RelPath::parse`] (pure, lexical) refuses NUL and control bytes (a newline in a name
//!    would forge lines in listings), backslashes, a leading `/`, empty, `.` and `..` segments,
//!    over-long segments, and names with the [`RESERVED_PREFIX`] our temp files use. What
//!    passes is a list of plain names, so joining it to the root cannot climb out lexically.
//! 2. [`resolve`] walks the segments from the canonical root with `lstat`: every symlink met
//!    on the way (a parent, or the final name) must resolve inside the root, else
//!    [`StorageError::OutsideRoot`]. Parents are replaced by their real location; the final
//!    name is kept as given, so a delete or rename acts on a link itself, not its target.
//!
//! The API never creates symlinks, so links only come from whoever else can write the volume;
//! a link swapped between this check and the use (a race only such a writer can run) is the
//! residual risk, and is documented in the README.

use super::StorageError;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// File names starting with this are the service's own (temp files, journals): never listed,
/// never reachable through the API, and swept at start.
pub const RESERVED_PREFIX: &str = ".http-nas-";
/// Longest single path segment, in bytes (Linux `NAME_MAX`).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest whole relative path, in bytes (Linux `PATH_MAX` less room for the root).
pub const MAX_PATH_BYTES: usize = 3072;

/// Why a path was refused before touching the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Contains a NUL byte.
    Nul,
    /// Contains a control character (newline, tab, DEL...).
    ControlChar,
    /// Contains a backslash.
    Backslash,
    /// Starts with `/`.
    Absolute,
    /// Has an empty segment (`a//b`).
    EmptySegment,
    /// Has a `.` or `..` segment.
    DotSegment,
    /// A segment starts with [`RESERVED_PREFIX`].
    Reserved,
    /// A segment or the whole path is too long.
    TooLong,
    /// Names the storage root where a file or directory below it is needed.
    Empty,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Nul => write!(f, "path contains a NUL byte"),
            PathError::ControlChar => write!(f, "path contains a control character"),
            PathError::Backslash => write!(f, "path contains a backslash"),
            PathError::Absolute => write!(f, "path must be relative (no leading /)"),
            PathError::EmptySegment => write!(f, "path has an empty segment (//)"),
            PathError::DotSegment => write!(f, "path has a . or .. segment"),
            PathError::Reserved => write!(f, "names starting with {RESERVED_PREFIX} are reserved"),
            PathError::TooLong => {
                write!(
                    f,
                    "path longer than {MAX_PATH_BYTES} bytes or a name longer than {MAX_SEGMENT_BYTES}"
                )
            }
            PathError::Empty => write!(f, "path is empty where a file or directory is needed"),
        }
    }
}

/// A validated path relative to the storage root: plain names joined by `/`, or empty for the
/// root itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelPath(String);

impl RelPath {
    /// The storage root.
    pub fn root() -> Self {
        RelPath(String::new())
    }

    /// Validates an already percent-decoded path. One trailing `/` is allowed and dropped
    /// (`dir/` names `dir`); the empty path is the root.
    pub fn parse(decoded: &str) -> Result<Self, PathError> {
        if decoded.bytes().any(|b| b == 0) {
            return Err(PathError::Nul);
        }
        if decoded.chars().any(char::is_control) {
            return Err(PathError::ControlChar);
        }
        if decoded.contains('\\') {
            return Err(PathError::Backslash);
        }
        if decoded.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if decoded.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let trimmed = decoded.strip_suffix('/').unwrap_or(decoded);
        if trimmed.is_empty() {
            return Ok(RelPath::root());
        }
        for segment in trimmed.split('/') {
            match segment {
                "" => return Err(PathError::EmptySegment),
                "." | ".." => return Err(PathError::DotSegment),
                s if s.starts_with(RESERVED_PREFIX) => return Err(PathError::Reserved),
                s if s.len() > MAX_SEGMENT_BYTES => return Err(PathError::TooLong),
                _ => {}
            }
        }
        Ok(RelPath(trimmed.to_string()))
    }

    /// True for the storage root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The path as `a/b/c` (empty for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// Refuses the root where a file or directory below it is needed.
    pub fn non_root(self) -> Result<Self, PathError> {
        if self.is_root() {
            Err(PathError::Empty)
        } else {
            Ok(self)
        }
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`resolve`] does with a symlink as the final name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalLink {
    /// Keep the link's own name (a delete or move acts on the link).
    Keep,
    /// Follow it to its target (reads and writes act on the file it leads to); a dangling
    /// link is then [`StorageError::NotFound`].
    Follow,
}

/// Maps `rel` to a filesystem path under `root` (which must be canonical), refusing any
/// symlink on the way that leads outside `root`. Missing segments are fine: the result then
/// names something that does not exist yet.
pub fn resolve(root: &Path, rel: &RelPath, final_link: FinalLink) -> Result<PathBuf, StorageError> {
    let segments: Vec<&str> = rel.segments().collect();
    let mut real = root.to_path_buf();
    for (i, segment) in segments.iter().enumerate() {
        let candidate = real.join(segment);
        let is_last = i + 1 == segments.len();
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = match fs::canonicalize(&candidate) {
                    Ok(target) => target,
                    // A final link whose target does not exist (yet) is a name of its own: it
                    // can be deleted or moved, and reading through it finds nothing.
                    Err(e) if is_last && e.kind() == io::ErrorKind::NotFound => {
                        return match final_link {
                            FinalLink::Keep => Ok(candidate),
                            FinalLink::Follow => Err(StorageError::NotFound),
                        };
                    }
                    Err(_) => return Err(StorageError::OutsideRoot),
                };
                if !target.starts_with(root) {
                    return Err(StorageError::OutsideRoot);
                }
                real = if is_last && final_link == FinalLink::Keep {
                    candidate
                } else {
                    target
                };
            }
            Ok(_) => real = candidate,
            // Nothing is below a missing name, or below a file (ENOTDIR).
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                // Nothing below a missing segment exists either; plain names join safely.
                real = candidate;
                for rest in &segments[i + 1..] {
                    real.push(rest);
                }
                return Ok(real);
            }
            Err(e) => return Err(StorageError::from_io(e)),
        }
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths() {
        let cases = [
            ("", ""),
            ("a", "a"),
            ("a/b/c.txt", "a/b/c.txt"),
            ("dir/", "dir"),
            ("a%2Fb", "a%2Fb"),
            ("..a", "..a"),
            ("a..", "a.."),
            (".hidden", ".hidden"),
            ("caf\u{e9}", "caf\u{e9}"),
            ("with space", "with space"),
        ];
        for (input, want) in cases {
            assert_eq!(RelPath::parse(input).map(|p| p.0), Ok(want.to_string()), "{input:?}");
        }
    }

    #[test]
    fn refuses_unsafe_paths() {
        use PathError::*;
        let long_segment = "x".repeat(MAX_SEGMENT_BYTES + 1);
        let cases: Vec<(&str, PathError)> = vec![
            ("a\0b", Nul),
            ("a\nb", ControlChar),
            ("a\tb", ControlChar),
            ("a\u{7f}", ControlChar),
            ("..\\etc", Backslash),
            ("/etc/passwd", Absolute),
            ("//etc", Absolute),
            ("a//b", EmptySegment),
            ("a//", EmptySegment),
            (".", DotSegment),
            ("..", DotSegment),
            ("../x", DotSegment),
            ("a/../../x", DotSegment),
            ("a/./b", DotSegment),
            ("a/..", DotSegment),
            (".http-nas-tmp-1", Reserved),
            ("d/.http-nas-x", Reserved),
            (&long_segment, TooLong),
        ];
        for (input, want) in cases {
            assert_eq!(RelPath::parse(input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn segment_length_limit_at_and_over() {
        assert!(RelPath::parse(&"x".repeat(MAX_SEGMENT_BYTES)).is_ok());
        assert_eq!(
            RelPath::parse(&"x".repeat(MAX_SEGMENT_BYTES + 1)),
            Err(PathError::TooLong)
        );
        let at = vec!["y".repeat(99); MAX_PATH_BYTES / 100].join("/");
        assert!(RelPath::parse(&at).is_ok());
        assert_eq!(
            RelPath::parse(&"z/".repeat(MAX_PATH_BYTES / 2 + 1)),
            Err(PathError::TooLong)
        );
    }
}
