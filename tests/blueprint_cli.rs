//! `affine-authentik blueprint` as a user runs it: the built binary, its stdout, stderr,
//! exit code and the files it writes. The output is read back with a YAML loader that
//! knows authentik's tags, the way authentik itself reads it.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_yaml::Value;
use support::process::{command, Captured};

const AFFINE: &str = "https://affine.example.com";
const CALLBACK: &str = "https://affine.example.com/oauth/callback";
const SCOPE_MAPPING_MODEL: &str = "authentik_providers_oauth2.scopemapping";
const PROVIDER_MODEL: &str = "authentik_providers_oauth2.oauth2provider";
const APPLICATION_MODEL: &str = "authentik_core.application";
const BINDING_MODEL: &str = "authentik_policies.policybinding";
const SECRET_ENV: &str = "AFFINE_OIDC_CLIENT_SECRET";
/// Quotes, `: ` and ` #` on purpose: the literal must survive YAML quoting.
const SECRET: &str = "s3cr3t: \"not\" a #comment";

/// Every version target the tool must get right, with what its blueprint must hold:
/// (version, redirect_uris as a list, invalidation_flow, grant_types).
const TARGETS: [(&str, bool, bool, bool); 10] = [
    ("2024.6.4", false, false, false),
    ("2024.8.4", false, false, false),
    ("2024.8.5", true, false, false),
    ("2024.10.2", false, true, false),
    ("2024.10.3", true, true, false),
    ("2024.12", true, true, false),
    ("2025.8", true, true, false),
    ("2026.2", true, true, false),
    ("2026.5", true, true, true),
    ("2026.8", true, true, true),
];

// ---------------------------------------------------------------------------------------
// Running the binary

/// `blueprint` with `args`; asserts success and returns the YAML.
fn blueprint(args: &[&str]) -> String {
    let mut full = vec!["blueprint"];
    full.extend_from_slice(args);
    let r = Captured::of(&mut command(&full));
    assert_eq!(r.code, Some(0), "blueprint {args:?} failed: {}", r.stderr);
    r.stdout
}

/// `blueprint --affine-url AFFINE --authentik-version VERSION`, loaded.
fn blueprint_for(version: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--affine-url", AFFINE, "--authentik-version", version];
    args.extend_from_slice(extra);
    load_authentik_yaml(&blueprint(&args)).unwrap_or_else(|e| panic!("{version}: {e}"))
}

/// Asserts the usage-error contract: exit 2, nothing on stdout, one line on stderr that
/// contains `needle`. Returns stderr.
fn assert_usage_error(r: &Captured, what: &str, needle: &str) -> String {
    assert_eq!(r.code, Some(2), "{what}: exit code; stderr: {}", r.stderr);
    assert!(
        r.stdout.is_empty(),
        "{what}: stdout not empty: {}",
        r.stdout
    );
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {:?}", r.stderr);
    assert!(
        lines[0].starts_with("affine-authentik: error: "),
        "{what}: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(needle),
        "{what}: {:?} does not mention {needle:?}",
        lines[0]
    );
    r.stderr.clone()
}

/// `blueprint --affine-url AFFINE --inline-client-secret ARGS` with `secret` in SECRET_ENV.
fn inline_blueprint(secret: &str, args: &[&str]) -> Captured {
    let mut full = vec![
        "blueprint",
        "--affine-url",
        AFFINE,
        "--inline-client-secret",
    ];
    full.extend_from_slice(args);
    Captured::of(command(&full).env(SECRET_ENV, secret))
}

fn bad_blueprint(args: &[&str], needle: &str) {
    let mut full = vec!["blueprint"];
    full.extend_from_slice(args);
    assert_usage_error(
        &Captured::of(&mut command(&full)),
        &format!("{args:?}"),
        needle,
    );
}

// ---------------------------------------------------------------------------------------
// A YAML loader that knows authentik's tags

/// The node kind an authentik tag accepts, as authentik's `BlueprintLoader` checks it.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Scalar,
    Sequence,
    ScalarOrSequence,
}

/// authentik's custom tags (blueprints/v1/common.py) and the node each takes.
const AUTHENTIK_TAGS: [(&str, Kind); 13] = [
    ("KeyOf", Kind::Scalar),
    ("Find", Kind::Sequence),
    ("Env", Kind::ScalarOrSequence),
    ("File", Kind::ScalarOrSequence),
    ("Context", Kind::ScalarOrSequence),
    ("Format", Kind::Sequence),
    ("If", Kind::Sequence),
    ("Condition", Kind::Sequence),
    ("Enumerate", Kind::Sequence),
    ("Index", Kind::Scalar),
    ("Value", Kind::Scalar),
    ("AtIndex", Kind::Sequence),
    ("ParseJSON", Kind::Scalar),
];

/// Parses YAML and accepts exactly authentik's tags on the node kind each takes; any other
/// tag (or a tag on the wrong kind of node) is an error, as it is for authentik.
///
/// serde_norway keeps local tags (`!KeyOf`) in a `Value` but silently drops global ones
/// (`!!python/object:...`, `!<tag:...>`), which authentik's loader refuses. So the tags are
/// also read off the text, and both readings must agree.
fn load_authentik_yaml(text: &str) -> Result<Value, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let written = tags_in_text(text)?;
    for tag in &written {
        let name = tag.strip_prefix('!').unwrap_or(tag);
        if !AUTHENTIK_TAGS.iter().any(|(known, _)| *known == name) {
            return Err(format!("{tag} is not an authentik tag"));
        }
    }
    let parsed = check_tags(&doc, "$")?;
    if parsed != written.len() {
        return Err(format!(
            "the text holds {} tags, the parsed document {parsed}: {written:?}",
            written.len()
        ));
    }
    Ok(doc)
}

