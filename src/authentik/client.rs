//! authentik's API with a token (`Authorization: Bearer`). Nothing else in the project
//! builds requests to authentik.

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
        }
    }
}

pub struct AuthentikClient {
    http: Client,
    base: BaseUrl,
    token: Secret,
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
        })
    }

    fn what(&self) -> String {
        format!("authentik at {}", self.base)
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
        let text = response
            .text()
            .map_err(|e| describe_transport_error(&self.what(), &e))?;
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
        if text.trim().is_empty() {
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
                "{} runs version {current:?}, which this tool does not know; give authentik_version",
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

    /// Applies now instead of at authentik's next hourly run; fails unless authentik reports
    /// the apply successful.
    pub fn apply(&self, pk: &str) -> Result<Instance> {
        let url = self.base.join(&format!("{INSTANCES}{pk}/apply/"));
        let answer = self.send(self.http.post(url))?;
        let instance = Instance::from_json(&self.expect_ok(answer, "apply the blueprint")?);
        if !instance.status.is_empty() && instance.status != "successful" {
            return Err(Error::failed(format!(
                "{} applied the blueprint {:?} with status {:?}; see System > Blueprints in authentik for its logs",
                self.what(),
                instance.name,
                instance.status
            )));
        }
        Ok(instance)
    }

    pub fn delete_instance(&self, pk: &str) -> Result<()> {
        let url = self.base.join(&format!("{INSTANCES}{pk}/"));
        let answer = self.send(self.http.delete(url))?;
        self.expect_ok(answer, "delete the blueprint instance")
            .map(|_| ())
    }

    /// The OAuth2 provider assigned to the application `slug`, as authentik's API shows it.
    pub fn provider_for_application(&self, slug: &str) -> Result<Option<Value>> {
        let answer = self.send(
            self.http
                .get(self.base.join("api/v3/providers/oauth2/"))
                .query(&[("application__slug", slug)]),
        )?;
        let body = self.expect_ok(answer, "list OAuth2 providers")?;
        Ok(body
            .get("results")
            .and_then(Value::as_array)
            .and_then(|r| r.first())
            .cloned())
    }

    /// The primary keys of the managed scope mappings with these `managed` keys.
    pub fn scope_mapping_pks(
        &self,
        version: AuthentikVersion,
        managed: &[String],
    ) -> Result<Vec<(String, String)>> {
        let query: Vec<(&str, &str)> = managed.iter().map(|m| ("managed", m.as_str())).collect();
        let url = self.base.join(version.scope_mappings_endpoint());
        let answer = self.send(self.http.get(url).query(&query))?;
        let body = self.expect_ok(answer, "list scope mappings")?;
        Ok(body
            .get("results")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|m| {
                        let pk = m
                            .get("pk")
                            .or_else(|| m.get("pm_uuid"))?
                            .as_str()?
                            .to_string();
                        let key = m.get("managed")?.as_str()?.to_string();
                        Some((key, pk))
                    })
                    .collect()
            })
            .unwrap_or_default())
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
