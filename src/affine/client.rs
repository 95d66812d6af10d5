//! AFFiNE's HTTP API: sign-in, the GraphQL admin settings, the public server config and the
//! OAuth preflight. Nothing else in the project builds requests to AFFiNE.

use std::cell::OnceCell;
use std::thread::sleep;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use serde_json::{json, Value};

use crate::affine::graphql;
use crate::affine::oidc_value::OidcValue;
use crate::affine::version::{AffineVersion, ValidateForm, OIDC_ENVIRONMENT_VARIABLES};
use crate::error::{Error, Result};
use crate::http::{describe_transport_error, HttpOptions};
use crate::secret::Secret;
use crate::web_url::BaseUrl;

/// The module and key of AFFiNE's OIDC provider setting.
pub const OAUTH_MODULE: &str = "oauth";
pub const OIDC_KEY: &str = "providers.oidc";

/// How the tool proves it is an admin.
#[derive(Debug, Clone)]
pub enum Credentials {
    Password {
        email: String,
        password: Secret,
    },
    /// The value of an `affine_session` cookie, sent as a bearer token.
    SessionToken(Secret),
}

/// Where the credentials come from when no task parameter gives them. Secrets go in the
/// environment, never on a command line (`ps` shows it).
pub const ADMIN_EMAIL_ENV: &str = "AFFINE_ADMIN_EMAIL";
pub const ADMIN_PASSWORD_ENV: &str = "AFFINE_ADMIN_PASSWORD";
pub const SESSION_TOKEN_ENV: &str = "AFFINE_SESSION_TOKEN";

/// A password was given without the e-mail it belongs to; callers word it in their own
/// names (parameters or variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordWithoutEmail;

impl Credentials {
    /// The one rule for credentials of one source (the environment, or a task's
    /// parameters): a session token wins (one request fewer, no rate-limited sign-in), else
    /// a password with its e-mail. Empty values count as not given. `Ok(None)`: neither.
    pub fn choose(
        session_token: Option<Secret>,
        email: Option<String>,
        password: Option<Secret>,
    ) -> std::result::Result<Option<Credentials>, PasswordWithoutEmail> {
        if let Some(token) = session_token.filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials::SessionToken(token)));
        }
        let Some(password) = password.filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        match email.filter(|e| !e.is_empty()) {
            Some(email) => Ok(Some(Credentials::Password { email, password })),
            None => Err(PasswordWithoutEmail),
        }
    }

    /// [`Credentials::choose`] over `AFFINE_SESSION_TOKEN`, `AFFINE_ADMIN_EMAIL` and
    /// `AFFINE_ADMIN_PASSWORD`.
    pub fn from_environment() -> Result<Option<Credentials>> {
        let var = |name: &str| std::env::var(name).ok();
        Credentials::choose(
            var(SESSION_TOKEN_ENV).map(Secret::new),
            var(ADMIN_EMAIL_ENV),
            var(ADMIN_PASSWORD_ENV).map(Secret::new),
        )
        .map_err(|PasswordWithoutEmail| {
            Error::usage(format!(
                "{ADMIN_PASSWORD_ENV} is set but {ADMIN_EMAIL_ENV} is not: give the administrator's e-mail too"
            ))
        })
    }

    /// The secret values to mask in output (password or token).
    pub fn secret(&self) -> &Secret {
        match self {
            Credentials::Password { password, .. } => password,
            Credentials::SessionToken(token) => token,
        }
    }
}

/// AFFiNE's answer to a request it refused: its REST error (`{status, code, type, name,
/// message}`).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub name: String,
    pub message: String,
}

/// What one state read returns.
#[derive(Debug, Clone)]
pub struct ServerState {
    pub version: AffineVersion,
    /// `serverConfig.oauthProviders`; `None` when the server has no such field: 0.17-0.20
    /// with the OAuth plugin off, i.e. no OAuth login at all.
    pub oauth_providers: Option<Vec<String>>,
    /// `oauth.providers.oidc` as stored (`None` when the config has no such key).
    pub oidc: Option<Value>,
}

impl ServerState {
    pub fn oidc_registered(&self) -> bool {
        self.oauth_providers
            .as_ref()
            .is_some_and(|providers| providers.iter().any(|p| p == "OIDC"))
    }
}

