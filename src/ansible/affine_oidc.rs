//! The `affine_oidc` module: AFFiNE's OIDC provider setting, through the admin API or
//! `config.json`. Parameters → [`Request`] → [`reconcile`] → result, like
//! community.general's keycloak modules: `existing`, `proposed`, `end_state`, `diff`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::affine::client::{
    Credentials, PasswordWithoutEmail, ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV, SESSION_TOKEN_ENV,
};
use crate::affine::oidc_value::OidcValue;
use crate::ansible::params::{Kind, Param, Params, Spec};
use crate::error::{Error, Result};
use crate::http::HttpOptions;
use crate::names::NameStyle;
use crate::oidc_client::{resolve_client_id, resolve_issuer, resolve_slug};
use crate::oidc_setting::{reconcile, Backend, Desired, Outcome, Request};
use crate::secret::{Redactor, MASK};
use crate::web_url::BaseUrl;

pub const NAME: &str = "affine_oidc";
pub const DOCS: &str = include_str!("docs/affine_oidc.yml");

pub static SPEC: Spec = Spec {
    module: NAME,
    params: &[
        Param::new("affine_url", Kind::Str).env("AFFINE_URL"),
        Param::new("admin_email", Kind::Str).env(ADMIN_EMAIL_ENV),
        Param::new("admin_password", Kind::Str)
            .env(ADMIN_PASSWORD_ENV)
            .no_log(),
        Param::new("session_token", Kind::Str)
            .env(SESSION_TOKEN_ENV)
            .no_log(),
        Param::new("config_file", Kind::Path),
        Param::new("backup", Kind::Bool).default("false"),
        Param::new("force", Kind::Bool).default("false"),
        Param::new("issuer", Kind::Str),
        Param::new("authentik_url", Kind::Str),
        Param::new("slug", Kind::Str),
        Param::new("client_id", Kind::Str),
        Param::new("client_secret", Kind::Str).no_log(),
        Param::new("args", Kind::Dict),
        Param::new("state", Kind::Str)
            .default("\"present\"")
            .choices(&["present", "absent"]),
        Param::new("validate_certs", Kind::Bool).default("true"),
        Param::new("ca_path", Kind::Path),
        Param::new("timeout", Kind::Int).default("30"),
        Param::new("wait", Kind::Bool).default("false"),
        Param::new("wait_timeout", Kind::Int).default("120"),
    ],
    mutually_exclusive: &[
        &["issuer", "authentik_url"],
        &["session_token", "admin_password"],
        &["config_file", "session_token"],
        &["config_file", "admin_password"],
    ],
};

pub fn run(params: &Params, redactor: &mut Redactor) -> Result<Map<String, Value>> {
    let request = request_from_params(params)?;
    let outcome = reconcile(&request, redactor)?;
    Ok(result(&outcome, &request, params.internal.diff))
}

/// Seconds from an int parameter, which must be positive.
fn seconds(params: &Params, name: &str) -> Result<Duration> {
    match params.int(name) {
        Some(n) if n > 0 => crate::http::timeout_from_secs(name, n as u64),
        _ => Err(Error::usage(format!(
            "{name} must be a positive number of seconds"
        ))),
    }
}

pub fn http_options(params: &Params) -> Result<HttpOptions> {
    Ok(HttpOptions {
        validate_certs: params.bool("validate_certs"),
        ca_path: params.str("ca_path").map(PathBuf::from),
        timeout: seconds(params, "timeout")?,
    })
}

