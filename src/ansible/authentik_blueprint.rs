//! The `authentik_blueprint` module: the AFFiNE blueprint into authentik, either as a file
//! for authentik's mounted blueprints directory (`dest`) or as a managed blueprint instance
//! through authentik's API (`authentik_url` + `authentik_token`).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::ansible::affine_oidc::http_options;
use crate::ansible::params::{Kind, Param, Params, Spec};
use crate::atomic_file::{self, WriteOptions};
use crate::authentik::blueprint_instance::{self, Wanted};
use crate::authentik::client::AuthentikClient;
use crate::authentik::references::Reference;
use crate::blueprint::options::{EmailVerified, DEFAULT_SECRET_ENV};
use crate::blueprint::{self, BlueprintOptions, SecretChoice, SecretSource};
use crate::error::{Error, Result};
use crate::names::NameStyle;
use crate::secret::{Redactor, MASK};
use crate::web_url::BaseUrl;

pub const NAME: &str = "authentik_blueprint";
pub const DOCS: &str = include_str!("docs/authentik_blueprint.yml");

pub static SPEC: Spec = Spec {
    module: NAME,
    params: &[
        Param::new("affine_url", Kind::Str).env("AFFINE_URL"),
        Param::new("slug", Kind::Str).default("\"affine\""),
        Param::new("name", Kind::Str).default("\"AFFiNE\""),
        Param::new("provider_name", Kind::Str),
        Param::new("launch_url", Kind::Str),
        Param::new("client_id", Kind::Str),
        Param::new("client_secret_env", Kind::Str),
        Param::new("client_secret_file", Kind::Str),
        Param::new("client_secret", Kind::Str).no_log(),
        Param::new("authorization_flow", Kind::Str)
            .default("\"default-provider-authorization-implicit-consent\""),
        Param::new("invalidation_flow", Kind::Str)
            .default("\"default-provider-invalidation-flow\""),
        Param::new("signing_key", Kind::Str).default("\"authentik Self-signed Certificate\""),
        Param::new("scopes", Kind::List),
        Param::new("email_verified", Kind::Str)
            .default("\"true\"")
            .choices(&["true", "attribute", "authentik"]),
        Param::new("group", Kind::Str),
        Param::new("authentik_version", Kind::Str),
        Param::new("template", Kind::Path),
        Param::new("state", Kind::Str)
            .default("\"present\"")
            .choices(&["present", "absent"]),
        Param::new("dest", Kind::Path),
        Param::new("mode", Kind::Raw),
        Param::new("backup", Kind::Bool).default("false"),
        Param::new("force", Kind::Bool).default("false"),
        Param::new("authentik_url", Kind::Str).env("AUTHENTIK_URL"),
        Param::new("authentik_token", Kind::Str)
            .env("AUTHENTIK_TOKEN")
            .no_log(),
        Param::new("remove_objects", Kind::Bool).default("false"),
        Param::new("validate_certs", Kind::Bool).default("true"),
        Param::new("ca_path", Kind::Path),
        Param::new("timeout", Kind::Int).default("30"),
    ],
    mutually_exclusive: &[
        &["client_secret_env", "client_secret_file", "client_secret"],
        &["dest", "authentik_url"],
    ],
};

pub fn run(params: &Params, redactor: &mut Redactor) -> Result<Map<String, Value>> {
    let absent = params.str("state").as_deref() == Some("absent");
    if let Some(dest) = params.str("dest") {
        return run_file(params, Path::new(&dest), absent);
    }
    if params.is_set("authentik_url") {
        return run_api(params, absent, redactor);
    }
    Err(Error::usage("give dest (a blueprint file), or authentik_url and authentik_token (or AUTHENTIK_URL, AUTHENTIK_TOKEN)"))
}

fn options(params: &Params, version: Option<String>) -> Result<BlueprintOptions> {
    let affine_url = params
        .str("affine_url")
        .ok_or_else(|| Error::usage("affine_url (or AFFINE_URL) is required"))?;
    let mut o = BlueprintOptions::new(affine_url);
    let text = |name: &str, target: &mut String| {
        if let Some(v) = params.str(name) {
            *target = v;
        }
    };
    text("slug", &mut o.slug);
    text("name", &mut o.name);
    o.provider_name = params.str("provider_name");
    text("authorization_flow", &mut o.authorization_flow);
    text("invalidation_flow", &mut o.invalidation_flow);
    text("signing_key", &mut o.signing_key);
    o.launch_url = params.str("launch_url");
    o.client_id = params.str("client_id");
    o.group = params.str("group");
    o.template = params.str("template").map(PathBuf::from);
    if let Some(scopes) = params.list("scopes") {
        o.extra_scopes = scopes;
    }
    if let Some(mode) = params.str("email_verified") {
        o.email_verified = EmailVerified::parse("email_verified", &mode)?;
    }
    if let Some(v) = version {
        o.authentik_version = v;
    }
    o.client_secret = if let Some(var) = params.str("client_secret_env") {
        SecretChoice::Env(var)
    } else if let Some(path) = params.str("client_secret_file") {
        SecretChoice::File(path)
    } else if let Some(secret) = params.secret("client_secret") {
        SecretChoice::Inline(secret)
    } else {
        SecretChoice::Env(DEFAULT_SECRET_ENV.into())
    };
    Ok(o)
}

