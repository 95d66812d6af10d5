//! authentik's own view, read through its API with a token: the application's OAuth2
//! provider allows AFFiNE's callback, has the client id, grant and scopes AFFiNE needs, and
//! holds the same client secret as AFFiNE.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::affine::oidc_value::OidcValue;
use crate::affine::version::AffineVersion;
use crate::authentik::client::AuthentikClient;
use crate::authentik_version::AuthentikVersion;
use crate::blueprint::options::DEFAULT_SECRET_ENV;
use crate::http::HttpOptions;
use crate::secret::{Redactor, Secret};
use crate::verify::check::Check;
use crate::web_url::BaseUrl;

/// Scopes AFFiNE asks for (its default `openid profile email`).
pub const AFFINE_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// The provider checks, in order, for skipping them together.
const PROVIDER_CHECKS: [&str; 8] = [
    "authentik-provider",
    "authentik-version",
    "authentik-redirect-uri",
    "authentik-client-id",
    "authentik-grant-types",
    "authentik-keys",
    "authentik-scopes",
    "authentik-email-verified",
];

/// The managed key of authentik's own mapping for a scope.
fn managed_key(scope: &str) -> String {
    format!("goauthentik.io/providers/oauth2/scope-{scope}")
}

/// How to reach authentik's API for these checks.
#[derive(Debug, Clone)]
pub struct AuthentikAccess {
    pub slug: String,
    pub url: BaseUrl,
    pub token: Secret,
}

/// The provider checks. `access` is `Err(why)` when they cannot run (the SKIP lines say
/// why). Returns the provider's client secret for the client-secret check, or why there is
/// none.
pub fn check_provider(
    access: Result<&AuthentikAccess, &str>,
    affine_version: Option<AffineVersion>,
    http: &HttpOptions,
    client_id: &str,
    callback: &str,
    redactor: &mut Redactor,
) -> (Vec<Check>, Result<Secret, String>) {
    let access = match access {
        Ok(access) => access,
        Err(why) => return (Check::skip_all(&PROVIDER_CHECKS, why), Err(why.to_string())),
    };
    let unavailable = |fail: Check| {
        let mut checks = vec![fail];
        checks.extend(Check::skip_all(
            &PROVIDER_CHECKS[1..],
            "no provider to check",
        ));
        (
            checks,
            Err("authentik's provider could not be read (see authentik-provider)".to_string()),
        )
    };
    let slug = access.slug.as_str();
    let client = match AuthentikClient::new(access.url.clone(), access.token.clone(), http) {
        Ok(c) => c,
        Err(e) => {
            return unavailable(Check::fail(
                "authentik-provider",
                e.to_string(),
                "check --authentik-url and the token",
            ))
        }
    };
    let provider = match client.provider_for_application(slug) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return unavailable(Check::fail(
                "authentik-provider",
                format!("authentik has no OAuth2 provider for an application with slug {slug:?}"),
                "apply the blueprint (authentik_blueprint) or check --slug",
            ))
        }
        Err(e) => {
            return unavailable(Check::fail(
                "authentik-provider",
                e.to_string(),
                "check --authentik-url and the token",
            ))
        }
    };
    let secret = Secret::new(
        provider
            .get("client_secret")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    redactor.add(&secret);

    let version = client.version();
    let mut checks = vec![
        Check::pass(
            "authentik-provider",
            format!("application {slug:?} has an OAuth2 provider"),
        ),
        check_version(&version),
        check_redirect_uri(&provider, callback),
        check_client_id(&provider, client_id),
        check_grant_types(&provider),
        check_keys(&provider),
    ];
    checks.extend(check_scopes(&client, version, &provider, affine_version));
    (checks, Ok(secret))
}

/// `authentik-version`: the running authentik, whose version decides what the other
/// checks expect; one newer than this tool knows is judged by the newest rules, with a
/// warning.
fn check_version(version: &crate::error::Result<AuthentikVersion>) -> Check {
    match version {
        Ok(v) => match v.newer_warning() {
            Some(warning) => Check::warn(
                "authentik-version",
                warning,
                "the newest known rules apply; if a check below misjudges this authentik, update affine-authentik",
            ),
            None => Check::pass("authentik-version", format!("authentik {v}")),
        },
        Err(e) => Check::fail("authentik-version", e.to_string(), "check the token's rights"),
    }
}

