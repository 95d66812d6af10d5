//! AFFiNE's side of the chain: its version, whether it registered OIDC, the setting it
//! stores (read as an administrator when credentials are in the environment), the
//! authorize URL it would send a browser to, and its private-address guard.

use std::net::{IpAddr, ToSocketAddrs};

use reqwest::Url;
use serde_json::Value;

use crate::affine::client::{
    AffineClient, Credentials, ServerState, ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV, SESSION_TOKEN_ENV,
};
use crate::affine::oidc_value::OidcValue;
use crate::affine::version::{AffineVersion, OIDC_ENVIRONMENT_VARIABLES};
use crate::secret::Redactor;
use crate::verify::check::Check;
use crate::verify::login;
use crate::web_url::{same_issuer, BaseUrl};

/// The checks of AFFiNE's authorize URL, in order, for skipping them together.
const PREFLIGHT_CHECKS: [&str; 4] = [
    "preflight",
    "authorize-endpoint",
    "client-id",
    "redirect-uri",
];

/// The checks of AFFiNE's stored setting, in order.
const STORED_SETTING_CHECKS: [&str; 2] = ["affine-issuer", "affine-client-id"];

/// What a user does about OIDC on an AFFiNE older than the admin API.
fn legacy_fix(version: AffineVersion) -> String {
    format!(
        "AFFiNE {version} takes OIDC from its environment only: set {OIDC_ENVIRONMENT_VARIABLES} and restart it \
         (or upgrade to 0.21 or newer, where affine_oidc sets it)"
    )
}

/// `affine-version` and `affine-registered`, from AFFiNE's public server config. Returns
/// that config for the links after these.
pub fn check_server(
    affine: &AffineClient,
    affine_url: &BaseUrl,
) -> (Vec<Check>, Option<ServerState>) {
    let state = match affine.server_state() {
        Ok(state) => state,
        Err(e) => {
            return (
                vec![
                    Check::fail(
                        "affine-version",
                        e.to_string(),
                        "check --affine-url and that AFFiNE is running",
                    ),
                    Check::skip("affine-registered", "AFFiNE did not answer"),
                ],
                None,
            )
        }
    };
    let version = state.version;
    let version_check = match version.newer_than_known() {
        Some(warning) => Check::warn(
            "affine-version",
            warning,
            "the newest known rules apply; if a check below misjudges this AFFiNE, update affine-authentik",
        ),
        None if !version.has_admin_config_api() => Check::warn(
            "affine-version",
            format!("AFFiNE {version} has no admin API for OAuth settings (0.21 and newer have)"),
            "upgrade AFFiNE to 0.21 or newer: then affine_oidc sets its OIDC provider and verify reads it back",
        ),
        None => Check::pass("affine-version", format!("AFFiNE {version}, a version this tool knows")),
    };
    let registered_check = if state.oidc_registered() {
        Check::pass(
            "affine-registered",
            format!("AFFiNE {version} offers OIDC login"),
        )
    } else if state.oauth_providers.is_none() {
        Check::fail(
            "affine-registered",
            format!("AFFiNE {version} at {affine_url} has no OAuth login at all (its OAuth plugin is off)"),
            legacy_fix(version),
        )
    } else if !version.has_admin_config_api() {
        Check::fail(
            "affine-registered",
            format!(
                "AFFiNE {version} at {affine_url} does not list OIDC among its login providers"
            ),
            legacy_fix(version),
        )
    } else {
        let mut fix = String::from(
            "set AFFiNE's OIDC provider (affine_oidc) with a client id and secret; AFFiNE registers it only after fetching the issuer's discovery document",
        );
        if version.registers_after_single_discovery() {
            fix.push_str(&format!(
                "; AFFiNE {version} tries that once per change: after fixing the issuer or network, rewrite the setting or restart AFFiNE"
            ));
        }
        Check::fail(
            "affine-registered",
            format!(
                "AFFiNE {version} at {affine_url} does not list OIDC among its login providers"
            ),
            fix,
        )
    };
    (vec![version_check, registered_check], Some(state))
}