/// The tags written in `text`, in order. A lexical reading, enough for single-line
/// scalars: a tag is a `!` where a node starts (line start, after `- `, `: `, `? `, `[`,
/// `{`, `,`, or after another tag or anchor), outside quotes and comments.
fn tags_in_text(text: &str) -> Result<Vec<String>, String> {
    let mut tags = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('%') {
            return Err(format!("line {}: YAML directives are not used here", n + 1));
        }
        let chars: Vec<char> = line.chars().collect();
        let token_end = |from: usize| {
            (from..chars.len())
                .find(|&j| chars[j].is_whitespace() || ",]}".contains(chars[j]))
                .unwrap_or(chars.len())
        };
        let mut node_start = true;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let spaced = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
            match c {
                _ if c.is_whitespace() => {}
                '#' if i == 0 || chars[i - 1].is_whitespace() => break,
                '-' | ':' | '?' if spaced => node_start = true,
                '[' | '{' | ',' => node_start = true,
                '!' | '&' if node_start => {
                    let end = token_end(i);
                    if c == '!' {
                        tags.push(chars[i..end].iter().collect());
                    }
                    i = end;
                    continue;
                }
                '"' | '\'' if node_start => {
                    let mut j = i + 1;
                    while j < chars.len() && chars[j] != c {
                        j += if c == '"' && chars[j] == '\\' { 2 } else { 1 };
                    }
                    node_start = false;
                    i = j + 1;
                    continue;
                }
                _ => node_start = false,
            }
            i += 1;
        }
    }
    Ok(tags)
}

/// Checks each tagged node's kind; returns how many tagged nodes there are.
fn check_tags(value: &Value, path: &str) -> Result<usize, String> {
    match value {
        Value::Tagged(t) => {
            let name = t.tag.to_string();
            let name = name.trim_start_matches('!');
            let kind = AUTHENTIK_TAGS
                .iter()
                .find(|(tag, _)| *tag == name)
                .map(|(_, kind)| *kind)
                .ok_or_else(|| format!("{path}: !{name} is not an authentik tag"))?;
            let is_scalar = matches!(
                t.value,
                Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null
            );
            let is_sequence = t.value.is_sequence();
            let fits = match kind {
                Kind::Scalar => is_scalar,
                Kind::Sequence => is_sequence,
                Kind::ScalarOrSequence => is_scalar || is_sequence,
            };
            if !fits {
                return Err(format!("{path}: !{name} takes a {kind:?} node"));
            }
            Ok(1 + check_tags(&t.value, path)?)
        }
        Value::Sequence(items) => items.iter().enumerate().try_fold(0, |sum, (i, v)| {
            Ok(sum + check_tags(v, &format!("{path}[{i}]"))?)
        }),
        Value::Mapping(map) => map.iter().try_fold(0, |sum, (k, v)| {
            let key = k.as_str().unwrap_or("?");
            Ok(sum + check_tags(k, path)? + check_tags(v, &format!("{path}.{key}"))?)
        }),
        _ => Ok(0),
    }
}

/// A YAML snippet as a value, to compare tagged nodes with.
fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn entries(doc: &Value) -> &Vec<Value> {
    doc["entries"].as_sequence().expect("entries is a list")
}

/// The entry of `model` (the provider, the application): found by model, since an email
/// scope mapping comes first on authentik 2025.10+.
fn entry<'a>(doc: &'a Value, model: &str) -> &'a Value {
    entries(doc)
        .iter()
        .find(|e| e["model"].as_str() == Some(model))
        .unwrap_or_else(|| panic!("no {model} entry"))
}

fn provider_attrs(doc: &Value) -> &Value {
    &entry(doc, PROVIDER_MODEL)["attrs"]
}

fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs.as_mapping().expect("attrs is a mapping").get(key)
}

#[test]
fn the_loader_rejects_foreign_tags_and_wrong_node_kinds() {
    let good = "a: !KeyOf x\nb: !Find [m, [k, \"v, !x\"]]\nc: !Env [V, d] # !Nope\nd: ['it''s !fine', a!b]\n";
    assert_eq!(tags_in_text(good).unwrap(), ["!KeyOf", "!Find", "!Env"]);
    assert!(load_authentik_yaml(good).is_ok());
    for bad in [
        "a: !Banana x",
        "a: !!python/object:os.system x",
        "a: !KeyOf [x]",
        "a: !Find x",
        "a: !Env {k: v}",
        "a: [!Keyof x]",
        "a: !<!KeyOf> x",
        "a: !!str x",
        "a: [b, !!python/object/apply:os.system [ls]]",
        "- &anchor !!binary aGk=",
        "%TAG !a! tag:example.com,2000:\n---\nb: !a!KeyOf x",
    ] {
        assert!(load_authentik_yaml(bad).is_err(), "{bad:?} was accepted");
    }
}

