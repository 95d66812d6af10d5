//! authentik's side of a login, walked as a browser walks it, without a browser.
//!
//! From AFFiNE's authorize URL to the redirect back to `<affine>/oauth/callback` with a
//! `code`: authentik's authorize endpoint sends an unauthenticated browser to its flow
//! interface (`/if/flow/<flow>/?<query>`), whose page is a client of the flow executor API
//! (`/api/v3/flows/executor/<flow>/?query=<that query>`): a JSON challenge per stage,
//! answered with a POST, then a `xak-flow-redirect` back to the authorize URL, which now
//! (with the `authentik_session` cookie) runs the provider's authorization flow and
//! redirects to the callback (CONTRACTS.md §2, "Browserless login"; the recordings of
//! 2026.2.2 and 2024.10.2).
//!
//! Only the stages a person answers with a user name and a password, and consent, are
//! answered here; any other stage (MFA, captcha, a prompt) ends the walk naming it.

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::Url;
use serde_json::{json, Value};

use crate::http::{describe_transport_error, read_body_capped};
use crate::secret::Secret;

/// More requests than any login of the recorded shapes takes (about ten): past this the
/// walk is going round in circles.
const MAX_REQUESTS: usize = 40;
/// The most a page or challenge of authentik's may hold.
const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// Where authentik sent the browser in the end: AFFiNE's callback with these.
pub struct Callback {
    pub code: Secret,
    pub state: String,
}

/// Why the walk stopped: what happened (`detail`) and what to change (`fix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub detail: String,
    pub fix: String,
}

