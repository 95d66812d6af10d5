//! Base URLs the user gives us (AFFiNE, authentik, an issuer) and the URLs derived from them.
//!
//! One rule for all: http or https, no query, no fragment, no user:password (that would put
//! a secret on a command line), and the path kept without its trailing slash so that
//! `https://a.example/` and `https://a.example` mean the same server.

use std::fmt;

use reqwest::Url;

/// DNS's limit for a host name.
pub const MAX_HOST_LEN: usize = 253;

/// DNS's limit for one label (the text between dots) of a host name.
pub const MAX_LABEL_LEN: usize = 63;

/// Far above any real base URL; a pasted megabyte is refused before it is quoted anywhere.
pub const MAX_URL_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// scheme://host[:port][/sub/path] — no trailing slash, default port dropped,
    /// host lower-cased (by the URL parser).
    normalized: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl BaseUrl {
    /// `what` names the input in the message ("--affine-url", "affine_url").
    pub fn parse(what: &str, input: &str) -> Result<Self, UrlError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(UrlError(format!(
                "{what} is empty; give a URL such as https://affine.example.com"
            )));
        }
        // The URL parser drops tabs and newlines silently and a NUL cuts the value short
        // further on: none belongs in a URL.
        if let Some(at) = trimmed.find(char::is_control) {
            return Err(UrlError(format!(
                "{what} holds a control character at byte {at}; give the URL without it"
            )));
        }
        if trimmed.len() > MAX_URL_LEN {
            return Err(UrlError(format!(
                "{what} is {} bytes long, more than the {MAX_URL_LEN} a base URL may be; check what was given",
                trimmed.len()
            )));
        }
        // Every message below quotes the input: without a user:password part, never with.
        let shown = without_userinfo(trimmed);
        let url = Url::parse(trimmed).map_err(|e| {
            UrlError(format!(
                "{what} {shown:?} is not a URL ({e}); give one such as https://affine.example.com"
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError(format!(
                "{what} must not carry a user name or password; credentials go in their own options"
            )));
        }
        // `https://bob:12/x@affine.example.com` parses as host `bob`, port 12 and a path
        // holding the rest: a password with `/` in it, accepted and then printed in every
        // redirect URI. No AFFiNE or authentik base URL has an `@` outside a user:password
        // part (refused above), so any `@` left in the text is one; the text, not the parsed
        // path, because `..` segments can remove the `@` and keep the password (found by
        // the url_rules fuzz target).
        if trimmed.contains('@') {
            return Err(UrlError(format!(
                "{what} {shown:?} has an '@' after its host, which looks like a user:password part \
                 whose password holds '/'; a base URL has neither, and credentials go in their own options"
            )));
        }
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(UrlError(format!(
                "{what} {shown:?} must start with http:// or https://, not {}:",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError(format!("{what} {shown:?} has no host")));
        }
        if url.host_str().is_some_and(|h| h.len() > MAX_HOST_LEN) {
            return Err(UrlError(format!(
                "{what} has a host name longer than {MAX_HOST_LEN} characters, which DNS does not allow"
            )));
        }
        if let Some(host) = url.domain() {
            if host.split('.').any(|label| label.len() > MAX_LABEL_LEN) {
                return Err(UrlError(format!(
                    "{what} has a part of its host name longer than {MAX_LABEL_LEN} characters, which DNS does not allow"
                )));
            }
        }
        if url.port() == Some(0) {
            return Err(UrlError(format!(
                "{what} {shown:?} has port 0, which no server listens on; give the real port or none"
            )));
        }
        if url.query().is_some() {
            return Err(UrlError(format!(
                "{what} {shown:?} must not have a query (?...)"
            )));
        }
        if url.fragment().is_some() {
            return Err(UrlError(format!(
                "{what} {shown:?} must not have a fragment (#...)"
            )));
        }
        let mut normalized = url.as_str().to_string();
        while normalized.ends_with('/') {
            normalized.pop();
        }
        // Percent-encoding can triple a text under the cap (found by the url_rules fuzz
        // target); the cap is on what is sent.
        if normalized.len() > MAX_URL_LEN {
            return Err(UrlError(format!(
                "{what} is {} bytes long once percent-encoded, more than the {MAX_URL_LEN} a base URL may be; check what was given",
                normalized.len()
            )));
        }
        Ok(BaseUrl { normalized })
    }

    /// Without trailing slash: the form used for joining and for client id derivation.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// `self` + "/" + `path` (path given without a leading slash).
    pub fn join(&self, path: &str) -> String {
        format!("{}/{}", self.normalized, path.trim_start_matches('/'))
    }

    /// AFFiNE's OAuth redirect target: `<affine>/oauth/callback`.
    pub fn oauth_callback(&self) -> String {
        self.join("oauth/callback")
    }

    /// The issuer authentik announces for an application in per-provider mode:
    /// `<authentik>/application/o/<slug>/`, trailing slash included, exactly as authentik
    /// writes it in its discovery document.
    pub fn authentik_issuer(&self, slug: &str) -> String {
        format!("{}/application/o/{slug}/", self.normalized)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

/// `scheme://user:pw@host/...` → `scheme://***@host/...`, for quoting an input that may
/// not even parse (a bad port, say) without repeating a credential in it. Every message
/// that quotes a URL the user gave goes through it.
pub fn without_userinfo(input: &str) -> String {
    // The scheme only when it looks like one: `ab:pw://x@host` has no scheme but a
    // password holding `://`.
    let scheme_len = input
        .split_once("://")
        .filter(|(scheme, _)| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        })
        .map_or(0, |(scheme, _)| scheme.len() + 3);
    // The last `@` anywhere, not only in what a parser would take for the authority: a
    // password holding `#`, `/` or `?` ends the authority early in a parser's eyes
    // (`https://bob:Pw#x@host`). Masking a path's `@` too is the safe mistake.
    match input[scheme_len..].rfind('@') {
        Some(at) => format!("{}***{}", &input[..scheme_len], &input[scheme_len + at..]),
        None => input.to_string(),
    }
}

/// AFFiNE compares issuers ignoring trailing slashes (0.26+); so do we, everywhere.
pub fn same_issuer(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The discovery URL exactly as AFFiNE builds it: plain concatenation, so an issuer with a
/// trailing slash yields `//.well-known` (authentik's router cleans that; others may not).
pub fn discovery_url_as_affine_builds_it(issuer: &str) -> String {
    format!("{issuer}/.well-known/openid-configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_slashes_and_default_ports_are_normalized() {
        let a = BaseUrl::parse("u", "https://Affine.Example.com:443/").unwrap();
        assert_eq!(a.as_str(), "https://affine.example.com");
        let b = BaseUrl::parse("u", "http://affine.example.com:8080/sub/path//").unwrap();
        assert_eq!(b.as_str(), "http://affine.example.com:8080/sub/path");
        assert_eq!(
            b.oauth_callback(),
            "http://affine.example.com:8080/sub/path/oauth/callback"
        );
    }

    #[test]
    fn authentik_issuer_keeps_authentiks_trailing_slash() {
        let a = BaseUrl::parse("u", "https://auth.example.com/").unwrap();
        assert_eq!(
            a.authentik_issuer("affine"),
            "https://auth.example.com/application/o/affine/"
        );
    }

    #[test]
    fn rejects_what_is_not_a_plain_http_base_url() {
        for bad in [
            "",
            "affine.example.com",
            "ftp://affine.example.com",
            "https://affine.example.com/?x=1",
            "https://affine.example.com/#top",
            "https://",
            "https://user:pw@affine.example.com",
        ] {
            assert!(
                BaseUrl::parse("--affine-url", bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn credential_urls_are_not_echoed_whatever_else_is_wrong() {
        for bad in [
            "https://u:topsecret@h.example",
            "https://admin:topsecret@affine.example.com/?x=1",
            "https://admin:topsecret@affine.example.com/#f",
            "ftp://admin:topsecret@affine.example.com",
            "https://admin:topsecret@affine.example.com:99999/",
            "https://bob:top#secret@affine.example.com",
            "https://bob:top/secret@affine.example.com",
            "https://bob:top?secret@affine.example.com",
            "bob:topsecret@affine.example.com",
            "bob:top://secret@affine.example.com",
        ] {
            let e = BaseUrl::parse("--affine-url", bad).unwrap_err();
            assert!(!e.0.contains("topsecret"), "{bad}: {}", e.0);
        }
    }

    #[test]
    fn control_characters_port_0_and_overlong_hosts_are_refused_without_echo() {
        for bad in [
            "https://affine.example.com\0/x",
            "https://affine.exa\tmple.com",
            "https://affine.example.com/a\nb",
            "https://affine.example.com:0",
        ] {
            assert!(BaseUrl::parse("u", bad).is_err(), "{bad:?}");
        }
        let long = format!("https://{}.example.com", "a".repeat(300));
        let e = BaseUrl::parse("u", &long).unwrap_err();
        assert!(e.0.contains("253") && !e.0.contains("aaaa"), "{}", e.0);
        let huge = format!("https://{}", "a".repeat(1 << 20));
        let e = BaseUrl::parse("u", &huge).unwrap_err();
        assert!(e.0.len() < 200, "{}", e.0);
    }

    /// Found by the url_rules fuzz target: a password holding `/` made the rest a path,
    /// and the URL, password included, was accepted.
    #[test]
    fn a_password_holding_a_slash_is_refused_and_not_shown() {
        for bad in [
            "https://bob:12/x@affine.example.com",
            "https://bob:12?x@affine.example.com/",
        ] {
            let e = BaseUrl::parse("--affine-url", bad).unwrap_err();
            assert!(!e.0.contains("12/x") && !e.0.contains("12?x"), "{}", e.0);
        }
        // An escaped `@` is a character of the path, not a separator.
        assert!(BaseUrl::parse("u", "https://affine.example.com/team%40x").is_ok());
    }

    #[test]
    fn issuers_compare_without_trailing_slashes() {
        assert!(same_issuer(
            "https://a/application/o/x/",
            "https://a/application/o/x"
        ));
        assert!(!same_issuer(
            "https://a/application/o/x/",
            "https://a/application/o/y/"
        ));
        assert_eq!(
            discovery_url_as_affine_builds_it("https://a/application/o/x/"),
            "https://a/application/o/x//.well-known/openid-configuration"
        );
    }
}
