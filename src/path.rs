//! Request paths as the service names them, before any filesystem sees them: [`RelPath`]
//! (a validated path beneath the storage root), the two [`Naming`] rules (a name that must
//! exist may be any bytes; a name the request creates must be safe to show), the refusals
//! ([`PathError`]), and how a name is written back out ([`listed_name`] for a URL segment,
//! [`readable_name`] for people, `Display` for responses and logs).
//!
//! Pure and lexical: nothing here touches the disk, so the URL parser (`app::url`) can depend
//! on it without depending on `storage`, and the tables below cover every rule. This is the
//! first of the path jail's defences (`storage::jail` lists them in order): [`RelPath::parse`]
//! refuses NUL bytes, a leading `/`, empty, `.` and `..` segments, over-long names, and names
//! in the service's own [`RESERVED_PREFIX`] namespace (in any letter case: a volume may be
//! case-insensitive). What passes is a list of plain names, so joining it to the root cannot
//! climb out lexically. A name the request would *create* ([`Naming::New`]) must also be UTF-8
//! without control characters, backslashes, bidirectional controls, line or paragraph
//! separators or a BOM, which would forge lines in listings or disguise a name; a name that
//! must already exist ([`Naming::Existing`]) may be any bytes another writer of the volume
//! used, so that the listing's encoded form of it ([`listed_name`]) can be read, appended to,
//! moved (to a new name that is safe) and deleted. An append names an existing file or creates
//! it: it is parsed as existing, and [`RelPath::creatable`] is checked where the file would be
//! created.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
/// File names starting with this are the service's own (temp files, journals): never listed,
/// never reachable through the API, and swept at start. Matched in any letter case.
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
    /// A new name contains a control character (newline, tab, DEL...).
    ControlChar,
    /// A new name contains a character that disguises it: a bidirectional control, a line or
    /// paragraph separator, or a byte order mark.
    Disguising,
    /// A new name is not UTF-8.
    NotUtf8,
    /// A new name contains a backslash.
    Backslash,
    /// Starts with `/`.
    Absolute,
    /// Has an empty segment (`a//b`).
    EmptySegment,
    /// Has a `.` or `..` segment.
    DotSegment,
    /// A segment ends in an encoded `/` (`f%2F`): a name cannot hold a `/`, and a trailing `/`
    /// is spelled unencoded.
    EncodedSlash,
    /// A segment starts with [`RESERVED_PREFIX`].
    Reserved,
    /// A segment or the whole path is too long.
    TooLong,
    /// Names the storage root where a file or directory below it is needed.
    Empty,
}

/// What the refusals of a new name add: why, and what still works.
const NEW_NAMES: &str = ": the service creates only names that are safe to show (an existing file named so can still \
                         be read, appended to, moved to a plain name and deleted)";

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Nul => write!(f, "path contains a NUL byte"),
            PathError::ControlChar => write!(f, "the new name contains a control character{NEW_NAMES}"),
            PathError::Disguising => write!(
                f,
                "the new name contains a bidirectional control, line or paragraph separator, or byte order mark{NEW_NAMES}"
            ),
            PathError::NotUtf8 => write!(f, "the new name is not valid UTF-8 after percent-decoding{NEW_NAMES}"),
            PathError::Backslash => write!(f, "the new name contains a backslash{NEW_NAMES}"),
            PathError::Absolute => write!(f, "path must be relative (no leading /)"),
            PathError::EmptySegment => write!(f, "path has an empty segment (//)"),
            PathError::DotSegment => write!(f, "path has a . or .. segment"),
            PathError::EncodedSlash => write!(f, "a name ends in an encoded / (%2F)"),
            PathError::Reserved => write!(f, "names starting with {RESERVED_PREFIX} are reserved"),
            PathError::TooLong => {
                write!(
                    f,
                    "path longer than {MAX_PATH_BYTES} bytes or a name longer than {MAX_SEGMENT_BYTES}"
                )
            }
            PathError::Empty => write!(
                f,
                "path is empty where a file or directory is needed: name it after /file/, as /file/{{path}} \
                 (with no trailing / for a write)"
            ),
        }
    }
}