/// `authentik-keys`: AFFiNE 0.25.7+ verifies an RS256-signed id_token against the JWKS.
/// Without a signing key authentik signs with HS256 and the client secret; with an
/// encryption key it sends a JWE. AFFiNE refuses both ("Invalid auth state").
fn check_keys(provider: &Value) -> Check {
    let set = |field: &str| provider.get(field).is_some_and(|v| !v.is_null());
    if !set("signing_key") {
        return Check::fail(
            "authentik-keys",
            "the provider has no signing key: authentik signs id_tokens with HS256 and the client secret, which AFFiNE 0.25.7+ refuses (\"Invalid auth state\")",
            "give the provider a signing key (authentik_blueprint signing_key, by default the self-signed certificate authentik ships) and apply the blueprint",
        );
    }
    if set("encryption_key") {
        return Check::fail(
            "authentik-keys",
            "the provider has an encryption key: authentik encrypts the id_token (JWE), which AFFiNE cannot verify (\"Invalid auth state\")",
            "remove the provider's encryption key: applying the generated blueprint does (it says encryption_key: null)",
        );
    }
    Check::pass(
        "authentik-keys",
        "the provider signs id_tokens with its signing key and does not encrypt them",
    )
}

fn check_redirect_uri(provider: &Value, callback: &str) -> Check {
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
    if strict {
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
    }
}

fn check_client_id(provider: &Value, client_id: &str) -> Check {
    let provider_id = provider
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if provider_id == client_id {
        Check::pass("authentik-client-id", "the provider's client_id matches")
    } else {
        Check::fail(
            "authentik-client-id",
            format!("the provider's client_id is {provider_id:?}, expected {client_id:?}"),
            "use the same client id in the blueprint and in AFFiNE",
        )
    }
}

fn check_grant_types(provider: &Value) -> Check {
    match provider.get("grant_types").and_then(Value::as_array) {
        Some(grants) if grants.iter().any(|g| g == "authorization_code") => {
            Check::pass("authentik-grant-types", "authorization_code is allowed")
        }
        Some(_) => Check::fail(
            "authentik-grant-types",
            "the provider does not allow the authorization_code grant: every login fails",
            "authentik 2026.5+: set grant_types [authorization_code, refresh_token] (the generated blueprint does)",
        ),
        None => Check::skip("authentik-grant-types", "this authentik has no grant_types setting"),
    }
}

/// `authentik-scopes` (openid, email and profile each have a mapping on the provider,
/// authentik's managed one or another for that scope) and `authentik-email-verified` (what
/// the email mapping says: AFFiNE 0.25.7+ refuses `email_verified: false`, which authentik
/// 2025.10+'s managed mapping sends).
fn check_scopes(
    client: &AuthentikClient,
    version: crate::error::Result<AuthentikVersion>,
    provider: &Value,
    affine_version: Option<AffineVersion>,
) -> Vec<Check> {
    let mappings = version.and_then(|version| {
        let assigned = provider
            .get("property_mappings")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut found = Vec::new();
        for pk in assigned.iter().filter_map(Value::as_str) {
            found.extend(client.scope_mapping(version, pk)?);
        }
        Ok((version, found))
    });
    let (version, mappings) = match mappings {
        Ok(found) => found,
        Err(e) => {
            return vec![
                Check::fail(
                    "authentik-scopes",
                    e.to_string(),
                    "check the token's rights",
                ),
                Check::skip(
                    "authentik-email-verified",
                    "the scope mappings could not be read",
                ),
            ]
        }
    };
    let for_scope = |scope: &str| {
        mappings
            .iter()
            .find(|m| m.get("scope_name").and_then(Value::as_str) == Some(scope))
    };
    let missing: Vec<&str> = AFFINE_SCOPES
        .iter()
        .copied()
        .filter(|s| for_scope(s).is_none())
        .collect();
    let scopes = if missing.is_empty() {
        Check::pass("authentik-scopes", "openid, email and profile are mapped")
    } else {
        Check::fail(
            "authentik-scopes",
            format!("the provider lacks the scope mappings {}", missing.join(", ")),
            "AFFiNE asks for openid, email and profile: apply the generated blueprint, which maps all three",
        )
    };
    let email = match for_scope("email") {
        None => Check::skip(
            "authentik-email-verified",
            "the provider has no email scope mapping",
        ),
        Some(mapping) => check_email_verified(mapping, version, affine_version),
    };
    vec![scopes, email]
}

