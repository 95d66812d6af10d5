//! Reads a rendered blueprint back and checks it holds what the target authentik version
//! needs. This guards custom templates: a template that drops `invalidation_flow` for
//! 2024.10+, or points the redirect URI elsewhere, fails here, naming the field, before
//! anything is written.

use serde_yaml::Value;

use crate::blueprint::spec::BlueprintSpec;
use crate::error::{Error, Result};

pub const PROVIDER_MODEL: &str = "authentik_providers_oauth2.oauth2provider";
pub const APPLICATION_MODEL: &str = "authentik_core.application";
pub const BINDING_MODEL: &str = "authentik_policies.policybinding";
pub const SCOPE_MAPPING_MODEL: &str = "authentik_providers_oauth2.scopemapping";

fn problem(msg: impl std::fmt::Display) -> Error {
    Error::usage(format!("the rendered blueprint is not usable: {msg}"))
}

/// The tag name of a tagged YAML value (`KeyOf` for `!KeyOf x`).
pub fn tag_of(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(t) => Some(t.tag.to_string().trim_start_matches('!').to_string()),
        _ => None,
    }
}

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_mapping()?.get(key)
}

pub fn check(yaml: &str, spec: &BlueprintSpec) -> Result<()> {
    let doc: Value =
        serde_yaml::from_str(yaml).map_err(|e| problem(format!("it is not valid YAML ({e})")))?;
    if doc.as_mapping().is_none() {
        return Err(problem("the top level is not a mapping"));
    }
    if get(&doc, "version").and_then(Value::as_u64) != Some(1) {
        return Err(problem("`version: 1` is missing"));
    }
    match get(&doc, "metadata")
        .and_then(|m| get(m, "name"))
        .and_then(Value::as_str)
    {
        Some(name) if !name.trim().is_empty() => {}
        _ => return Err(problem("metadata.name is missing")),
    }
    let entries = get(&doc, "entries")
        .and_then(Value::as_sequence)
        .ok_or_else(|| problem("`entries` is missing or not a list"))?;
    let model_of = |e: &Value| get(e, "model").and_then(Value::as_str).map(str::to_string);

    let provider_index = entries
        .iter()
        .position(|e| model_of(e).as_deref() == Some(PROVIDER_MODEL))
        .ok_or_else(|| problem(format!("no {PROVIDER_MODEL} entry")))?;
    let provider = &entries[provider_index];
    let provider_id = get(provider, "id")
        .and_then(Value::as_str)
        .ok_or_else(|| problem("the provider entry has no `id` for the application's !KeyOf"))?;
    let attrs = get(provider, "attrs").ok_or_else(|| problem("the provider entry has no attrs"))?;

    let mut required = vec![
        "authorization_flow",
        "client_type",
        "client_id",
        "client_secret",
        "redirect_uris",
        "signing_key",
        "property_mappings",
    ];
    if spec.version.requires_invalidation_flow() {
        required.push("invalidation_flow");
    }
    if spec.version.requires_grant_types() {
        required.push("grant_types");
    }
    for field in required {
        let present = get(attrs, field).is_some_and(|v| !v.is_null());
        if !present {
            let why = match field {
                "invalidation_flow" => " (authentik 2024.10+ requires it)",
                "grant_types" => " (authentik 2026.5+ gives a blueprint provider no grant types without it, and every login fails)",
                _ => "",
            };
            return Err(problem(format!("the provider has no attrs.{field}{why}")));
        }
    }
    if get(attrs, "client_type").and_then(Value::as_str) != Some("confidential") {
        return Err(problem(
            "attrs.client_type must be confidential: AFFiNE authenticates with a client secret",
        ));
    }
    if get(attrs, "client_id").and_then(Value::as_str) != Some(spec.client_id.as_str()) {
        return Err(problem(
            "attrs.client_id differs from the client id AFFiNE will send",
        ));
    }
    if spec.version.requires_grant_types() {
        let grants: Vec<&str> = get(attrs, "grant_types")
            .and_then(Value::as_sequence)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !grants.contains(&"authorization_code") {
            return Err(problem(
                "attrs.grant_types lacks authorization_code, the grant AFFiNE uses",
            ));
        }
    }
    check_redirect_uris(get(attrs, "redirect_uris").unwrap_or(&Value::Null), spec)?;
    check_keys(attrs)?;
    check_email_mapping(entries, attrs, spec)?;

    let application_index = entries
        .iter()
        .position(|e| model_of(e).as_deref() == Some(APPLICATION_MODEL))
        .ok_or_else(|| problem(format!("no {APPLICATION_MODEL} entry")))?;
    let application = &entries[application_index];
    if application_index < provider_index {
        return Err(problem(
            "the application comes before the provider; !KeyOf only sees earlier entries",
        ));
    }
    if get(application, "identifiers")
        .and_then(|i| get(i, "slug"))
        .and_then(Value::as_str)
        != Some(spec.slug.as_str())
    {
        return Err(problem(format!(
            "the application's identifiers.slug is not {:?}",
            spec.slug.as_str()
        )));
    }
    let provider_ref = get(application, "attrs").and_then(|a| get(a, "provider"));
    let keyof_target = match provider_ref {
        Some(Value::Tagged(t)) if tag_of(provider_ref.unwrap()).as_deref() == Some("KeyOf") => {
            t.value.as_str()
        }
        _ => None,
    };
    if keyof_target != Some(provider_id) {
        return Err(problem(format!(
            "the application's attrs.provider must be `!KeyOf {provider_id}`"
        )));
    }
    if spec.group.is_some()
        && !entries
            .iter()
            .any(|e| model_of(e).as_deref() == Some(BINDING_MODEL))
    {
        return Err(problem(format!(
            "a group was given but there is no {BINDING_MODEL} entry"
        )));
    }
    Ok(())
}

