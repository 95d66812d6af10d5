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
        let mut builder = Client::builder()
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
            let pem = std::fs::read(path).map_err(|e| {
                Error::usage(format!("cannot read ca_path {}: {e}", path.display()))
            })?;
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
