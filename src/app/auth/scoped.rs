//! `--tokens-file`: one token a line, `TOKEN rw|ro [PREFIX…]`, so several teams can share one
//! service, each with a token that reaches only its own directories.
//!
//! A `#` that starts a field begins a comment to the end of the line (`tok rw team-a  # CI`,
//! as the README's example writes them), so a comment's words never become prefixes that
//! widen the token; a line starting with `#` is all comment, and blank lines are skipped. A
//! `#` inside a token or prefix is an ordinary character (so no token or prefix starts with
//! one). A prefix names a directory (`team-a`,
//! `team-a/` and `/team-a/` are the same) and covers everything beneath it, compared by whole
//! segments. A line that is not of that form stops the start: the error names the line number
//! and what is wrong, and never repeats a field of the line, which may be a token (a
//! misplaced one, too).

use crate::path::{Naming, RelPath};

/// One line of the tokens file.
#[derive(Clone)]
pub struct ScopedToken {
    /// The token itself.
    pub secret: String,
    /// `rw` (true) or `ro`.
    pub write: bool,
    /// The directories it reaches; empty: the whole tree.
    pub prefixes: Vec<RelPath>,
}

impl std::fmt::Debug for ScopedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefixes: Vec<String> = self.prefixes.iter().map(ToString::to_string).collect();
        write!(
            f,
            "ScopedToken(<secret> {} {prefixes:?})",
            if self.write { "rw" } else { "ro" }
        )
    }
}

/// A line of the tokens file that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, without any of the line's text.
    pub problem: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: {} (each line is `TOKEN rw|ro [PREFIX...]`)",
            self.line, self.problem
        )
    }
}

/// Parses the whole file; the first bad line is the error. An empty result (only comments
/// and blank lines) is for the caller to refuse.
pub fn parse(text: &str) -> Result<Vec<ScopedToken>, LineError> {
    let mut tokens: Vec<(usize, ScopedToken)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let number = n + 1;
        let fail = |problem: String| LineError { line: number, problem };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace().take_while(|field| !field.starts_with('#'));
        let secret = fields.next().unwrap_or_default();
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(fail("the token has a character other than printable ASCII".into()));
        }
        let write = match fields.next() {
            Some("rw") => true,
            Some("ro") => false,
            Some(_) => return Err(fail("the second field must be rw or ro".into())),
            None => return Err(fail("rw or ro is missing after the token".into())),
        };
        let mut prefixes = Vec::new();
        for (i, field) in fields.enumerate() {
            let which = i + 1;
            let trimmed = field.strip_prefix('/').unwrap_or(field);
            let path = RelPath::parse(trimmed.as_bytes(), Naming::Existing)
                .map_err(|e| fail(format!("prefix {which} is not a usable path: {e}")))?;
            if path.is_root() {
                return Err(fail(format!(
                    "prefix {which} names the whole tree: leave the prefixes out for that"
                )));
            }
            prefixes.push(path);
        }
        if let Some((earlier, _)) = tokens.iter().find(|(_, t)| t.secret == secret) {
            return Err(fail(format!(
                "the same token as line {earlier}: give each token one line"
            )));
        }
        tokens.push((
            number,
            ScopedToken {
                secret: secret.to_string(),
                write,
                prefixes,
            },
        ));
    }
    Ok(tokens.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_and_prefixes() {
        let text = "# teams\n\n  alpha-1 rw team-a/ /shared/in\nbeta-2 ro\n\tgamma-3 ro team-b\n";
        let tokens = parse(text).unwrap();
        assert_eq!(tokens.len(), 3);
        assert!(tokens[0].write && !tokens[1].write);
        let prefixes: Vec<String> = tokens[0].prefixes.iter().map(ToString::to_string).collect();
        assert_eq!(prefixes, ["team-a", "shared/in"]);
        assert!(tokens[1].prefixes.is_empty());
        assert!(!format!("{tokens:?}").contains("alpha"), "Debug shows no token");
        assert!(parse("# only a comment\n\n").unwrap().is_empty());
        let commented = parse("t1 rw team-a   # CI of team-a, never team-b\nt2 ro #x y\nt3 rw a\t#\n").unwrap();
        let reach = |t: &ScopedToken| t.prefixes.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(reach(&commented[0]), ["team-a"], "a trailing comment is no prefix");
        assert!(reach(&commented[1]).is_empty());
        assert_eq!(reach(&commented[2]), ["a"]);
        let inside = parse("a#1 ro b#2\n").unwrap();
        assert_eq!(inside[0].secret, "a#1", "a # inside a field is a character");
        assert_eq!(inside[0].prefixes[0].as_path(), std::path::Path::new("b#2"));
    }

    #[test]
    fn bad_lines_name_the_line_and_never_the_token() {
        let cases = [
            ("s3cret-a\n", 1, "missing"),
            ("# c\ns3cret-a rx team\n", 2, "rw or ro"),
            ("s3cret-a rw ../up\n", 1, "prefix 1"),
            ("s3cret-a rw ok /\n", 1, "prefix 2 names the whole tree"),
            ("s3cret-a rw\n\ns3cret-a ro x\n", 3, "line 1"),
            ("s3cret-\u{e9} rw\n", 1, "printable"),
            ("rw s3cret-a team\n", 1, "rw or ro"),
            ("s3cret-a # rw team-a\n", 1, "rw or ro is missing"),
        ];
        for (text, line, says) in cases {
            let e = parse(text).unwrap_err();
            let shown = e.to_string();
            assert_eq!(e.line, line, "{text:?}: {shown}");
            assert!(shown.contains(says), "{text:?}: {shown}");
            assert!(!shown.contains("s3cret"), "{text:?}: {shown}");
        }
    }
}