/// Renders the blueprint, naming inputs as the task does.
fn render(params: &Params, version: Option<String>) -> Result<blueprint::Rendered> {
    let o = options(params, version)?;
    let (spec, warnings) = blueprint::BlueprintSpec::from_options_named(&o, NameStyle::Module)?;
    blueprint::build_from_spec(spec, warnings)
}

/// What a diff shows instead of a blueprint whose literal secret could not be masked line
/// by line (a flow mapping, an alias): the whole text, rather than any risk of the secret.
pub const UNMASKABLE: &str =
    "(content hidden: it holds a literal client secret in a form this diff cannot mask)\n";

/// Literal secrets in blueprint text (ours or one already in place, in whatever YAML form
/// a user's template wrote it), masked for a diff. `!Env` and `!File` references stay
/// readable: they are names, not secrets.
///
/// The parsed document says which secrets there are; the text is masked by replacing each
/// `client_secret` entry (plain, quoted key, block scalar with its continuation lines) with
/// the mask; then the masked text is checked against the parsed values, and if any piece of
/// a secret is still there the whole text is hidden.
pub fn mask_literal_secrets(yaml: &str) -> String {
    let secrets = literal_secrets(yaml);
    let mut out = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, value)) = client_secret_entry(line) else {
            out.push(line.to_string());
            continue;
        };
        let value = value.trim();
        if value.starts_with('!') {
            out.push(line.to_string());
            continue;
        }
        out.push(format!("{indent}client_secret: {MASK}"));
        // A quoted value not closed on its line goes on, at any indentation, to its
        // closing quote.
        if let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') {
            let mut open = !closes_quote(&value[1..], quote);
            while open {
                let Some(next) = lines.next() else { break };
                open = !closes_quote(next, quote);
            }
            continue;
        }
        // A block scalar (`>-`, `|`) or a plain scalar folded onto the next lines: every
        // following line indented deeper than the key belongs to the value.
        let depth = indent.len();
        while let Some(next) = lines.peek() {
            let next_depth = next.len() - next.trim_start().len();
            if next.trim().is_empty() || next_depth > depth {
                lines.next();
            } else {
                break;
            }
        }
    }
    let masked = out.join("\n") + if yaml.ends_with('\n') { "\n" } else { "" };
    // As parsed, trimmed (a block scalar's value as its lines show it; found by the
    // blueprint_yaml fuzz target), and word by word (a folded value).
    let leaks = secrets.iter().any(|s| {
        masked.contains(s.as_str())
            || masked.contains(s.trim())
            // Any 8 characters of it in a row: a part the line masking missed.
            || s.chars()
                .collect::<Vec<_>>()
                .windows(8)
                .any(|w| masked.contains(&w.iter().collect::<String>()))
            || s.split_whitespace()
                .any(|piece| piece.len() >= 4 && masked.contains(piece))
    });
    if leaks {
        UNMASKABLE.to_string()
    } else {
        masked
    }
}

/// Whether `text` (what follows an opening `quote` of a YAML flow scalar) holds its closing
/// quote: an unescaped `"`, or a `'` not doubled.
fn closes_quote(text: &str, quote: char) -> bool {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            '\'' if quote == '\'' && chars.peek() == Some(&'\'') => {
                chars.next();
            }
            c if c == quote => return true,
            _ => {}
        }
    }
    false
}

/// `    client_secret: x`, `"client_secret": x`, `- client_secret: x` → (indent, value).
fn client_secret_entry(line: &str) -> Option<(&str, &str)> {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    let body = body.strip_prefix("- ").unwrap_or(body);
    ["client_secret:", "\"client_secret\":", "'client_secret':"]
        .iter()
        .find_map(|key| body.strip_prefix(key))
        .map(|value| (indent, value))
}

