//! Property tests on stable Rust: thousands of generated inputs for the parsers a fuzzer
//! would target (cargo-fuzz needs a nightly toolchain this project's machines do not have).
//! Seeded, so a failure repeats: the seed and the input are in the message.
//!
//! - the config.json editor keeps every other member byte for byte and reads back what it set;
//! - module parameter coercion never panics and never lets a control character through;
//! - the URL rules never panic and never quote a password;
//! - the blueprint diff never shows a literal secret, whatever YAML form holds it.

use affine_authentik::affine::config_file::ConfigFile;
use affine_authentik::affine::oidc_value::OidcValue;
use affine_authentik::ansible::authentik_blueprint::mask_literal_secrets;
use affine_authentik::ansible::params::{parse, Kind, Param, Spec};
use affine_authentik::secret::{Redactor, Secret};
use affine_authentik::web_url::BaseUrl;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

const SEED: u64 = 0x9_2026_1201;
const ROUNDS: usize = 2000;

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// Text from an alphabet that holds every character the parsers treat specially.
fn text(rng: &mut StdRng, max: usize) -> String {
    const ALPHABET: &[char] = &[
        'a', 'Z', '0', '9', ' ', '=', ',', '\'', '"', '\\', ':', '/', '@', '#', '?', '%', '.', '-',
        '_', '{', '}', '[', ']', '\n', '\r', '\t', '\0', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}',
        'é', '\u{feff}', '~',
    ];
    let len = rng.gen_range(0..=max);
    (0..len).map(|_| *pick(rng, ALPHABET)).collect()
}

/// A number as a user may write it, including forms a float cannot hold.
fn number(rng: &mut StdRng) -> String {
    pick(
        rng,
        &[
            "0",
            "-0.0",
            "1.5e3",
            "1E+2",
            "12345678901234567890123",
            "1e400",
            "-1e-400",
            "3.14159265358979323846264338327950288",
            "42",
        ],
    )
    .to_string()
}

/// A JSON value as text, with random spacing, nesting up to `depth`.
fn json_text(rng: &mut StdRng, depth: u32) -> String {
    let ws = |rng: &mut StdRng| pick(rng, &["", " ", "\n  ", "\t"]).to_string();
    match rng.gen_range(0..if depth == 0 { 4 } else { 6 }) {
        0 => number(rng),
        1 => Value::String(text(rng, 8)).to_string(),
        2 => pick(rng, &["true", "false", "null"]).to_string(),
        3 => Value::String("providers.oidc".into()).to_string(),
        4 => {
            let n = rng.gen_range(0..4);
            let items: Vec<String> = (0..n).map(|_| json_text(rng, depth - 1)).collect();
            format!("[{}{}]", items.join(&format!(",{}", ws(rng))), ws(rng))
        }
        _ => object_text(rng, depth - 1, &[]),
    }
}

fn object_text(rng: &mut StdRng, depth: u32, forced: &[(String, String)]) -> String {
    let ws = |rng: &mut StdRng| pick(rng, &["", " ", "\n  ", "\n    "]).to_string();
    let n = rng.gen_range(0..4);
    let mut members: Vec<String> = (0..n)
        .map(|_| {
            format!(
                "{}{}{}:{}{}",
                ws(rng),
                Value::String(text(rng, 6)),
                ws(rng),
                ws(rng),
                json_text(rng, depth)
            )
        })
        .collect();
    for (k, v) in forced {
        let at = rng.gen_range(0..=members.len());
        members.insert(at, format!("{}{}: {v}", ws(rng), Value::String(k.clone())));
    }
    format!("{{{}{}}}", members.join(","), ws(rng))
}

fn oidc(rng: &mut StdRng) -> OidcValue {
    let mut args = Map::new();
    if rng.gen_bool(0.5) {
        args.insert("scope".into(), json!("openid profile email"));
    }
    OidcValue {
        issuer: format!(
            "https://auth.example.com/application/o/{}/",
            rng.gen_range(0..9)
        ),
        client_id: text(rng, 10),
        client_secret: Secret::new(text(rng, 12)),
        args,
    }
}

