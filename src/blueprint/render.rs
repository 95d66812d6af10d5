//! Turning a [`BlueprintSpec`] into YAML with minijinja.
//!
//! The built-in template is `templates/blueprint.yaml.j2`, compiled into the binary so the
//! tool works on its own; `--template` swaps in the user's file. Templates see the context
//! built in [`context`] and two filters: `yaml` (a value as a quoted YAML scalar, so a name
//! with `:` or `#` cannot break the document) and `regex_escape`.

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

use crate::blueprint::options::EmailVerified;
use crate::blueprint::spec::{BlueprintSpec, SecretSource};
use crate::error::{Error, Result};

pub const BUILTIN_TEMPLATE: &str = include_str!("../../templates/blueprint.yaml.j2");
const TEMPLATE_NAME: &str = "blueprint.yaml.j2";

#[derive(Serialize)]
struct Features {
    redirect_uris_list: bool,
    invalidation_flow: bool,
    grant_types: bool,
}

#[derive(Serialize)]
struct SecretValue<'a> {
    /// `env`, `file` or `inline`.
    kind: &'static str,
    /// The variable name, the path, or (inline only) the secret itself.
    value: &'a str,
}

/// The blueprint's own `email` scope mapping; the template uses it in place of authentik's
/// managed one.
#[derive(Serialize)]
struct EmailMappingValue<'a> {
    name: &'a str,
    description: &'static str,
    /// `true` or `attribute`: where `email_verified` comes from.
    verified_from: &'static str,
}

#[derive(Serialize)]
struct Context<'a> {
    generator_version: &'static str,
    authentik_version: String,
    blueprint_name: String,
    description: String,
    affine_url: &'a str,
    callback_url: String,
    issuer_path: String,
    slug: &'a str,
    app_name: &'a str,
    provider_name: &'a str,
    launch_url: &'a str,
    client_id: &'a str,
    client_secret: SecretValue<'a>,
    authorization_flow: &'a str,
    invalidation_flow: &'a str,
    signing_key: &'a str,
    scopes: &'a [String],
    email_mapping: Option<EmailMappingValue<'a>>,
    group: Option<&'a str>,
    features: Features,
}

fn context(spec: &BlueprintSpec) -> Context<'_> {
    let client_secret = match &spec.client_secret {
        SecretSource::Env(var) => SecretValue {
            kind: "env",
            value: var,
        },
        SecretSource::File(path) => SecretValue {
            kind: "file",
            value: path,
        },
        // The one place the secret enters a template: the user asked for it inline.
        SecretSource::Inline(secret) => SecretValue {
            kind: "inline",
            value: secret.expose(),
        },
    };
    Context {
        generator_version: env!("CARGO_PKG_VERSION"),
        authentik_version: spec.version.to_string(),
        blueprint_name: spec.blueprint_name(),
        description: format!(
            "OAuth2/OpenID Connect provider and application for AFFiNE at {}",
            spec.affine_url
        ),
        affine_url: spec.affine_url.as_str(),
        callback_url: spec.affine_url.oauth_callback(),
        issuer_path: format!("/application/o/{}/", spec.slug.as_str()),
        slug: spec.slug.as_str(),
        app_name: &spec.name,
        provider_name: &spec.provider_name,
        launch_url: spec.launch_url.as_str(),
        client_id: &spec.client_id,
        client_secret,
        authorization_flow: &spec.authorization_flow,
        invalidation_flow: &spec.invalidation_flow,
        signing_key: &spec.signing_key,
        scopes: &spec.scopes,
        email_mapping: spec.email_mapping.as_ref().map(|m| EmailMappingValue {
            name: &m.name,
            description: m.description(),
            verified_from: match m.email_verified {
                EmailVerified::Attribute => "attribute",
                _ => "true",
            },
        }),
        group: spec.group.as_deref(),
        features: Features {
            redirect_uris_list: spec.version.redirect_uris_as_list(),
            invalidation_flow: spec.version.requires_invalidation_flow(),
            grant_types: spec.version.requires_grant_types(),
        },
    }
}

/// A value as a YAML scalar: plain when that reads back as the same string in both YAML
/// 1.1 (authentik's PyYAML) and 1.2, double-quoted otherwise. JSON string syntax is a
/// subset of YAML's double-quoted style, so serde_json's escaping is exactly right.
fn yaml_filter(value: Value) -> std::result::Result<String, minijinja::Error> {
    let json = serde_json::to_value(&value).map_err(|e| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("yaml filter: {e}"),
        )
    })?;
    match json.as_str() {
        Some(s) if is_safe_plain_scalar(s) => Ok(s.to_string()),
        _ => Ok(json.to_string()),
    }
}