/// Every literal (untagged) `client_secret` string value in the document, as authentik
/// would read it. An unparsable text yields none; the line masking still applies.
fn literal_secrets(yaml: &str) -> Vec<String> {
    fn walk(v: &serde_yaml::Value, out: &mut Vec<String>) {
        use serde_yaml::Value as Y;
        match v {
            Y::Mapping(map) => {
                for (k, v) in map {
                    if k.as_str() == Some("client_secret") {
                        match v {
                            Y::String(s) => out.push(s.clone()),
                            Y::Number(n) => out.push(n.to_string()),
                            _ => {}
                        }
                    }
                    walk(v, out);
                }
            }
            Y::Sequence(items) => items.iter().for_each(|i| walk(i, out)),
            Y::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(yaml) {
        walk(&doc, &mut out);
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file mode: `mode` as Ansible's file modules read it (a number is taken as is, so
/// YAML's `0640` = 416 = 0o640; a string is octal, `"0640"` or `"640"`), else the existing
/// file's mode, else 0600 for a file holding a literal secret and 0644 otherwise. An
/// existing file that group or others may read loses those bits when a literal secret goes
/// into it (the second value is the warning that says so).
fn file_mode(
    params: &Params,
    existing_mode: Option<u32>,
    inline_secret: bool,
) -> Result<(u32, Option<String>)> {
    let bad =
        |shown: String| Error::usage(format!("mode {shown} is not a file mode such as \"0644\""));
    let mode = match params.get("mode") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| bad(n.to_string()))?,
        Some(Value::String(s)) => {
            // Spaces around it are fine, as Python's int(mode, 8) takes them; a newline or
            // other control character is not (the rule for every text parameter).
            crate::ansible::params::check_text("argument 'mode'", s)?;
            u32::from_str_radix(s.trim_matches(' ').trim_start_matches("0o"), 8)
                .map_err(|_| bad(format!("{s:?}")))?
        }
        Some(other) => return Err(bad(other.to_string())),
        None => {
            return Ok(match existing_mode {
                Some(m) if inline_secret && m & 0o077 != 0 => (
                    m & !0o077,
                    Some(format!(
                        "dest was mode {m:04o}, readable by others, and now holds a literal client secret: \
                         its mode is now {:04o} (set mode to choose another)",
                        m & !0o077
                    )),
                ),
                Some(m) => (m, None),
                None if inline_secret => (0o600, None),
                None => (0o644, None),
            })
        }
    };
    // Setuid, setgid and sticky bits are not a blueprint's business: authentik reads the
    // file, nothing runs it, and a setuid bit given by a typo (`7777`) would stay unnoticed.
    if mode > 0o777 {
        return Err(Error::usage(format!(
            "mode {mode:o} (octal) sets setuid, setgid or sticky bits, which a blueprint file has no use for; \
             give at most 0777, e.g. \"0640\""
        )));
    }
    Ok((mode, None))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    File,
    Api,
}

/// The rendering's warnings, with the one about a literal secret said for where the
/// secret lands, and only on a run that puts it there (not on every unchanged run).
fn task_warnings(rendered: &blueprint::Rendered, changed: bool, target: Target) -> Vec<String> {
    let mut warnings: Vec<String> = rendered
        .warnings
        .iter()
        .filter(|w| !w.contains("client secret in clear text"))
        .cloned()
        .collect();
    if changed && matches!(rendered.spec.client_secret, SecretSource::Inline(_)) {
        warnings.push(match target {
            Target::File => "the blueprint file holds the client secret in clear text (mode 0600 unless mode says otherwise): keep it out of version control, or use client_secret_env / client_secret_file".to_string(),
            Target::Api => "the client secret is stored in clear text in the blueprint instance's content in authentik (System > Blueprints), readable with API rights on blueprints; client_secret_env / client_secret_file keep it out".to_string(),
        });
    }
    warnings
}

fn base_result(changed: bool, msg: String, warnings: Vec<String>) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("changed".into(), Value::Bool(changed));
    r.insert("msg".into(), Value::String(msg));
    if !warnings.is_empty() {
        r.insert("warnings".into(), json!(warnings));
    }
    r
}

fn text_diff(
    params: &Params,
    header: &str,
    before: &str,
    after: &str,
    result: &mut Map<String, Value>,
) {
    if params.internal.diff {
        result.insert(
            "diff".into(),
            json!({"before": mask_literal_secrets(before), "after": mask_literal_secrets(after),
                   "before_header": header, "after_header": header}),
        );
    }
}

/// What a present task returns about the blueprint: its name and the version it was made for.
fn insert_blueprint_fields(rendered: &blueprint::Rendered, result: &mut Map<String, Value>) {
    result.insert(
        "blueprint_name".into(),
        Value::String(rendered.spec.blueprint_name()),
    );
    result.insert(
        "authentik_version".into(),
        Value::String(rendered.spec.version.to_string()),
    );
}

fn run_file(params: &Params, dest: &Path, absent: bool) -> Result<Map<String, Value>> {
    let check = params.internal.check_mode;
    // Before reading: a FIFO would block the read and /dev/zero never end it.
    let (target, existing_meta) = atomic_file::resolve_target(dest)?;
    let force = params.bool("force");
    if let Some(meta) = &existing_meta {
        atomic_file::check_read_back_size(dest, meta)?;
    }
    let existing = match existing_meta.as_ref().map(|_| std::fs::read(dest)) {
        None => None,
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Some(Err(e)) => {
            return Err(Error::failed(format!(
                "cannot read {}: {e}",
                dest.display()
            )))
        }
    };
    let before_text = existing
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .to_string();
    let header = dest.display().to_string();

    if absent {
        let changed = existing.is_some();
        if changed {
            // Removing is replacing with nothing: a read-only file is kept unless forced.
            atomic_file::check_replaceable(dest, &target, existing_meta.as_ref(), force)?;
        }
        if changed && !check {
            std::fs::remove_file(dest)
                .map_err(|e| Error::failed(format!("cannot remove {}: {e}", header)))?;
        }
        let msg = match (changed, check) {
            (false, _) => format!("{header} is already absent"),
            (true, true) => format!("{header} would be removed (check mode)"),
            (true, false) => format!(
                "{header} removed; authentik keeps the objects it created from it until they are deleted there"
            ),
        };
        let mut r = base_result(changed, msg, vec![]);
        text_diff(params, &header, &before_text, "", &mut r);
        r.insert("dest".into(), Value::String(header));
        return Ok(r);
    }

    let rendered = render(params, params.str("authentik_version"))?;
    let inline = matches!(rendered.spec.client_secret, SecretSource::Inline(_));
    let existing_mode = existing.as_ref().and_then(|_| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dest)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    });
    let (mode, mode_warning) = file_mode(params, existing_mode, inline)?;
    let content_changed = existing.as_deref() != Some(rendered.yaml.as_bytes());
    let mode_changed = existing_mode.is_some_and(|m| m != mode);
    let changed = content_changed || mode_changed;
    if content_changed {
        // Check mode too: it fails on a read-only file where the run would.
        atomic_file::check_replaceable(dest, &target, existing_meta.as_ref(), force)?;
    }
    let mut backup_file = None;
    let mut extra_warnings: Vec<String> = mode_warning.into_iter().filter(|_| changed).collect();
    if changed && !check {
        if content_changed {
            let written = atomic_file::write(
                dest,
                rendered.yaml.as_bytes(),
                WriteOptions {
                    mode: Some(mode),
                    backup: params.bool("backup"),
                    replace_read_only: force,
                    secret: inline,
                },
            )?;
            backup_file = written.backup_file;
            extra_warnings.extend(written.warnings);
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::failed(format!("cannot set the mode of {header}: {e}")))?;
        }
    }
    let msg = match (changed, check) {
        (false, _) => format!("{header} is up to date"),
        (true, true) => format!("{header} would change (check mode)"),
        (true, false) => format!(
            "{header} written; authentik applies files in its blueprints directory on change"
        ),
    };
    let mut warnings = task_warnings(&rendered, changed, Target::File);
    warnings.extend(extra_warnings);
    let mut r = base_result(changed, msg, warnings);
    text_diff(params, &header, &before_text, &rendered.yaml, &mut r);
    r.insert("dest".into(), Value::String(header));
    // SHA-256 of the file, except that a literal secret is digested masked: a digest of
    // text holding a weak secret gives the secret away to a few offline guesses.
    let digested = if inline {
        mask_literal_secrets(&rendered.yaml)
    } else {
        rendered.yaml.clone()
    };
    r.insert(
        "checksum".into(),
        Value::String(sha256_hex(digested.as_bytes())),
    );
    insert_blueprint_fields(&rendered, &mut r);
    if let Some(b) = backup_file {
        r.insert("backup_file".into(), Value::String(b.display().to_string()));
    }
    Ok(r)
}