pub struct AffineClient {
    http: Client,
    base: BaseUrl,
    /// The `Cookie:` or `Authorization:` header value once signed in.
    auth: Option<(reqwest::header::HeaderName, Secret)>,
    /// How long to keep honouring `Retry-After` on a rate-limited sign-in.
    patience: Duration,
    /// The server's version, asked once ([`AffineClient::version`]): a poll then costs one
    /// request, not two.
    version: OnceCell<AffineVersion>,
}

impl AffineClient {
    pub fn new(base: BaseUrl, options: &HttpOptions) -> Result<Self> {
        Ok(AffineClient {
            http: options.client()?,
            base,
            auth: None,
            patience: options.timeout,
            version: OnceCell::new(),
        })
    }

    fn what(&self) -> String {
        format!("AFFiNE at {}", self.base)
    }

    /// Signs in, or takes the session token. Returns the session material so the caller
    /// can add it to its redactor.
    pub fn authenticate(&mut self, credentials: &Credentials) -> Result<Secret> {
        match credentials {
            Credentials::SessionToken(token) => {
                let header = Secret::new(format!("Bearer {}", token.expose()));
                self.auth = Some((AUTHORIZATION, header));
                Ok(token.clone())
            }
            Credentials::Password { email, password } => self.sign_in(email, password),
        }
    }

    fn sign_in(&mut self, email: &str, password: &Secret) -> Result<Secret> {
        // AFFiNE answers a sign-in without a password by e-mailing a magic link to the
        // address. Never send one.
        if password.is_empty() {
            return Err(Error::usage(
                "the admin password is empty; refusing to sign in (AFFiNE would e-mail a magic link instead)",
            ));
        }
        let url = self.base.join("api/auth/sign-in");
        let started = Instant::now();
        loop {
            let response = self
                .http
                .post(&url)
                .json(&json!({"email": email, "password": password.expose()}))
                .send()
                .map_err(|e| describe_transport_error(&self.what(), &e))?;
            let status = response.status().as_u16();
            if status == 429 {
                let wait = retry_after(&response).unwrap_or(Duration::from_secs(5));
                if started.elapsed() + wait > self.patience {
                    return Err(Error::failed(format!(
                        "{} rate-limits sign-ins (HTTP 429, retry after {}s); fewer parallel tasks, or a session_token, avoid that",
                        self.what(),
                        wait.as_secs()
                    )));
                }
                sleep(wait);
                continue;
            }
            if status >= 500 {
                return Err(server_error(&self.what(), status));
            }
            if status == 200 || status == 201 {
                let cookies = session_cookies(&response);
                let Some(session) = cookies
                    .iter()
                    .find(|(n, _)| n == "affine_session")
                    .map(|(_, v)| v.clone())
                else {
                    // A login portal or a misrouted proxy answers 200 with a page: say so.
                    read_json(response, &self.what())?;
                    return Err(Error::failed(format!(
                        "{} accepted the sign-in but set no affine_session cookie; is this an AFFiNE server?",
                        self.what()
                    )));
                };
                let header: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
                self.auth = Some((COOKIE, Secret::new(header.join("; "))));
                return Ok(Secret::new(session));
            }
            let body = read_json(response, &self.what())?;
            let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
            return Err(match name {
                "WRONG_SIGN_IN_CREDENTIALS" => Error::failed(format!(
                    "{} refused the sign-in of {email}: wrong e-mail or password",
                    self.what()
                )),
                _ => Error::failed(format!(
                    "{} refused the sign-in (HTTP {status} {name}): {}",
                    self.what(),
                    body.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no message")
                )),
            });
        }
    }

    /// The server's version, from the one query every AFFiNE answers. Asked before
    /// anything else, because AFFiNE 0.17-0.20 answer a document naming a field they lack
    /// with a bare "Internal Server Error": the version says what to ask, and what to tell
    /// the user, before such a refusal can hide it.
    pub fn version(&self) -> Result<AffineVersion> {
        if let Some(version) = self.version.get() {
            return Ok(*version);
        }
        let data = self
            .graphql(graphql::VERSION_QUERY, None)
            .map_err(|e| e.into_error(&self.what()))?;
        let version = parse_version(&data, &self.what())?;
        Ok(*self.version.get_or_init(|| version))
    }

