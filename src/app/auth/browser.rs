//! Browsers carry what a script on another site can borrow: the user's network position (an
//! operator's `kubectl port-forward` on localhost, a pod network) and cached credentials. So a
//! request that a browser marks as coming from another site may not change anything, and a
//! request naming a host this service is not may not be answered at all (DNS rebinding: a page
//! at `attacker.example` whose name now resolves to 127.0.0.1 reads with the user's access).
//!
//! Both checks look only at what browsers send and scripts cannot forge from a page: `Origin`
//! (on every cross-origin POST, PUT and DELETE, `null` from sandboxes and some redirects),
//! `Sec-Fetch-Site` (only to localhost and HTTPS, so never relied on alone) and `Host` (the name
//! the page used). curl and scripts send no `Origin` and no `Sec-Fetch-*`, so with no
//! `--allowed-hosts` they are unaffected, whatever name they call the service by.
//!
//! The host judged is the one the request names: the authority of a target in absolute form
//! (`GET http://host/...`), which RFC 9112 §3.2.2 puts before `Host`, else `Host`. Every check
//! fails closed on what it cannot read: a `Host` that is not ASCII names no host served, a
//! bracketed IPv6 literal must be all there is (`[::1]` or `[::1]:3000`, never
//! `[::1].attacker.example`), and an `Origin` or `Sec-Fetch-Site` that is not UTF-8 counts as
//! another site's.
//!
//! The probes (`/healthz`, `/readyz`, `/metrics`, the seed's `GET /file`) are exempt from the
//! host check: they reveal no file, and a monitor calling them by some other name must never
//! make the pod look unhealthy. (Kubelet probes name the pod IP anyway.)

use crate::http::{Head, Response, ResponseBody};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The answer to a request whose `Host` this service does not serve.
pub const HOST_REFUSED: &str = "this host name is not served (a guard against DNS rebinding): call the service \
     by its IP address, by localhost, or by a name listed in --allowed-hosts (HTTP_NAS_ALLOWED_HOSTS)";
/// The answer to a write a browser marks as coming from another site.
pub const CROSS_SITE_REFUSED: &str = "a browser request from another site may not write, move or delete \
     (its Origin or Sec-Fetch-Site is not this service's): use the page of this service, curl or a script";

/// The host names `--allowed-hosts` lists, and whether it was given at all.
#[derive(Clone, Debug, Default)]
pub struct BrowserRules {
    /// `None`: not configured, only requests with browser markers are held to the host check.
    allowed_hosts: Option<Vec<String>>,
}

impl BrowserRules {
    /// Rules for `allowed_hosts` (names as configured; ports and letter case are ignored).
    pub fn new(allowed_hosts: Option<Vec<String>>) -> Self {
        let normal = |names: Vec<String>| names.iter().filter_map(|n| host_name(n)).collect();
        BrowserRules {
            allowed_hosts: allowed_hosts.map(normal),
        }
    }

    /// True when `--allowed-hosts` was given: every request's Host is checked.
    pub fn hosts_configured(&self) -> bool {
        self.allowed_hosts.is_some()
    }

    /// Why a request is refused, if it is: a host not served (unless `probe`), or a write
    /// (`writes`) from another site.
    pub fn check(&self, head: &Head, writes: bool, probe: bool) -> Result<(), &'static str> {
        let check_host = !probe && (self.allowed_hosts.is_some() || from_browser(head));
        // A request without Host is HTTP/1.0 from a tool: browsers always send it.
        if check_host && let Some(host) = named_host(head) {
            let served = host.and_then(host_name).is_some_and(|name| {
                is_ip_or_localhost(&name) || self.allowed_hosts.as_ref().is_some_and(|list| list.contains(&name))
            });
            if !served {
                return Err(HOST_REFUSED);
            }
        }
        if writes && from_another_site(head) {
            return Err(CROSS_SITE_REFUSED);
        }
        Ok(())
    }
}

/// The host the request names, if it names one: the authority of an absolute-form target
/// (without user info), else `Host`; `Some(None)` when that is not ASCII (no host at all can
/// be read from it, so none is served).
fn named_host(head: &Head) -> Option<Option<&str>> {
    if let Some(authority) = head.target_authority() {
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        return Some(Some(host));
    }
    let value = head.values("host").next()?;
    Some(std::str::from_utf8(value).ok().filter(|v| v.is_ascii()).map(str::trim))
}

