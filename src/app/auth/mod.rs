//! Who may do what: bearer and Basic credentials, the tokens they name, and the part of the
//! tree each token reaches.
//!
//! With no token configured the service is open (the seed's behaviour). Otherwise a request
//! names a token, as `Authorization: Bearer TOKEN` (scripts) or `Basic base64(anyuser:TOKEN)`
//! (a browser's login prompt; the user name is ignored). A token is read-write or read-only,
//! and a scoped one ([`scoped`]) reaches only the paths under its prefixes.
//!
//! The given token is compared with every configured one in constant time ([`subtle`]), and
//! the match is selected without a branch, so response timing reveals neither how much of a
//! guess was right nor which token it resembled; only lengths leak. Tokens are never logged
//! or echoed. [`browser`] holds the checks that keep a browser's ambient credentials and
//! network position from being used by another site.

pub mod browser;
pub mod scoped;

pub use scoped::ScopedToken;

use crate::storage::{RelPath, Scope};

/// The answer to a scoped token used outside its prefixes.
pub const OUT_OF_SCOPE: &str = "this token reaches only the directories its line in --tokens-file names";
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a request's credentials allow, before the path is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// May read and write.
    ReadWrite,
    /// May only GET and HEAD.
    ReadOnly,
    /// No or wrong credentials.
    Denied,
}

/// Why credentials were refused, for the message that says what to do: told apart from the
/// header's form alone, after the match failed, so it says nothing about any token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization` header.
    Missing,
    /// A `Bearer` or `Basic` header whose token matches none configured.
    NotAccepted,
    /// An `Authorization` header that is neither `Bearer TOKEN` nor readable `Basic` credentials.
    Malformed,
}

impl Denial {
    /// Why `authorization` (the header's value, if any) was refused, once [`Tokens::check`]
    /// denied it.
    pub fn of(authorization: Option<&str>) -> Self {
        match authorization {
            None => Denial::Missing,
            Some(value) if presented_token(value).is_some() => Denial::NotAccepted,
            Some(_) => Denial::Malformed,
        }
    }
}

/// What a request's credentials grant: an [`Access`], and for a scoped token the prefixes it
/// reaches.
#[derive(Clone, Copy, Debug)]
pub struct Grant<'a> {
    /// Read-write, read-only or denied.
    pub access: Access,
    /// `None`: the whole tree; else only these directories and what is beneath them.
    scope: Option<&'a [RelPath]>,
}

impl Grant<'_> {
    /// A grant of everything (the service is open, or the URL needs no token).
    pub fn everything() -> Self {
        Grant {
            access: Access::ReadWrite,
            scope: None,
        }
    }

    /// True when `path` is one of the scope's directories or beneath one: compared by whole
    /// segments, so a prefix `team-a` reaches `team-a/x` but not `team-ab`, and no directory
    /// above a prefix (not the root either).
    pub fn reaches(&self, path: &RelPath) -> bool {
        self.scope.is_none_or(|prefixes| {
            prefixes
                .iter()
                .any(|p| p.as_path() == path.as_path() || p.contains(path))
        })
    }

    /// The directories a scoped token reaches, as a message shows them (`team-a/, shared/`);
    /// `None` for the whole tree. They are no secret to the token's holder; the token is.
    pub fn directories(&self) -> Option<String> {
        self.scope
            .map(|prefixes| prefixes.iter().map(|p| format!("{p}/")).collect::<Vec<_>>().join(", "))
    }

    /// A scoped token's first directory (where a browser opening `/` is sent); `None` for
    /// the whole tree.
    pub fn home(&self) -> Option<&RelPath> {
        self.scope.and_then(|prefixes| prefixes.first())
    }

    /// The grant's reach as the storage judges it: on where a path really leads, after its
    /// symlinks ([`reaches`](Self::reaches) looks at the path as spelled, which a link inside a
    /// prefix can carry elsewhere).
    pub fn storage_scope(&self) -> Scope<'_> {
        Scope::new(self.scope)
    }
}

/// One configured token.
#[derive(Clone)]
struct Entry {
    secret: Vec<u8>,
    write: bool,
    scope: Option<Vec<RelPath>>,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

impl Tokens {
    /// Tokens from configuration: the unscoped read-write and read-only ones, then the scoped
    /// ones of `--tokens-file`. Blank tokens never get here (configuration refuses them, so a
    /// blank secret cannot open the service); one that does is left out.
    pub fn new(read_write: Option<String>, read_only: Option<String>, scoped: Vec<ScopedToken>) -> Self {
        let plain = |t: Option<String>, write: bool| {
            t.map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .map(|s| Entry {
                    secret: s.into_bytes(),
                    write,
                    scope: None,
                })
        };
        let mut entries: Vec<Entry> = [plain(read_write, true), plain(read_only, false)]
            .into_iter()
            .flatten()
            .collect();
        entries.extend(scoped.into_iter().map(|t| Entry {
            secret: t.secret.into_bytes(),
            write: t.write,
            scope: (!t.prefixes.is_empty()).then_some(t.prefixes),
        }));
        Tokens { entries }
    }