/// AFFiNE 0.25.7+ verifies the id_token's RS256 signature against the JWKS: without a
/// signing key authentik signs with HS256 and the client secret, and with an encryption key
/// it sends an encrypted token (JWE). AFFiNE refuses both ("Invalid auth state").
fn check_keys(attrs: &Value) -> Result<()> {
    let signing_key = get(attrs, "signing_key");
    let empty = match signing_key {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    };
    if empty {
        return Err(problem(
            "attrs.signing_key is empty: authentik then signs id_tokens with HS256 and the client secret, which AFFiNE refuses; find a certificate key pair (signing_key)",
        ));
    }
    match get(attrs, "encryption_key") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(problem(
            "attrs.encryption_key is set: authentik then encrypts the id_token (JWE), which AFFiNE cannot verify; leave it `null`",
        )),
    }
}

/// When the spec brings its own `email` mapping, the provider must use it and not the
/// managed one (whose `email_verified: false` AFFiNE 0.25.7+ refuses).
fn check_email_mapping(entries: &[Value], attrs: &Value, spec: &BlueprintSpec) -> Result<()> {
    if spec.email_mapping.is_none() {
        return Ok(());
    }
    // The names of the entries that make a mapping for scope email, and the provider's
    // mappings that refer to one of them (by !Find on its name, or by !KeyOf its id).
    let own: Vec<(Option<&str>, Option<&str>)> = entries
        .iter()
        .filter(|e| get(e, "model").and_then(Value::as_str) == Some(SCOPE_MAPPING_MODEL))
        .filter(|e| {
            get(e, "attrs")
                .and_then(|a| get(a, "scope_name"))
                .and_then(Value::as_str)
                == Some("email")
        })
        .map(|e| {
            let name = get(e, "identifiers")
                .and_then(|i| get(i, "name"))
                .and_then(Value::as_str);
            (name, get(e, "id").and_then(Value::as_str))
        })
        .collect();
    let refers_to_own = |item: &Value| match (tag_of(item).as_deref(), item) {
        (Some("KeyOf"), Value::Tagged(t)) => t
            .value
            .as_str()
            .is_some_and(|id| own.iter().any(|(_, i)| *i == Some(id))),
        (Some("Find"), Value::Tagged(t)) => t.value.as_sequence().is_some_and(|find| {
            find.first().and_then(Value::as_str) == Some(SCOPE_MAPPING_MODEL)
                && find
                    .get(1)
                    .and_then(Value::as_sequence)
                    .is_some_and(|pair| {
                        pair.first().and_then(Value::as_str) == Some("name")
                            && own.iter().any(|(n, _)| {
                                n.is_some() && *n == pair.get(1).and_then(Value::as_str)
                            })
                    })
        }),
        _ => false,
    };
    let uses_own = get(attrs, "property_mappings")
        .and_then(Value::as_sequence)
        .is_some_and(|items| items.iter().any(refers_to_own));
    if uses_own {
        return Ok(());
    }
    Err(problem(format!(
        "the provider does not use a {SCOPE_MAPPING_MODEL} entry for scope email (by !Find on its name or !KeyOf): authentik {}'s managed email mapping says email_verified: false, which AFFiNE 0.25.7+ refuses; add the entry (see the built-in template), or choose email_verified authentik",
        spec.version
    )))
}

fn check_redirect_uris(value: &Value, spec: &BlueprintSpec) -> Result<()> {
    let callback = spec.affine_url.oauth_callback();
    if spec.version.redirect_uris_as_list() {
        let list = value.as_sequence().ok_or_else(|| {
            problem(format!(
                "attrs.redirect_uris must be a list of {{matching_mode, url}} for authentik {}",
                spec.version
            ))
        })?;
        let strict = list.iter().any(|item| {
            get(item, "matching_mode").and_then(Value::as_str) == Some("strict")
                && get(item, "url").and_then(Value::as_str) == Some(callback.as_str())
        });
        if !strict {
            return Err(problem(format!(
                "attrs.redirect_uris has no strict entry for {callback}"
            )));
        }
    } else {
        let text = value.as_str().ok_or_else(|| {
            problem(format!(
                "attrs.redirect_uris must be a newline-separated string for authentik {}",
                spec.version
            ))
        })?;
        let unescaped: Vec<String> = text.lines().map(|l| l.replace('\\', "")).collect();
        if !unescaped.iter().any(|l| l == &callback) {
            return Err(problem(format!(
                "attrs.redirect_uris does not allow {callback}"
            )));
        }
    }
    Ok(())
}
