//! Contract test: generated blueprints against authentik's own JSON schema for blueprint
//! files, `$AFFINE_AUTHENTIK_REFERENCE_DIR/authentik-blueprint-schema.json`. Without that
//! file the test says it skipped and passes, so the rest of the suite runs anywhere.
//!
//! The schema is authentik 2026.8.0-rc1's: it knows only the list shape of
//! `redirect_uris`, so only targets from 2024.8.5 on (without 2024.10.0-2) are validated
//! against it; the string-shaped targets are covered by `blueprint_cli`.
//!
//! The schema's root sends each entry through `oneOf` a branch per model, each branch
//! `$ref`-ing `#/$defs/model_<model>` for `attrs` and `identifiers`. So an entry is checked
//! twice: the whole document against the root (what an editor does), and each entry's attrs
//! and identifiers against its model's own definition (a clear message naming the field,
//! instead of "not valid under any of the schemas listed in oneOf"). The negative cases
//! below prove both readings look inside `attrs`.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use jsonschema::{Draft, Validator};
use serde_json::{json, Value as Json};
use serde_yaml::Value as Yaml;
use support::process::{command, Captured};

const SCHEMA_FILE: &str = "authentik-blueprint-schema.json";
const PROVIDER_MODEL: &str = "authentik_providers_oauth2.oauth2provider";

/// Targets whose blueprints have list-shaped `redirect_uris`, the shape this schema knows.
const LIST_SHAPED_TARGETS: [&str; 7] = [
    "2024.8.5",
    "2024.10.3",
    "2024.12",
    "2025.8",
    "2026.2",
    "2026.5",
    "2026.8",
];

/// Placeholders for what authentik's tags resolve to at import time.
const UUID: &str = "5f8a1a3e-7c1d-4c8e-9a2b-3d4e5f6a7b8c";
const INTEGER_PK: i64 = 1;
const SECRET_TEXT: &str = "secret-resolved-from-env-or-file";

fn schema_path() -> Option<PathBuf> {
    let path = support::reference::reference_dir()?.join(SCHEMA_FILE);
    path.is_file().then_some(path)
}