    /// True when any token is configured.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// What the `Authorization` header value grants.
    pub fn check(&self, authorization: Option<&str>) -> Grant<'_> {
        if !self.enabled() {
            return Grant::everything();
        }
        let denied = Grant {
            access: Access::Denied,
            scope: None,
        };
        let Some(given) = authorization.and_then(presented_token) else {
            return denied;
        };
        let Some(entry) = self.find(given.as_bytes()) else {
            return denied;
        };
        Grant {
            access: if entry.write {
                Access::ReadWrite
            } else {
                Access::ReadOnly
            },
            scope: entry.scope.as_deref(),
        }
    }

    /// The entry whose secret is `given`: every entry is compared, and the index of the match
    /// is chosen with a constant-time select, so neither the loop nor its timing stops at the
    /// match. (Configuration refuses duplicate tokens, so at most one matches.)
    fn find(&self, given: &[u8]) -> Option<&Entry> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let same = entry.secret.as_slice().ct_eq(given);
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            index = u32::conditional_select(&index, &i, same);
            found |= same;
        }
        let found: bool = found.into();
        found.then(|| self.entries.get(index as usize)).flatten()
    }
}

/// The token an `Authorization` value presents: `Bearer TOKEN`, or `Basic` with the token as
/// the password (any user name, so a browser's login prompt works).
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest)?;
        let text = String::from_utf8(decoded).ok()?;
        let (_user, password) = text.split_once(':')?;
        return Some(password.trim().to_string());
    }
    None
}

/// Standard base64 (RFC 4648 §4), padding optional; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits = text.trim_end_matches('=').as_bytes();
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut bits = 0u32;
        for &c in group {
            bits = (bits << 6) | value(c)?;
        }
        bits <<= 6 * (4 - group.len() as u32);
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Naming;

    fn basic(user_pass: &str) -> String {
        // Encoding for the test only: the service never encodes.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in user_pass.as_bytes().chunks(3) {
            let mut buf = [0u8; 3];
            buf[..chunk.len()].copy_from_slice(chunk);
            let n = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            }
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
        format!("Basic {out}")
    }

    #[test]
    fn access_table() {
        let open = Tokens::new(None, None, vec![]);
        assert_eq!(open.check(None).access, Access::ReadWrite);
        let both = Tokens::new(Some("rw-secret".into()), Some("ro-secret".into()), vec![]);
        let cases = [
            (None, Access::Denied),
            (Some("Bearer rw-secret".to_string()), Access::ReadWrite),
            (Some("bearer  rw-secret ".to_string()), Access::ReadWrite),
            (Some("Bearer ro-secret".to_string()), Access::ReadOnly),
            (Some("Bearer rw-secre".to_string()), Access::Denied),
            (Some("Basic rw-secret".to_string()), Access::Denied),
            (Some("rw-secret".to_string()), Access::Denied),
            (Some(basic("anyone:rw-secret")), Access::ReadWrite),
            (Some(basic(":ro-secret")), Access::ReadOnly),
            (Some(basic("rw-secret:")), Access::Denied),
            (Some(basic("rw-secret")), Access::Denied),
            (Some("Basic !!!!".to_string()), Access::Denied),
        ];
        for (header, want) in cases {
            assert_eq!(both.check(header.as_deref()).access, want, "{header:?}");
        }
        let ro_only = Tokens::new(None, Some("ro".into()), vec![]);
        assert_eq!(ro_only.check(Some("Bearer ro")).access, Access::ReadOnly);
        assert!(!format!("{both:?}").contains("secret"));
    }

    #[test]
    fn denials_are_told_apart_by_the_header_form() {
        let cases = [
            (None, Denial::Missing),
            (Some("Bearer wrong".to_string()), Denial::NotAccepted),
            (Some(basic("user:wrong")), Denial::NotAccepted),
            (Some("Bearer".to_string()), Denial::Malformed),
            (Some("Token wrong".to_string()), Denial::Malformed),
            (Some("wrong".to_string()), Denial::Malformed),
            (Some("Basic !!!!".to_string()), Denial::Malformed),
            (Some(basic("no-colon")), Denial::Malformed),
        ];
        for (header, want) in cases {
            assert_eq!(Denial::of(header.as_deref()), want, "{header:?}");
        }
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").as_deref(), Some(&b"user:pass"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("YWI").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("Y"), None);
        assert_eq!(base64_decode("Y*=="), None);
    }

    #[test]
    fn scopes_compare_whole_segments() {
        let rel = |s: &str| RelPath::parse(s.as_bytes(), Naming::Existing).unwrap();
        let scoped = scoped::parse("t1 rw team-a/\nt2 ro team-b team-c/x\n").unwrap();
        let tokens = Tokens::new(Some("all".into()), None, scoped);
        let a = tokens.check(Some("Bearer t1"));
        assert_eq!(a.access, Access::ReadWrite);
        for (path, inside) in [
            ("team-a", true),
            ("team-a/", true),
            ("team-a/x/y", true),
            ("team-ab", false),
            ("team-ab/x", false),
            ("team", false),
            ("", false),
            ("other/team-a", false),
        ] {
            assert_eq!(a.reaches(&rel(path)), inside, "{path}");
        }
        let b = tokens.check(Some("Bearer t2"));
        assert_eq!(b.access, Access::ReadOnly);
        assert!(b.reaches(&rel("team-c/x/1")) && !b.reaches(&rel("team-c")) && b.reaches(&rel("team-b")));
        assert!(tokens.check(Some("Bearer all")).reaches(&rel("")));
    }
}