/// `affine-issuer` and `affine-client-id`: the OIDC setting AFFiNE stores is the one being
/// verified. Needs an administrator's credentials (from the environment, never a flag).
/// Returns the stored value for the client-secret check, or why there is none.
pub fn check_stored_setting(
    affine: &mut AffineClient,
    server: Option<&ServerState>,
    credentials: Option<&Credentials>,
    issuer: &str,
    client_id: &str,
    redactor: &mut Redactor,
) -> (Vec<Check>, Result<OidcValue, String>) {
    let unavailable = |why: String| (Check::skip_all(&STORED_SETTING_CHECKS, &why), Err(why));
    let Some(credentials) = credentials else {
        return unavailable(format!(
            "reading AFFiNE's stored OIDC setting needs an administrator: export {ADMIN_EMAIL_ENV} and {ADMIN_PASSWORD_ENV}, or {SESSION_TOKEN_ENV}"
        ));
    };
    let Some(server) = server else {
        return unavailable("AFFiNE did not answer".into());
    };
    if !server.version.has_admin_config_api() {
        return unavailable(format!(
            "AFFiNE {} has no admin API to read OAuth settings from (0.21 and newer have); its OIDC setting is in its environment ({OIDC_ENVIRONMENT_VARIABLES})",
            server.version
        ));
    }
    let read = affine.authenticate(credentials).and_then(|session| {
        redactor.add(&session);
        affine.read_state()
    });
    let state = match read {
        Ok(state) => state,
        Err(e) => {
            let checks = vec![
                Check::fail(
                    "affine-issuer",
                    format!("cannot read AFFiNE's stored OIDC setting: {e}"),
                    format!("check {ADMIN_EMAIL_ENV} and {ADMIN_PASSWORD_ENV}, or {SESSION_TOKEN_ENV}: an AFFiNE administrator's"),
                ),
                Check::skip("affine-client-id", "AFFiNE's stored setting could not be read (see affine-issuer)"),
            ];
            return (
                checks,
                Err("AFFiNE's stored setting could not be read (see affine-issuer)".into()),
            );
        }
    };
    let stored = state
        .oidc
        .as_ref()
        .map(OidcValue::from_affine)
        .unwrap_or_else(OidcValue::empty);
    redactor.add(&stored.client_secret);

    let issuer_check = if same_issuer(&stored.issuer, issuer) {
        Check::pass(
            "affine-issuer",
            format!("AFFiNE stores the issuer {}", stored.issuer),
        )
    } else if stored.issuer.is_empty() {
        Check::fail(
            "affine-issuer",
            "AFFiNE stores no OIDC issuer",
            format!("set AFFiNE's OIDC provider to the issuer {issuer} (affine_oidc: issuer, or authentik_url + slug)"),
        )
    } else {
        Check::fail(
            "affine-issuer",
            format!("AFFiNE stores the issuer {}, not {issuer}", stored.issuer),
            format!(
                "set AFFiNE's OIDC issuer to {issuer} (affine_oidc: issuer, or authentik_url + slug), or verify the one AFFiNE uses with --issuer {}",
                stored.issuer
            ),
        )
    };
    let client_id_check = if stored.client_id == client_id {
        Check::pass(
            "affine-client-id",
            format!("AFFiNE stores the client id {client_id}"),
        )
    } else {
        Check::fail(
            "affine-client-id",
            format!("AFFiNE stores the client id {:?}, expected {client_id:?}", stored.client_id),
            "make AFFiNE's clientId (affine_oidc client_id) and authentik's provider client_id the same",
        )
    };
    (vec![issuer_check, client_id_check], Ok(stored))
}

/// `preflight`, then what AFFiNE's authorize URL says: `authorize-endpoint`, `client-id`,
/// `redirect-uri`. With the stored setting known, `client-id` compares with it (a
/// mismatch is then AFFiNE running an older registration), since `affine-client-id`
/// already judges the stored id.
pub fn check_preflight(
    affine: &AffineClient,
    server: Option<&ServerState>,
    discovery: Option<&Value>,
    client_id: &str,
    callback: &str,
    stored: Option<&OidcValue>,
) -> Vec<Check> {
    if !server.is_some_and(ServerState::oidc_registered) {
        return Check::skip_all(&PREFLIGHT_CHECKS, "AFFiNE has no OIDC provider registered");
    }
    match affine.oauth_preflight(&login::client_nonce()) {
        Ok(url) => check_authorize_url(&url, discovery, client_id, callback, stored),
        Err(e) => {
            let mut checks = vec![Check::fail(
                "preflight",
                e.to_string(),
                "AFFiNE could not start an OIDC login; see its server log",
            )];
            checks.extend(Check::skip_all(
                &PREFLIGHT_CHECKS[1..],
                "AFFiNE gave no authorize URL",
            ));
            checks
        }
    }
}