/// The schema, or `None` after saying why the contract test is skipped.
fn schema() -> Option<Json> {
    let Some(path) = schema_path() else {
        eprintln!(
            "blueprint_schema_contract: skipped: set AFFINE_AUTHENTIK_REFERENCE_DIR to the folder holding {SCHEMA_FILE}"
        );
        return None;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    Some(serde_json::from_str(&text).expect("the schema is JSON"))
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn compile(schema: &Json) -> Validator {
    jsonschema::options()
        .with_draft(Draft::Draft7)
        // Draft 7 knows no `uuid` format, so the crate would ignore it; authentik's
        // foreign keys are uuids, and a slug where a `!Find` belongs must fail.
        .with_format("uuid", is_uuid)
        .should_validate_formats(true)
        .build(schema)
        .expect("the schema compiles")
}

/// authentik's schema, compiled for whole documents and per model.
struct Contract {
    document: Validator,
    models: BTreeMap<String, Validator>,
}

impl Contract {
    fn new(schema: &Json) -> Self {
        let defs = &schema["$defs"];
        let models = [
            "authentik_providers_oauth2.scopemapping",
            PROVIDER_MODEL,
            "authentik_core.application",
            "authentik_policies.policybinding",
        ]
        .into_iter()
        .map(|model| {
            let def = format!("model_{model}");
            assert!(defs.get(&def).is_some(), "the schema has no {def}");
            let one_model = json!({
                "$schema": schema["$schema"],
                "allOf": [{"$ref": format!("#/$defs/{def}")}],
                "$defs": defs,
            });
            (model.to_string(), compile(&one_model))
        })
        .collect();
        Contract {
            document: compile(schema),
            models,
        }
    }

    /// Every violation, each naming where it is; empty when the blueprint conforms.
    fn violations(&self, blueprint: &Json) -> Vec<String> {
        let mut found: Vec<String> = self
            .document
            .iter_errors(blueprint)
            // The root's message quotes the whole failing instance; the start is enough.
            .map(|e| {
                let message: String = e.to_string().chars().take(160).collect();
                format!("document {}: {message}", e.instance_path)
            })
            .collect();
        for (i, entry) in blueprint["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let model = entry["model"].as_str().unwrap_or_default();
            let Some(validator) = self.models.get(model) else {
                found.push(format!("entries/{i}: no definition for model {model:?}"));
                continue;
            };
            for part in ["attrs", "identifiers"] {
                if let Some(value) = entry.get(part) {
                    found.extend(
                        validator
                            .iter_errors(value)
                            .map(|e| format!("entries/{i}/{part}{}: {e}", e.instance_path)),
                    );
                }
            }
        }
        found
    }
}

/// YAML with authentik's tags → JSON with what the tags resolve to: `!Find` a uuid (every
/// lookup here finds a uuid-keyed object), `!KeyOf` the primary key of the entry it names
/// (an integer for a provider, a uuid for an application), `!Env` / `!File` a string.
fn with_placeholders(yaml: &Yaml, primary_keys: &BTreeMap<String, Json>) -> Json {
    match yaml {
        Yaml::Tagged(t) => match t.tag.to_string().trim_start_matches('!') {
            "Find" => json!(UUID),
            "KeyOf" => {
                let id = t.value.as_str().expect("!KeyOf takes an id");
                primary_keys
                    .get(id)
                    .unwrap_or_else(|| panic!("!KeyOf {id} names no earlier entry"))
                    .clone()
            }
            "Env" | "File" => json!(SECRET_TEXT),
            other => panic!("no placeholder for !{other}"),
        },
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => json!(b),
        Yaml::Number(n) => serde_json::to_value(n).unwrap(),
        Yaml::String(s) => json!(s),
        Yaml::Sequence(items) => items
            .iter()
            .map(|v| with_placeholders(v, primary_keys))
            .collect(),
        Yaml::Mapping(map) => map
            .iter()
            .filter(|(k, v)| !(v.is_null() && k.as_str().is_some_and(is_nullable_foreign_key)))
            .map(|(k, v)| {
                let key = k.as_str().expect("keys are strings").to_string();
                (key, with_placeholders(v, primary_keys))
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// authentik's schema generator writes a foreign key as `type: string, format: uuid` without
/// `null`, though the model field is nullable and the serializer takes null (the recorded
/// `PATCH /api/v3/providers/oauth2/<pk>/ {"encryption_key": null}` answered 200, and the
/// importer validates with the same serializer). So an explicit null there is left out of
/// what the schema sees, as if the field were not given.
fn is_nullable_foreign_key(key: &str) -> bool {
    key == "encryption_key"
}

/// The primary key type of each `id`-ed entry, as its `!KeyOf` resolves.
fn primary_keys(doc: &Yaml) -> BTreeMap<String, Json> {
    doc["entries"]
        .as_sequence()
        .expect("entries is a list")
        .iter()
        .filter_map(|entry| {
            let id = entry["id"].as_str()?;
            let pk = if entry["model"].as_str() == Some(PROVIDER_MODEL) {
                json!(INTEGER_PK)
            } else {
                json!(UUID)
            };
            Some((id.to_string(), pk))
        })
        .collect()
}

/// A generated blueprint for `args`, as the JSON the schema sees.
fn generated(args: &[&str]) -> Json {
    let mut full = vec!["blueprint", "--affine-url", "https://affine.example.com"];
    full.extend_from_slice(args);
    let out = Captured::of(command(&full).env("AFFINE_OIDC_CLIENT_SECRET", "an-inline-secret"));
    assert_eq!(out.code, Some(0), "{full:?}: {}", out.stderr);
    let doc: Yaml = serde_yaml::from_str(&out.stdout).unwrap();
    with_placeholders(&doc, &primary_keys(&doc))
}

#[test]
fn generated_blueprints_conform_to_authentiks_schema() {
    let Some(schema) = schema() else { return };
    let contract = Contract::new(&schema);
    let mut checked = 0;
    for version in LIST_SHAPED_TARGETS {
        let mut secret_modes: Vec<&[&str]> = vec![
            &[],
            &["--client-secret-env", "AUTHENTIK_AFFINE_SECRET"],
            &["--inline-client-secret"],
        ];
        if !matches!(version, "2024.8.5" | "2024.10.3" | "2024.12") {
            secret_modes.push(&["--client-secret-file", "/run/secrets/affine"]);
        }
        for secret in secret_modes {
            for group in [&[][..], &["--group", "affine-users"][..]] {
                let mut args = vec!["--authentik-version", version];
                args.extend_from_slice(secret);
                args.extend_from_slice(group);
                let blueprint = generated(&args);
                let violations = contract.violations(&blueprint);
                assert!(violations.is_empty(), "{args:?}:\n{violations:#?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 7 * 3 * 2 + 4 * 2);
}

/// Where the entry of `model` sits in a generated blueprint (an email scope mapping may come
/// first, on authentik 2025.10+).
fn entry_mut<'a>(blueprint: &'a mut Json, model: &str) -> &'a mut Json {
    blueprint["entries"]
        .as_array_mut()
        .and_then(|e| e.iter_mut().find(|e| e["model"] == json!(model)))
        .unwrap_or_else(|| panic!("no {model} entry"))
}

/// The newest blueprint with `change` applied to it, and what the contract says.
fn violations_after(contract: &Contract, change: impl FnOnce(&mut Json)) -> Vec<String> {
    let mut blueprint = generated(&["--group", "affine-users"]);
    assert!(contract.violations(&blueprint).is_empty());
    change(&mut blueprint);
    contract.violations(&blueprint)
}

/// Both readings must refuse the change, and the per-model one must name `field`.
fn assert_refused(contract: &Contract, what: &str, field: &str, change: impl FnOnce(&mut Json)) {
    let violations = violations_after(contract, change);
    assert!(
        violations.iter().any(|v| v.starts_with("document ")),
        "{what}: the whole-document validation accepted it: {violations:#?}"
    );
    assert!(
        violations
            .iter()
            .any(|v| v.starts_with("entries/") && v.contains(field)),
        "{what}: no per-model violation naming {field}: {violations:#?}"
    );
}

#[test]
fn the_contract_refuses_attrs_the_models_definition_forbids() {
    let Some(schema) = schema() else { return };
    let contract = Contract::new(&schema);
    assert_refused(&contract, "client_type: banana", "client_type", |b| {
        entry_mut(b, PROVIDER_MODEL)["attrs"]["client_type"] = json!("banana");
    });
    assert_refused(
        &contract,
        "redirect_uris as the old regex string",
        "redirect_uris",
        |b| {
            entry_mut(b, PROVIDER_MODEL)["attrs"]["redirect_uris"] =
                json!(r"https://affine\.example\.com/oauth/callback");
        },
    );
    assert_refused(
        &contract,
        "redirect_uris without url",
        "redirect_uris",
        |b| {
            entry_mut(b, PROVIDER_MODEL)["attrs"]["redirect_uris"] =
                json!([{"matching_mode": "strict"}]);
        },
    );
    assert_refused(&contract, "an unknown grant type", "grant_types", |b| {
        entry_mut(b, PROVIDER_MODEL)["attrs"]["grant_types"] =
            json!(["authorization_code", "banana"]);
    });
    assert_refused(
        &contract,
        "a flow slug instead of !Find",
        "authorization_flow",
        |b| {
            entry_mut(b, PROVIDER_MODEL)["attrs"]["authorization_flow"] =
                json!("default-provider-authorization-implicit-consent");
        },
    );
    assert_refused(&contract, "provider as a uuid", "provider", |b| {
        entry_mut(b, "authentik_core.application")["attrs"]["provider"] = json!(UUID);
    });
    assert_refused(&contract, "binding target as an integer", "target", |b| {
        entry_mut(b, "authentik_policies.policybinding")["identifiers"]["target"] =
            json!(INTEGER_PK);
    });
}

#[test]
fn the_contract_refuses_an_unknown_model() {
    let Some(schema) = schema() else { return };
    let contract = Contract::new(&schema);
    let violations = violations_after(&contract, |b| {
        entry_mut(b, "authentik_core.application")["model"] = json!("authentik_core.banana");
    });
    assert!(
        violations.iter().any(|v| v.starts_with("document ")),
        "{violations:#?}"
    );
    assert!(
        violations
            .iter()
            .any(|v| v.contains("no definition for model")),
        "{violations:#?}"
    );
}

#[test]
fn uuid_placeholders_are_checked_as_uuids() {
    assert!(is_uuid(UUID));
    for bad in [
        "",
        "default-provider-invalidation-flow",
        "5f8a1a3e7c1d4c8e9a2b3d4e5f6a7b8c",
    ] {
        assert!(!is_uuid(bad), "{bad}");
    }
}
