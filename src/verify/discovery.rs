//! The issuer's side, fetched as AFFiNE fetches it: the discovery document, the issuer it
//! announces, and the signing keys at its `jwks_uri`.
//!
//! AFFiNE builds `<issuer>/.well-known/openid-configuration` by plain concatenation (a
//! doubled slash for authentik's issuer, which ends in `/`), and its fetch follows
//! redirects: authentik's front router answers that doubled slash with a 301 to the cleaned
//! path. So verify follows them too, by AFFiNE 0.27's rules (at most 3, a 1 MiB body), and
//! counts and names each one instead of leaving it to the HTTP client.

use reqwest::blocking::Client;
use reqwest::header::LOCATION;
use reqwest::Url;
use serde_json::Value;

use crate::http::{describe_transport_error, read_body_capped};
use crate::verify::check::Check;
use crate::web_url::{discovery_url_as_affine_builds_it, same_issuer};

/// Fields AFFiNE needs in the discovery document.
pub const REQUIRED_DISCOVERY_FIELDS: [&str; 5] = [
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "issuer",
    "jwks_uri",
];

/// AFFiNE 0.27's fetch follows at most this many redirects.
pub const MAX_REDIRECTS: usize = 3;

/// AFFiNE 0.27 reads at most this much of a discovery document or JWKS.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// A JSON document fetched as AFFiNE fetches it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Value,
    /// Every URL requested, the first one (as built) to the one that answered.
    pub hops: Vec<String>,
}

impl Fetched {
    /// `""`, or the redirects followed, for a check's detail.
    fn redirect_note(&self) -> String {
        match self.hops.len() {
            0 | 1 => String::new(),
            n => format!(
                " (followed {} as AFFiNE does: {})",
                if n == 2 {
                    "a redirect".to_string()
                } else {
                    format!("{} redirects", n - 1)
                },
                self.hops.join(" → ")
            ),
        }
    }
}

/// GETs `url` as AFFiNE's fetch does: follows up to [`MAX_REDIRECTS`] redirects (a relative
/// `Location` resolved against the URL that sent it), reads at most [`MAX_BODY_BYTES`],
/// and wants HTTP 200 with JSON. `http` must not follow redirects itself, so that each one
/// is seen, counted and reported. `Err` is a sentence naming the cause.
pub fn fetch_as_affine(http: &Client, url: &str) -> Result<Fetched, String> {
    let mut hops = vec![url.to_string()];
    loop {
        let current = hops.last().expect("at least the first URL").clone();
        let response = http
            .get(&current)
            .header("Accept", "application/json")
            .send()
            .map_err(|e| {
                let why = describe_transport_error("the issuer", &e).to_string();
                if hops.len() > 1 {
                    format!("{why} (at the end of the redirects {})", hops.join(" → "))
                } else {
                    why
                }
            })?;
        let status = response.status().as_u16();
        let chain = || hops.join(" → ");
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let Some(location) = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .filter(|l| !l.trim().is_empty())
            else {
                return Err(format!(
                    "HTTP {status} without a Location header at {current}: the redirect leads nowhere"
                ));
            };
            let next = Url::parse(&current)
                .and_then(|base| base.join(location.trim()))
                .map_err(|_| {
                    format!(
                        "HTTP {status} at {current} redirects to {location:?}, which is not a URL"
                    )
                })?
                .to_string();
            if hops.contains(&next) {
                return Err(format!("a redirect loop: {} → {next}", chain()));
            }
            if hops.len() > MAX_REDIRECTS {
                return Err(format!(
                    "more than {MAX_REDIRECTS} redirects ({} → {next}); AFFiNE follows at most {MAX_REDIRECTS}",
                    chain()
                ));
            }
            hops.push(next);
            continue;
        }
        if status != 200 {
            return Err(if hops.len() > 1 {
                format!("HTTP {status} at the end of the redirects {}", chain())
            } else {
                format!("HTTP {status}")
            });
        }
        let text = read_body_capped(response, "the issuer", MAX_BODY_BYTES).map_err(|e| {
            // Only a size refusal is about what AFFiNE would read; a timeout is not.
            let why = e.to_string();
            if why.contains("larger than") {
                format!("{why} (more than AFFiNE reads)")
            } else {
                why
            }
        })?;
        let body = serde_json::from_str(&text).map_err(|_| {
            if hops.len() > 1 {
                format!("the answer at {} is not JSON", chain())
            } else {
                "the answer is not JSON".to_string()
            }
        })?;
        return Ok(Fetched { body, hops });
    }
}

/// `discovery`: the document AFFiNE fetches has every endpoint it needs. Returns it for the
/// links after this one.
pub fn check_discovery(http: &Client, issuer: &str) -> (Check, Option<Value>) {
    let url = discovery_url_as_affine_builds_it(issuer);
    match fetch_as_affine(http, &url) {
        Ok(fetched) => {
            let missing: Vec<&str> = REQUIRED_DISCOVERY_FIELDS
                .iter()
                .copied()
                .filter(|f| fetched.body.get(*f).and_then(Value::as_str).is_none())
                .collect();
            if missing.is_empty() {
                let check = Check::pass(
                    "discovery",
                    format!(
                        "{url} has every endpoint AFFiNE needs{}",
                        fetched.redirect_note()
                    ),
                );
                (check, Some(fetched.body))
            } else {
                let check = Check::fail(
                    "discovery",
                    format!("{url} lacks {}{}", missing.join(", "), fetched.redirect_note()),
                    "the issuer must be an OpenID Connect issuer; for authentik: <authentik>/application/o/<slug>/",
                );
                (check, None)
            }
        }
        Err(why) => {
            let mut fix = String::from(
                "check the issuer (authentik: <authentik>/application/o/<slug>/ with the application's slug), that the blueprint is applied in authentik, and that AFFiNE's server can reach the issuer",
            );
            // The doubled slash itself refused: Django without authentik's front router
            // (which would answer 301 to the cleaned path) does exactly that.
            if why == "HTTP 404" && url.contains("//.well-known/") {
                fix.push_str(
                    "; an authentik reached without its front router (Django alone) answers the doubled slash AFFiNE builds with 404: \
                     put authentik's server (its Go router) in front, or give AFFiNE the issuer without its trailing slash (AFFiNE compares issuers ignoring it)",
                );
            }
            (
                Check::fail("discovery", format!("cannot get {url}: {why}"), fix),
                None,
            )
        }
    }
}