/// True when a browser sent the request: only browsers send `Origin` or `Sec-Fetch-*`.
fn from_browser(head: &Head) -> bool {
    head.headers
        .iter()
        .any(|h| h.name == "origin" || h.name.starts_with("sec-fetch-"))
}

/// True when the browser says the request comes from another origin: an `Origin` other than
/// `http://HOST` or `https://HOST` (an ingress may end TLS before us; the same host name over
/// another scheme is the same party), `Origin: null`, or `Sec-Fetch-Site` naming another site.
/// A value present but not UTF-8 counts as another site's: a check must not pass on what it
/// cannot read.
fn from_another_site(head: &Head) -> bool {
    let unreadable = |name| head.values(name).next().is_some() && head.header(name).is_none();
    if unreadable("sec-fetch-site") || unreadable("origin") {
        return true;
    }
    if matches!(head.header("sec-fetch-site"), Some(s) if s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site"))
    {
        return true;
    }
    let Some(origin) = head.header("origin") else {
        return false;
    };
    let origin = origin.to_ascii_lowercase();
    let Some(host) = named_host(head).flatten().map(str::to_ascii_lowercase) else {
        return true;
    };
    let own = |scheme: &str, default_port: &str| {
        let Some(rest) = origin.strip_prefix(scheme) else {
            return false;
        };
        let host = host.strip_suffix(default_port).unwrap_or(&host);
        let rest = rest.strip_suffix(default_port).unwrap_or(rest);
        rest == host
    };
    !(own("http://", ":80") || own("https://", ":443"))
}

/// The name a `Host` value (or a configured name) gives: lower case, without a port, without
/// a trailing dot; an IPv6 literal keeps its brackets, and must be all there is besides a port
/// (`[::1]`, `[::1]:3000`). `None` when it is no host at all.
pub fn host_name(value: &str) -> Option<String> {
    let value = value.trim().to_ascii_lowercase();
    let name = if value.starts_with('[') {
        let end = value.find(']')?;
        let port = &value[end + 1..];
        let port_only = port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if !port_only || value[1..end].parse::<Ipv6Addr>().is_err() {
            return None;
        }
        value[..=end].to_string()
    } else {
        let name = match value.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => value.as_str(),
        };
        name.strip_suffix('.').unwrap_or(name).to_string()
    };
    let usable = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    usable.then_some(name)
}

/// True for an IP literal (`10.0.0.7`, `[::1]`) or `localhost`: names no rebinding can take.
fn is_ip_or_localhost(name: &str) -> bool {
    if name == "localhost" || name.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .is_some_and(|n| n.parse::<Ipv6Addr>().is_ok())
}