/// What the email mapping says in `email_verified`, judged from what it is: authentik's
/// managed mapping (false from 2025.10, true before), or another whose expression says
/// `True`, reads the user's attribute, or says `False`.
fn check_email_verified(
    mapping: &Value,
    version: AuthentikVersion,
    affine_version: Option<AffineVersion>,
) -> Check {
    let name = mapping
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let managed =
        mapping.get("managed").and_then(Value::as_str) == Some(managed_key("email").as_str());
    let refusing_affine = affine_version.is_none_or(|v| v.refuses_unverified_email());
    let affine_named = match affine_version {
        Some(v) => format!("AFFiNE {v}"),
        None => "AFFiNE 0.25.7 and newer".to_string(),
    };
    let says_false = |detail: String| {
        let fix = "use a mapping for scope email that says email_verified: True (the generated blueprint brings one: --email-verified true, or attribute)";
        if refusing_affine {
            Check::fail(
                "authentik-email-verified",
                format!("{detail}; {affine_named} refuses such a login (\"Email for this account is not verified\")"),
                fix,
            )
        } else {
            Check::warn(
                "authentik-email-verified",
                format!("{detail}; AFFiNE 0.25.7 and newer refuse such a login, so upgrading AFFiNE breaks it"),
                fix,
            )
        }
    };
    if managed {
        return if version.managed_email_mapping_sends_unverified() {
            says_false(format!(
                "the provider uses authentik {version}'s managed email mapping, which says email_verified: false"
            ))
        } else {
            Check::pass(
                "authentik-email-verified",
                format!("authentik {version}'s managed email mapping says email_verified: true"),
            )
        };
    }
    let expression = mapping
        .get("expression")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let verified_line = expression
        .lines()
        .find(|l| l.contains("email_verified"))
        .unwrap_or_default();
    if verified_line.contains("attributes") {
        Check::pass(
            "authentik-email-verified",
            format!(
                "the email mapping {name:?} says what each user's attribute email_verified says"
            ),
        )
    } else if verified_line.contains("True") {
        Check::pass(
            "authentik-email-verified",
            format!("the email mapping {name:?} says email_verified: true"),
        )
    } else if verified_line.contains("False") {
        says_false(format!(
            "the email mapping {name:?} says email_verified: false"
        ))
    } else {
        Check::warn(
            "authentik-email-verified",
            format!("cannot tell from the email mapping {name:?}'s expression what it says in email_verified"),
            "verify --login shows what AFFiNE makes of it",
        )
    }
}

/// `client-secret`: AFFiNE's client secret is the provider's. A wrong one is the commonest
/// cause of "login fails after authentik's page" (authentik answers AFFiNE's token request
/// with `invalid_client`). Neither value is ever shown: only SHA-256 digests are compared,
/// so nothing about either secret can reach the output, not even through timing.
pub fn check_client_secret(
    affine: Result<&OidcValue, &str>,
    provider: Result<&Secret, &str>,
) -> Check {
    let (affine, provider) = match (affine, provider) {
        (Ok(a), Ok(p)) => (&a.client_secret, p),
        (Err(why), Ok(_)) | (Ok(_), Err(why)) => return Check::skip("client-secret", why),
        (Err(a), Err(p)) if a == p => return Check::skip("client-secret", a),
        (Err(a), Err(p)) => return Check::skip("client-secret", format!("{a}; {p}")),
    };
    let fix_both = format!(
        "put the same secret in AFFiNE (affine_oidc client_secret; AFFINE_OIDC_CLIENT_SECRET for apply) and in authentik's provider \
         (authentik_blueprint client_secret, or the !Env variable the blueprint names in authentik's environment, {DEFAULT_SECRET_ENV} by default)"
    );
    if affine.is_empty() {
        return Check::fail("client-secret", "AFFiNE stores no client secret", fix_both);
    }
    if provider.is_empty() {
        return Check::fail(
            "client-secret",
            "authentik's provider has no client secret",
            fix_both,
        );
    }
    let digest = |s: &Secret| Sha256::digest(s.expose().as_bytes());
    if digest(affine) == digest(provider) {
        Check::pass(
            "client-secret",
            "AFFiNE's client secret and the provider's match",
        )
    } else {
        Check::fail(
            "client-secret",
            "AFFiNE's client secret and authentik's provider's differ: authentik refuses AFFiNE's token request (invalid_client) and every login fails after authentik's page",
            fix_both,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::check::Status;

    fn stored(secret: &str) -> OidcValue {
        OidcValue::from_affine(&serde_json::json!({"clientSecret": secret}))
    }

    #[test]
    fn secrets_are_compared_and_never_shown() {
        let same = check_client_secret(Ok(&stored("s3cret-one")), Ok(&Secret::new("s3cret-one")));
        assert_eq!(same.status, Status::Pass);
        let differ = check_client_secret(Ok(&stored("s3cret-one")), Ok(&Secret::new("s3cret-two")));
        assert_eq!(differ.status, Status::Fail);
        let text = serde_json::to_string(&differ).unwrap();
        assert!(text.contains("differ"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let empty = check_client_secret(Ok(&stored("")), Ok(&Secret::new("x")));
        assert_eq!(empty.status, Status::Fail);
    }

    #[test]
    fn without_either_side_the_check_says_what_it_needs() {
        let skip = check_client_secret(Err("needs AFFiNE"), Err("needs authentik"));
        assert_eq!(skip.status, Status::Skip);
        assert_eq!(skip.detail, "needs AFFiNE; needs authentik");
    }
}