    /// The version, when the server has the admin API for OAuth settings (0.21+); else the
    /// error that names the environment variables such a server takes OIDC from.
    pub fn admin_config_version(&self) -> Result<AffineVersion> {
        let version = self.version()?;
        if version.has_admin_config_api() {
            Ok(version)
        } else {
            Err(Error::failed(format!(
                "AFFiNE {version} at {} has no admin API for OAuth settings (0.21 and newer have). Upgrade, or configure OIDC \
                 through its environment: {OIDC_ENVIRONMENT_VARIABLES}",
                self.base
            )))
        }
    }

    /// Version, registered providers and the stored OIDC value (admin only, 0.21+).
    pub fn read_state(&self) -> Result<ServerState> {
        let version = self.admin_config_version()?;
        let data = self
            .graphql(graphql::STATE_QUERY, None)
            .map_err(|e| e.into_error(&self.what()))?;
        Ok(ServerState {
            version,
            oauth_providers: Some(oauth_providers(&data)),
            oidc: data
                .get("appConfig")
                .and_then(|c| c.get(OAUTH_MODULE))
                .and_then(|o| o.get("providers"))
                .and_then(|p| p.get("oidc"))
                .cloned(),
        })
    }

    /// The public part only (no login): version and registered providers.
    pub fn server_state(&self) -> Result<ServerState> {
        let version = self.version()?;
        let oauth_providers = if version.has_admin_config_api() {
            let data = self
                .graphql(graphql::SERVER_QUERY, None)
                .map_err(|e| e.into_error(&self.what()))?;
            Some(oauth_providers(&data))
        } else {
            // 0.17-0.20: the field exists only while the OAuth plugin is on; its absence
            // is the answer, not an error.
            match self.graphql(graphql::OAUTH_PROVIDERS_QUERY, None) {
                Ok(data) => Some(oauth_providers(&data)),
                Err(GraphqlError::BadRequest(_)) => None,
                Err(e) => return Err(e.into_error(&self.what())),
            }
        };
        Ok(ServerState {
            version,
            oauth_providers,
            oidc: None,
        })
    }

    /// Asks AFFiNE whether it would accept `value`, without saving. `Ok(None)` when it
    /// would, `Ok(Some(reason))` when not; `Err` when the server cannot validate.
    pub fn validate_oidc(
        &self,
        version: AffineVersion,
        value: &OidcValue,
    ) -> Result<Option<String>> {
        let document = match version.validate_form() {
            Some(ValidateForm::Query) => graphql::VALIDATE_QUERY,
            Some(ValidateForm::Mutation) => graphql::VALIDATE_MUTATION,
            None => return Ok(None),
        };
        let data = self
            .graphql(document, Some(updates(value)))
            .map_err(|e| e.into_error(&self.what()))?;
        let results = data
            .get("validateAppConfig")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(results
            .iter()
            .find(|r| r.get("valid") == Some(&Value::Bool(false)))
            .map(|r| {
                r.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("invalid value")
                    .to_string()
            }))
    }

    /// Saves `value` as the whole OIDC provider setting (AFFiNE replaces, never merges).
    pub fn write_oidc(&self, value: &OidcValue) -> Result<()> {
        self.graphql(graphql::UPDATE_MUTATION, Some(updates(value)))
            .map(|_| ())
            .map_err(|e| e.into_error(&self.what()))
    }

    /// `POST /api/oauth/preflight` for OIDC: the authorize URL AFFiNE would send a
    /// browser to.
    /// `POST /api/oauth/preflight`: AFFiNE saves an OAuth state bound to `client_nonce`
    /// and answers the IdP authorize URL a browser is sent to.
    pub fn oauth_preflight(&self, client_nonce: &str) -> Result<String> {
        let response = self
            .http
            .post(self.base.join("api/oauth/preflight"))
            .json(&json!({"provider": "OIDC", "client_nonce": client_nonce}))
            .send()
            .map_err(|e| describe_transport_error(&self.what(), &e))?;
        let status = response.status().as_u16();
        let body = read_json(response, &self.what())?;
        match body.get("url").and_then(Value::as_str) {
            Some(url) if status < 300 => Ok(url.to_string()),
            _ => Err(Error::failed(format!(
                "{} refused the OIDC preflight (HTTP {status}): {}",
                self.what(),
                body.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
            ))),
        }
    }

