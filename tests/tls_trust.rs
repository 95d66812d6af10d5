//! Which CAs the built binary trusts, over real TLS on loopback: an "AFFiNE" served by a rustls
//! server whose certificate comes from a CA made for this test run (rcgen). The binary trusts
//! the host's CA store (as `ansible.builtin.uri` and curl do, `SSL_CERT_FILE` / `SSL_CERT_DIR`
//! pointing it elsewhere) plus a `ca_path` bundle; `validate_certs: false` (`--insecure`) is the
//! only way to trust anything.
//!
//! The verb is `apply`: its first request is AFFiNE's version query. The stand-in answers
//! 0.20.0, for which apply stops at once naming `OAUTH_OIDC_*` (no admin API): that message
//! can only come after a TLS handshake the client accepted and an HTTP answer it read.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::process::{command, Captured};

const SESSION_TOKEN: &str = "session-token-tls-SECRET-7731";
const CLIENT_SECRET: &str = "client-secret-tls-SECRET-5520";

/// A CA (its PEM) and a leaf certificate for 127.0.0.1 and localhost signed by it.
struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert, key)
}

fn make_pki(ca_name: &str) -> Pki {
    let (ca, ca_key) = make_ca(ca_name);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(DnType::CommonName, "affine.test");
    let leaf = params.signed_by(&leaf_key, &ca, &ca_key).expect("leaf");
    Pki {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

/// An HTTPS server on loopback answering every request with AFFiNE 0.20.0's version. Counts
/// the requests it read, i.e. those whose TLS handshake the client accepted.
struct HttpsAffine {
    port: u16,
    served: Arc<AtomicUsize>,
}

impl HttpsAffine {
    fn start(pki: &Pki) -> HttpsAffine {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(pki.leaf_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf_key_der.clone())),
            )
            .expect("server certificate");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).expect("TLS session");
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    // A refused handshake ends here with an error: nothing was served.
                    if answer_version(&mut tls).is_ok() {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        HttpsAffine { port, served }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP request (headers, then `Content-Length` bytes) and answers it.
fn answer_version(tls: &mut impl ReadWrite) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *tls);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let answer = r#"{"data":{"serverConfig":{"version":"0.20.0"}}}"#;
    write!(
        tls,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    tls.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// `apply` against `server` with `extra` flags and `env` added.
fn apply(server: &HttpsAffine, extra: &[&str], env: &[(&str, &Path)]) -> Captured {
    let url = server.url();
    let mut cmd = command(&[
        "apply",
        "--affine-url",
        &url,
        "--issuer",
        "https://auth.example.com/application/o/affine/",
        "--client-id",
        "tls-test-client",
        "--timeout",
        "10",
    ]);
    cmd.args(extra)
        .env("AFFINE_SESSION_TOKEN", SESSION_TOKEN)
        .env("AFFINE_OIDC_CLIENT_SECRET", CLIENT_SECRET);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = Captured::of(&mut cmd);
    run.assert_no_secrets(&[SESSION_TOKEN, CLIENT_SECRET]);
    run
}

#[track_caller]
fn assert_accepted(run: &Captured, server: &HttpsAffine) {
    let text = run.text();
    assert!(
        text.contains("OAUTH_OIDC_"),
        "the TLS handshake was accepted and AFFiNE's answer read: {text}"
    );
    assert!(!text.contains("TLS with"), "{text}");
    assert_eq!(server.served(), 1, "{text}");
}

#[track_caller]
fn assert_refused_unknown_issuer(run: &Captured, server: &HttpsAffine) {
    assert_eq!(run.code, Some(1), "{}", run.text());
    let err = run.stderr.to_lowercase();
    assert!(err.contains("tls with affine"), "{}", run.stderr);
    // The certificate problem itself (rustls: "invalid peer certificate: UnknownIssuer").
    assert!(err.contains("unknown issuer"), "{}", run.stderr);
    // And how to fix it.
    assert!(run.stderr.contains("ca_path"), "{}", run.stderr);
    assert!(run.stderr.contains("CA store"), "{}", run.stderr);
    assert_eq!(
        server.served(),
        0,
        "nothing may be sent over a refused TLS session"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn a_private_ca_is_refused_without_trust_naming_the_unknown_issuer() {
    let pki = make_pki("affine-authentik test CA (untrusted)");
    let server = HttpsAffine::start(&pki);
    // The host's own store as it is: it does not hold a CA made a moment ago.
    let run = apply(&server, &[], &[]);
    assert_refused_unknown_issuer(&run, &server);
}

#[test]
fn ca_path_adds_a_private_ca() {
    let pki = make_pki("affine-authentik test CA (ca_path)");
    let server = HttpsAffine::start(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let run = apply(&server, &["--ca-path", ca.to_str().unwrap()], &[]);
    assert_accepted(&run, &server);
}

#[test]
fn the_host_store_is_trusted_ssl_cert_file() {
    let pki = make_pki("affine-authentik test CA (SSL_CERT_FILE)");
    let server = HttpsAffine::start(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    // A store as the distributions lay it out: one bundle of many CAs, ours among them.
    let (other, _) = make_ca("another CA in the bundle");
    let bundle = write(
        dir.path(),
        "ca-certificates.crt",
        &format!("{}{}", other.pem(), pki.ca_pem),
    );
    let run = apply(&server, &[], &[("SSL_CERT_FILE", &bundle)]);
    assert_accepted(&run, &server);
}

#[test]
fn the_host_store_is_trusted_ssl_cert_dir() {
    let pki = make_pki("affine-authentik test CA (SSL_CERT_DIR)");
    let server = HttpsAffine::start(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "site-ca.pem", &pki.ca_pem);
    let run = apply(&server, &[], &[("SSL_CERT_DIR", dir.path())]);
    assert_accepted(&run, &server);
}

#[test]
fn a_store_or_ca_path_with_another_ca_is_refused() {
    let pki = make_pki("affine-authentik test CA (the server's)");
    let server = HttpsAffine::start(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    let (wrong, _) = make_ca("affine-authentik test CA (a wrong one)");
    let wrong = write(dir.path(), "wrong.pem", &wrong.pem());
    let run = apply(&server, &[], &[("SSL_CERT_FILE", &wrong)]);
    assert_refused_unknown_issuer(&run, &server);
    let run = apply(&server, &["--ca-path", wrong.to_str().unwrap()], &[]);
    assert_refused_unknown_issuer(&run, &server);
}

#[test]
fn insecure_is_the_only_way_off() {
    let pki = make_pki("affine-authentik test CA (insecure)");
    let server = HttpsAffine::start(&pki);
    let run = apply(&server, &["--insecure"], &[]);
    assert_accepted(&run, &server);
}