// ---------------------------------------------------------------------------------------
// Version targets

#[test]
fn every_version_target_loads_with_authentiks_tags_and_has_the_blueprint_header() {
    for (version, ..) in TARGETS {
        let text = blueprint(&["--affine-url", AFFINE, "--authentik-version", version]);
        assert_eq!(
            text.lines().next(),
            Some("# yaml-language-server: $schema=https://goauthentik.io/blueprints/schema.json"),
            "{version}"
        );
        let doc = load_authentik_yaml(&text).unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(doc["version"].as_u64(), Some(1), "{version}");
        assert!(
            doc["metadata"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            "{version}: metadata.name"
        );
        assert!(
            doc["metadata"]["labels"]["blueprints.goauthentik.io/description"]
                .as_str()
                .is_some_and(|d| d.contains(AFFINE)),
            "{version}: description label"
        );
    }
}

#[test]
fn redirect_uris_are_an_escaped_regex_string_before_the_cutover_and_a_strict_list_after() {
    let strict = yaml(&format!("[{{matching_mode: strict, url: \"{CALLBACK}\"}}]"));
    for (version, as_list, ..) in TARGETS {
        let doc = blueprint_for(version, &[]);
        let uris = attr(provider_attrs(&doc), "redirect_uris").expect("redirect_uris");
        if as_list {
            assert_eq!(uris, &strict, "{version}");
        } else {
            // A regex before 2024.8.5 and in 2024.10.0-2: dots escaped, so only the
            // callback itself matches.
            assert_eq!(
                uris.as_str(),
                Some(r"https://affine\.example\.com/oauth/callback"),
                "{version}"
            );
        }
    }
}

#[test]
fn invalidation_flow_is_set_from_2024_10_and_absent_before() {
    let flow = yaml("!Find [authentik_flows.flow, [slug, default-provider-invalidation-flow]]");
    for (version, _, invalidation, _) in TARGETS {
        let doc = blueprint_for(version, &[]);
        let got = attr(provider_attrs(&doc), "invalidation_flow");
        if invalidation {
            assert_eq!(got, Some(&flow), "{version}");
        } else {
            assert_eq!(got, None, "{version}");
        }
    }
}

#[test]
fn grant_types_are_authorization_code_and_refresh_token_from_2026_5_and_absent_before() {
    let grants = yaml("[authorization_code, refresh_token]");
    for (version, _, _, grant_types) in TARGETS {
        let doc = blueprint_for(version, &[]);
        let got = attr(provider_attrs(&doc), "grant_types");
        if grant_types {
            assert_eq!(got, Some(&grants), "{version}");
        } else {
            assert_eq!(got, None, "{version}");
        }
    }
}

#[test]
fn another_slug_gets_its_own_provider_name_so_instances_do_not_share_a_provider() {
    let doc = blueprint_for("2026.8", &["--slug", "team"]);
    assert_eq!(
        entry(&doc, PROVIDER_MODEL)["identifiers"]["name"].as_str(),
        Some("Provider for AFFiNE (team)")
    );
    let doc = blueprint_for("2026.8", &["--slug", "team", "--provider-name", "Mine"]);
    assert_eq!(
        entry(&doc, PROVIDER_MODEL)["identifiers"]["name"].as_str(),
        Some("Mine")
    );
}

/// authentik 2025.10+ sends `email_verified: false` from its managed email mapping, so the
/// blueprint brings its own there (by default).
fn has_own_email_mapping(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap()) >= (2025, 10)
}

/// The entries but the email scope mapping: the objects every target has.
fn object_entries(doc: &Value) -> Vec<&Value> {
    entries(doc)
        .iter()
        .filter(|e| e["model"].as_str() != Some(SCOPE_MAPPING_MODEL))
        .collect()
}

#[test]
fn the_provider_comes_first_with_an_id_and_the_application_points_back_with_keyof() {
    for (version, ..) in TARGETS {
        let doc = blueprint_for(version, &[]);
        // The email mapping, when there is one, comes before the provider that uses it:
        // !KeyOf sees only earlier entries.
        let first = entries(&doc)[0]["model"].as_str();
        if has_own_email_mapping(version) {
            assert_eq!(first, Some(SCOPE_MAPPING_MODEL), "{version}");
        } else {
            assert_eq!(first, Some(PROVIDER_MODEL), "{version}");
        }
        let list = object_entries(&doc);
        assert_eq!(list.len(), 2, "{version}: no binding without --group");
        assert_eq!(list[0]["model"].as_str(), Some(PROVIDER_MODEL), "{version}");
        let provider_id = list[0]["id"].as_str().expect("the provider has an id");
        assert_eq!(
            list[0]["identifiers"]["name"].as_str(),
            Some("Provider for AFFiNE")
        );
        assert_eq!(
            list[1]["model"].as_str(),
            Some(APPLICATION_MODEL),
            "{version}"
        );
        assert_eq!(list[1]["identifiers"]["slug"].as_str(), Some("affine"));
        assert_eq!(list[1]["attrs"]["name"].as_str(), Some("AFFiNE"));
        assert_eq!(list[1]["attrs"]["meta_launch_url"].as_str(), Some(AFFINE));
        assert_eq!(
            attr(&list[1]["attrs"], "provider"),
            Some(&yaml(&format!("!KeyOf {provider_id}"))),
            "{version}"
        );
    }
}