fn check_authorize_url(
    url: &str,
    discovery: Option<&Value>,
    client_id: &str,
    callback: &str,
    stored: Option<&OidcValue>,
) -> Vec<Check> {
    let Ok(parsed) = Url::parse(url) else {
        let mut checks = vec![Check::fail(
            "preflight",
            format!("AFFiNE's authorize URL {url:?} does not parse"),
            "see AFFiNE's server log",
        )];
        checks.extend(Check::skip_all(
            &PREFLIGHT_CHECKS[1..],
            "AFFiNE gave no usable authorize URL",
        ));
        return checks;
    };
    let query = |key: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let mut endpoint = parsed.clone();
    endpoint.set_query(None);
    let mut checks = vec![Check::pass(
        "preflight",
        format!("AFFiNE starts an OIDC login (POST /api/oauth/preflight) towards {endpoint}"),
    )];
    match discovery.and_then(|d| d.get("authorization_endpoint")).and_then(Value::as_str) {
        Some(expected) if expected == endpoint.as_str() => {
            checks.push(Check::pass("authorize-endpoint", format!("AFFiNE sends browsers to {expected}")))
        }
        Some(expected) => checks.push(Check::fail(
            "authorize-endpoint",
            format!("AFFiNE sends browsers to {endpoint}, the issuer's authorization endpoint is {expected}"),
            "AFFiNE's stored issuer differs from the one checked here: set it again with affine_oidc",
        )),
        None => checks.push(Check::skip("authorize-endpoint", "no discovery document to compare with")),
    }
    let sent_id = query("client_id").unwrap_or_default();
    checks.push(match stored {
        Some(stored) if sent_id == stored.client_id => {
            Check::pass("client-id", format!("AFFiNE sends client_id {sent_id}, the one it stores"))
        }
        Some(stored) => Check::fail(
            "client-id",
            format!("AFFiNE sends client_id {sent_id:?} but stores {:?}: its login runs on an older setting", stored.client_id),
            "AFFiNE has not taken its stored setting yet: wait for it to fetch the issuer's discovery again (0.27+ retries), save the setting again, or restart AFFiNE",
        ),
        None if sent_id == client_id => Check::pass("client-id", format!("AFFiNE sends client_id {sent_id}")),
        None => Check::fail(
            "client-id",
            format!("AFFiNE sends client_id {sent_id:?}, expected {client_id:?}"),
            "make AFFiNE's clientId (affine_oidc client_id) and authentik's provider client_id the same",
        ),
    });
    let sent_redirect = query("redirect_uri").unwrap_or_default();
    checks.push(if sent_redirect == callback {
        Check::pass("redirect-uri", format!("AFFiNE sends redirect_uri {sent_redirect}"))
    } else {
        Check::fail(
            "redirect-uri",
            format!("AFFiNE sends redirect_uri {sent_redirect:?}, expected {callback:?}"),
            "AFFiNE builds it from its external URL: make AFFiNE's server external URL (AFFINE_SERVER_EXTERNAL_URL) equal --affine-url",
        )
    });
    checks
}

/// `affine-private-issuer`: AFFiNE 0.27+ refuses an issuer on a loopback, private or
/// link-local address (its SSRF guard). A warning, not a failure: the address verify
/// resolves need not be the one AFFiNE's server resolves.
pub fn check_private_issuer(server: Option<&ServerState>, issuer: &str) -> Check {
    let Some(version) = server.map(|s| s.version) else {
        return Check::skip("affine-private-issuer", "AFFiNE did not answer");
    };
    if !version.has_ssrf_guard() {
        return Check::skip(
            "affine-private-issuer",
            format!(
                "AFFiNE {version} fetches the issuer at any address (the guard came with 0.27)"
            ),
        );
    }
    match private_address_of(issuer) {
        Some(ip) => Check::warn(
            "affine-private-issuer",
            format!("the issuer resolves to {ip}, a loopback/private/link-local address"),
            format!("AFFiNE {version} refuses such issuers (SSRF guard): serve authentik on an address AFFiNE may fetch"),
        ),
        None => Check::pass(
            "affine-private-issuer",
            "the issuer resolves to a public address, which AFFiNE's private-address guard lets through",
        ),
    }
}

/// The first address of the issuer's host, when it is one AFFiNE 0.27+ refuses.
fn private_address_of(issuer: &str) -> Option<IpAddr> {
    let url = Url::parse(issuer).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .collect();
    addrs.into_iter().find(|ip| is_private(*ip))
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::check::Status;

    #[test]
    fn private_ranges_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn authorize_url_mismatches_are_each_named() {
        let discovery =
            serde_json::json!({"authorization_endpoint": "https://a/application/o/authorize/"});
        let url = "https://a/application/o/authorize/?client_id=wrong&redirect_uri=https%3A%2F%2Fx%2Foauth%2Fcallback";
        let checks = check_authorize_url(
            url,
            Some(&discovery),
            "right",
            "https://affine/oauth/callback",
            None,
        );
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id)
            .collect();
        assert_eq!(failed, vec!["client-id", "redirect-uri"]);
        assert_eq!(checks[0].id, "preflight");
        assert_eq!(checks[0].status, Status::Pass);
    }

    #[test]
    fn with_the_stored_setting_client_id_judges_what_affine_runs_on() {
        let stored = OidcValue::from_affine(&serde_json::json!({"clientId": "wrong"}));
        let url = "https://a/authorize/?client_id=wrong&redirect_uri=https%3A%2F%2Faffine%2Foauth%2Fcallback";
        let checks = check_authorize_url(
            url,
            None,
            "right",
            "https://affine/oauth/callback",
            Some(&stored),
        );
        let client_id = checks.iter().find(|c| c.id == "client-id").unwrap();
        assert_eq!(client_id.status, Status::Pass, "{client_id:?}");
    }
}