/// Whether a path names something that must exist, or something the request may create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// Read, counted, stat'ed, appended to, deleted or moved away: any name another writer
    /// made is allowed (an append that would create the file checks [`RelPath::creatable`]).
    Existing,
    /// Uploaded to or moved to: only names that are safe to show (see the module doc).
    New,
}

/// A validated path relative to the storage root: plain names joined by `/`, or empty for the
/// root itself; it may name only a directory (it was spelled with a trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelPath {
    bytes: Vec<u8>,
    dir_only: bool,
}

impl RelPath {
    /// The storage root.
    pub fn root() -> Self {
        RelPath {
            bytes: Vec::new(),
            dir_only: true,
        }
    }

    /// Validates an already percent-decoded path. One trailing `/` is allowed and dropped,
    /// and makes the path name a directory only (`d/` names the directory `d`, and no file);
    /// the empty path is the root.
    pub fn parse(decoded: &[u8], naming: Naming) -> Result<Self, PathError> {
        if decoded.contains(&0) {
            return Err(PathError::Nul);
        }
        if naming == Naming::New {
            let text = std::str::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
            if text.chars().any(char::is_control) {
                return Err(PathError::ControlChar);
            }
            if text.chars().any(is_disguising) {
                return Err(PathError::Disguising);
            }
            if text.contains('\\') {
                return Err(PathError::Backslash);
            }
        }
        if decoded.starts_with(b"/") {
            return Err(PathError::Absolute);
        }
        if decoded.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let (trimmed, dir_only) = match decoded.strip_suffix(b"/") {
            Some(t) => (t, true),
            None => (decoded, false),
        };
        if trimmed.is_empty() {
            return Ok(RelPath::root());
        }
        for segment in trimmed.split(|&b| b == b'/') {
            match segment {
                b"" => return Err(PathError::EmptySegment),
                b"." | b".." => return Err(PathError::DotSegment),
                s if is_reserved(s) => return Err(PathError::Reserved),
                s if s.len() > MAX_SEGMENT_BYTES => return Err(PathError::TooLong),
                _ => {}
            }
        }
        Ok(RelPath {
            bytes: trimmed.to_vec(),
            dir_only,
        })
    }

    /// True for the storage root.
    pub fn is_root(&self) -> bool {
        self.bytes.is_empty()
    }

    /// True when the path was spelled with a trailing `/`: it names a directory, never a file.
    pub fn dir_only(&self) -> bool {
        self.dir_only
    }

    /// The path as `a/b/c` (empty for the root).
    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.bytes))
    }

    /// True when `other` is strictly below this path (`a/b` is below `a`, `ab` is not).
    pub fn contains(&self, other: &RelPath) -> bool {
        other.bytes.len() > self.bytes.len()
            && other.bytes.starts_with(&self.bytes)
            && other.bytes[self.bytes.len()] == b'/'
    }

    /// This directory joined with the last name of `other` (where a move of `other` into it
    /// lands), validated as a new name ([`Naming::New`]) and against `MAX_PATH_BYTES`.
    pub fn join_last_of(&self, other: &RelPath) -> Result<RelPath, PathError> {
        let last = other.bytes.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let mut bytes = self.bytes.clone();
        if !bytes.is_empty() {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(last);
        RelPath::parse(&bytes, Naming::New)
    }

    /// Whether this path (parsed as [`Naming::Existing`]) may also be *created*: the
    /// [`Naming::New`] rules, for a request that creates it only if it is missing (an append).
    pub fn creatable(&self) -> Result<(), PathError> {
        RelPath::parse(&self.bytes, Naming::New).map(drop)
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
    /// The path as responses and logs name it: itself for almost any name made through the
    /// API, else percent-encoded (`shown_path`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&shown_path(&self.bytes))
    }
}

/// True for a name in the service's own namespace, in any letter case.
pub fn is_reserved(name: &[u8]) -> bool {
    name.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
}