fn managed_scope(scope: &str) -> Value {
    yaml(&format!(
        "!Find [authentik_providers_oauth2.scopemapping, [managed, goauthentik.io/providers/oauth2/scope-{scope}]]"
    ))
}

#[test]
fn the_provider_is_confidential_and_finds_its_flow_key_and_scope_mappings() {
    for (version, ..) in TARGETS {
        let doc = blueprint_for(version, &[]);
        let attrs = provider_attrs(&doc);
        assert_eq!(attrs["client_type"].as_str(), Some("confidential"));
        assert_eq!(
            attr(attrs, "authorization_flow"),
            Some(&yaml(
                "!Find [authentik_flows.flow, [slug, default-provider-authorization-implicit-consent]]"
            )),
            "{version}"
        );
        assert_eq!(
            attr(attrs, "signing_key"),
            Some(&yaml(
                "!Find [authentik_crypto.certificatekeypair, [name, authentik Self-signed Certificate]]"
            )),
            "{version}"
        );
        // Said explicitly, so a key set by hand goes on the next apply.
        assert_eq!(
            attr(attrs, "encryption_key"),
            Some(&Value::Null),
            "{version}"
        );
        let email = if has_own_email_mapping(version) {
            own_email_mapping("affine")
        } else {
            managed_scope("email")
        };
        let mappings = vec![
            managed_scope("openid"),
            email,
            managed_scope("profile"),
            // For AFFiNE before 0.25.7, which requires the refresh token it brings.
            managed_scope("offline_access"),
        ];
        assert_eq!(
            attr(attrs, "property_mappings"),
            Some(&Value::Sequence(mappings)),
            "{version}"
        );
    }
}

/// How the provider refers to the blueprint's own email mapping for `slug`.
fn own_email_mapping(slug: &str) -> Value {
    yaml(&format!(
        "!Find [authentik_providers_oauth2.scopemapping, [name, \"AFFiNE email ({slug})\"]]"
    ))
}

/// The email scope mapping entry of a blueprint, if any.
fn email_mapping(doc: &Value) -> Option<&Value> {
    entries(doc)
        .iter()
        .find(|e| e["model"].as_str() == Some(SCOPE_MAPPING_MODEL))
}

#[test]
fn on_2025_10_and_newer_the_email_scope_says_verified_by_default() {
    for (version, ..) in TARGETS {
        let doc = blueprint_for(version, &[]);
        let Some(mapping) = email_mapping(&doc) else {
            assert!(
                !has_own_email_mapping(version),
                "{version}: no email mapping"
            );
            continue;
        };
        assert!(
            has_own_email_mapping(version),
            "{version}: an email mapping"
        );
        // No `id`: the provider finds it by name (a !KeyOf in a failing entry makes
        // authentik 2025.2+ answer an empty 405 instead of its logs).
        assert!(mapping.get("id").is_none(), "{version}");
        assert_eq!(
            mapping["identifiers"]["name"].as_str(),
            Some("AFFiNE email (affine)")
        );
        let attrs = &mapping["attrs"];
        assert_eq!(attrs["name"], mapping["identifiers"]["name"]);
        assert_eq!(attrs["scope_name"].as_str(), Some("email"), "{version}");
        assert!(
            attrs["description"]
                .as_str()
                .unwrap()
                .contains("AFFiNE 0.25.7"),
            "the description says why"
        );
        let expression = attrs["expression"].as_str().unwrap();
        assert!(
            expression.contains("\"email\": request.user.email"),
            "{expression}"
        );
        assert!(
            expression.contains("\"email_verified\": True"),
            "{expression}"
        );
    }
    // Its own name per slug: two AFFiNE instances on one authentik keep their own.
    let doc = blueprint_for("2026.8", &["--slug", "team"]);
    assert_eq!(
        email_mapping(&doc).unwrap()["identifiers"]["name"].as_str(),
        Some("AFFiNE email (team)")
    );
}

#[test]
fn email_verified_attribute_reads_the_users_attribute_on_every_version() {
    for version in ["2024.10.3", "2026.8"] {
        let doc = blueprint_for(version, &["--email-verified", "attribute"]);
        let expression = email_mapping(&doc).expect("an email mapping")["attrs"]["expression"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            expression.contains("request.user.attributes.get(\"email_verified\", False)"),
            "{version}: {expression}"
        );
        assert_eq!(
            provider_attrs(&doc)["property_mappings"][1],
            own_email_mapping("affine"),
            "{version}"
        );
    }
}

#[test]
fn email_verified_authentik_keeps_the_managed_mapping_and_warns_where_affine_refuses_it() {
    for (version, warns) in [("2025.8", false), ("2025.10", true), ("2026.8", true)] {
        let r = Captured::of(&mut command(&[
            "blueprint",
            "--affine-url",
            AFFINE,
            "--authentik-version",
            version,
            "--email-verified",
            "authentik",
        ]));
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let doc = load_authentik_yaml(&r.stdout).unwrap();
        assert!(email_mapping(&doc).is_none(), "{version}");
        assert_eq!(
            provider_attrs(&doc)["property_mappings"][1],
            managed_scope("email")
        );
        assert_eq!(
            r.stderr
                .contains("AFFiNE 0.25.7 and newer refuse that login"),
            warns,
            "{version}: {}",
            r.stderr
        );
    }
    let r = Captured::of(&mut command(&[
        "blueprint",
        "--affine-url",
        AFFINE,
        "--email-verified",
        "yes",
    ]));
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--email-verified"), "{}", r.stderr);
}