/// `issuer`: the document names the issuer being verified (AFFiNE 0.26+ refuses otherwise).
pub fn check_issuer(discovery: Option<&Value>, issuer: &str) -> Check {
    let Some(doc) = discovery else {
        return Check::skip("issuer", "no discovery document to compare with");
    };
    let announced = doc
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if same_issuer(announced, issuer) {
        Check::pass(
            "issuer",
            format!("the discovery document names the same issuer {announced}"),
        )
    } else {
        Check::fail(
            "issuer",
            format!("the discovery document names issuer {announced}, AFFiNE is configured with {issuer}"),
            format!("set AFFiNE's OIDC issuer to {announced} (affine_oidc: issuer, or authentik_url + slug)"),
        )
    }
}

/// `jwks`: the document's `jwks_uri` answers (by the same redirect rules) with at least one
/// key that can check an id_token's signature: AFFiNE 0.25.7+ verifies every id_token.
pub fn check_jwks(http: &Client, discovery: Option<&Value>) -> Check {
    let Some(uri) = discovery
        .and_then(|d| d.get("jwks_uri"))
        .and_then(Value::as_str)
    else {
        return Check::skip("jwks", "no discovery document to read jwks_uri from");
    };
    let fetched = match fetch_as_affine(http, uri) {
        Ok(fetched) => fetched,
        Err(why) => {
            return Check::fail(
                "jwks",
                format!("cannot get the signing keys at jwks_uri {uri}: {why}"),
                "AFFiNE 0.25.7+ checks every id_token with these keys: make sure the provider exists and AFFiNE's server can reach its jwks_uri",
            )
        }
    };
    let note = fetched.redirect_note();
    // authentik leaves the `keys` member out altogether for a provider without any key,
    // so an object without it is an empty set; anything else is no key set at all.
    let keys = match fetched.body.get("keys") {
        Some(Value::Array(keys)) => keys.as_slice(),
        None if fetched.body.is_object() => &[],
        _ => {
            return Check::fail(
                "jwks",
                format!("{uri} is not a key set (no \"keys\" list){note}"),
                "jwks_uri must serve a JSON Web Key Set; check the issuer is authentik's (or another OpenID Connect provider's)",
            )
        }
    };
    let signing: Vec<String> = keys.iter().filter_map(signing_key_summary).collect();
    if signing.is_empty() {
        let encryption_only = !keys.is_empty();
        return Check::fail(
            "jwks",
            format!(
                "{uri} holds no signing key ({}){note}",
                if encryption_only {
                    format!("{} key(s), none for signatures", keys.len())
                } else {
                    "no keys at all".to_string()
                }
            ),
            "give the provider a signing key (the blueprint's signing_key, by default \"authentik Self-signed Certificate\"): \
             without one authentik signs id_tokens HS256 with the client secret, which AFFiNE 0.25.7+ refuses",
        );
    }
    Check::pass(
        "jwks",
        format!(
            "{uri} holds {} signing key(s): {}{note}",
            signing.len(),
            signing.join(", ")
        ),
    )
}

/// `Some("RSA RS256")` for a key that can verify signatures: `use` absent or `sig`, and an
/// RSA (`n`, `e`) or EC (`crv`, `x`, `y`) key with its parameters.
fn signing_key_summary(key: &Value) -> Option<String> {
    let text = |name: &str| key.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let kty = text("kty")?;
    let complete = match kty {
        "RSA" => text("n").is_some() && text("e").is_some(),
        "EC" => text("crv").is_some() && text("x").is_some() && text("y").is_some(),
        _ => false,
    };
    complete.then(|| match text("alg") {
        Some(alg) => format!("{kty} {alg}"),
        None => kty.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_complete_rsa_and_ec_keys_for_signatures_count() {
        let rsa = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "n": "x", "e": "AQAB"});
        assert_eq!(signing_key_summary(&rsa).as_deref(), Some("RSA RS256"));
        let ec = json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b"});
        assert_eq!(signing_key_summary(&ec).as_deref(), Some("EC"));
        for not_signing in [
            json!({"kty": "RSA", "use": "enc", "n": "x", "e": "AQAB"}),
            json!({"kty": "RSA", "use": "sig", "n": "x"}),
            json!({"kty": "oct", "k": "c2VjcmV0"}),
            json!({"use": "sig"}),
        ] {
            assert_eq!(signing_key_summary(&not_signing), None, "{not_signing}");
        }
    }

    #[test]
    fn the_redirect_note_names_every_hop() {
        let one = Fetched {
            body: Value::Null,
            hops: vec!["a".into()],
        };
        assert_eq!(one.redirect_note(), "");
        let two = Fetched {
            body: Value::Null,
            hops: vec!["a//x".into(), "a/x".into()],
        };
        assert_eq!(
            two.redirect_note(),
            " (followed a redirect as AFFiNE does: a//x → a/x)"
        );
    }
}