/// True for characters that make a name look like something else: bidirectional controls
/// (`U+202E` shows `txt.exe` as `exe.txt`), line and paragraph separators (line breaks to
/// some readers), and the byte order mark (invisible).
fn is_disguising(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}' | '\u{FEFF}'
    )
}

/// Last segments that select an operation on what precedes them (`/file/dir/wc` is the line
/// count of `dir`, docs/API.md "Names"), so a file of that name cannot be reached by appending
/// its name as it is: listings encode it ([`listed_name`]) and the browse page links it with
/// the `/` before it encoded (`dir%2Fwc`).
pub const SUFFIX_WORDS: [&str; 4] = ["wc", "check", "mv", "concat"];

/// True for a name that, as the last segment of a URL, would select an operation
/// ([`SUFFIX_WORDS`]) instead of naming itself.
pub fn is_suffix_word(name: &[u8]) -> bool {
    SUFFIX_WORDS.iter().any(|w| w.as_bytes() == name)
}

/// True for a character that stands for itself in a URL path segment as curl and browsers
/// send it, and in a listing clients split on whitespace: an RFC 3986 `pchar` but `%`
/// (unreserved, sub-delims, `:` and `@`), or a non-ASCII character that is not a control,
/// whitespace or disguising one (sent as its UTF-8 bytes, decoded back once). Everything else
/// either ends the path (`?`, `#`), starts an escape (`%`), is refused by curl (a space) or
/// globbed by it (`[]{}`), turned into `/` by browsers (`\`), or breaks the line.
fn stands_in_segment(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c)
    } else {
        !c.is_control() && !c.is_whitespace() && !is_disguising(c)
    }
}

/// A name as the plain listing lists it and the JSON listing's `href` gives it: one URL path
/// segment that, appended to its directory's URL and percent-decoded once like every request
/// path, names exactly this entry, so every line works as `curl "$URL/file/dir/$line"`.
/// Almost every name is itself (the seed's listing text, byte for byte); a name with a
/// character that does not stand for itself in a segment (`stands_in_segment`: a space, `%`,
/// `?`, `#`, `[`, a control byte...) or invalid UTF-8 has those characters (bytes)
/// percent-encoded, the rest kept readable: `a b%.txt` is listed `a%20b%25.txt`, a literal
/// `a%41` is `a%2541` (never the line that finds `aA`). A name that is a suffix word
/// (`SUFFIX_WORDS`) has its first letter encoded (`wc` is `%77c`), so the line fetches the
/// file rather than its directory's line count. Never contains a line break or whitespace.
pub fn listed_name(name: &[u8]) -> Cow<'_, str> {
    if is_suffix_word(name) {
        let mut out = format!("%{:02X}", name[0]);
        out.push_str(&String::from_utf8_lossy(&name[1..]));
        return Cow::Owned(out);
    }
    if let Ok(text) = std::str::from_utf8(name)
        && text.chars().all(stands_in_segment)
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(name.len() * 3);
    let encode = |bytes: &[u8], out: &mut String| {
        for b in bytes {
            out.push_str(&format!("%{b:02X}"));
        }
    };
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if stands_in_segment(c) {
                out.push(c);
            } else {
                encode(c.encode_utf8(&mut [0; 4]).as_bytes(), &mut out);
            }
        }
        encode(chunk.invalid(), &mut out);
    }
    Cow::Owned(out)
}