#[test]
fn scope_adds_to_openid_email_and_profile() {
    let doc = blueprint_for("2025.8", &["--scope", "offline_access", "--scope", "email"]);
    let expected: Vec<Value> = ["openid", "email", "profile", "offline_access"]
        .iter()
        .map(|s| managed_scope(s))
        .collect();
    assert_eq!(
        attr(provider_attrs(&doc), "property_mappings"),
        Some(&Value::Sequence(expected))
    );
}

#[test]
fn the_default_target_is_the_newest_2026_8() {
    assert_eq!(
        blueprint(&["--affine-url", AFFINE]),
        blueprint(&["--affine-url", AFFINE, "--authentik-version", "2026.8"])
    );
}

// ---------------------------------------------------------------------------------------
// Client secret modes

fn client_secret(doc: &Value) -> &Value {
    attr(provider_attrs(doc), "client_secret").expect("client_secret")
}

#[test]
fn by_default_the_secret_is_read_from_authentiks_env_affine_oidc_client_secret() {
    let doc = blueprint_for("2026.8", &[]);
    assert_eq!(client_secret(&doc), &yaml("!Env AFFINE_OIDC_CLIENT_SECRET"));
}

#[test]
fn client_secret_env_names_the_variable_authentik_reads() {
    for (version, ..) in TARGETS {
        let doc = blueprint_for(version, &["--client-secret-env", "AUTHENTIK_AFFINE_SECRET"]);
        assert_eq!(
            client_secret(&doc),
            &yaml("!Env AUTHENTIK_AFFINE_SECRET"),
            "{version}"
        );
    }
}

#[test]
fn client_secret_file_gives_a_file_tag_from_2025_8() {
    for version in ["2025.8", "2026.2", "2026.8"] {
        let doc = blueprint_for(version, &["--client-secret-file", "/run/secrets/affine"]);
        assert_eq!(
            client_secret(&doc),
            &yaml("!File /run/secrets/affine"),
            "{version}"
        );
    }
}

#[test]
fn client_secret_file_is_refused_before_2025_8() {
    for version in ["2025.6", "2024.12", "2024.6.4"] {
        bad_blueprint(
            &[
                "--affine-url",
                AFFINE,
                "--authentik-version",
                version,
                "--client-secret-file",
                "/run/secrets/affine",
            ],
            "2025.8",
        );
    }
}

#[test]
fn inline_client_secret_writes_the_literal_value_and_warns_without_showing_it() {
    let r = inline_blueprint(SECRET, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let doc = load_authentik_yaml(&r.stdout).unwrap();
    assert_eq!(client_secret(&doc).as_str(), Some(SECRET));
    let warnings: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "one warning: {:?}", r.stderr);
    assert!(
        warnings[0].starts_with("warning:") && warnings[0].contains("clear text"),
        "{:?}",
        r.stderr
    );
    assert!(!r.stderr.contains(SECRET));
}