/// The 401 a browser gets: a Basic challenge, so it shows its login prompt (any user name, the
/// token as the password), and a short page for when the user cancels it.
pub fn login_required() -> Response {
    const PAGE: &str = "<!doctype html>\n<meta charset=\"utf-8\">\n<title>http-nas: sign in</title>\n\
        <h1>http-nas needs a token</h1>\n<p>Sign in with any user name and your token as the password, \
        or reload the page to see the prompt again.</p>\n";
    Response::new(401, ResponseBody::Bytes(PAGE.as_bytes().to_vec()))
        .with_header("Content-Type", "text/html; charset=utf-8")
        .with_header("WWW-Authenticate", "Basic realm=\"http-nas\", charset=\"UTF-8\"")
        .with_header("Content-Security-Policy", "default-src 'none'")
        .with_header("X-Content-Type-Options", "nosniff")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::Header;

    fn head(method: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: method.into(),
            target: "/file/x".into(),
            minor_version: 1,
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("Nas.Example:3000").as_deref(), Some("nas.example"));
        assert_eq!(host_name("nas.example.").as_deref(), Some("nas.example"));
        assert_eq!(host_name("[::1]:3000").as_deref(), Some("[::1]"));
        assert_eq!(host_name("a b"), None);
        assert_eq!(host_name("[::1]").as_deref(), Some("[::1]"));
        for bad in [
            "[::1].attacker.example",
            "[::1]x",
            "[::1]:80x",
            "[::1]:80:81",
            "[nas.example]",
            "[::1",
        ] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
        assert!(is_ip_or_localhost("127.0.0.1") && is_ip_or_localhost("[::1]") && is_ip_or_localhost("localhost"));
        assert!(!is_ip_or_localhost("localhost.attacker.test") && !is_ip_or_localhost("127.0.0.1.nip.io"));
    }

    #[test]
    fn cross_site_table() {
        let h = "127.0.0.1:3000";
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("host", h)], false),
            (&[("host", h), ("origin", "http://127.0.0.1:3000")], false),
            (&[("host", h), ("origin", "HTTP://127.0.0.1:3000")], false),
            (&[("host", "nas.example"), ("origin", "https://nas.example")], false),
            (&[("host", "nas.example:80"), ("origin", "http://nas.example")], false),
            (&[("host", h), ("origin", "http://127.0.0.1:3001")], true),
            (&[("host", h), ("origin", "null")], true),
            (&[("host", h), ("origin", "http://127.0.0.1:3000.evil")], true),
            (&[("host", h), ("sec-fetch-site", "cross-site")], true),
            (&[("host", h), ("sec-fetch-site", "same-site")], true),
            (&[("host", h), ("sec-fetch-site", "same-origin")], false),
            (&[("host", h), ("sec-fetch-site", "none")], false),
            (&[("origin", "http://127.0.0.1:3000")], true),
        ];
        for (headers, foreign) in cases {
            assert_eq!(from_another_site(&head("POST", headers)), *foreign, "{headers:?}");
        }
        let raw = |name: &str, value: &[u8]| {
            let mut h = head("POST", &[("host", h)]);
            h.headers.push(Header {
                name: name.into(),
                value: value.to_vec(),
            });
            h
        };
        assert!(
            from_another_site(&raw("origin", b"http://127.0.0.1:3000\xff")),
            "unreadable Origin"
        );
        assert!(
            from_another_site(&raw("sec-fetch-site", b"same-origin\xff")),
            "unreadable Sec-Fetch-Site"
        );
    }

    #[test]
    fn hosts_checked_for_browsers_or_when_configured() {
        let open = BrowserRules::new(None);
        let listed = BrowserRules::new(Some(vec!["nas".into(), "nas.team.svc:3000".into()]));
        let curl = head("GET", &[("host", "nas.team.svc.cluster.local:3000")]);
        let browser = head(
            "GET",
            &[("host", "rebind.attacker.test:3000"), ("sec-fetch-mode", "navigate")],
        );
        assert_eq!(open.check(&curl, false, false), Ok(()));
        assert_eq!(open.check(&browser, false, false), Err(HOST_REFUSED));
        assert_eq!(open.check(&browser, false, true), Ok(()), "probes are exempt");
        assert_eq!(listed.check(&curl, false, false), Err(HOST_REFUSED));
        let named = head("GET", &[("host", "NAS.team.svc:80")]);
        assert_eq!(listed.check(&named, false, false), Ok(()));
        assert_eq!(
            listed.check(&head("GET", &[("host", "[::1]:3000")]), false, false),
            Ok(())
        );
        assert_eq!(
            listed.check(&head("GET", &[]), false, false),
            Ok(()),
            "no Host: HTTP/1.0 tool"
        );
        let mut absolute = head("GET", &[("host", "127.0.0.1")]);
        absolute.target = "http://u:p@attacker.example/file/x".into();
        assert_eq!(
            listed.check(&absolute, false, false),
            Err(HOST_REFUSED),
            "the target's host wins"
        );
        absolute.target = "http://nas:3000/file/x".into();
        let mut foreign_host = absolute.clone();
        foreign_host.headers[0].value = b"attacker.example".to_vec();
        assert_eq!(
            listed.check(&foreign_host, false, false),
            Ok(()),
            "Host is ignored then"
        );
        let mut not_ascii = head("GET", &[]);
        not_ascii.headers.push(Header {
            name: "host".into(),
            value: b"nas\xff".to_vec(),
        });
        assert_eq!(listed.check(&not_ascii, false, false), Err(HOST_REFUSED));
    }
}
