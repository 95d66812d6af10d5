//! authentik's API with a token (`Authorization: Bearer`). Nothing else in the project
//! builds requests to authentik.

use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};

use crate::authentik_version::AuthentikVersion;
use crate::error::{Error, Result};
use crate::http::{describe_transport_error, HttpOptions};
use crate::secret::Secret;
use crate::web_url::BaseUrl;

const INSTANCES: &str = "api/v3/managed/blueprints/";

/// A managed blueprint instance, as far as this tool cares.
#[derive(Debug, Clone)]
pub struct Instance {
    pub pk: String,
    pub name: String,
    pub content: String,
    pub status: String,
    pub last_applied: String,
    pub last_applied_hash: String,
}

impl Instance {
    fn from_json(v: &Value) -> Self {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Instance {
            pk: s("pk"),
            name: s("name"),
            content: s("content"),
            status: s("status"),
            last_applied: s("last_applied"),
            last_applied_hash: s("last_applied_hash"),
        }
    }
}

pub struct AuthentikClient {
    http: Client,
    base: BaseUrl,
    token: Secret,
    /// How long [`AuthentikClient::apply`] waits for a queued apply to finish.
    wait: Duration,
}

impl AuthentikClient {
    pub fn new(base: BaseUrl, token: Secret, options: &HttpOptions) -> Result<Self> {
        if token.is_empty() {
            return Err(Error::usage("the authentik API token is empty"));
        }
        Ok(AuthentikClient {
            http: options.client()?,
            base,
            token,
            wait: options.timeout,
        })
    }

    /// "authentik at <url>", for messages.
    pub fn what(&self) -> String {
        format!("authentik at {}", self.base)
    }

    pub fn base(&self) -> &BaseUrl {
        &self.base
    }

    fn authed(&self, builder: RequestBuilder) -> RequestBuilder {
        builder.bearer_auth(self.token.expose())
    }

    /// Sends, and returns (status, JSON body or Null for an empty body).
    fn send(&self, builder: RequestBuilder) -> Result<(u16, Value)> {
        let response = self
            .authed(builder)
            .send()
            .map_err(|e| describe_transport_error(&self.what(), &e))?;
        let status = response.status().as_u16();
        let text =
            crate::http::read_body_capped(response, &self.what(), crate::http::MAX_BODY_BYTES)?;
        if status == 401 || status == 403 {
            return Err(Error::failed(format!(
                "{} refused the token (HTTP {status}); check authentik_token (AUTHENTIK_TOKEN): an API token of a user with rights on blueprints",
                self.what()
            )));
        }
        if status >= 500 {
            return Err(Error::failed(format!(
                "{} failed with HTTP {status}; look at authentik's logs",
                self.what()
            )));
        }
        // Django's own 404 page (a route this authentik does not have) is HTML: the caller
        // decides what a missing route means.
        if text.trim().is_empty() || (status == 404 && !text.trim_start().starts_with('{')) {
            return Ok((status, Value::Null));
        }
        let body = serde_json::from_str(&text).map_err(|_| {
            Error::failed(format!(
                "{} did not answer with JSON (HTTP {status}); is the URL authentik's own?",
                self.what()
            ))
        })?;
        Ok((status, body))
    }

    fn expect_ok(&self, (status, body): (u16, Value), doing: &str) -> Result<Value> {
        if (200..300).contains(&status) {
            return Ok(body);
        }
        if status == 405 && body.is_null() {
            return Err(Error::failed(format!(
                "{} could not {doing}: it answered HTTP 405 with an empty page, which is authentik's own error page for a request that crashed on its side (its error view serves only GET), not a refusal of the method. \
                 It usually means authentik could not read the blueprint (content that is not valid YAML), or, on authentik 2025.2 and newer, that an entry is invalid \
                 and authentik crashed while logging why (an entry that refers to an earlier one with !KeyOf: an object its !Find did not find, such as a group, or a value a custom template sets that authentik refuses); \
                 authentik's server log shows the cause as a system_exception event, and the same blueprint on a file in authentik's blueprints directory shows its logs under System > Blueprints",
                self.what()
            )));
        }
        Err(Error::failed(format!(
            "{} refused to {doing} (HTTP {status}): {}",
            self.what(),
            validation_logs(&body)
        )))
    }

    /// The running version (`/api/v3/admin/version/`).
    pub fn version(&self) -> Result<AuthentikVersion> {
        let body = self.send(self.http.get(self.base.join("api/v3/admin/version/")))?;
        let body = self.expect_ok(body, "tell its version")?;
        let current = body
            .get("version_current")
            .and_then(Value::as_str)
            .unwrap_or_default();
        AuthentikVersion::parse(current).map_err(|_| {
            Error::failed(format!(
                "{} runs version {current:?}, which this tool does not know (it supports 2024.6 and newer); give authentik_version",
                self.what()
            ))
        })
    }

