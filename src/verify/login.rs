//! `verify --login USERNAME`: the login itself, as a person's click on "Continue with OIDC"
//! makes it, without a browser. Each link is a check, and the first that fails names why:
//!
//! `login-start` (AFFiNE's preflight gives the authorize URL) → `login-authentik` (the
//! authorize request and authentik's flow executor, up to the redirect to AFFiNE's callback
//! with a code) → `login-affine` (AFFiNE's callback: token exchange, id_token check, claims,
//! sign-up; its refusal translated into cause and fix) → `login-user` (AFFiNE's session
//! belongs to that user; signed out at the end).
//!
//! A first login makes AFFiNE create the user (or take over an AFFiNE account with the same
//! e-mail), as a person's first login would: use a dedicated test user.

use crate::affine::client::{AffineClient, Refusal};
use crate::authentik::browser_login::BrowserLogin;
use crate::authentik::client::{AuthentikClient, Lookup};
use crate::http::HttpOptions;
use crate::secret::{Redactor, Secret};
use crate::verify::authentik_provider::AuthentikAccess;
use crate::verify::check::Check;
use crate::web_url::BaseUrl;

pub const LOGIN_CHECKS: [&str; 4] = [
    "login-start",
    "login-authentik",
    "login-affine",
    "login-user",
];

/// Who logs in: an authentik user and their password (never from a flag).
#[derive(Debug, Clone)]
pub struct LoginUser {
    pub username: String,
    pub password: Secret,
}