#[test]
fn an_inline_secret_longer_than_authentik_stores_is_refused() {
    let at_limit = "s".repeat(255);
    let r = inline_blueprint(&at_limit, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let too_long = "s".repeat(256);
    let r = inline_blueprint(&too_long, &[]);
    assert_usage_error(&r, "256-character secret", "255");
    assert!(!r.stderr.contains("sssss"));
}

#[test]
fn inline_client_secret_without_the_env_is_refused() {
    bad_blueprint(
        &["--affine-url", AFFINE, "--inline-client-secret"],
        SECRET_ENV,
    );
    let r = inline_blueprint("", &[]);
    assert_usage_error(&r, "empty secret env", SECRET_ENV);
}

#[test]
fn the_secret_never_reaches_stderr_in_any_mode_or_failure() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.j2");
    fs::write(&broken, "secret: {{ client_secret.value }}\n  oops: [").unwrap();
    let unrenderable = dir.path().join("unrenderable.j2");
    fs::write(&unrenderable, "{{ client_secret.value + 1 }}").unwrap();
    let broken = broken.to_str().unwrap();
    let unrenderable = unrenderable.to_str().unwrap();
    let cases: [&[&str]; 7] = [
        &[],
        &["--client-secret-env", "OTHER_VAR"],
        &["--client-secret-file", "/run/secrets/affine"],
        &["--inline-client-secret"],
        &["--inline-client-secret", "--authentik-version", "2024.8"],
        &["--inline-client-secret", "--template", broken],
        &["--inline-client-secret", "--template", unrenderable],
    ];
    for extra in cases {
        let mut args = vec!["blueprint", "--affine-url", AFFINE];
        args.extend_from_slice(extra);
        let r = Captured::of(command(&args).env(SECRET_ENV, SECRET));
        assert!(
            !r.stderr.contains(SECRET) && !r.stderr.contains("s3cr3t"),
            "{extra:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn two_secret_flags_together_are_a_usage_error() {
    let env = ["--client-secret-env", "VAR"];
    let file = ["--client-secret-file", "/p"];
    let inline = ["--inline-client-secret"];
    for (a, b) in [
        (&env[..], &file[..]),
        (&env[..], &inline[..]),
        (&file[..], &inline[..]),
    ] {
        let mut args = vec!["blueprint", "--affine-url", AFFINE];
        args.extend_from_slice(a);
        args.extend_from_slice(b);
        let r = Captured::of(command(&args).env(SECRET_ENV, SECRET));
        assert_usage_error(&r, &format!("{args:?}"), "cannot be used with");
    }
}

#[test]
fn clap_usage_errors_are_one_line_too() {
    let r = Captured::of(&mut command(&["blueprint"]));
    assert_usage_error(&r, "missing --affine-url", "--affine-url");
    let r = Captured::of(&mut command(&[
        "blueprint",
        "--affine-url",
        AFFINE,
        "--no-such-flag",
    ]));
    assert_usage_error(&r, "unknown flag", "--no-such-flag");
}

// ---------------------------------------------------------------------------------------
// --group

#[test]
fn group_adds_a_policy_binding_to_the_application_after_it() {
    // A comma and a `#`: the name sits inside a flow sequence and must stay one scalar.
    let group = "affine users, #ops";
    for (version, ..) in TARGETS {
        let doc = blueprint_for(version, &["--group", group]);
        let list = object_entries(&doc);
        assert_eq!(list.len(), 3, "{version}");
        assert_eq!(list[1]["model"].as_str(), Some(APPLICATION_MODEL));
        let app_id = list[1]["id"].as_str().expect("the application has an id");
        let binding = list[2];
        assert_eq!(binding["model"].as_str(), Some(BINDING_MODEL), "{version}");
        let ids = &binding["identifiers"];
        assert_eq!(
            attr(ids, "target"),
            Some(&yaml(&format!("!KeyOf {app_id}"))),
            "{version}"
        );
        // JSON string syntax is valid YAML: the expected node, quoted independently.
        let find = yaml(&format!(
            "!Find [authentik_core.group, [name, {}]]",
            serde_json::to_string(group).unwrap()
        ));
        // The group is an attribute, not an identifier: a changed --group updates the
        // binding found by (target, order) instead of adding a second one.
        assert_eq!(attr(&binding["attrs"], "group"), Some(&find), "{version}");
        assert_eq!(attr(ids, "group"), None, "{version}");
        assert_eq!(attr(ids, "order"), Some(&yaml("0")), "{version}");
    }
}

// ---------------------------------------------------------------------------------------
// -o FILE

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn output_file_holds_the_blueprint_and_stdout_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("affine.yaml");
    let r = Captured::of(&mut command(&[
        "blueprint",
        "--affine-url",
        AFFINE,
        "-o",
        path.to_str().unwrap(),
    ]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        blueprint(&["--affine-url", AFFINE])
    );
    // Only the file: no temporary file left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_failing_run_leaves_an_existing_output_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("affine.yaml");
    fs::write(&path, "old content\n").unwrap();
    let out = path.to_str().unwrap();
    let bad_template = dir.path().join("bad.j2");
    fs::write(&bad_template, "{% if %}").unwrap();
    let cases: [&[&str]; 4] = [
        &["--authentik-version", "latest"],
        &["--slug", "token"],
        &["--template", bad_template.to_str().unwrap()],
        &["--inline-client-secret"],
    ];
    for extra in cases {
        let mut args = vec!["blueprint", "--affine-url", AFFINE, "-o", out];
        args.extend_from_slice(extra);
        let r = Captured::of(&mut command(&args));
        assert_eq!(r.code, Some(2), "{extra:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old content\n");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn output_into_a_missing_directory_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let path = missing.join("affine.yaml");
    let r = Captured::of(&mut command(&[
        "blueprint",
        "--affine-url",
        AFFINE,
        "-o",
        path.to_str().unwrap(),
    ]));
    assert_ne!(r.code, Some(0));
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains("affine-authentik: error:"),
        "{}",
        r.stderr
    );
    assert!(!missing.exists() && !path.exists());
}

#[test]
fn an_output_file_with_an_inline_secret_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.yaml");
    let existing = dir.path().join("existing.yaml");
    fs::write(&existing, "old\n").unwrap();
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o644)).unwrap();
    for path in [&fresh, &existing] {
        let r = inline_blueprint(SECRET, &["-o", path.to_str().unwrap()]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(mode_of(path), 0o600, "{}", path.display());
        assert!(fs::read_to_string(path).unwrap().contains("s3cr3t"));
    }
    // Without a literal secret a new file is an ordinary, readable one.
    let plain = dir.path().join("plain.yaml");
    blueprint(&["--affine-url", AFFINE, "-o", plain.to_str().unwrap()]);
    assert_eq!(mode_of(&plain), 0o644);
}

// ---------------------------------------------------------------------------------------
// Determinism and the client id

#[test]
fn output_is_byte_identical_across_runs() {
    let args = [
        "--affine-url",
        AFFINE,
        "--group",
        "affine-users",
        "--scope",
        "offline_access",
        "--scope",
        "openid",
        "--scope",
        "email",
    ];
    let first = blueprint(&args);
    for _ in 0..3 {
        assert_eq!(blueprint(&args), first);
    }
}