    pub fn find_instance(&self, name: &str) -> Result<Option<Instance>> {
        let body = self.send(
            self.http
                .get(self.base.join(INSTANCES))
                .query(&[("name", name)]),
        )?;
        let body = self.expect_ok(body, "list blueprint instances")?;
        Ok(body
            .get("results")
            .and_then(Value::as_array)
            .and_then(|r| r.iter().map(Instance::from_json).find(|i| i.name == name)))
    }

    /// Creates an instance; authentik validates the content (a dry run) and answers 400
    /// with its logs when the blueprint would not apply.
    pub fn create_instance(&self, name: &str, content: &str) -> Result<Instance> {
        let body =
            json!({"name": name, "path": "", "content": content, "context": {}, "enabled": true});
        let answer = self.send(self.http.post(self.base.join(INSTANCES)).json(&body))?;
        Ok(Instance::from_json(
            &self.expect_ok(answer, "take the blueprint")?,
        ))
    }

    pub fn update_content(&self, pk: &str, content: &str) -> Result<Instance> {
        let url = self.base.join(&format!("{INSTANCES}{pk}/"));
        let answer = self.send(self.http.patch(url).json(&json!({"content": content})))?;
        Ok(Instance::from_json(
            &self.expect_ok(answer, "take the blueprint")?,
        ))
    }

    /// Applies now instead of at authentik's next hourly run, and waits for the outcome.
    /// `before` is the instance as it was before this apply (the create or update answer).
    /// Older authentik applies before answering; the Dramatiq-based versions only queue the
    /// task and answer with the instance as it was (status `unknown` right after a create),
    /// so the instance is read again until the apply shows in it: authentik saves the
    /// instance when the task ends, moving `last_applied` (and, on success, the hash).
    pub fn apply(&self, before: &Instance) -> Result<Instance> {
        let url = self.base.join(&format!("{INSTANCES}{}/apply/", before.pk));
        let answer = self.send(self.http.post(url))?;
        let mut instance = Instance::from_json(&self.expect_ok(answer, "apply the blueprint")?);
        let deadline = Instant::now() + self.wait;
        loop {
            match apply_outcome(before, &instance) {
                Some(true) => return Ok(instance),
                Some(false) => {
                    return Err(Error::failed(format!(
                        "{} applied the blueprint {:?} with status {:?}; see System > Blueprints in authentik for its logs",
                        self.what(),
                        instance.name,
                        instance.status
                    )))
                }
                None if Instant::now() >= deadline => {
                    return Err(Error::failed(format!(
                        "{} has not finished applying the blueprint {:?} after {} s (status {:?}); see System > Blueprints in authentik, and its worker",
                        self.what(),
                        instance.name,
                        self.wait.as_secs(),
                        instance.status
                    )))
                }
                None => std::thread::sleep(Duration::from_millis(200)),
            }
            let url = self.base.join(&format!("{INSTANCES}{}/", before.pk));
            let answer = self.send(self.http.get(url))?;
            instance = Instance::from_json(&self.expect_ok(answer, "show the blueprint instance")?);
        }
    }

    pub fn delete_instance(&self, pk: &str) -> Result<()> {
        let url = self.base.join(&format!("{INSTANCES}{pk}/"));
        let answer = self.send(self.http.delete(url))?;
        self.expect_ok(answer, "delete the blueprint instance")
            .map(|_| ())
    }

    /// The OAuth2 provider assigned to the application `slug`, as authentik's API shows it.
    /// Looked up through the application (its detail route takes the slug): the provider
    /// list has no slug filter, and authentik ignores a filter it does not know, so a list
    /// query would answer with every provider.
    pub fn provider_for_application(&self, slug: &str) -> Result<Option<Value>> {
        let url = self.base.join(&format!("api/v3/core/applications/{slug}/"));
        let (status, body) = self.send(self.http.get(url))?;
        if status == 404 {
            return Ok(None);
        }
        let application = self.expect_ok((status, body), "show the application")?;
        let provider = match application.get("provider") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => return Ok(None),
        };
        let url = self
            .base
            .join(&format!("api/v3/providers/oauth2/{provider}/"));
        let (status, body) = self.send(self.http.get(url))?;
        if status == 404 {
            return Ok(None); // a provider of another kind
        }
        self.expect_ok((status, body), "show the OAuth2 provider")
            .map(Some)
    }

    /// The objects at the list route `route` whose fields equal every `(field, value)` of
    /// `criteria`, as a blueprint's `!Find` would find them. The criteria go along as query
    /// filters, but authentik ignores a filter a route does not know, so every result is
    /// compared here again; when the answer is one page of more than it shows and nothing
    /// matched, the lookup cannot tell and says so.
    pub fn find_objects(&self, route: &str, criteria: &[(String, String)]) -> Result<Lookup> {
        let mut query: Vec<(&str, &str)> = criteria
            .iter()
            .map(|(f, v)| (f.as_str(), v.as_str()))
            .collect();
        query.push(("page_size", "100"));
        let (status, body) = self.send(self.http.get(self.base.join(route)).query(&query))?;
        if status == 404 {
            // An authentik without this list (or a path this tool has wrong): authentik
            // still checks the blueprint itself.
            return Ok(Lookup::Unknown);
        }
        let body = self.expect_ok((status, body), "list objects")?;
        let results = body
            .get("results")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let matching: Vec<Value> = results
            .iter()
            .filter(|o| {
                criteria
                    .iter()
                    .all(|(field, wanted)| field_equals(o.get(field), wanted))
            })
            .cloned()
            .collect();
        if !matching.is_empty() {
            return Ok(Lookup::Found(matching));
        }
        let total = body
            .get("pagination")
            .and_then(|p| p.get("count"))
            .and_then(Value::as_u64)
            .unwrap_or(results.len() as u64);
        Ok(if total > results.len() as u64 {
            Lookup::Unknown
        } else {
            Lookup::Missing
        })
    }

    /// One scope mapping by primary key (its `scope_name`, `managed` key and `expression`),
    /// `None` when authentik has no such mapping.
    pub fn scope_mapping(&self, version: AuthentikVersion, pk: &str) -> Result<Option<Value>> {
        let route = format!(
            "{}{pk}/",
            version.scope_mappings_endpoint().trim_start_matches('/')
        );
        let (status, body) = self.send(self.http.get(self.base.join(&route)))?;
        if status == 404 {
            return Ok(None);
        }
        self.expect_ok((status, body), "show a scope mapping")
            .map(Some)
    }
}

