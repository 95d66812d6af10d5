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
    put("force", Some(Value::Bool(args.force)));
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
                .filter(|(k, _)| !k.trim().is_empty())
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

    let params = params::parse(&affine_oidc::SPEC, &Value::Object(raw), redactor)
        .map_err(|e| Error::usage(in_cli_words(e.message())))?;
    let request = affine_oidc::request_from_params(&params).map_err(|e| match e {
        Error::Usage(m) => Error::Usage(in_cli_words(&m)),
        other => other,
    })?;
    let outcome = reconcile(&request, redactor)?;
    // Everything printed passes the redactor, as the module's result does: a secret that
    // also occurs in the issuer or a server's message must not show there either.
    if let Some(before) = &outcome.before {
        redactor.add(&before.client_secret);
    }
    for w in &outcome.warnings {
        warn(&redactor.text(w));
    }
    let mark = if outcome.changed { "changed" } else { "ok" };
    println!("{mark}: {}", redactor.text(&outcome.msg));
    if args.diff && outcome.changed {
        let (mut before, mut after) = report_pair(&outcome);
        redactor.json(&mut before);
        redactor.json(&mut after);
        print_diff(&before, &after);
    }
    match outcome.failure {
        Some(failure) => Err(Error::Failed(failure)),
        None => Ok(()),
    }
}

/// The module's parameter names in a usage message, as this command's flags and
/// environment variables: "give issuer, or authentik_url" → "give --issuer, or --authentik-url".
fn in_cli_words(message: &str) -> String {
    // The module's credentials sentence names parameters and then the variables; a shell
    // user has the variables (and --admin-email), so say it once, their way.
    let message = message.replace(
        affine_oidc::MISSING_CREDENTIALS,
        "AFFiNE's administrator is missing: export AFFINE_ADMIN_EMAIL (or give --admin-email) and AFFINE_ADMIN_PASSWORD, or AFFINE_SESSION_TOKEN",
    );
    let message = message.as_str();
    const NAMES: [(&str, &str); 13] = [
        ("affine_url", "--affine-url"),
        ("admin_email", "--admin-email"),
        ("admin_password", "AFFINE_ADMIN_PASSWORD"),
        ("session_token", "AFFINE_SESSION_TOKEN"),
        ("client_secret", "AFFINE_OIDC_CLIENT_SECRET"),
        ("config_file", "--config-file"),
        ("issuer", "--issuer"),
        ("authentik_url", "--authentik-url"),
        ("slug", "--slug"),
        ("client_id", "--client-id"),
        ("ca_path", "--ca-path"),
        ("timeout", "--timeout"),
        ("wait_timeout", "--wait"),
    ];
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let mapped = NAMES
            .iter()
            .find(|(name, _)| *name == word.as_str())
            .map(|(_, cli)| *cli);
        out.push_str(mapped.unwrap_or(word));
        word.clear();
    };
    for c in message.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    // "argument '--slug'" reads as a flag; "argument 'AFFINE_ADMIN_PASSWORD'" is a variable.
    let mut out = out.replace("argument '--", "'--");
    for (_, cli) in NAMES.iter().filter(|(_, cli)| !cli.starts_with("--")) {
        out = out.replace(&format!("argument '{cli}'"), &format!("the variable {cli}"));
    }
    out
}

/// A line diff of two flat JSON objects: `-` lines before, `+` lines after.
fn print_diff(before: &Value, after: &Value) {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    println!("--- before");
    println!("+++ after");
    let keys: Vec<&String> = b.keys().chain(a.keys()).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_become_flags_and_variables_whole_words_only() {
        assert_eq!(
            in_cli_words(
                "give issuer, or authentik_url (with slug); wait_timeout must be positive"
            ),
            "give --issuer, or --authentik-url (with --slug); --wait must be positive"
        );
        assert_eq!(
            in_cli_words("admin_password needs admin_email"),
            "AFFINE_ADMIN_PASSWORD needs --admin-email"
        );
        assert_eq!(in_cli_words("issuers"), "issuers");
        assert_eq!(
            in_cli_words("argument 'admin_password' holds a control character"),
            "the variable AFFINE_ADMIN_PASSWORD holds a control character"
        );
        assert_eq!(in_cli_words("argument 'timeout' is 0"), "'--timeout' is 0");
    }
}