    /// `POST /api/oauth/callback`, what AFFiNE's `/oauth/callback` page sends with the
    /// `code` and `state` the IdP redirected to, and the preflight's client nonce. AFFiNE
    /// then exchanges the code, verifies the id_token, reads the user and signs them in.
    /// `Ok(Err(refusal))` is AFFiNE's own answer to a login it refused; on success this
    /// client holds the new session, and the session material is returned for redacting.
    pub fn oauth_callback(
        &mut self,
        code: &Secret,
        state: &str,
        client_nonce: &str,
    ) -> Result<std::result::Result<Secret, Refusal>> {
        let response = self
            .http
            .post(self.base.join("api/oauth/callback"))
            .json(&json!({"code": code.expose(), "state": state, "client_nonce": client_nonce}))
            .send()
            .map_err(|e| describe_transport_error(&self.what(), &e))?;
        let status = response.status().as_u16();
        // AFFiNE's own errors are JSON, a 500 included; a proxy's 502-504 page is not.
        if status > 500 {
            return Err(server_error(&self.what(), status));
        }
        let cookies = session_cookies(&response);
        let body = read_json(response, &self.what())?;
        if status >= 300 {
            let text = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            return Ok(Err(Refusal {
                status,
                name: text("name"),
                message: text("message"),
            }));
        }
        let Some(session) = cookies
            .iter()
            .find(|(n, _)| n == "affine_session")
            .map(|(_, v)| Secret::new(v.clone()))
        else {
            return Err(Error::failed(format!(
                "{} accepted the OIDC callback but set no affine_session cookie",
                self.what()
            )));
        };
        let header: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        self.auth = Some((COOKIE, Secret::new(header.join("; "))));
        Ok(Ok(session))
    }