fn run_api(params: &Params, absent: bool, redactor: &mut Redactor) -> Result<Map<String, Value>> {
    let url = BaseUrl::parse(
        "authentik_url",
        &params.str("authentik_url").unwrap_or_default(),
    )?;
    let token = params.secret("authentik_token").ok_or_else(|| {
        Error::usage("authentik_token (or AUTHENTIK_TOKEN) is required with authentik_url")
    })?;
    redactor.add(&token);
    let client = AuthentikClient::new(url, token, &http_options(params)?)?;
    // The blueprint must fit the running authentik: ask it unless the task says.
    let version = match params.str("authentik_version") {
        Some(v) => v,
        None => client.version()?.to_string(),
    };
    let rendered = render(params, Some(version))?;
    let wanted = if absent {
        Wanted::Absent {
            remove_objects: params.bool("remove_objects"),
        }
    } else {
        Wanted::Present
    };
    let outcome = blueprint_instance::reconcile(
        &client,
        &rendered,
        wanted,
        params.internal.check_mode,
        parameter_for,
    )?;
    let mut warnings = outcome.warnings;
    if !absent {
        warnings = task_warnings(&rendered, outcome.changed, Target::Api)
            .into_iter()
            .chain(warnings)
            .collect();
    }
    let header = format!(
        "{} blueprint {:?}",
        client.base(),
        rendered.spec.blueprint_name()
    );
    let mut r = base_result(outcome.changed, outcome.msg, warnings);
    text_diff(params, &header, &outcome.before, &outcome.after, &mut r);
    if !absent {
        insert_blueprint_fields(&rendered, &mut r);
    }
    Ok(r)
}

