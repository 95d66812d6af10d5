//! `verify`: walks the login chain the way AFFiNE and a browser would, without a browser,
//! and names each broken link with what to change where. Every check it knows prints a
//! line: PASS, FAIL, WARN, or SKIP saying what it would need.
//!
//! issuer discovery → issuer equality → signing keys → AFFiNE's version and registration →
//! AFFiNE's stored setting (with admin credentials) → AFFiNE's authorize URL (endpoint,
//! client id, redirect URI) → authentik's provider (with a token) → the client secret on
//! both ends → AFFiNE 0.27+'s private-address guard → with `--login`, the login itself.

pub mod affine;
pub mod authentik_provider;
pub mod check;
pub mod discovery;
pub mod login;

pub use authentik_provider::AuthentikAccess;
pub use check::{all_passed, Check, Status};

use crate::affine::client::{AffineClient, Credentials};
use crate::error::Result;
use crate::http::HttpOptions;
use crate::secret::Redactor;
use crate::web_url::BaseUrl;

#[derive(Debug, Clone)]
pub struct VerifyInput {
    pub affine_url: BaseUrl,
    pub issuer: String,
    pub client_id: String,
    /// An AFFiNE administrator, for the checks of AFFiNE's stored setting.
    pub affine_credentials: Option<Credentials>,
    /// For the authentik checks; `Err(why)` when they cannot run.
    pub authentik: std::result::Result<AuthentikAccess, String>,
    /// `--login`: the user who logs in; `Err(why)` when no login was asked for.
    pub login: std::result::Result<login::LoginUser, String>,
    pub http: HttpOptions,
}

/// Runs every check in the chain's order. Secret values learnt on the way (AFFiNE's
/// session, both client secrets) go into `redactor` before anything is printed.
pub fn run(input: &VerifyInput, redactor: &mut Redactor) -> Result<Vec<Check>> {
    let http = input.http.client()?;
    let callback = input.affine_url.oauth_callback();
    let mut checks = Vec::new();

    let (discovery_check, discovery) = discovery::check_discovery(&http, &input.issuer);
    checks.push(discovery_check);
    checks.push(discovery::check_issuer(discovery.as_ref(), &input.issuer));
    checks.push(discovery::check_jwks(&http, discovery.as_ref()));

    let mut affine_client = AffineClient::new(input.affine_url.clone(), &input.http)?;
    let (server_checks, server) = affine::check_server(&affine_client, &input.affine_url);
    checks.extend(server_checks);
    let (stored_checks, stored) = affine::check_stored_setting(
        &mut affine_client,
        server.as_ref(),
        input.affine_credentials.as_ref(),
        &input.issuer,
        &input.client_id,
        redactor,
    );
    checks.extend(stored_checks);
    checks.extend(affine::check_preflight(
        &affine_client,
        server.as_ref(),
        discovery.as_ref(),
        &input.client_id,
        &callback,
        stored.as_ref().ok(),
    ));

    let (provider_checks, provider_secret) = authentik_provider::check_provider(
        input.authentik.as_ref().map_err(String::as_str),
        server.as_ref().map(|s| s.version),
        &input.http,
        &input.client_id,
        &callback,
        redactor,
    );
    checks.extend(provider_checks);
    checks.push(authentik_provider::check_client_secret(
        stored.as_ref().map_err(String::as_str),
        provider_secret.as_ref().map_err(String::as_str),
    ));

    checks.push(affine::check_private_issuer(server.as_ref(), &input.issuer));

    checks.extend(login::check_login(
        input.login.as_ref().map_err(String::as_str),
        &input.affine_url,
        &input.http,
        input.authentik.as_ref().ok(),
        redactor,
    ));
    Ok(checks)
}