    /// The signed-in user's e-mail (`currentUser`), `None` when the session is not signed in.
    pub fn current_user_email(&self) -> Result<Option<String>> {
        let data = self
            .graphql(graphql::CURRENT_USER_QUERY, None)
            .map_err(|e| e.into_error(&self.what()))?;
        Ok(data
            .pointer("/currentUser/email")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// Ends this client's session (`GET /api/auth/sign-out`, AFFiNE's route).
    pub fn sign_out(&mut self) -> Result<()> {
        let Some((name, value)) = self.auth.take() else {
            return Ok(());
        };
        let response = self
            .http
            .get(self.base.join("api/auth/sign-out"))
            .header(name, value.expose())
            .send()
            .map_err(|e| describe_transport_error(&self.what(), &e))?;
        let status = response.status().as_u16();
        if status >= 300 {
            return Err(Error::failed(format!(
                "{} did not sign the session out (HTTP {status})",
                self.what()
            )));
        }
        Ok(())
    }

    fn graphql(
        &self,
        document: &str,
        variables: Option<Value>,
    ) -> std::result::Result<Value, GraphqlError> {
        let mut request = self
            .http
            .post(self.base.join("graphql"))
            // The JSON content type is also what satisfies AFFiNE's CSRF protection.
            .header(CONTENT_TYPE, "application/json")
            .body(
                json!({"query": document, "variables": variables.unwrap_or(json!({}))}).to_string(),
            );
        if let Some((name, value)) = &self.auth {
            request = request.header(name, value.expose());
        }
        let response = request
            .send()
            .map_err(|e| GraphqlError::Other(describe_transport_error(&self.what(), &e)))?;
        let status = response.status().as_u16();
        if status >= 500 {
            return Err(GraphqlError::Other(server_error(&self.what(), status)));
        }
        let body = read_json(response, &self.what()).map_err(GraphqlError::Other)?;
        if let Some(first) = body
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            let message = first
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_string();
            let name = first
                .pointer("/extensions/name")
                .or_else(|| first.pointer("/extensions/code"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            return Err(match name.as_str() {
                "GRAPHQL_BAD_REQUEST" => GraphqlError::BadRequest(message),
                _ if status == 400 => GraphqlError::BadRequest(message),
                _ => GraphqlError::Resolver { name, message },
            });
        }
        if status != 200 {
            return Err(GraphqlError::Other(Error::failed(format!(
                "{} answered HTTP {status}",
                self.what()
            ))));
        }
        body.get("data")
            .filter(|d| d.is_object())
            .cloned()
            .ok_or_else(|| {
                GraphqlError::Other(Error::failed(format!(
                    "{} answered without data",
                    self.what()
                )))
            })
    }
}

enum GraphqlError {
    /// Parse, validation and variable errors (HTTP 400).
    BadRequest(String),
    /// A resolver's error, with AFFiNE's error name.
    Resolver {
        name: String,
        message: String,
    },
    Other(Error),
}

impl GraphqlError {
    fn into_error(self, what: &str) -> Error {
        match self {
            GraphqlError::BadRequest(message) => {
                Error::failed(format!("{what} rejected the request as malformed: {message}"))
            }
            GraphqlError::Resolver { name, message } => match name.as_str() {
                "AUTHENTICATION_REQUIRED" => Error::failed(format!(
                    "{what} says the session is not signed in: check admin_email/admin_password, or renew the session token"
                )),
                "ACTION_FORBIDDEN" => Error::failed(format!(
                    "{what}: the account is not an administrator; use an account with the administrator feature"
                )),
                "INVALID_APP_CONFIG" | "INVALID_APP_CONFIG_INPUT" | "VALIDATION_ERROR" => {
                    Error::failed(format!("{what} rejected the OIDC value: {message}"))
                }
                _ => Error::failed(format!("{what} answered with an error ({name}): {message}")),
            },
            GraphqlError::Other(e) => e,
        }
    }
}

fn updates(value: &OidcValue) -> Value {
    json!({"updates": [{"module": OAUTH_MODULE, "key": OIDC_KEY, "value": value.to_affine_revealed()}]})
}

fn parse_version(data: &Value, what: &str) -> Result<AffineVersion> {
    let raw_version = data
        .pointer("/serverConfig/version")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::failed(format!("{what} sent no serverConfig version")))?;
    AffineVersion::parse(raw_version).ok_or_else(|| {
        Error::failed(format!(
            "{what} reports version {raw_version:?}, which is not X.Y.Z"
        ))
    })
}

fn oauth_providers(data: &Value) -> Vec<String> {
    data.pointer("/serverConfig/oauthProviders")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn server_error(what: &str, status: u16) -> Error {
    // 501 is what a plain web server (or a proxy without the route) answers a POST it does
    // not handle: not an AFFiNE that is down, but a URL that is not AFFiNE's.
    if status == 501 {
        return Error::failed(format!(
            "{what} answered HTTP 501 (not implemented): that server does not handle AFFiNE's API; check that the URL is AFFiNE's own (its public URL, not a static site or a proxy without /graphql and /api)"
        ));
    }
    Error::failed(format!(
        "{what} failed with HTTP {status}; try again later or look at the server's logs"
    ))
}

fn read_json(response: Response, what: &str) -> Result<Value> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_string();
    let text = crate::http::read_body_capped(response, what, crate::http::MAX_BODY_BYTES)?;
    serde_json::from_str(&text).map_err(|_| {
        Error::failed(format!(
            "{what} did not answer with JSON (HTTP {status}, {content_type}); is the URL AFFiNE's own, not a proxy's or a login page?"
        ))
    })
}

fn retry_after(response: &Response) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// `name=value` of the cookies AFFiNE sets at sign-in.
fn session_cookies(response: &Response) -> Vec<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.trim().starts_with("affine_"))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Option<Secret> {
        Some(Secret::new(v))
    }

    #[test]
    fn a_session_token_wins_and_a_password_needs_its_email() {
        let chosen = Credentials::choose(s("tok"), Some("a@b".into()), s("pw")).unwrap();
        assert!(matches!(chosen, Some(Credentials::SessionToken(t)) if t.expose() == "tok"));
        let chosen = Credentials::choose(s(""), Some("a@b".into()), s("pw")).unwrap();
        assert!(matches!(chosen, Some(Credentials::Password { email, .. }) if email == "a@b"));
        assert_eq!(
            Credentials::choose(None, None, s("pw")).unwrap_err(),
            PasswordWithoutEmail
        );
        // An empty password is no password: AFFiNE would e-mail a magic link for it.
        assert!(Credentials::choose(None, Some("a@b".into()), s(""))
            .unwrap()
            .is_none());
    }
}