/// The task parameter that sets an attribute the generated blueprint finds with `!Find`.
fn parameter_for(reference: &Reference) -> Option<String> {
    let attr = reference.attr.trim_start_matches("attrs.");
    let name = match attr {
        "authorization_flow" | "invalidation_flow" | "signing_key" | "group" => attr,
        "property_mappings" => "scopes",
        _ => return None,
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {

    /// From the audit of issue 9: a double-quoted secret continued on the next line by an
    /// escaped line break showed 9 of its 12 characters.
    #[test]
    fn a_quoted_secret_continued_on_the_next_line_is_masked() {
        for yaml in [
            "version: 1\nentries:\n  - model: m\n    attrs:\n      client_secret: \"OLD\\\n      secretAAA\"\n      name: x\n",
            "version: 1\nentries:\n  - model: m\n    attrs:\n      client_secret: \"OLD\\\n        secretAAA\"\n      name: x\n",
            "version: 1\nentries:\n  - model: m\n    attrs:\n      client_secret: 'OLD\n      secretAAA'\n      name: x\n",
        ] {
            let masked = mask_literal_secrets(yaml);
            assert!(!masked.contains("secretAAA") && !masked.contains("OLD"), "{yaml}\n→\n{masked}");
        }
    }
    use super::*;

    #[test]
    fn literal_secrets_are_masked_but_references_stay() {
        let text = "a: 1\n      client_secret: hunter2-secret\n      client_secret: !Env VAR\n";
        let masked = mask_literal_secrets(text);
        assert!(!masked.contains("hunter2"));
        assert!(masked.contains("client_secret: !Env VAR"));
        assert!(masked.ends_with('\n'));
    }

    #[test]
    fn every_yaml_form_of_a_literal_secret_is_masked() {
        for text in [
            "attrs:\n  client_secret: >-\n    hunter2-old-secret\n  name: x\n",
            "attrs:\n  client_secret: |\n    hunter2-old-secret\n  name: x\n",
            "attrs:\n  \"client_secret\": \"hunter2-old-secret\"\n  name: x\n",
            "attrs:\n  'client_secret': 'hunter2-old-secret'\n  name: x\n",
            "attrs:\n  client_secret:\n    hunter2-old-secret\n  name: x\n",
            "attrs:\n  client_secret: >-\n    hunter2 old\n    folded-part\n  name: x\n",
        ] {
            let masked = mask_literal_secrets(text);
            assert!(!masked.contains("hunter2"), "{text}\n→\n{masked}");
            assert!(!masked.contains("folded-part"), "{masked}");
            assert!(masked.contains("name: x"), "{masked}");
        }
    }

    #[test]
    fn a_secret_the_lines_cannot_mask_hides_the_whole_text() {
        for text in [
            "attrs: {client_secret: hunter2-old-secret, name: x}\n",
            "a: &s hunter2-old-secret\nattrs:\n  client_secret: *s\n",
        ] {
            assert_eq!(mask_literal_secrets(text), UNMASKABLE, "{text}");
        }
    }
}