pub fn request_from_params(params: &Params) -> Result<Request> {
    let affine_url = params
        .str("affine_url")
        .map(|u| BaseUrl::parse("affine_url", &u))
        .transpose()?;
    // Both halves are checked before either error is reported: a user missing the
    // credentials and the client secret hears of both at once, not one per try.
    let (backend, desired) = match (
        backend_from_params(params, affine_url.as_ref()),
        desired_from_params(params, affine_url.as_ref()),
    ) {
        (Ok(backend), Ok(desired)) => (backend, desired),
        (Err(Error::Usage(a)), Err(Error::Usage(b))) => {
            return Err(Error::usage(format!("{a}; and {b}")))
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    Ok(Request {
        backend,
        desired,
        check_mode: params.internal.check_mode,
    })
}

fn backend_from_params(params: &Params, affine_url: Option<&BaseUrl>) -> Result<Backend> {
    if let Some(path) = params.str("config_file") {
        return Ok(Backend::File {
            path: PathBuf::from(path),
            backup: params.bool("backup"),
            force: params.bool("force"),
        });
    }
    let url = affine_url.cloned().ok_or_else(|| {
        Error::usage(
            "one of affine_url (or the environment variable AFFINE_URL) or config_file is required",
        )
    })?;
    Ok(Backend::Api {
        url,
        credentials: credentials(params)?,
        http: http_options(params)?,
        wait: if params.bool("wait") {
            Some(seconds(params, "wait_timeout")?)
        } else {
            None
        },
    })
}

fn desired_from_params(params: &Params, affine_url: Option<&BaseUrl>) -> Result<Desired> {
    if params.str("state").as_deref() == Some("absent") {
        return Ok(Desired::Absent);
    }
    let slug = resolve_slug(
        params.str("slug").as_deref(),
        params.str("issuer").as_deref(),
        NameStyle::Module,
    )?;
    let issuer = resolve_issuer(
        params.str("issuer").as_deref(),
        params.str("authentik_url").as_deref(),
        &slug,
        NameStyle::Module,
    )?;
    let client_id = resolve_client_id(
        params.str("client_id").as_deref(),
        affine_url,
        &slug,
        NameStyle::Module,
    )?;
    let client_secret = params
        .secret("client_secret")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::usage("client_secret is required with state=present"))?;
    Ok(Desired::Present(OidcValue {
        issuer,
        client_id,
        client_secret,
        args: params.dict("args").unwrap_or_default(),
    }))
}

/// The task gave no way to sign in as AFFiNE's administrator.
pub const MISSING_CREDENTIALS: &str = "AFFiNE's administrator is missing: give admin_email and admin_password, or session_token (each may come from the environment instead: AFFINE_ADMIN_EMAIL, AFFINE_ADMIN_PASSWORD, AFFINE_SESSION_TOKEN)";

/// Explicit task parameters win over the environment; of two from the environment, the
/// session token (one request fewer, no rate-limited sign-in).
fn credentials(params: &Params) -> Result<Credentials> {
    let token = || {
        params
            .secret("session_token")
            .filter(|s| !s.is_empty())
            .map(Credentials::SessionToken)
    };
    let password = || -> Result<Option<Credentials>> {
        let Some(password) = params.secret("admin_password") else {
            return Ok(None);
        };
        let email = params
            .str("admin_email")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                Error::usage("admin_password needs admin_email (or AFFINE_ADMIN_EMAIL)")
            })?;
        Ok(Some(Credentials::Password { email, password }))
    };
    let chosen = if params.given("admin_password") {
        password()?
    } else if params.given("session_token") {
        token()
    } else {
        // Both from the environment: the rule `verify` uses for the same variables.
        Credentials::choose(
            params.secret("session_token"),
            params.str("admin_email"),
            params.secret("admin_password"),
        )
        .map_err(|PasswordWithoutEmail| {
            Error::usage("admin_password needs admin_email (or AFFINE_ADMIN_EMAIL)")
        })?
    };
    chosen.ok_or_else(|| Error::usage(MISSING_CREDENTIALS))
}

/// Before/after for reports. Secrets are masks; a changed secret shows as a different mask
/// so the diff still says the secret changed.
pub fn report_pair(outcome: &Outcome) -> (Value, Value) {
    let secret_changed = outcome.changed_fields.contains(&"clientSecret");
    let before = outcome
        .before
        .as_ref()
        .map(OidcValue::to_report)
        .unwrap_or_else(|| json!({}));
    let mut after = outcome
        .after
        .as_ref()
        .map(OidcValue::to_report)
        .unwrap_or_else(|| json!({}));
    if secret_changed && after.get("clientSecret").and_then(Value::as_str) == Some(MASK) {
        after["clientSecret"] = Value::String(format!("{MASK} (changed)"));
    }
    (before, after)
}

fn result(outcome: &Outcome, request: &Request, want_diff: bool) -> Map<String, Value> {
    let plain = |v: &Option<OidcValue>| {
        v.as_ref()
            .map(OidcValue::to_report)
            .unwrap_or_else(|| json!({}))
    };
    let (existing, proposed) = (plain(&outcome.before), plain(&outcome.after));
    let end_state = if outcome.changed {
        proposed.clone()
    } else {
        existing.clone()
    };
    let mut r = Map::new();
    r.insert("changed".into(), Value::Bool(outcome.changed));
    r.insert("msg".into(), Value::String(outcome.msg.clone()));
    r.insert("existing".into(), existing);
    r.insert("proposed".into(), proposed);
    r.insert("end_state".into(), end_state);
    if want_diff {
        let (before, after) = report_pair(outcome);
        let target = match &request.backend {
            Backend::Api { url, .. } => format!("{url} oauth/providers.oidc"),
            Backend::File { path, .. } => format!("{} oauth.providers.oidc", path.display()),
        };
        r.insert(
            "diff".into(),
            json!({"before": before, "after": after, "before_header": target, "after_header": target}),
        );
    }
    if let Some(v) = &outcome.server_version {
        r.insert("affine_version".into(), Value::String(v.clone()));
    }
    if let Some(reg) = outcome.oidc_registered {
        r.insert("oidc_registered".into(), Value::Bool(reg));
    }
    if let Some(b) = &outcome.backup_file {
        r.insert("backup_file".into(), Value::String(b.display().to_string()));
    }
    if let Some(failure) = &outcome.failure {
        // The write (if any) stands: `changed` says so, `failed` says the wait did not end well.
        r.insert("failed".into(), Value::Bool(true));
        r.insert("msg".into(), Value::String(failure.clone()));
    }
    if !outcome.warnings.is_empty() {
        r.insert("warnings".into(), json!(outcome.warnings));
    }
    r
}