/// Conservative: letters first (or `/`), a small character set, no `: ` or ` #`, and not a
/// word YAML 1.1 reads as a boolean or null.
fn is_safe_plain_scalar(s: &str) -> bool {
    const YAML11_WORDS: [&str; 12] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", "inf",
    ];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _./-:\\".contains(c))
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !YAML11_WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// Escapes regex metacharacters: authentik before 2024.8.5 treats `redirect_uris` lines as
/// regular expressions, and an unescaped `.` in a host name would let look-alike hosts match.
fn regex_escape_filter(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if r"\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Instructions a template may run. The built-in one needs a few thousand; a user's template
/// that needs millions is looping, and a task must not hang on it.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// The most text a template may produce. A blueprint is a few kB; authentik would not take
/// megabytes either.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// A writer that stops at [`MAX_OUTPUT_BYTES`], so a template cannot fill memory.
struct CappedOutput {
    text: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("template output too large"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The blueprint text for `spec`: the built-in template rendered here; a user's template in
/// a child process with a memory limit (see [`crate::blueprint::sandbox`]), since fuel
/// bounds its steps but not what one step allocates.
pub fn render(spec: &BlueprintSpec) -> Result<String> {
    match &spec.template {
        None => render_source(TEMPLATE_NAME, BUILTIN_TEMPLATE, context(spec)),
        Some((path, text)) => crate::blueprint::sandbox::render_in_child(
            &path.display().to_string(),
            text,
            serde_json::to_value(context(spec))
                .map_err(|e| Error::failed(format!("cannot pass the template's values: {e}")))?,
        ),
    }
}

/// Renders `source` (named `source_name` in messages) with `ctx`, within [`TEMPLATE_FUEL`]
/// steps and [`MAX_OUTPUT_BYTES`] of output.
pub fn render_source(source_name: &str, source: &str, ctx: impl Serialize) -> Result<String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_filter("yaml", yaml_filter);
    env.add_filter("regex_escape", regex_escape_filter);
    env.set_fuel(Some(TEMPLATE_FUEL));
    let template_error = |e: minijinja::Error| {
        if e.kind() == minijinja::ErrorKind::OutOfFuel {
            return Error::usage(format!(
                "template {source_name} did not finish within {TEMPLATE_FUEL} steps (a loop that never ends?); \
                 fix the template, a blueprint needs a few thousand"
            ));
        }
        let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
        // The error's own text names the construct, never a context value.
        Error::usage(format!(
            "template {source_name}{line}: {}",
            e.detail().unwrap_or(&e.kind().to_string())
        ))
    };
    env.add_template(TEMPLATE_NAME, source)
        .map_err(template_error)?;
    let template = env.get_template(TEMPLATE_NAME).map_err(template_error)?;
    let mut out = CappedOutput {
        text: Vec::new(),
        overflowed: false,
    };
    let rendered = template.render_captured_to(ctx, &mut out).map(|_| ());
    if out.overflowed {
        return Err(Error::usage(format!(
            "template {source_name} produced more than {} MiB, more than any blueprint needs; fix the template",
            MAX_OUTPUT_BYTES >> 20
        )));
    }
    rendered.map_err(template_error)?;
    String::from_utf8(out.text).map_err(|_| {
        Error::usage(format!(
            "template {source_name} produced text that is not UTF-8"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_template_needs_far_less_than_the_fuel() {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL / 100));
        env.add_filter("yaml", yaml_filter);
        env.add_filter("regex_escape", regex_escape_filter);
        env.add_template("t", BUILTIN_TEMPLATE).unwrap();
        let spec = crate::blueprint::BlueprintSpec::from_options_named(
            &crate::blueprint::BlueprintOptions::new("https://affine.example.com"),
            crate::names::NameStyle::Cli,
        )
        .unwrap()
        .0;
        env.get_template("t")
            .unwrap()
            .render(context(&spec))
            .unwrap();
    }

    #[test]
    fn regex_escape_leaves_only_literal_matches() {
        assert_eq!(
            regex_escape_filter("https://a.example.com/oauth/callback"),
            r"https://a\.example\.com/oauth/callback"
        );
    }

    #[test]
    fn yaml_filter_quotes_strings_that_would_break_yaml() {
        for tricky in [
            "a: b # c\n\"q\"",
            "yes",
            "No",
            "1234",
            "12:30",
            "",
            " lead",
            "@x",
            "*alias",
            "a #b",
            "[x]",
        ] {
            let s = yaml_filter(Value::from(tricky)).unwrap();
            assert!(s.starts_with('"'), "{tricky:?} must be quoted, got {s}");
            let parsed: String = serde_yaml::from_str(&s).unwrap();
            assert_eq!(parsed, tricky);
        }
    }

    #[test]
    fn yaml_filter_keeps_ordinary_names_plain() {
        for plain in [
            "AFFiNE",
            "Provider for AFFiNE",
            "https://a.example.com/oauth/callback",
            r"https://a\.b/c",
        ] {
            let s = yaml_filter(Value::from(plain)).unwrap();
            assert_eq!(s, plain);
            let parsed: String = serde_yaml::from_str(&s).unwrap();
            assert_eq!(parsed, plain);
        }
    }
}