fn default_client_id(url: &str, slug: &str) -> String {
    let doc = load_authentik_yaml(&blueprint(&["--affine-url", url, "--slug", slug])).unwrap();
    provider_attrs(&doc)["client_id"]
        .as_str()
        .expect("client_id is a string")
        .to_string()
}

#[test]
fn the_default_client_id_is_40_lowercase_hex() {
    let id = default_client_id("https://x.example", "affine");
    assert_eq!(id.len(), 40, "{id}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{id}"
    );
}

#[test]
fn the_default_client_id_ignores_a_trailing_slash_and_differs_per_slug_and_url() {
    let id = default_client_id("https://x.example", "affine");
    assert_eq!(default_client_id("https://x.example/", "affine"), id);
    assert_ne!(default_client_id("https://x.example", "affine2"), id);
    assert_ne!(default_client_id("https://y.example", "affine"), id);
}

#[test]
fn the_default_client_id_derivation_is_pinned() {
    // sha256("affine-authentik/client-id/v1\nhttps://affine.example.com\naffine")[..40].
    // Every deployment's client id depends on this: if it changes, existing AFFiNE
    // configurations stop matching their authentik providers.
    assert_eq!(
        default_client_id(AFFINE, "affine"),
        "d56d3246075655bb1c6112674216f5f9ccbf2337"
    );
}

#[test]
fn client_id_flag_replaces_the_derived_id() {
    let doc = blueprint_for("2026.8", &["--client-id", "affine-client"]);
    assert_eq!(
        provider_attrs(&doc)["client_id"].as_str(),
        Some("affine-client")
    );
}

// ---------------------------------------------------------------------------------------
// URLs

#[test]
fn a_sub_path_callback_is_the_url_without_trailing_slash_plus_oauth_callback() {
    for url in [
        "https://example.com/apps/affine/",
        "https://example.com/apps/affine",
    ] {
        let doc = load_authentik_yaml(&blueprint(&["--affine-url", url])).unwrap();
        assert_eq!(
            provider_attrs(&doc)["redirect_uris"][0]["url"].as_str(),
            Some("https://example.com/apps/affine/oauth/callback"),
            "{url}"
        );
        assert_eq!(
            entry(&doc, "authentik_core.application")["attrs"]["meta_launch_url"].as_str(),
            Some("https://example.com/apps/affine")
        );
        let old = blueprint_for_url(url, "2024.6.4");
        assert_eq!(
            provider_attrs(&old)["redirect_uris"].as_str(),
            Some(r"https://example\.com/apps/affine/oauth/callback")
        );
    }
}

fn blueprint_for_url(url: &str, version: &str) -> Value {
    load_authentik_yaml(&blueprint(&[
        "--affine-url",
        url,
        "--authentik-version",
        version,
    ]))
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Bad input: one line on stderr, nothing on stdout, exit 2

#[test]
fn an_affine_url_that_is_not_a_plain_http_url_is_refused() {
    for url in [
        "ftp://affine.example.com",
        "file:///etc/passwd",
        "https://affine.example.com/?team=1",
        "https://affine.example.com/#login",
        "affine.example.com",
        "https://",
        "http://[::1",
        "",
    ] {
        bad_blueprint(&["--affine-url", url], "--affine-url");
    }
}

#[test]
fn a_slug_with_a_bad_character_is_refused() {
    for slug in ["af fine", "a/b", "a.b", "affiné", ""] {
        bad_blueprint(&["--affine-url", AFFINE, "--slug", slug], "--slug");
    }
}

#[test]
fn each_reserved_slug_is_refused() {
    for slug in [
        "authorize",
        "token",
        "device",
        "userinfo",
        "introspect",
        "revoke",
    ] {
        bad_blueprint(&["--affine-url", AFFINE, "--slug", slug], "reserved");
    }
}

#[test]
fn an_empty_name_is_refused() {
    for name in ["", "   "] {
        bad_blueprint(&["--affine-url", AFFINE, "--name", name], "--name");
    }
}

#[test]
fn an_unknown_authentik_version_is_refused() {
    // Older than the oldest supported, a series that does not exist, or not a version.
    for version in ["2023.10", "2026.3", "latest", "2026", "2027.13", "2026.8.x"] {
        bad_blueprint(
            &["--affine-url", AFFINE, "--authentik-version", version],
            "unknown authentik version",
        );
    }
}

#[test]
fn a_newer_authentik_than_known_gets_the_newest_rules_and_one_warning() {
    let mut full = vec!["blueprint", "--affine-url", AFFINE, "--authentik-version"];
    for (version, newest) in [("2026.11.0-rc1", "2026.8"), ("2027.2", "2026.8")] {
        full.push(version);
        let r = Captured::of(&mut command(&full));
        full.pop();
        assert_eq!(r.code, Some(0), "{version}: {}", r.stderr);
        let warnings: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.contains("newer than this tool knows"))
            .collect();
        assert_eq!(warnings.len(), 1, "{version}: {}", r.stderr);
        assert!(warnings[0].contains(newest), "{}", warnings[0]);
        // The newest rules: 2026.5+'s grant_types, the list form of redirect_uris.
        let doc = load_authentik_yaml(&r.stdout).unwrap();
        let provider = provider_attrs(&doc);
        let grants: Vec<&str> = provider["grant_types"]
            .as_sequence()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(grants, ["authorization_code", "refresh_token"], "{version}");
        assert!(provider["redirect_uris"].is_sequence(), "{version}");
    }
}

