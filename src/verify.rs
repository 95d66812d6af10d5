//! `verify`: walks the login chain the way AFFiNE and a browser would, without a browser,
//! and names the first broken link with what to change where.
//!
//! issuer discovery → issuer equality → AFFiNE registered OIDC → AFFiNE's authorize URL
//! (endpoint, client id, redirect URI) → optionally authentik's provider (redirect URI,
//! client id, grant types, scopes) → a warning for AFFiNE 0.27+'s private-address guard.

use std::net::{IpAddr, ToSocketAddrs};

use reqwest::Url;
use serde::Serialize;
use serde_json::Value;

use crate::affine::client::AffineClient;
use crate::affine::version::AffineVersion;
use crate::authentik::client::AuthentikClient;
use crate::error::Result;
use crate::http::{describe_transport_error, HttpOptions};
use crate::secret::Secret;
use crate::web_url::{discovery_url_as_affine_builds_it, same_issuer, BaseUrl};

/// Fields AFFiNE needs in the discovery document.
pub const REQUIRED_DISCOVERY_FIELDS: [&str; 5] = [
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "issuer",
    "jwks_uri",
];

/// Scopes AFFiNE asks for (its default `openid profile email`).
pub const AFFINE_SCOPES: [&str; 3] = ["openid", "email", "profile"];