/// The generator knows which members it placed (`keep0`…), so it checks them verbatim
/// instead of re-scanning the output with the code under test.
#[test]
fn the_config_json_editor_keeps_every_other_byte_and_reads_back_what_it_set() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let (mut edited_rounds, mut kept_checked) = (0, 0);
    for round in 0..ROUNDS / 4 {
        // Members the editor must not touch, each a distinct marker so it can be found.
        let keep: Vec<(String, String)> = (0..rng.gen_range(0..4))
            .map(|i| (format!("keep{i}"), json_text(&mut rng, 2)))
            .collect();
        let mut forced = keep.clone();
        match rng.gen_range(0..4) {
            0 => {}
            1 => forced.push(("oauth".into(), "{}".into())),
            2 => {
                let other = format!(
                    "{{\"providers.google\": {}}}",
                    object_text(&mut rng, 1, &[])
                );
                forced.push(("oauth".into(), other));
            }
            _ => {
                let inner = object_text(
                    &mut rng,
                    1,
                    &[("issuer".into(), "\"https://old.example.com/\"".into())],
                );
                let oauth = object_text(&mut rng, 1, &[("providers.oidc".into(), inner)]);
                forced.push(("oauth".into(), oauth));
            }
        }
        // Generated keys may collide with ours; the last of a name wins, as in JSON readers.
        let original = object_text(&mut rng, 1, &forced);
        let original = if rng.gen_bool(0.2) {
            format!("\u{feff}{original}")
        } else {
            original
        };
        std::fs::write(&path, &original).unwrap();
        let Ok(mut file) = ConfigFile::load(&path) else {
            // Only a generated member named `oauth` or `providers.oidc` that is not an
            // object may be refused.
            assert!(
                original.contains("\"oauth\"") || original.contains("\"providers.oidc\""),
                "round {round}: refused\n{original}"
            );
            continue;
        };
        let wanted = rng.gen_bool(0.8).then(|| oidc(&mut rng));
        edited_rounds += 1;
        file.set_oidc(wanted.as_ref()).unwrap();
        let edited = file.contents();
        // Valid JSON, read back as what was set.
        serde_json::from_str::<serde::de::IgnoredAny>(edited.trim_start_matches('\u{feff}'))
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{original}\n→\n{edited}"));
        file.save(false, false).unwrap();
        let again = ConfigFile::load(&path).unwrap();
        assert_eq!(
            again.oidc(),
            wanted,
            "round {round}:\n{original}\n→\n{edited}"
        );
        assert_eq!(
            edited.starts_with('\u{feff}'),
            original.starts_with('\u{feff}')
        );
        for (key, value) in &keep {
            // A generated key equal to ours would shadow it; skip those rounds' checks.
            if original.matches(&format!("\"{key}\"")).count() == 1 {
                kept_checked += 1;
                assert!(
                    edited.contains(&format!("\"{key}\": {value}")),
                    "round {round}: {key} changed\n{original}\n→\n{edited}"
                );
            }
        }
    }
    // The generator must reach the editor, not only its refusals.
    assert!(
        edited_rounds > ROUNDS / 8 && kept_checked > ROUNDS / 8,
        "{edited_rounds} edited, {kept_checked} members checked"
    );
    eprintln!("{edited_rounds} edits, {kept_checked} members checked verbatim");
}

const SPEC: Spec = Spec {
    module: "prop",
    params: &[
        Param::new("s", Kind::Str),
        Param::new("p", Kind::Path),
        Param::new("n", Kind::Int),
        Param::new("b", Kind::Bool),
        Param::new("d", Kind::Dict),
        Param::new("l", Kind::List),
        Param::new("secret", Kind::Str).no_log(),
    ],
    mutually_exclusive: &[],
};

fn random_value(rng: &mut StdRng) -> Value {
    match rng.gen_range(0..7) {
        0 => Value::String(text(rng, 20)),
        1 => json!(rng.gen::<i64>()),
        2 => json!(rng.gen::<u64>()),
        3 => json!(rng.gen::<f64>() * 10f64.powi(rng.gen_range(-5..30))),
        4 => json!(rng.gen_bool(0.5)),
        5 => json!([text(rng, 5), rng.gen::<f64>(), null]),
        _ => {
            let mut m = Map::new();
            m.insert(text(rng, 4), Value::String(text(rng, 4)));
            m.insert("k".into(), json!(rng.gen::<f64>()));
            Value::Object(m)
        }
    }
}

