//! What happens to a blueprint in authentik through its API: read the managed blueprint
//! instance, compare it with the wanted content the way authentik stores content, look up
//! what the blueprint refers to, plan, write (create or update), apply, wait, and report.
//! The `authentik_blueprint` module runs this for its API target and only maps the result.

use crate::authentik::client::{AuthentikClient, Instance};
use crate::authentik::references::{check_references, find_references, Reference};
use crate::blueprint::{self, SecretSource};
use crate::error::{Error, Result};

/// What the task wants of the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Present,
    /// `remove_objects`: also delete the provider and application the blueprint made.
    Absent {
        remove_objects: bool,
    },
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub changed: bool,
    pub msg: String,
    pub warnings: Vec<String>,
    /// The content as authentik holds it now, and as it will after the run (both as
    /// authentik stores content, so a diff shows only real changes).
    pub before: String,
    pub after: String,
}

/// A blueprint instance's `content` as authentik stores it: Django REST's CharField trims
/// surrounding whitespace (Python's `str.strip()`) before saving (seen on 2024.10 and
/// 2026.2: the content sent ends in a newline, the stored one does not). Comparing the
/// rendered text instead makes every run a change.
pub fn as_stored(content: &str) -> &str {
    content.trim_matches(is_python_whitespace)
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the ASCII
/// information separators U+001C..U+001F, which Rust's `char::is_whitespace` leaves out.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Reconciles the instance named after the blueprint with `rendered`.
/// `parameter_of` names what sets an attribute on the caller's side (a module parameter or a
/// CLI flag), for the message about a missing referenced object.
pub fn reconcile(
    client: &AuthentikClient,
    rendered: &blueprint::Rendered,
    wanted: Wanted,
    check_mode: bool,
    parameter_of: impl Fn(&Reference) -> Option<String>,
) -> Result<Outcome> {
    let name = rendered.spec.blueprint_name();
    let header = format!("{} blueprint {name:?}", client.base());
    let current = client.find_instance(&name)?;
    let before = current
        .as_ref()
        .map(|i| as_stored(&i.content).to_string())
        .unwrap_or_default();

    if let Wanted::Absent { remove_objects } = wanted {
        return remove(
            client,
            rendered,
            current,
            remove_objects,
            check_mode,
            header,
            before,
        );
    }

    let wanted_content = as_stored(&rendered.yaml);
    let content_changed = current
        .as_ref()
        .is_none_or(|i| as_stored(&i.content) != wanted_content);
    // Right content but never applied successfully (an earlier run's apply failed after the
    // create or update): authentik holds the blueprint, not its objects. Apply it again.
    let unapplied = current
        .as_ref()
        .filter(|i| !matches!(i.status.as_str(), "successful" | "warning"));
    // An encryption key set by hand on the provider breaks every login (AFFiNE cannot read
    // a JWE). The blueprint clears it, but only when applied: so a key found here is a
    // reason to apply, even when the instance itself is as wanted.
    let key = encryption_key_on_provider(client, rendered)?;
    let clears_key = clears_encryption_key(&rendered.yaml);
    let key_to_remove = key.is_some() && clears_key && current.is_some() && !content_changed;
    let changed = content_changed || unapplied.is_some() || key_to_remove;
    let warnings: Vec<String> = key
        .map(|provider| encryption_key_warning(&provider, clears_key, check_mode))
        .into_iter()
        .collect();
    if changed {
        // Also in check mode: a run that would fail should say so before it is run for real.
        let references = find_references(&rendered.yaml);
        check_references(client, rendered.spec.version, &references, parameter_of)?;
    }
    if changed && !check_mode {
        let instance = match &current {
            Some(i) if content_changed => client.update_content(&i.pk, &rendered.yaml),
            Some(i) => Ok(i.clone()),
            None => client.create_instance(&name, &rendered.yaml),
        }
        .map_err(|e| explain_refusal(e, &rendered.spec))?;
        client.apply(&instance)?;
    }
    let why_again = match unapplied {
        Some(i) => format!("its last apply had status {:?}", i.status),
        None => "the provider has an encryption key set by hand".to_string(),
    };
    let msg = match (changed, check_mode) {
        (false, _) => format!("{header} is up to date"),
        (true, true) if !content_changed => {
            format!("{header} would be applied again: {why_again} (check mode)")
        }
        (true, true) if current.is_some() => format!("{header} would be updated (check mode)"),
        (true, true) => format!("{header} would be created (check mode)"),
        (true, false) if !content_changed => format!("{header} applied again: {why_again}"),
        (true, false) if current.is_some() => format!("{header} updated and applied"),
        (true, false) => format!("{header} created and applied"),
    };
    Ok(Outcome {
        changed,
        msg,
        warnings,
        before,
        after: wanted_content.to_string(),
    })
}

/// The name of application `slug`'s provider when it has an encryption key.
fn encryption_key_on_provider(
    client: &AuthentikClient,
    rendered: &blueprint::Rendered,
) -> Result<Option<String>> {
    let Some(provider) = client.provider_for_application(rendered.spec.slug.as_str())? else {
        return Ok(None);
    };
    if provider
        .get("encryption_key")
        .is_none_or(serde_json::Value::is_null)
    {
        return Ok(None);
    }
    Ok(Some(
        provider
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string(),
    ))
}

/// A provider with an encryption key sends AFFiNE an encrypted id_token it cannot verify.
/// authentik keeps a key set by hand unless the blueprint says `encryption_key: null`, as
/// the built-in template does: say that it goes (or, for a template that leaves it out,
/// that it stays).
fn encryption_key_warning(provider: &str, clears_key: bool, check_mode: bool) -> String {
    if clears_key {
        format!(
            "the provider {provider:?} had an encryption key, which makes authentik encrypt the id_token and AFFiNE refuse the login; the blueprint {} it",
            if check_mode { "would remove" } else { "removed" }
        )
    } else {
        format!(
            "the provider {provider:?} has an encryption key, which makes authentik encrypt the id_token and AFFiNE refuse the login, and this template leaves it: add `encryption_key: null` to the provider's attrs"
        )
    }
}

/// Whether the blueprint's provider entry says `encryption_key: null`.
fn clears_encryption_key(yaml: &str) -> bool {
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(yaml) else {
        return false;
    };
    doc.get("entries")
        .and_then(serde_yaml::Value::as_sequence)
        .into_iter()
        .flatten()
        .filter(|e| {
            e.get("model").and_then(serde_yaml::Value::as_str)
                == Some(blueprint::check::PROVIDER_MODEL)
        })
        .any(|e| {
            e.get("attrs")
                .and_then(|a| a.as_mapping())
                .and_then(|a| a.get("encryption_key"))
                .is_some_and(serde_yaml::Value::is_null)
        })
}

fn remove(
    client: &AuthentikClient,
    rendered: &blueprint::Rendered,
    current: Option<Instance>,
    remove_objects: bool,
    check_mode: bool,
    header: String,
    before: String,
) -> Result<Outcome> {
    let Some(instance) = current else {
        return Ok(Outcome {
            msg: format!("{header} is already absent"),
            ..Outcome::default()
        });
    };
    if !check_mode {
        if remove_objects {
            let removal = absent_blueprint(&rendered.yaml)?;
            let updated = client.update_content(&instance.pk, &removal)?;
            client.apply(&updated)?;
        }
        client.delete_instance(&instance.pk)?;
    }
    let mut warnings = vec![];
    if !remove_objects {
        warnings.push(
            "authentik keeps the provider and application a removed blueprint created; set remove_objects: true to delete them too"
                .to_string(),
        );
    }
    let msg = if check_mode {
        format!("{header} would be removed (check mode)")
    } else {
        format!("{header} removed")
    };
    Ok(Outcome {
        changed: true,
        msg,
        warnings,
        before,
        after: String::new(),
    })
}

/// authentik's validation messages for the two likeliest mistakes say what the field
/// check saw, not why; add the why. The group is looked up before sending, so its hint is
/// for a group deleted in between, or an authentik whose group list could not tell.
fn explain_refusal(error: Error, spec: &blueprint::BlueprintSpec) -> Error {
    let Error::Failed(message) = error else {
        return error;
    };
    let mut hint = String::new();
    if let SecretSource::Env(var) = &spec.client_secret {
        if message.contains("client_secret") && message.contains("null") {
            hint.push_str(&format!(
                "; the blueprint reads the client secret with !Env {var}, which authentik's environment lacks: set {var} for authentik's server and worker, or use client_secret / client_secret_file"
            ));
        }
    }
    if let Some(group) = &spec.group {
        // 2024.10 and older, then the wording of 2024.12 and newer.
        let group_unset = message.contains("One of 'policy', 'group' or 'user' must be set")
            || message.contains("One of 'group', 'policy', 'user' must be set");
        if group_unset || message.contains("HTTP 405") {
            hint.push_str(&format!(
                "; the blueprint binds the group {group:?}, found by name: check that authentik has a group with exactly that name (Directory > Groups), or fix group"
            ));
        }
    }
    Error::Failed(message + &hint)
}

/// The blueprint with every object entry set to `state: absent`, to delete what it created.
/// The policy binding is dropped: authentik deletes it with its application. An absent entry
/// keeps only its identifiers: authentik finds the object by them, and its attrs would still
/// be resolved, where the application's `!KeyOf` of the just-deleted provider finds no
/// instance and the entry fails (so would a literal secret travel again for nothing).
fn absent_blueprint(yaml: &str) -> Result<String> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(yaml)
        .map_err(|e| Error::failed(format!("cannot read the blueprint back: {e}")))?;
    if let Some(entries) = doc
        .get_mut("entries")
        .and_then(serde_yaml::Value::as_sequence_mut)
    {
        entries.retain(|e| {
            e.get("model").and_then(serde_yaml::Value::as_str)
                != Some(blueprint::check::BINDING_MODEL)
        });
        for entry in entries.iter_mut() {
            if let Some(map) = entry.as_mapping_mut() {
                map.remove("attrs");
                map.insert("state".into(), "absent".into());
            }
        }
    }
    serde_yaml::to_string(&doc)
        .map_err(|e| Error::failed(format!("cannot write the removal blueprint: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint::BlueprintOptions;

    #[test]
    fn content_is_compared_as_authentik_stores_it() {
        assert_eq!(
            as_stored("version: 1\nentries: []\n"),
            "version: 1\nentries: []"
        );
        assert_eq!(as_stored("\n  a: 1 \t\r\n\u{1f}"), "a: 1");
        // Inside the text nothing changes: only the ends are trimmed.
        assert_eq!(as_stored("a:  1\n\nb: 2"), "a:  1\n\nb: 2");
    }

    #[test]
    fn removal_blueprint_marks_entries_absent_and_drops_the_binding() {
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.group = Some("staff".into());
        let yaml = blueprint::build(&o).unwrap().yaml;
        let removal = absent_blueprint(&yaml).unwrap();
        // The email scope mapping, the provider and the application.
        assert_eq!(removal.matches("state: absent").count(), 3, "{removal}");
        assert!(!removal.contains(blueprint::check::BINDING_MODEL));
        assert!(!removal.contains("attrs"), "{removal}");
        assert!(!removal.contains("!KeyOf"), "{removal}");
        assert!(removal.contains("slug: affine"), "{removal}");
    }

    #[test]
    fn both_wordings_of_the_unset_group_get_the_hint() {
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.group = Some("staff".into());
        let spec = blueprint::build(&o).unwrap().spec;
        for logs in [
            "content: Failed to validate blueprint; - Entry invalid: One of 'policy', 'group' or 'user' must be set",
            "content: Failed to validate blueprint; - Entry invalid: One of 'group', 'policy', 'user' must be set.",
        ] {
            let explained = explain_refusal(Error::failed(logs), &spec).to_string();
            assert!(explained.contains("\"staff\"") && explained.contains("Directory > Groups"), "{explained}");
        }
    }
}