/// What a lookup of the objects a blueprint refers to found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Vec<Value>),
    Missing,
    /// The answer could not tell (no such list route, or more results than one page).
    Unknown,
}

/// A field of an API object against a `!Find` value, as Django's exact filter compares:
/// numbers (integer pks) equal their text.
fn field_equals(have: Option<&Value>, wanted: &str) -> bool {
    match have {
        Some(Value::String(s)) => s == wanted,
        Some(Value::Number(n)) => n.to_string() == wanted,
        Some(Value::Bool(b)) => b.to_string().eq_ignore_ascii_case(wanted),
        _ => false,
    }
}

/// Whether an apply has ended, judged from the instance before and now: `Some(true)` applied,
/// `Some(false)` failed, `None` still queued or running.
fn apply_outcome(before: &Instance, now: &Instance) -> Option<bool> {
    let moved = now.last_applied != before.last_applied
        || now.last_applied_hash != before.last_applied_hash;
    match now.status.as_str() {
        // An authentik that reports no status: nothing to wait for.
        "" => Some(true),
        "successful" | "warning" if moved => Some(true),
        // A fresh error, or an earlier error saved again by this apply.
        "error" if moved || before.status != "error" => Some(false),
        _ => None,
    }
}

/// authentik's validation answer (`{"content": ["Failed to validate blueprint", "<log>", ...]}`
/// or `{"detail": ...}`) as readable lines.
fn validation_logs(body: &Value) -> String {
    match body {
        Value::Object(map) => map
            .iter()
            .map(|(field, v)| {
                let lines: Vec<String> = match v {
                    Value::Array(items) => items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| i.to_string())
                        })
                        .collect(),
                    Value::String(s) => vec![s.clone()],
                    other => vec![other.to_string()],
                };
                format!("{field}: {}", lines.join("; "))
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => "no details".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(status: &str, last_applied: &str, hash: &str) -> Instance {
        Instance {
            pk: "pk".into(),
            name: "AFFiNE OIDC (affine)".into(),
            content: String::new(),
            status: status.into(),
            last_applied: last_applied.into(),
            last_applied_hash: hash.into(),
        }
    }

    #[test]
    fn an_apply_is_done_only_when_the_instance_shows_it() {
        // Created, then applied before the answer (older authentik): done.
        let created = instance("unknown", "t1", "");
        assert_eq!(
            apply_outcome(&created, &instance("successful", "t2", "h1")),
            Some(true)
        );
        // Queued (Dramatiq versions): the answer is the instance as it was.
        assert_eq!(apply_outcome(&created, &created), None);
        // An update of an applied instance: its old `successful` is no answer yet.
        let updated = instance("successful", "t2", "h1");
        assert_eq!(apply_outcome(&updated, &updated), None);
        assert_eq!(
            apply_outcome(&updated, &instance("successful", "t3", "h2")),
            Some(true)
        );
        assert_eq!(
            apply_outcome(&updated, &instance("error", "t2", "h1")),
            Some(false)
        );
        // An instance that failed before: its old `error` is no answer either.
        let failed = instance("error", "t1", "");
        assert_eq!(apply_outcome(&failed, &failed), None);
        assert_eq!(
            apply_outcome(&failed, &instance("error", "t2", "")),
            Some(false)
        );
        assert_eq!(
            apply_outcome(&failed, &instance("warning", "t2", "h1")),
            Some(true)
        );
    }
}