fn strings_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|i| strings_in(i, out)),
        Value::Object(m) => m.iter().for_each(|(k, i)| {
            out.push(k.clone());
            strings_in(i, out)
        }),
        _ => {}
    }
}

#[test]
fn parameter_coercion_never_panics_and_never_lets_a_control_character_through() {
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    for round in 0..ROUNDS {
        let mut raw = Map::new();
        for name in ["s", "p", "n", "b", "d", "l", "secret"] {
            if rng.gen_bool(0.6) {
                raw.insert(name.into(), random_value(&mut rng));
            }
        }
        let secret = raw.get("secret").cloned();
        let raw = Value::Object(raw);
        let mut redactor = Redactor::new();
        match parse(&SPEC, &raw, &mut redactor) {
            Ok(params) => {
                for name in ["s", "p", "d", "l", "secret"] {
                    let mut texts = Vec::new();
                    if let Some(v) = params.get(name) {
                        strings_in(v, &mut texts);
                    }
                    for t in texts {
                        assert!(
                            !t.chars().any(char::is_control),
                            "round {round}: {name} let {t:?} through from {raw}"
                        );
                    }
                }
                if let Some(n) = raw.get("n").and_then(Value::as_i64) {
                    assert_eq!(params.int("n"), Some(n));
                }
            }
            Err(e) => {
                // A refusal never echoes the secret parameter's value.
                if let Some(Value::String(s)) = &secret {
                    if s.len() >= 4 {
                        assert!(!e.message().contains(s.as_str()), "round {round}: {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn the_url_rules_never_panic_and_never_quote_a_password() {
    let mut rng = StdRng::seed_from_u64(SEED + 2);
    for round in 0..ROUNDS {
        // The marker first: any part of the password a message shows is caught.
        let password = format!("QX7SECRET{}", text(&mut rng, 6));
        let scheme = *pick(&mut rng, &["https://", "http://", "ftp://", "", "HTTPS://"]);
        let tail = text(&mut rng, 12);
        let input = format!(
            "{scheme}{}:{password}@affine.example.com{}{tail}",
            text(&mut rng, 4),
            pick(&mut rng, &["", ":0", ":99999", ":8080", "/", "/sub"])
        );
        if let Err(e) = BaseUrl::parse("--affine-url", &input) {
            assert!(
                !e.0.contains("QX7SECRET"),
                "round {round}: {input:?} → {}",
                e.0
            );
        }
        // Without credentials: never a panic, whatever the text.
        let _ = BaseUrl::parse("u", &format!("{scheme}{tail}"));
    }
}

#[test]
fn the_blueprint_diff_never_shows_a_literal_secret() {
    let mut rng = StdRng::seed_from_u64(SEED + 3);
    for round in 0..ROUNDS {
        // Secrets as a user's template may hold them: words, punctuation, spaces.
        let words: Vec<String> = (0..rng.gen_range(1..4))
            .map(|_| {
                let len = rng.gen_range(4..10);
                (0..len)
                    .map(|_| *pick(&mut rng, &['k', 'Q', '7', '-', '_', '.', '!']))
                    .collect()
            })
            .collect();
        let secret = format!("S3{}", words.join(" "));
        let key = *pick(
            &mut rng,
            &["client_secret", "\"client_secret\"", "'client_secret'"],
        );
        let value = match rng.gen_range(0..5) {
            0 => Value::String(secret.clone()).to_string(),
            1 => format!("'{}'", secret.replace('\'', "''")),
            2 => format!(">-\n        {}", words.join("\n        ")),
            3 => format!("|\n        {secret}"),
            _ => format!("\n        {}", Value::String(secret.clone())),
        };
        let yaml = format!(
            "version: 1\nentries:\n  - model: authentik_providers_oauth2.oauth2provider\n    attrs:\n      name: x\n      {key}: {value}\n      client_id: id\n"
        );
        let masked = mask_literal_secrets(&yaml);
        for w in &words {
            assert!(
                !masked.contains(w.as_str()),
                "round {round}: {w:?} shown\n{yaml}\n→\n{masked}"
            );
        }
        assert!(masked.contains("client_id: id") || masked.contains("content hidden"));
    }
}
