//! AFFiNE's OIDC provider value, `oauth` / `providers.oidc`:
//! `{"args": {...}, "issuer": "...", "clientId": "...", "clientSecret": "..."}`.
//! The same object in the admin panel, the GraphQL API and `config.json`.

use serde_json::{json, Map, Value};

use crate::secret::{Secret, MASK};
use crate::web_url::same_issuer;

#[derive(Debug, Clone, PartialEq)]
pub struct OidcValue {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub args: Map<String, Value>,
}

impl OidcValue {
    /// AFFiNE's defaults, which `state: absent` writes back.
    pub fn empty() -> Self {
        OidcValue {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            args: Map::new(),
        }
    }

    /// Reads what AFFiNE holds. Missing fields take AFFiNE's defaults (`args` missing is
    /// `{}`); a non-object is treated as the defaults.
    pub fn from_affine(value: &Value) -> Self {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        OidcValue {
            issuer: text("issuer"),
            client_id: text("clientId"),
            client_secret: Secret::new(text("clientSecret")),
            args: value
                .get("args")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// The value as AFFiNE takes it, secret included: for a request body or a file the
    /// user asked for, never for a report.
    pub fn to_affine_revealed(&self) -> Value {
        json!({
            "args": self.args,
            "issuer": self.issuer,
            "clientId": self.client_id,
            "clientSecret": self.client_secret.expose(),
        })
    }

    /// The value for reports: the secret as a mask (or empty when unset, so a reader can
    /// tell "no secret" from "a secret").
    pub fn to_report(&self) -> Value {
        json!({
            "args": self.args,
            "issuer": self.issuer,
            "clientId": self.client_id,
            "clientSecret": if self.client_secret.is_empty() { "" } else { MASK },
        })
    }

    /// The names of the fields that differ (`issuer`, `clientId`, `clientSecret`, `args`).
    pub fn differences(&self, other: &OidcValue) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !same_issuer(&self.issuer, &other.issuer) {
            out.push("issuer");
        }
        if self.client_id != other.client_id {
            out.push("clientId");
        }
        if self.client_secret != other.client_secret {
            out.push("clientSecret");
        }
        if self.args != other.args {
            out.push("args");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_args_reads_as_empty_and_trailing_slash_is_no_change() {
        let stored = OidcValue::from_affine(
            &json!({"issuer": "https://a/application/o/x", "clientId": "c", "clientSecret": "s"}),
        );
        let wanted = OidcValue {
            issuer: "https://a/application/o/x/".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            args: Map::new(),
        };
        assert!(stored.differences(&wanted).is_empty());
    }

    #[test]
    fn a_changed_secret_is_a_difference_but_never_shown() {
        let a = OidcValue::from_affine(&json!({"clientSecret": "old-secret"}));
        let b = OidcValue::from_affine(&json!({"clientSecret": "new-secret"}));
        assert_eq!(a.differences(&b), vec!["clientSecret"]);
        assert!(!a.to_report().to_string().contains("old-secret"));
        assert_eq!(b.to_affine_revealed()["clientSecret"], "new-secret");
    }
}