/// A fresh client nonce: AFFiNE binds its OAuth state to it, and the callback must bring
/// the same one back.
pub fn client_nonce() -> String {
    let mut bytes = [0u8; 16];
    // The operating system's generator; without it a login is not worth attempting.
    getrandom::getrandom(&mut bytes).expect("the operating system's random number generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The login checks. `user` is `Err(why)` when no login was asked for (SKIP lines).
pub fn check_login(
    user: Result<&LoginUser, &str>,
    affine_url: &BaseUrl,
    http: &HttpOptions,
    authentik: Option<&AuthentikAccess>,
    redactor: &mut Redactor,
) -> Vec<Check> {
    let user = match user {
        Ok(user) => user,
        Err(why) => return Check::skip_all(&LOGIN_CHECKS, why),
    };
    redactor.add(&user.password);
    let mut checks = Vec::new();
    let stop = |mut checks: Vec<Check>, from: usize, why: &str| {
        checks.extend(Check::skip_all(&LOGIN_CHECKS[from..], why));
        checks
    };

    // login-start
    let mut affine = match AffineClient::new(affine_url.clone(), http) {
        Ok(client) => client,
        Err(e) => {
            checks.push(Check::fail(
                "login-start",
                e.to_string(),
                "check --affine-url",
            ));
            return stop(checks, 1, "the login did not start");
        }
    };
    let nonce = client_nonce();
    let authorize_url = match affine.oauth_preflight(&nonce) {
        Ok(url) => url,
        Err(e) => {
            checks.push(Check::fail(
                "login-start",
                e.to_string(),
                "AFFiNE must offer OIDC login first (see affine-registered)",
            ));
            return stop(checks, 1, "the login did not start");
        }
    };
    checks.push(Check::pass(
        "login-start",
        "AFFiNE's preflight gave the authorize URL and saved its OAuth state",
    ));

    // login-authentik
    let browser = match http.client() {
        Ok(client) => client,
        Err(e) => {
            checks.push(Check::fail(
                "login-authentik",
                e.to_string(),
                "check the TLS options",
            ));
            return stop(checks, 2, "authentik's login did not run");
        }
    };
    let callback_url = affine_url.oauth_callback();
    let callback = match BrowserLogin::new(&browser, &callback_url, &user.username, &user.password)
        .run(&authorize_url)
    {
        Ok(callback) => callback,
        Err(failure) => {
            checks.push(Check::fail("login-authentik", failure.detail, failure.fix));
            return stop(
                checks,
                2,
                "authentik did not send the browser back to AFFiNE",
            );
        }
    };
    redactor.add(&callback.code);
    checks.push(Check::pass(
        "login-authentik",
        format!(
            "authentik signed in {:?} and sent the browser to {callback_url} with a code",
            user.username
        ),
    ));

    // login-affine
    let session = match affine.oauth_callback(&callback.code, &callback.state, &nonce) {
        Ok(Ok(session)) => session,
        Ok(Err(refusal)) => {
            let (detail, fix) = explain_refusal(&refusal);
            checks.push(Check::fail("login-affine", detail, fix));
            return stop(checks, 3, "AFFiNE did not sign the user in");
        }
        Err(e) => {
            checks.push(Check::fail(
                "login-affine",
                e.to_string(),
                "see AFFiNE's server log",
            ));
            return stop(checks, 3, "AFFiNE did not sign the user in");
        }
    };
    redactor.add(&session);
    checks.push(Check::pass(
        "login-affine",
        "AFFiNE exchanged the code, accepted the id_token and the claims, and signed the user in",
    ));

    // login-user
    checks.push(check_user(&affine, user, authentik, http));
    if let Err(e) = affine.sign_out() {
        checks.push(Check::warn(
            "login-user",
            format!("the test session stays signed in: {e}"),
            "sign the test user out in AFFiNE",
        ));
    }
    checks
}

/// `login-user`: AFFiNE's new session is the authentik user's (by e-mail, which AFFiNE
/// links accounts by). authentik's own record of the user is read when a token is there.
fn check_user(
    affine: &AffineClient,
    user: &LoginUser,
    authentik: Option<&AuthentikAccess>,
    http: &HttpOptions,
) -> Check {
    let email = match affine.current_user_email() {
        Ok(Some(email)) => email,
        Ok(None) => {
            return Check::fail(
                "login-user",
                "AFFiNE's new session is not signed in (currentUser is empty)",
                "see AFFiNE's server log",
            )
        }
        Err(e) => return Check::fail("login-user", e.to_string(), "see AFFiNE's server log"),
    };
    let expected = authentik.and_then(|a| authentik_email(a, http, &user.username));
    match expected {
        Some(expected) if !expected.eq_ignore_ascii_case(&email) => Check::fail(
            "login-user",
            format!(
                "AFFiNE signed in {email}, but authentik's user {:?} has the e-mail {expected}",
                user.username
            ),
            "the provider's email claim is not the user's e-mail: check the email scope mapping and AFFiNE's args.claim_email",
        ),
        _ => Check::pass(
            "login-user",
            format!("AFFiNE's session is {email}'s; signed out again"),
        ),
    }
}

/// The e-mail authentik has for `username`, when its API says.
fn authentik_email(access: &AuthentikAccess, http: &HttpOptions, username: &str) -> Option<String> {
    let client = AuthentikClient::new(access.url.clone(), access.token.clone(), http).ok()?;
    let criteria = [("username".to_string(), username.to_string())];
    match client.find_objects("api/v3/core/users/", &criteria).ok()? {
        Lookup::Found(users) => users.first()?.get("email")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// AFFiNE's refusal of the callback as cause and fix (AFFiNE 0.25.7+'s checks, CONTRACTS.md
/// §1 "How AFFiNE uses the OIDC config at login").
pub fn explain_refusal(refusal: &Refusal) -> (String, String) {
    let said = format!(
        "AFFiNE refused the login (HTTP {} {}): {}",
        refusal.status, refusal.name, refusal.message
    );
    let message = refusal.message.to_ascii_lowercase();
    let fix = match refusal.name.as_str() {
        _ if message.contains("refresh_token") => {
            "AFFiNE before 0.25.7 requires a refresh_token, which authentik issues only for the offline_access scope: apply affine_oidc again (it asks for offline_access on those versions) with the blueprint's offline_access mapping, or upgrade AFFiNE"
        }
        _ if message.contains("not verified") => {
            "authentik says email_verified: false (its managed email mapping does from 2025.10) and AFFiNE 0.25.7+ refuses that: apply the blueprint with --email-verified true (the default) or attribute, which brings its own email mapping"
        }
        _ if message.contains("invalid_client") || message.contains("client authentication") => {
            "authentik refused AFFiNE's token request (invalid_client): AFFiNE's client secret differs from the provider's; set the same secret on both sides (see client-secret)"
        }
        "SIGN_UP_FORBIDDEN" => {
            "AFFiNE does not create accounts at an OIDC login (auth.allowSignupForOauth is off) and this user has none linked: turn it on in AFFiNE's Admin Panel > Settings, or create the account first"
        }
        "INVALID_AUTH_STATE" => {
            "AFFiNE could not verify authentik's id_token: the provider has an encryption key (a JWE) or no signing key (HS256), or the token's issuer is not the discovery document's; see authentik-keys and issuer"
        }
        "OAUTH_STATE_EXPIRED" | "INVALID_OAUTH_CALLBACK_STATE" => {
            "AFFiNE no longer knew the login's state: the login took too long, or AFFiNE restarted in between; run verify again"
        }
        _ if message.contains("email") => {
            "the id_token and userinfo carry no valid e-mail: the provider needs the email scope mapping, and AFFiNE's args.claim_email (if set) must name its claim"
        }
        _ if message.contains("token") => {
            "AFFiNE's token request at authentik failed: check the client secret (client-secret) and that the provider allows the authorization_code grant (authentik-grant-types)"
        }
        _ => "see AFFiNE's server log for the login",
    };
    (said, fix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, name: &str, message: &str) -> Refusal {
        Refusal {
            status,
            name: name.into(),
            message: message.into(),
        }
    }

    #[test]
    fn each_refusal_names_its_own_cause() {
        let cases = [
            (
                refusal(
                    400,
                    "INVALID_OAUTH_RESPONSE",
                    "Invalid OAuth response: Email for this account is not verified.",
                ),
                "--email-verified true",
            ),
            (
                refusal(403, "SIGN_UP_FORBIDDEN", "You are not allowed to sign up."),
                "allowSignupForOauth",
            ),
            (
                refusal(
                    400,
                    "INVALID_AUTH_STATE",
                    "Invalid auth state. You might start the auth progress from another device.",
                ),
                "encryption key",
            ),
            (
                refusal(
                    400,
                    "INVALID_OAUTH_RESPONSE",
                    "Invalid OAuth response: {\"error\":\"invalid_client\"}",
                ),
                "client secret differs",
            ),
        ];
        for (refusal, needle) in cases {
            let (detail, fix) = explain_refusal(&refusal);
            assert!(detail.contains(&refusal.name), "{detail}");
            assert!(fix.contains(needle), "{}: {fix}", refusal.message);
        }
    }

    #[test]
    fn client_nonces_differ() {
        assert_ne!(client_nonce(), client_nonce());
        assert_eq!(client_nonce().len(), 32);
    }
}