#[derive(Debug, Clone)]
pub struct VerifyInput {
    pub affine_url: BaseUrl,
    pub issuer: String,
    pub client_id: String,
    /// For the authentik checks: the application slug, authentik's URL and a token.
    pub authentik: Option<(String, BaseUrl, Secret)>,
    pub http: HttpOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Warn,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(id: &'static str, detail: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }
    fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn skip(id: &'static str, detail: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Skip,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

pub fn all_passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

pub fn run(input: &VerifyInput) -> Result<Vec<Check>> {
    let http = input.http.client()?;
    let mut checks = Vec::new();
    let callback = input.affine_url.oauth_callback();

    // 1. Discovery, fetched as AFFiNE fetches it.
    let discovery_url = discovery_url_as_affine_builds_it(&input.issuer);
    let discovery = match fetch_discovery(&http, &discovery_url) {
        Ok(doc) => {
            let missing: Vec<&str> = REQUIRED_DISCOVERY_FIELDS
                .iter()
                .copied()
                .filter(|f| doc.get(*f).and_then(Value::as_str).is_none())
                .collect();
            if missing.is_empty() {
                checks.push(Check::pass(
                    "discovery",
                    format!("{discovery_url} has every endpoint AFFiNE needs"),
                ));
                Some(doc)
            } else {
                checks.push(Check::fail(
                    "discovery",
                    format!("{discovery_url} lacks {}", missing.join(", ")),
                    "the issuer must be an OpenID Connect issuer; for authentik: <authentik>/application/o/<slug>/",
                ));
                None
            }
        }
        Err(why) => {
            checks.push(Check::fail(
                "discovery",
                format!("cannot get {discovery_url}: {why}"),
                "check the issuer (authentik: <authentik>/application/o/<slug>/ with the application's slug), that the blueprint is applied in authentik, and that AFFiNE's server can reach the issuer",
            ));
            None
        }
    };

    // 2. The issuer inside must equal the configured one (AFFiNE 0.26+ refuses otherwise).
    match &discovery {
        Some(doc) => {
            let announced = doc
                .get("issuer")
                .and_then(Value::as_str)
                .unwrap_or_default();
            checks.push(if same_issuer(announced, &input.issuer) {
                Check::pass("issuer", format!("the discovery document names the same issuer {announced}"))
            } else {
                Check::fail(
                    "issuer",
                    format!("the discovery document names issuer {announced}, AFFiNE is configured with {}", input.issuer),
                    format!("set AFFiNE's OIDC issuer to {announced} (affine_oidc: issuer, or authentik_url + slug)"),
                )
            });
        }
        None => checks.push(Check::skip(
            "issuer",
            "no discovery document to compare with",
        )),
    }

    // 3. AFFiNE lists OIDC among its login providers.
    let affine = AffineClient::new(input.affine_url.clone(), &input.http)?;
    let mut affine_version: Option<AffineVersion> = None;
    let registered = match affine.server_state() {
        Ok(state) => {
            affine_version = Some(state.version);
            if state.oidc_registered() {
                checks.push(Check::pass(
                    "affine-registered",
                    format!("AFFiNE {} offers OIDC login", state.version),
                ));
                true
            } else {
                let mut fix = String::from(
                    "set AFFiNE's OIDC provider (affine_oidc) with a client id and secret; AFFiNE registers it only after fetching the issuer's discovery document",
                );
                if state.version.registers_after_single_discovery() {
                    fix.push_str(&format!(
                        "; AFFiNE {} tries that once per change: after fixing the issuer or network, rewrite the setting or restart AFFiNE",
                        state.version
                    ));
                }
                checks.push(Check::fail(
                    "affine-registered",
                    format!(
                        "AFFiNE {} at {} does not list OIDC among its login providers",
                        state.version, input.affine_url
                    ),
                    fix,
                ));
                false
            }
        }
        Err(e) => {
            checks.push(Check::fail(
                "affine-registered",
                e.to_string(),
                "check --affine-url and that AFFiNE is running",
            ));
            false
        }
    };

    // 4. The authorize URL AFFiNE would send a browser to.
    if registered {
        match affine.oauth_preflight() {
            Ok(url) => checks.extend(check_authorize_url(
                &url,
                discovery.as_ref(),
                &input.client_id,
                &callback,
            )),
            Err(e) => checks.push(Check::fail(
                "preflight",
                e.to_string(),
                "AFFiNE could not start an OIDC login; see its server log",
            )),
        }
    } else {
        checks.push(Check::skip(
            "preflight",
            "AFFiNE has no OIDC provider registered",
        ));
    }

    // 5. authentik's own view of the provider.
    if let Some((slug, url, token)) = &input.authentik {
        checks.extend(check_authentik(
            slug,
            url,
            token,
            &input.http,
            &input.client_id,
            &callback,
        ));
    }

    // 6. AFFiNE 0.27+ refuses issuers on private addresses.
    if let Some(version) = affine_version.filter(|v| v.has_ssrf_guard()) {
        if let Some(ip) = private_address_of(&input.issuer) {
            checks.push(Check::warn(
                "affine-private-issuer",
                format!("the issuer resolves to {ip}, a loopback/private/link-local address"),
                format!("AFFiNE {version} refuses such issuers (SSRF guard): serve authentik on an address AFFiNE may fetch"),
            ));
        }
    }
    Ok(checks)
}

fn fetch_discovery(
    http: &reqwest::blocking::Client,
    url: &str,
) -> std::result::Result<Value, String> {
    let response = http
        .get(url)
        .send()
        .map_err(|e| describe_transport_error("the issuer", &e).to_string())?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    response
        .json::<Value>()
        .map_err(|_| "the answer is not JSON".to_string())
}

fn check_authorize_url(
    url: &str,
    discovery: Option<&Value>,
    client_id: &str,
    callback: &str,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let Ok(parsed) = Url::parse(url) else {
        return vec![Check::fail(
            "preflight",
            format!("AFFiNE's authorize URL {url:?} does not parse"),
            "see AFFiNE's server log",
        )];
    };
    let query = |key: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let mut endpoint = parsed.clone();
    endpoint.set_query(None);
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
    checks.push(if sent_id == client_id {
        Check::pass("client-id", format!("AFFiNE sends client_id {sent_id}"))
    } else {
        Check::fail(
            "client-id",
            format!("AFFiNE sends client_id {sent_id:?}, expected {client_id:?}"),
            "make AFFiNE's clientId (affine_oidc client_id) and authentik's provider client_id the same",
        )
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

fn check_authentik(
    slug: &str,
    url: &BaseUrl,
    token: &Secret,
    http: &HttpOptions,
    client_id: &str,
    callback: &str,
) -> Vec<Check> {
    let client = match AuthentikClient::new(url.clone(), token.clone(), http) {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "authentik-provider",
                e.to_string(),
                "check --authentik-url and the token",
            )]
        }
    };
    let provider = match client.provider_for_application(slug) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return vec![Check::fail(
                "authentik-provider",
                format!("authentik has no OAuth2 provider for an application with slug {slug:?}"),
                "apply the blueprint (authentik_blueprint) or check --slug",
            )]
        }
        Err(e) => {
            return vec![Check::fail(
                "authentik-provider",
                e.to_string(),
                "check --authentik-url and the token",
            )]
        }
    };
    let mut checks = vec![Check::pass(
        "authentik-provider",
        format!("application {slug:?} has an OAuth2 provider"),
    )];

    let strict = provider
        .get("redirect_uris")
        .map(|uris| match uris {
            Value::Array(items) => items.iter().any(|i| {
                i.get("matching_mode").and_then(Value::as_str) == Some("strict")
                    && i.get("url").and_then(Value::as_str) == Some(callback)
            }),
            // Before 2024.8.5: newline-separated regexes; ours are escaped literals.
            Value::String(s) => s.lines().any(|l| l.replace('\\', "") == callback),
            _ => false,
        })
        .unwrap_or(false);
    checks.push(if strict {
        Check::pass(
            "authentik-redirect-uri",
            format!("the provider allows {callback} (strict)"),
        )
    } else {
        Check::fail(
            "authentik-redirect-uri",
            format!(
                "the provider does not allow {callback} in strict mode (has {})",
                provider.get("redirect_uris").unwrap_or(&Value::Null)
            ),
            "regenerate the blueprint with the right --affine-url and apply it",
        )
    });

    let provider_id = provider
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    checks.push(if provider_id == client_id {
        Check::pass("authentik-client-id", "the provider's client_id matches")
    } else {
        Check::fail(
            "authentik-client-id",
            format!("the provider's client_id is {provider_id:?}, expected {client_id:?}"),
            "use the same client id in the blueprint and in AFFiNE",
        )
    });

    match provider.get("grant_types").and_then(Value::as_array) {
        Some(grants) if grants.iter().any(|g| g == "authorization_code") => {
            checks.push(Check::pass("authentik-grant-types", "authorization_code is allowed"))
        }
        Some(_) => checks.push(Check::fail(
            "authentik-grant-types",
            "the provider does not allow the authorization_code grant: every login fails",
            "authentik 2026.5+: set grant_types [authorization_code, refresh_token] (the generated blueprint does)",
        )),
        None => checks.push(Check::skip("authentik-grant-types", "this authentik has no grant_types setting")),
    }

    let managed: Vec<String> = AFFINE_SCOPES
        .iter()
        .map(|s| format!("goauthentik.io/providers/oauth2/scope-{s}"))
        .collect();
    let version = client.version();
    let scope_check = version
        .and_then(|v| client.scope_mapping_pks(v, &managed))
        .map(|pks| {
            let assigned: Vec<&str> = provider
                .get("property_mappings")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            AFFINE_SCOPES
                .iter()
                .zip(&managed)
                .filter(|(_, key)| {
                    !pks.iter()
                        .any(|(k, pk)| k == *key && assigned.contains(&pk.as_str()))
                })
                .map(|(scope, _)| *scope)
                .collect::<Vec<_>>()
        });
    checks.push(match scope_check {
        Ok(missing) if missing.is_empty() => {
            Check::pass("authentik-scopes", "openid, email and profile are mapped")
        }
        Ok(missing) => Check::fail(
            "authentik-scopes",
            format!(
                "the provider lacks the scope mappings {}",
                missing.join(", ")
            ),
            "add authentik's managed scope mappings to the provider (the generated blueprint does)",
        ),
        Err(e) => Check::fail(
            "authentik-scopes",
            e.to_string(),
            "check the token's rights",
        ),
    });
    checks
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
        );
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.id)
            .collect();
        assert_eq!(failed, vec!["client-id", "redirect-uri"]);
    }
}
