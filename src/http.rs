//! The HTTP client every outside call uses, with Ansible's `validate_certs`, `ca_path` and
//! `timeout` semantics, and one translation of transport errors into sentences a person can
//! act on.
//!
//! Trust is Ansible's `uri`'s: the host's CA store (reqwest's `rustls-tls-native-roots`:
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the bundle where the distribution keeps
//! it: `/etc/ssl/certs/ca-certificates.crt` on Debian/Ubuntu,
//! `/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem` on the RHEL family, `/etc/ssl/cert.pem`
//! on Alpine), plus the webpki roots compiled in (Mozilla's list, for a host with no store at
//! all), plus `ca_path`. `validate_certs: false` is the only way to trust anything.

use std::error::Error as _;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::Client;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub validate_certs: bool,
    /// A PEM file with CA certificates to trust besides the system's (a private CA).
    pub ca_path: Option<PathBuf>,
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            validate_certs: true,
            ca_path: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl HttpOptions {
    pub fn client(&self) -> Result<Client> {
        // The blocking client's own timeout bounds the wait for the headers and then each
        // read of the body, so a server that drips its answer a byte at a time would never
        // hit it. The async client underneath takes `timeout` as one deadline from the
        // request's start to the body's end: set there too, it ends such a drip.
        let inner = reqwest::Client::builder().timeout(self.timeout);
        let mut builder = reqwest::blocking::ClientBuilder::from(inner)
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .user_agent(concat!("affine-authentik/", env!("CARGO_PKG_VERSION")))
            // Redirects on an API usually mean a wrong base URL (http→https, a login page);
            // following them would hide that and could resend a body elsewhere.
            .redirect(reqwest::redirect::Policy::none());
        if !self.validate_certs {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &self.ca_path {
            let pem = crate::input_file::read_capped(
                path,
                "ca_path (--ca-path)",
                crate::input_file::CA_BUNDLE_LIMIT,
            )?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::usage(format!(
                    "ca_path {} holds no PEM certificate: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::usage(format!(
                    "ca_path {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
            .build()
            .map_err(|e| Error::failed(format!("cannot set up the HTTP client: {e}")))
    }
}

/// A transport failure as a sentence: what happened and what to try. `what` names the
/// server ("AFFiNE at https://…").
pub fn describe_transport_error(what: &str, err: &reqwest::Error) -> Error {
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = err.source();
    while let Some(s) = source {
        chain.push_str(&s.to_string().to_lowercase());
        chain.push(' ');
        source = s.source();
    }
    let msg = if err.is_timeout() || chain.contains("timed out") {
        format!("{what} did not answer in time (timeout); raise `timeout` or check that the server is up")
    } else if chain.contains("certificate")
        || chain.contains("tls")
        || chain.contains("handshake")
        // rustls' words for an https request answered in plain http
        || chain.contains("corrupt message")
        || chain.contains("invalidcontenttype")
    {
        let problem = certificate_problem(&chain)
            .map(|p| format!("{p}; "))
            .unwrap_or_default();
        format!(
            "TLS with {what} failed ({problem}{}); add its CA to this host's CA store or name it with `ca_path` (--ca-path), or, for a test server only, set validate_certs: false (--insecure)",
            first_line(&chain)
        )
    } else if chain.contains("dns error")
        || chain.contains("failed to lookup")
        || chain.contains("name or service not known")
    {
        format!("cannot resolve the host of {what} (DNS); check the URL")
    } else if chain.contains("connection refused") {
        format!("{what} refused the connection; is the server running and the URL's port right?")
    } else if chain.contains("connection reset")
        || chain.contains("connection closed")
        || chain.contains("incomplete message")
        || chain.contains("unexpected eof")
    {
        format!("{what} closed the connection without an answer; check the server's logs or a proxy in between")
    } else if err.is_connect() {
        format!("cannot connect to {what}: {}", first_line(&chain))
    } else {
        format!("request to {what} failed: {}", first_line(&chain))
    };
    Error::failed(msg)
}

/// rustls names a refused certificate by its `CertificateError` variant (`UnknownIssuer`):
/// the same in words. `chain` is lowercase.
fn certificate_problem(chain: &str) -> Option<&'static str> {
    let squashed: String = chain.chars().filter(|c| !c.is_whitespace()).collect();
    [
        (
            "unknownissuer",
            "unknown issuer: no CA this host trusts signed the server's certificate",
        ),
        (
            "notvalidforname",
            "the server's certificate is not valid for the URL's host name",
        ),
        ("expired", "the server's certificate has expired"),
        ("notvalidyet", "the server's certificate is not valid yet"),
        ("revoked", "the server's certificate is revoked"),
        (
            "badsignature",
            "the server's certificate has a bad signature",
        ),
    ]
    .into_iter()
    .find(|(key, _)| squashed.contains(key))
    .map(|(_, words)| words)
}

fn first_line(s: &str) -> &str {
    s.trim().lines().next().unwrap_or("")
}

/// The most any answer may hold. AFFiNE's and authentik's largest answers (a blueprint
/// instance, a discovery document, a GraphQL config) are tens of kB; a server or a proxy
/// streaming without end must not grow this process without bound.
pub const MAX_BODY_BYTES: u64 = 4 << 20;

/// Timeouts are capped here: `Instant + Duration` would overflow (a panic) for a huge value,
/// and no server that takes longer than an hour to answer is up.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// `secs` as a request timeout, or a usage error naming `what` (the flag or parameter):
/// at least one second, at most [`MAX_TIMEOUT_SECS`].
pub fn timeout_from_secs(what: &str, secs: u64) -> Result<Duration> {
    match secs {
        0 => Err(Error::usage(format!(
            "{what} must be at least 1 second (0 would fail every request at once)"
        ))),
        s if s > MAX_TIMEOUT_SECS => Err(Error::usage(format!(
            "{what} {s} is more than {MAX_TIMEOUT_SECS} seconds (one hour); give a smaller number"
        ))),
        s => Ok(Duration::from_secs(s)),
    }
}

/// The body of `response` as text, at most `limit` bytes: a larger one is refused (by its
/// announced length before reading, or once `limit` bytes have arrived) with a message that
/// names `what` (the server) and the limit. Invalid UTF-8 is replaced, as `.text()` does.
pub fn read_body_capped(
    response: reqwest::blocking::Response,
    what: &str,
    limit: u64,
) -> Result<String> {
    use std::io::Read;
    let too_large = || {
        Error::failed(format!(
            "{what} sent an answer larger than {} MiB, which no API call here expects; \
             is the URL the server's own, not a proxy's or a download?",
            limit >> 20
        ))
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    response
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            // A read error wraps reqwest's own error; its words decide the sentence.
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<reqwest::Error>())
            {
                // The deadline (see `HttpOptions::client`) ran out while the body arrived.
                Some(re) if re.is_timeout() => Error::failed(format!(
                    "{what} sent its answer too slowly: not complete when the timeout ran out \
                     (timeout); raise `timeout` (--timeout), or check the server and any proxy \
                     in between"
                )),
                Some(re) => describe_transport_error(what, re),
                None => Error::failed(format!("reading the answer of {what} failed: {e}")),
            }
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
