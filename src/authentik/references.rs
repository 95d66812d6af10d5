//! The objects a blueprint finds with `!Find` (flows, the signing key, scope mappings, a
//! group), looked up through authentik's API before the blueprint is sent.
//!
//! Why before: authentik's `!Find` yields null when nothing matches, and what follows depends
//! on the version and the field. A missing flow or key comes back as a serializer error at
//! best; a missing group makes authentik 2025.2+ crash while logging the failed entry and
//! answer HTTP 405 with an empty page (CONTRACTS.md §2). Looking the objects up first names
//! each missing one, and where to create it, without writing anything.

use serde_yaml::Value as Yaml;

use crate::authentik::client::{AuthentikClient, Lookup};
use crate::authentik_version::AuthentikVersion;
use crate::blueprint::check::tag_of;
use crate::error::{Error, Result};

/// One `!Find [model, [field, value], ...]` of a blueprint whose model and criteria are
/// plain values (a `!Find` built from other tags cannot be looked up ahead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub model: String,
    pub criteria: Vec<(String, String)>,
    /// Where the blueprint uses it: the entry's model and the attribute path.
    pub entry_model: String,
    pub attr: String,
}

/// Every plain `!Find` in the entries' `identifiers` and `attrs`, in blueprint order,
/// leaving out what an earlier entry of the same blueprint creates (it does not exist
/// before the first apply, and authentik finds it then). YAML that does not parse gives no
/// references: authentik's own refusal of it is explained where it comes back.
pub fn find_references(yaml: &str) -> Vec<Reference> {
    let Ok(doc) = serde_yaml::from_str::<Yaml>(yaml) else {
        return Vec::new();
    };
    let Some(entries) = doc.get("entries").and_then(Yaml::as_sequence) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut created: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for entry in entries {
        let entry_model = entry
            .get("model")
            .and_then(Yaml::as_str)
            .unwrap_or_default()
            .to_string();
        for section in ["identifiers", "attrs"] {
            if let Some(value) = entry.get(section) {
                collect(value, &entry_model, section, &mut found, &created);
            }
        }
        created.push((entry_model, plain_fields(entry)));
    }
    found.dedup();
    found
}

fn collect(
    value: &Yaml,
    entry_model: &str,
    path: &str,
    found: &mut Vec<Reference>,
    created: &[(String, Vec<(String, String)>)],
) {
    match value {
        Yaml::Tagged(t) if tag_of(value).as_deref() == Some("Find") => {
            if let Some((model, criteria)) = plain_find(&t.value) {
                let made_here = created
                    .iter()
                    .any(|(m, fields)| *m == model && criteria.iter().all(|c| fields.contains(c)));
                if !made_here {
                    found.push(Reference {
                        model,
                        criteria,
                        entry_model: entry_model.to_string(),
                        attr: path.to_string(),
                    });
                }
            }
        }
        Yaml::Tagged(t) => collect(&t.value, entry_model, path, found, created),
        Yaml::Mapping(m) => {
            for (k, v) in m {
                let key = k.as_str().unwrap_or("?");
                collect(v, entry_model, &format!("{path}.{key}"), found, created);
            }
        }
        Yaml::Sequence(items) => {
            for item in items {
                collect(item, entry_model, path, found, created);
            }
        }
        _ => {}
    }
}

/// `[model, [field, value], ...]` with every part a plain scalar.
fn plain_find(value: &Yaml) -> Option<(String, Vec<(String, String)>)> {
    let items = value.as_sequence()?;
    let model = scalar(items.first()?)?;
    let mut criteria = Vec::new();
    for pair in &items[1..] {
        let pair = pair.as_sequence()?;
        if pair.len() != 2 {
            return None;
        }
        criteria.push((scalar(&pair[0])?, scalar(&pair[1])?));
    }
    (!criteria.is_empty()).then_some((model.to_ascii_lowercase(), criteria))
}

fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The plain scalar fields of an entry's identifiers and attrs (what it will create).
fn plain_fields(entry: &Yaml) -> Vec<(String, String)> {
    ["identifiers", "attrs"]
        .iter()
        .filter_map(|s| entry.get(*s).and_then(Yaml::as_mapping))
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| Some((scalar(k)?, scalar(v)?)))
        .collect()
}