/// A name (or path) for people to read, in the browse page: the name itself, invalid UTF-8
/// shown as U+FFFD, but control, line-breaking and disguising characters (`U+202E` shows
/// `txt.exe` as `exe.txt`) percent-encoded, so what is shown is what is there.
pub fn readable_name(name: &[u8]) -> Cow<'_, str> {
    let hidden = |c: char| c.is_control() || is_disguising(c);
    let text = String::from_utf8_lossy(name);
    if !text.chars().any(hidden) {
        return text;
    }
    let mut out = String::with_capacity(text.len() * 3);
    for c in text.chars() {
        if hidden(c) {
            for b in c.encode_utf8(&mut [0; 4]).as_bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path as responses and logs name it: itself when it is UTF-8 with nothing that could break
/// a line, disguise it, or mean something else in a URL (every name made through the API but
/// those with `%`, `?` or `#`), else with control and disguising characters, `%`, `?`, `#` and
/// every non-ASCII byte percent-encoded, so it decodes back to exactly these bytes.
fn shown_path(name: &[u8]) -> Cow<'_, str> {
    let means_more_in_a_url = |c: char| matches!(c, '%' | '?' | '#');
    if let Ok(text) = std::str::from_utf8(name)
        && !text
            .chars()
            .any(|c| c.is_control() || is_disguising(c) || means_more_in_a_url(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(name.len() * 3);
    for &b in name {
        if !(0x20..0x7f).contains(&b) || matches!(b, b'%' | b'?' | b'#') {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str, naming: Naming) -> Result<String, PathError> {
        RelPath::parse(input.as_bytes(), naming).map(|p| p.as_path().to_string_lossy().into_owned())
    }

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
            (".http-nas", ".http-nas"),
            ("caf\u{e9}", "caf\u{e9}"),
            ("with space", "with space"),
            ("\u{1F600}.txt", "\u{1F600}.txt"),
        ];
        for (input, want) in cases {
            for naming in [Naming::New, Naming::Existing] {
                assert_eq!(parse(input, naming), Ok(want.to_string()), "{input:?} {naming:?}");
            }
        }
    }

    #[test]
    fn refuses_unsafe_paths() {
        use PathError::*;
        let long_segment = "x".repeat(MAX_SEGMENT_BYTES + 1);
        // (input, refusal for a new name, refusal for an existing one)
        let cases: Vec<(&str, PathError, Option<PathError>)> = vec![
            ("a\0b", Nul, Some(Nul)),
            ("a\nb", ControlChar, None),
            ("a\tb", ControlChar, None),
            ("a\u{7f}", ControlChar, None),
            ("a\u{85}", ControlChar, None),
            ("report\u{202E}vsc.exe", Disguising, None),
            ("a\u{2028}b", Disguising, None),
            ("a\u{2029}b", Disguising, None),
            ("\u{FEFF}a", Disguising, None),
            ("a\u{2066}b", Disguising, None),
            ("..\\etc", Backslash, None),
            ("/etc/passwd", Absolute, Some(Absolute)),
            ("//etc", Absolute, Some(Absolute)),
            ("a//b", EmptySegment, Some(EmptySegment)),
            ("a//", EmptySegment, Some(EmptySegment)),
            (".", DotSegment, Some(DotSegment)),
            ("..", DotSegment, Some(DotSegment)),
            ("../x", DotSegment, Some(DotSegment)),
            ("a/../../x", DotSegment, Some(DotSegment)),
            ("a/./b", DotSegment, Some(DotSegment)),
            ("a/..", DotSegment, Some(DotSegment)),
            (".http-nas-tmp-1", Reserved, Some(Reserved)),
            ("d/.http-nas-x", Reserved, Some(Reserved)),
            (".HTTP-NAS-tmp-1", Reserved, Some(Reserved)),
            ("d/.Http-Nas-journal-5", Reserved, Some(Reserved)),
            (&long_segment, TooLong, Some(TooLong)),
        ];
        for (input, new, existing) in cases {
            assert_eq!(parse(input, Naming::New), Err(new), "new {input:?}");
            match existing {
                Some(e) => assert_eq!(parse(input, Naming::Existing), Err(e), "existing {input:?}"),
                None => assert!(parse(input, Naming::Existing).is_ok(), "existing {input:?}"),
            }
        }
        assert_eq!(RelPath::parse(b"caf\xe9", Naming::New), Err(NotUtf8));
        assert!(RelPath::parse(b"caf\xe9", Naming::Existing).is_ok());
    }

    #[test]
    fn a_trailing_slash_names_a_directory_only() {
        let dir = RelPath::parse(b"d/sub/", Naming::Existing).unwrap();
        assert!(dir.dir_only());
        assert_eq!(dir.as_path(), Path::new("d/sub"));
        assert!(!RelPath::parse(b"d/sub", Naming::Existing).unwrap().dir_only());
        assert!(RelPath::root().dir_only());
    }

    #[test]
    fn contains_is_by_whole_segments() {
        let p = |s: &str| RelPath::parse(s.as_bytes(), Naming::New).unwrap();
        assert!(p("a").contains(&p("a/b")));
        assert!(p("a/b").contains(&p("a/b/c/d")));
        assert!(!p("a").contains(&p("ab")));
        assert!(!p("a").contains(&p("a")));
        assert!(!p("a/b").contains(&p("a")));
    }

    #[test]
    fn listed_names_are_one_url_segment_each_and_decode_back() {
        let cases: [(&[u8], &str); 19] = [
            (b"report.csv", "report.csv"),
            ("\u{65e5}\u{672c}.txt".as_bytes(), "\u{65e5}\u{672c}.txt"),
            (b"x+y=z,(1)!$&'*;:@~-_.", "x+y=z,(1)!$&'*;:@~-_."),
            ("caf\u{e9} 100.txt".as_bytes(), "caf\u{e9}%20100.txt"),
            ("caf\u{e9} 100%.txt".as_bytes(), "caf\u{e9}%20100%25.txt"),
            (b"a%41", "a%2541"),
            (b"q?x#y", "q%3Fx%23y"),
            (b"caf\xe9.txt", "caf%E9.txt"),
            (b"a\nsecrets.txt", "a%0Asecrets.txt"),
            (b"50%\r", "50%25%0D"),
            ("x\u{202E}txt.exe".as_bytes(), "x%E2%80%AEtxt.exe"),
            (b"tab\there", "tab%09here"),
            ("nb\u{a0}sp".as_bytes(), "nb%C2%A0sp"),
            (b"a[1]{2}", "a%5B1%5D%7B2%7D"),
            (b"back\\slash \"q\" <b>^|`", "back%5Cslash%20%22q%22%20%3Cb%3E%5E%7C%60"),
            (b"d/f", "d%2Ff"),
            (b"wc", "%77c"),
            (b"concat", "%63oncat"),
            (b"wc.txt", "wc.txt"),
        ];
        for (name, listed) in cases {
            let got = listed_name(name);
            assert_eq!(got, listed, "{name:?}");
            assert!(!got.chars().any(char::is_whitespace), "{got}");
            if got != String::from_utf8_lossy(name) {
                assert_eq!(urlencoding::decode_binary(got.as_bytes()), name, "{listed}");
            }
        }
        for word in SUFFIX_WORDS {
            assert_eq!(
                urlencoding::decode_binary(listed_name(word.as_bytes()).as_bytes()),
                word.as_bytes()
            );
        }
    }

    #[test]
    fn readable_names_show_the_name_and_hide_nothing() {
        assert_eq!(readable_name(b"100% a?b#c.txt"), "100% a?b#c.txt");
        assert_eq!(readable_name(b"caf\xe9"), "caf\u{FFFD}");
        assert_eq!(readable_name(b"a\nb\tc"), "a%0Ab%09c");
        assert_eq!(readable_name("x\u{202E}txt.exe".as_bytes()), "x%E2%80%AEtxt.exe");
    }

    #[test]
    fn segment_length_limit_at_and_over() {
        let ok = |s: &str| RelPath::parse(s.as_bytes(), Naming::New).is_ok();
        assert!(ok(&"x".repeat(MAX_SEGMENT_BYTES)));
        assert!(!ok(&"x".repeat(MAX_SEGMENT_BYTES + 1)));
        let at = vec!["y".repeat(99); MAX_PATH_BYTES / 100].join("/");
        assert!(ok(&at));
        assert_eq!(
            RelPath::parse("z/".repeat(MAX_PATH_BYTES / 2 + 1).as_bytes(), Naming::New),
            Err(PathError::TooLong)
        );
    }
}
