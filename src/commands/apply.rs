//! `apply`: the `affine_oidc` module's reconcile from flags and the environment, with
//! human-readable output. Flags become the module's parameters, so both paths check and
//! behave the same.

use serde_json::{json, Map, Value};

use crate::ansible::affine_oidc::{self, report_pair};
use crate::ansible::params;
use crate::blueprint::options::DEFAULT_SECRET_ENV;
use crate::cli::ApplyArgs;
use crate::commands::warn;
use crate::error::{Error, Result};
use crate::oidc_setting::reconcile;
use crate::secret::Redactor;

pub fn run(args: &ApplyArgs) -> Result<()> {
    let mut redactor = Redactor::new();
    let result = run_redacted(args, &mut redactor);
    // Errors may quote what a server said, which may quote a secret.
    result.map_err(|e| match e {
        Error::Usage(m) => Error::Usage(redactor.text(&m)),
        Error::Failed(m) => Error::Failed(redactor.text(&m)),
    })
}

fn run_redacted(args: &ApplyArgs, redactor: &mut Redactor) -> Result<()> {
    let mut raw = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            raw.insert(k.into(), v);
        }
    };
    put("affine_url", args.affine_url.clone().map(Value::from));
    put("admin_email", args.admin_email.clone().map(Value::from));
    put("config_file", args.config_file.clone().map(Value::from));
    put("backup", Some(Value::Bool(args.backup)));
    put("issuer", args.oidc.issuer.clone().map(Value::from));
    put(
        "authentik_url",
        // --issuer wins over --authentik-url (which AUTHENTIK_URL may fill in), as elsewhere.
        args.oidc
            .authentik_url
            .clone()
            .filter(|_| args.oidc.issuer.is_none())
            .map(Value::from),
    );
    put("slug", args.oidc.slug.clone().map(Value::from));
    put("client_id", args.oidc.client_id.clone().map(Value::from));
    put(
        "client_secret",
        std::env::var(DEFAULT_SECRET_ENV)
            .ok()
            .filter(|s| !s.is_empty())
            .map(Value::from),
    );
    if !args.args.is_empty() {
        let mut map = Map::new();
        for pair in &args.args {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| Error::usage(format!("--arg {pair:?} is not KEY=VALUE")))?;
            map.insert(k.to_string(), Value::from(v));
        }
        put("args", Some(Value::Object(map)));
    }
    put(
        "state",
        Some(Value::from(if args.absent { "absent" } else { "present" })),
    );
    put("validate_certs", Some(Value::Bool(!args.http.insecure)));
    put(
        "ca_path",
        args.http
            .ca_path
            .as_ref()
            .map(|p| Value::from(p.display().to_string())),
    );
    put("timeout", Some(json!(args.http.timeout)));
    put("wait", Some(Value::Bool(args.wait.is_some())));
    put("wait_timeout", args.wait.map(|w| json!(w)));
    put("_ansible_check_mode", Some(Value::Bool(args.check)));

    let params = params::parse(&affine_oidc::SPEC, &Value::Object(raw), redactor).map_err(|e| {
        // Module wording ("client_secret is required") → where the CLI takes it from.
        Error::usage(e.message().replace(
            "client_secret",
            &format!("the client secret (env {DEFAULT_SECRET_ENV})"),
        ))
    })?;
    let request = affine_oidc::request_from_params(&params).map_err(|e| match e {
        Error::Usage(m) => Error::Usage(m.replace(
            "client_secret",
            &format!("the client secret (env {DEFAULT_SECRET_ENV})"),
        )),
        other => other,
    })?;
    let outcome = reconcile(&request, redactor)?;
    for w in &outcome.warnings {
        warn(w);
    }
    let mark = if outcome.changed { "changed" } else { "ok" };
    println!("{mark}: {}", outcome.msg);
    if args.diff && outcome.changed {
        let (before, after) = report_pair(&outcome);
        print_diff(&before, &after);
    }
    match outcome.failure {
        Some(failure) => Err(Error::Failed(failure)),
        None => Ok(()),
    }
}

/// A line diff of two flat JSON objects: `-` lines before, `+` lines after.
fn print_diff(before: &Value, after: &Value) {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    println!("--- before");
    println!("+++ after");
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for key in keys.into_iter().filter(|k| seen.insert(k.as_str())) {
        match (b.get(key), a.get(key)) {
            (Some(x), Some(y)) if x == y => println!("  {key}: {x}"),
            (x, y) => {
                if let Some(x) = x {
                    println!("- {key}: {x}");
                }
                if let Some(y) = y {
                    println!("+ {key}: {y}");
                }
            }
        }
    }
}