/// What authentik calls an object of `model`, its list route, and how to get one. `None`
/// for models this tool does not look up.
fn kind_of(
    model: &str,
    version: AuthentikVersion,
) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match model {
        "authentik_flows.flow" => (
            "flow",
            "api/v3/flows/instances/",
            "create it in authentik under Flows and Stages > Flows",
        ),
        "authentik_crypto.certificatekeypair" => (
            "certificate key pair",
            "api/v3/crypto/certificatekeypairs/",
            "create or import it in authentik under System > Certificates",
        ),
        "authentik_providers_oauth2.scopemapping" => (
            "scope mapping",
            version.scope_mappings_endpoint().trim_start_matches('/'),
            "authentik ships its scope mappings as managed objects, so the scope name is misspelled or the mapping was deleted (Customization > Property Mappings)",
        ),
        "authentik_core.group" => (
            "group",
            "api/v3/core/groups/",
            "create it in authentik under Directory > Groups",
        ),
        _ => return None,
    })
}

/// Looks every reference up; fails naming each missing one (in blueprint order) and where
/// to create it. A reference that cannot be looked up is left to authentik.
/// `parameter_of` names the task's parameter or CLI flag for an attribute path, when one
/// sets it, so the message can say what to fix on this side.
pub fn check_references(
    client: &AuthentikClient,
    version: AuthentikVersion,
    references: &[Reference],
    parameter_of: impl Fn(&Reference) -> Option<String>,
) -> Result<()> {
    let mut missing = Vec::new();
    for reference in references {
        let Some((kind, route, remedy)) = kind_of(&reference.model, version) else {
            continue;
        };
        if client.find_objects(route, &reference.criteria)? != Lookup::Missing {
            continue;
        }
        let by = reference
            .criteria
            .iter()
            .map(|(f, v)| format!("{f} {v:?}"))
            .collect::<Vec<_>>()
            .join(" and ");
        let fix = match parameter_of(reference) {
            Some(param) => format!("{remedy}; or fix {param}"),
            None => format!("{remedy}; or fix the template"),
        };
        missing.push(format!(
            "no {kind} with {by} (used by the {} entry's {}): {fix}",
            reference.entry_model, reference.attr
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::failed(format!(
        "{} lacks what the blueprint refers to, so nothing was sent: {}",
        client.what(),
        missing.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint::{self, BlueprintOptions};

    #[test]
    fn the_generated_blueprint_refers_to_flows_key_scopes_and_the_group() {
        // On 2026.8 the email mapping is the blueprint's own (a !KeyOf, not looked up).
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.group = Some("staff".into());
        let yaml = blueprint::build(&o).unwrap().yaml;
        let refs = find_references(&yaml);
        let described: Vec<String> = refs
            .iter()
            .map(|r| {
                format!(
                    "{} {}={} @{}",
                    r.model, r.criteria[0].0, r.criteria[0].1, r.attr
                )
            })
            .collect();
        assert_eq!(
            described,
            [
                "authentik_flows.flow slug=default-provider-authorization-implicit-consent @attrs.authorization_flow",
                "authentik_flows.flow slug=default-provider-invalidation-flow @attrs.invalidation_flow",
                "authentik_crypto.certificatekeypair name=authentik Self-signed Certificate @attrs.signing_key",
                "authentik_providers_oauth2.scopemapping managed=goauthentik.io/providers/oauth2/scope-openid @attrs.property_mappings",
                "authentik_providers_oauth2.scopemapping managed=goauthentik.io/providers/oauth2/scope-profile @attrs.property_mappings",
                "authentik_providers_oauth2.scopemapping managed=goauthentik.io/providers/oauth2/scope-offline_access @attrs.property_mappings",
                "authentik_core.group name=staff @attrs.group",
            ]
        );
    }

    #[test]
    fn what_the_blueprint_creates_itself_and_finds_built_from_tags_are_left_out() {
        let yaml = r#"
version: 1
entries:
  - model: authentik_core.group
    identifiers: {name: made-here}
  - model: authentik_policies.policybinding
    identifiers: {order: 0}
    attrs:
      group: !Find [authentik_core.group, [name, made-here]]
      other: !Find [authentik_core.group, [name, !Context group]]
      third: !Find [authentik_core.group, [name, elsewhere]]
"#;
        let refs = find_references(yaml);
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(
            refs[0].criteria,
            [("name".to_string(), "elsewhere".to_string())]
        );
        assert!(find_references("not: [valid").is_empty());
    }
}
