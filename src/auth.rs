//! Bearer tokens: an optional read-write token and an optional read-only one.
//!
//! With neither configured the service is open (the seed's behaviour). Tokens are compared in
//! constant time, so response timing does not reveal how much of a guess was right, and they
//! are never logged or echoed.

/// Access a request's credentials grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// May read and write.
    ReadWrite,
    /// May only GET and HEAD.
    ReadOnly,
    /// No or wrong credentials.
    Denied,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    read_write: Option<String>,
    read_only: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("read_write", &self.read_write.as_ref().map(|_| "<set>"))
            .field("read_only", &self.read_only.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Tokens {
    /// Tokens from configuration; empty strings count as unset.
    pub fn new(read_write: Option<String>, read_only: Option<String>) -> Self {
        let keep = |t: Option<String>| t.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Tokens {
            read_write: keep(read_write),
            read_only: keep(read_only),
        }
    }

    /// True when any token is configured.
    pub fn enabled(&self) -> bool {
        self.read_write.is_some() || self.read_only.is_some()
    }

    /// What the `Authorization` header value grants.
    pub fn check(&self, authorization: Option<&str>) -> Access {
        if !self.enabled() {
            return Access::ReadWrite;
        }
        let Some(given) = authorization.and_then(bearer_token) else {
            return Access::Denied;
        };
        if self
            .read_write
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
        {
            return Access::ReadWrite;
        }
        if self
            .read_only
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), given.as_bytes()))
        {
            return Access::ReadOnly;
        }
        Access::Denied
    }
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without stopping at the first difference; only the length leaks. `subtle` keeps
/// the optimiser from turning a hand-written fold into an early exit (it hides the values
/// behind an optimisation barrier), which a plain `==` or fold does not promise.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_table() {
        let open = Tokens::new(None, None);
        assert_eq!(open.check(None), Access::ReadWrite);
        let both = Tokens::new(Some("rw-secret".into()), Some("ro-secret".into()));
        let cases = [
            (None, Access::Denied),
            (Some("Bearer rw-secret"), Access::ReadWrite),
            (Some("bearer  rw-secret "), Access::ReadWrite),
            (Some("Bearer ro-secret"), Access::ReadOnly),
            (Some("Bearer rw-secre"), Access::Denied),
            (Some("Basic rw-secret"), Access::Denied),
            (Some("rw-secret"), Access::Denied),
        ];
        for (header, want) in cases {
            assert_eq!(both.check(header), want, "{header:?}");
        }
        let ro_only = Tokens::new(None, Some("ro".into()));
        assert_eq!(ro_only.check(Some("Bearer ro")), Access::ReadOnly);
        assert!(!format!("{both:?}").contains("secret"));
    }
}