fn failure(detail: impl Into<String>, fix: impl Into<String>) -> Failure {
    Failure {
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// One walk: the browser's cookie jar for authentik (only authentik's host gets them).
pub struct BrowserLogin<'a> {
    http: &'a Client,
    callback: &'a str,
    username: &'a str,
    password: &'a Secret,
    cookies: Vec<(String, String)>,
    requests: usize,
}

/// What a challenge of the flow executor asks for.
enum Next {
    /// GET this authentik URL next (a redirect, or the executor again).
    Get(Url),
    /// POST this answer to the executor URL.
    Answer(Value),
    /// The browser is sent to AFFiNE's callback.
    Done(Callback),
}

impl<'a> BrowserLogin<'a> {
    /// `http` must not follow redirects (the project's client does not): each hop is looked at.
    pub fn new(
        http: &'a Client,
        callback: &'a str,
        username: &'a str,
        password: &'a Secret,
    ) -> Self {
        BrowserLogin {
            http,
            callback,
            username,
            password,
            cookies: Vec::new(),
            requests: 0,
        }
    }

    /// Walks from `authorize_url` (AFFiNE's preflight answer) to the callback.
    pub fn run(&mut self, authorize_url: &str) -> Result<Callback, Failure> {
        let mut url = Url::parse(authorize_url).map_err(|_| {
            failure(
                format!("AFFiNE's authorize URL {authorize_url:?} does not parse"),
                "see AFFiNE's server log",
            )
        })?;
        // The executor URL and flow of the challenge being answered, once in a flow.
        let mut executor: Option<(Url, String)> = None;
        let mut answer: Option<Value> = None;
        loop {
            let response = match answer.take() {
                Some(body) => {
                    let (executor_url, _) = executor.as_ref().expect("an answer has its flow");
                    self.send(self.http.post(executor_url.clone()).json(&body))?
                }
                None => self.send(self.http.get(url.clone()))?,
            };
            let (next, flow) = self.read(response, &url, executor.as_ref())?;
            if let Some(flow) = flow {
                executor = Some(flow);
            }
            match next {
                Next::Done(callback) => return Ok(callback),
                Next::Get(next_url) => {
                    if let Some(flow_page) = flow_interface(&next_url) {
                        // The flow's web page: ask its API instead, as the page's script does.
                        url = flow_page.0.clone();
                        executor = Some(flow_page);
                    } else {
                        url = next_url;
                    }
                }
                Next::Answer(body) => answer = Some(body),
            }
        }
    }

    fn send(&mut self, builder: RequestBuilder) -> Result<Response, Failure> {
        self.requests += 1;
        if self.requests > MAX_REQUESTS {
            return Err(failure(
                format!("authentik's login did not reach AFFiNE's callback after {MAX_REQUESTS} requests"),
                "the authentication flow redirects in a circle: look at its stages in authentik (Flows and Stages > Flows)",
            ));
        }
        let mut builder = builder;
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            builder = builder.header(COOKIE, jar.join("; "));
        }
        let response = builder.send().map_err(|e| {
            failure(
                describe_transport_error("authentik", &e).to_string(),
                "check that authentik is reachable from here at the URL AFFiNE sends browsers to",
            )
        })?;
        for value in response.headers().get_all(SET_COOKIE) {
            let Some((name, rest)) = value.to_str().ok().and_then(|v| v.split_once('=')) else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or_default().to_string();
            self.cookies.retain(|(n, _)| n != name);
            self.cookies.push((name.trim().to_string(), value));
        }
        Ok(response)
    }

    /// What to do after `response` to a request for `url`. Returns the executor and flow
    /// too when the response came from one.
    #[allow(clippy::type_complexity)]
    fn read(
        &self,
        response: Response,
        url: &Url,
        executor: Option<&(Url, String)>,
    ) -> Result<(Next, Option<(Url, String)>), Failure> {
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    failure(
                        format!(
                            "authentik answered {} with HTTP {status} and no usable Location",
                            without_query(url)
                        ),
                        "look at authentik's server log",
                    )
                })?;
            return self.after_redirect(location).map(|n| (n, None));
        }
        let text = read_body_capped(response, "authentik", MAX_BODY_BYTES)
            .map_err(|e| failure(e.to_string(), "is this URL authentik's?"))?;
        if status == 400 && !text.trim_start().starts_with('{') {
            return Err(authorize_refusal(&text, self.callback));
        }
        if status != 200 {
            return Err(failure(
                format!(
                    "authentik answered {} with HTTP {status}",
                    without_query(url)
                ),
                "look at authentik's server log",
            ));
        }
        let challenge: Value = serde_json::from_str(&text).map_err(|_| {
            failure(
                format!(
                    "authentik answered {} with a page, not a flow challenge",
                    without_query(url)
                ),
                "AFFiNE's issuer must be authentik's: <authentik>/application/o/<slug>/",
            )
        })?;
        let Some((executor_url, flow)) = executor else {
            return Err(failure(
                format!(
                    "authentik answered {} with JSON outside a flow",
                    without_query(url)
                ),
                "look at authentik's server log",
            ));
        };
        self.answer(&challenge, executor_url, flow)
            .map(|n| (n, Some((executor_url.clone(), flow.clone()))))
    }

    /// A redirect: to AFFiNE's callback (done, or authentik's OAuth error), or elsewhere on
    /// authentik (follow it).
    fn after_redirect(&self, location: Url) -> Result<Next, Failure> {
        if !is_callback(&location, self.callback) {
            return Ok(Next::Get(location));
        }
        let query = |key: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        if let Some(error) = query("error") {
            let description = query("error_description").unwrap_or_default();
            return Err(failure(
                format!("authentik sent the browser back to AFFiNE with error {error:?}: {description}"),
                match error.as_str() {
                    "access_denied" => "the user may not use this application: check the application's policy bindings (the blueprint's group)",
                    "invalid_scope" => "the provider lacks a scope AFFiNE asks for (openid, email, profile): regenerate and apply the blueprint",
                    _ => "look at the provider and application in authentik",
                },
            ));
        }
        let (Some(code), Some(state)) = (query("code"), query("state")) else {
            return Err(failure(
                "authentik sent the browser back to AFFiNE without a code and state",
                "look at the provider in authentik",
            ));
        };
        Ok(Next::Done(Callback {
            code: Secret::new(code),
            state,
        }))
    }

    /// The answer to one flow executor challenge.
    fn answer(&self, challenge: &Value, executor_url: &Url, flow: &str) -> Result<Next, Failure> {
        let component = challenge
            .get("component")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(errors) = response_errors(challenge) {
            return Err(match component {
                "ak-stage-password" => failure(
                    format!("authentik refused the password of {:?} in flow {flow:?}: {errors}", self.username),
                    "give the test user's password in AUTHENTIK_LOGIN_PASSWORD or --login-password-file",
                ),
                "ak-stage-identification" => failure(
                    format!("authentik did not accept the user {:?} in flow {flow:?}: {errors}", self.username),
                    "give an authentik user name or e-mail that exists and is active (--login)",
                ),
                _ => failure(
                    format!("authentik refused the answer to stage {component} in flow {flow:?}: {errors}"),
                    "sign in once in a browser to see what the flow asks",
                ),
            });
        }
        match component {
            "ak-stage-identification" => {
                let mut body = json!({"component": component, "uid_field": self.username});
                // An identification stage with the password on the same page.
                if challenge.get("password_fields").and_then(Value::as_bool) == Some(true) {
                    body["password"] = json!(self.password.expose());
                }
                Ok(Next::Answer(body))
            }
            "ak-stage-password" => Ok(Next::Answer(
                json!({"component": component, "password": self.password.expose()}),
            )),
            "ak-stage-consent" => Ok(Next::Answer(json!({
                "component": component,
                "token": challenge.get("token").cloned().unwrap_or(Value::Null),
            }))),
            "xak-flow-redirect" => {
                let to = challenge.get("to").and_then(Value::as_str).unwrap_or("/");
                let location = executor_url.join(to).map_err(|_| {
                    failure(
                        format!("authentik's flow {flow:?} redirects to {to:?}, which is no URL"),
                        "look at the flow in authentik",
                    )
                })?;
                self.after_redirect(location)
            }
            "ak-stage-access-denied" => Err(failure(
                format!(
                    "authentik denied {:?} access in flow {flow:?}: {}",
                    self.username,
                    challenge
                        .get("error_message")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                ),
                "the user may not use this application: check the application's policy bindings (the blueprint's group) and the user's state in authentik",
            )),
            other => Err(failure(
                format!("authentik's flow {flow:?} asks for stage {other}, which a login without a person cannot answer (MFA, a captcha or a prompt)"),
                "use a test user whose login asks only for user name and password, or exclude it from that stage in authentik",
            )),
        }
    }
}