/// Runs `blueprint` with a custom template written to a temporary directory, twice: to
/// stdout, and with `-o` into that directory. Both must fail as usage errors mentioning
/// `needle`, and the directory must hold nothing but the template afterwards.
fn bad_template(template: &str, version: &str, needle: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.yaml.j2");
    fs::write(&path, template).unwrap();
    let out = dir.path().join("out.yaml");
    let base = [
        "blueprint",
        "--affine-url",
        AFFINE,
        "--authentik-version",
        version,
        "--template",
        path.to_str().unwrap(),
    ];
    let stderr = assert_usage_error(&Captured::of(&mut command(&base)), template, needle);
    let mut with_output = base.to_vec();
    with_output.extend(["-o", out.to_str().unwrap()]);
    assert_usage_error(&Captured::of(&mut command(&with_output)), template, needle);
    assert!(!out.exists(), "a failed render wrote {}", out.display());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    stderr
}

fn builtin_template() -> String {
    fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/templates/blueprint.yaml.j2"
    ))
    .unwrap()
}

#[test]
fn a_template_that_does_not_parse_is_refused() {
    bad_template(
        "{% if %}\nversion: 1\n{% endif %}\n",
        "2026.8",
        "mine.yaml.j2",
    );
    bad_template("{{ unclosed\n", "2026.8", "mine.yaml.j2");
}

#[test]
fn a_template_that_does_not_render_is_refused() {
    // Undefined variables are errors, not empty strings.
    bad_template("client_id: {{ no_such_variable }}\n", "2026.8", "undefined");
    bad_template("{{ client_id.nope.deeper }}\n", "2026.8", "undefined");
}

#[test]
fn a_copy_of_the_builtin_template_renders_the_builtin_blueprint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.j2");
    fs::write(&path, builtin_template()).unwrap();
    for (version, ..) in TARGETS {
        let args = ["--affine-url", AFFINE, "--authentik-version", version];
        let mut custom = args.to_vec();
        custom.extend(["--template", path.to_str().unwrap()]);
        assert_eq!(blueprint(&custom), blueprint(&args), "{version}");
    }
}

#[test]
fn a_template_that_drops_invalidation_flow_is_refused_naming_the_field() {
    let block = "{%- if features.invalidation_flow %}\n      invalidation_flow: !Find [authentik_flows.flow, [slug, {{ invalidation_flow | yaml }}]]\n{%- endif %}\n";
    let builtin = builtin_template();
    assert!(
        builtin.contains(block),
        "the built-in template changed: update this test"
    );
    let dropped = builtin.replace(block, "");
    for version in ["2024.10.2", "2024.12", "2026.8"] {
        bad_template(&dropped, version, "invalidation_flow");
    }
    // Before 2024.10 the field is not needed, so the same template is fine there.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.j2");
    fs::write(&path, &dropped).unwrap();
    blueprint(&[
        "--affine-url",
        AFFINE,
        "--authentik-version",
        "2024.8.5",
        "--template",
        path.to_str().unwrap(),
    ]);
}

#[test]
fn a_template_that_points_the_redirect_uri_elsewhere_is_refused() {
    let moved = builtin_template().replace("{{ callback_url | yaml }}", "https://evil.example/cb");
    bad_template(&moved, "2026.8", "redirect_uris");
}

// ---------------------------------------------------------------------------------------
// Help

#[test]
fn blueprint_help_shows_examples() {
    let r = Captured::of(&mut command(&["blueprint", "--help"]));
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("Examples:"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("affine-authentik blueprint --affine-url https://affine.example.com"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_template_that_breaks_the_id_token_affine_verifies_is_refused() {
    let builtin = builtin_template();
    let signing = "      signing_key: !Find [authentik_crypto.certificatekeypair, [name, {{ signing_key | yaml }}]]\n";
    let clear = "      encryption_key: null\n";
    assert!(
        builtin.contains(signing) && builtin.contains(clear),
        "the built-in template changed: update this test"
    );
    // No signing key: authentik signs with HS256 and the client secret.
    bad_template(&builtin.replace(signing, ""), "2026.8", "signing_key");
    bad_template(
        &builtin.replace(signing, "      signing_key: \"\"\n"),
        "2026.8",
        "HS256",
    );
    // An encryption key: authentik sends a JWE.
    let encrypted = builtin.replace(
        clear,
        "      encryption_key: !Find [authentik_crypto.certificatekeypair, [name, {{ signing_key | yaml }}]]\n",
    );
    bad_template(&encrypted, "2026.8", "encryption_key");
}

#[test]
fn a_template_that_keeps_the_managed_email_mapping_on_2025_10_is_refused() {
    let builtin = builtin_template();
    let own = "{%- if scope == \"email\" and email_mapping %}";
    assert!(
        builtin.contains(own),
        "the built-in template changed: update this test"
    );
    let managed = builtin.replace(own, "{%- if false %}");
    let stderr = bad_template(&managed, "2026.2", "email_verified");
    assert!(stderr.contains("AFFiNE 0.25.7"), "{stderr}");
}