/// `/if/flow/<flow>/?<query>` (the flow's web page) as its executor API URL and the flow.
fn flow_interface(url: &Url) -> Option<(Url, String)> {
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    let ["if", "flow", flow] = segments.as_slice() else {
        return None;
    };
    let mut executor = url.join(&format!("/api/v3/flows/executor/{flow}/")).ok()?;
    executor
        .query_pairs_mut()
        .append_pair("query", url.query().unwrap_or_default());
    Some((executor, flow.to_string()))
}

/// Whether `location` is AFFiNE's callback (its query aside).
fn is_callback(location: &Url, callback: &str) -> bool {
    Url::parse(callback).is_ok_and(|c| {
        c.scheme() == location.scheme()
            && c.host_str() == location.host_str()
            && c.port_or_known_default() == location.port_or_known_default()
            && c.path() == location.path()
    })
}

/// A URL for messages: its query holds AFFiNE's state and PKCE values, which say nothing
/// to a reader.
fn without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

/// A challenge's `response_errors` (`{"password": [{"string": "Invalid password", ...}]}`)
/// as one line, or `None` when it has none.
fn response_errors(challenge: &Value) -> Option<String> {
    let errors = challenge.get("response_errors")?.as_object()?;
    let lines: Vec<String> = errors
        .values()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.get("string").and_then(Value::as_str).map(str::to_string))
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// authentik's 400 page for an authorize request it refuses: which of the two (recorded:
/// "Redirect URI Error", "Client ID Error"), and what to do.
fn authorize_refusal(page: &str, callback: &str) -> Failure {
    if page.contains("Redirect URI Error") {
        failure(
            format!("authentik refused the redirect URI {callback} (its \"Redirect URI Error\" page)"),
            "the provider's redirect_uris must allow AFFiNE's callback exactly: regenerate the blueprint with AFFiNE's URL (--affine-url) and apply it",
        )
    } else if page.contains("Client ID Error") {
        failure(
            "authentik knows no provider with the client id AFFiNE sends (its \"Client ID Error\" page)",
            "make AFFiNE's clientId (affine_oidc client_id) the provider's client_id, and check that the blueprint is applied",
        )
    } else {
        failure(
            "authentik refused AFFiNE's authorize request (HTTP 400)",
            "look at authentik's server log",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_page_maps_to_its_executor_with_the_page_query() {
        let page = Url::parse("https://auth.example.com/if/flow/default-authentication-flow/?client_id=x&next=%2Fapplication%2Fo%2Fauthorize%2F").unwrap();
        let (executor, flow) = flow_interface(&page).unwrap();
        assert_eq!(flow, "default-authentication-flow");
        assert_eq!(
            executor.path(),
            "/api/v3/flows/executor/default-authentication-flow/"
        );
        let query: Vec<(String, String)> = executor.query_pairs().into_owned().collect();
        assert_eq!(
            query,
            [(
                "query".to_string(),
                "client_id=x&next=%2Fapplication%2Fo%2Fauthorize%2F".to_string()
            )]
        );
        assert!(flow_interface(
            &Url::parse("https://auth.example.com/flows/-/default/authentication/").unwrap()
        )
        .is_none());
    }

    #[test]
    fn the_callback_is_recognised_by_origin_and_path() {
        let cb = "https://affine.example.com/oauth/callback";
        assert!(is_callback(
            &Url::parse("https://affine.example.com/oauth/callback?code=c&state=s").unwrap(),
            cb
        ));
        assert!(is_callback(
            &Url::parse("https://affine.example.com:443/oauth/callback").unwrap(),
            cb
        ));
        assert!(!is_callback(
            &Url::parse("https://auth.example.com/oauth/callback").unwrap(),
            cb
        ));
        assert!(!is_callback(
            &Url::parse("https://affine.example.com/oauth/callbackx").unwrap(),
            cb
        ));
    }

    #[test]
    fn response_errors_read_as_one_line() {
        let challenge = json!({"component": "ak-stage-password", "response_errors": {"password": [{"string": "Invalid password", "code": "invalid"}]}});
        assert_eq!(
            response_errors(&challenge).as_deref(),
            Some("Invalid password")
        );
        assert_eq!(response_errors(&json!({"response_errors": {}})), None);
        assert_eq!(response_errors(&json!({})), None);
    }
}
