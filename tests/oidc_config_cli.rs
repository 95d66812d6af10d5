//! `affine-authentik oidc-config`: the JSON object pasted into AFFiNE's admin panel, checked
//! through the built binary, and checked to agree with the blueprint for the same inputs.

mod support;

use serde_json::Value;
use support::process::{command, Captured};

const AFFINE: &str = "https://affine.example.com";
const AUTHENTIK: &str = "https://auth.example.com";
const SECRET_ENV: &str = "AFFINE_OIDC_CLIENT_SECRET";

/// Runs the binary without the variables it reads from the environment, plus `env`.
fn run_with(args: &[&str], env: &[(&str, &str)]) -> Captured {
    Captured::of(command(args).envs(env.iter().copied()))
}

/// `oidc-config` with `args`; asserts success and returns the JSON object and stderr.
fn oidc_config_with(args: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let mut full = vec!["oidc-config"];
    full.extend_from_slice(args);
    let r = run_with(&full, env);
    assert_eq!(r.code, Some(0), "oidc-config {args:?}: {}", r.stderr);
    let value: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {}", r.stdout));
    (value, r.stderr)
}

fn oidc_config(args: &[&str]) -> Value {
    oidc_config_with(args, &[(SECRET_ENV, "the-secret")]).0
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let mut full = vec!["oidc-config"];
    full.extend_from_slice(args);
    let r = run_with(&full, &[]);
    assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
    assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{:?}", r.stderr);
    assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
}

#[test]
fn the_object_holds_exactly_issuer_client_id_secret_and_empty_args() {
    let v = oidc_config(&["--authentik-url", AUTHENTIK, "--affine-url", AFFINE]);
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["args", "clientId", "clientSecret", "issuer"]);
    // AFFiNE 0.22+ requires `args`; `{}` is the least it takes.
    assert_eq!(v["args"], serde_json::json!({}));
}

#[test]
fn the_issuer_is_authentik_url_application_o_slug_with_trailing_slash() {
    for (authentik, slug, issuer) in [
        (
            "https://auth.example.com",
            "affine",
            "https://auth.example.com/application/o/affine/",
        ),
        (
            "https://auth.example.com/",
            "affine_prod-2",
            "https://auth.example.com/application/o/affine_prod-2/",
        ),
        (
            "https://example.com/authentik/",
            "affine",
            "https://example.com/authentik/application/o/affine/",
        ),
    ] {
        let v = oidc_config(&[
            "--authentik-url",
            authentik,
            "--slug",
            slug,
            "--client-id",
            "x",
        ]);
        assert_eq!(v["issuer"], issuer, "{authentik} {slug}");
    }
}

#[test]
fn issuer_flag_is_taken_as_given_and_wins_over_authentik_url() {
    let issuer = "https://sso.example.org/application/o/notes/";
    for extra in [&[][..], &["--authentik-url", AUTHENTIK][..]] {
        let mut args = vec!["--issuer", issuer, "--client-id", "x"];
        args.extend_from_slice(extra);
        assert_eq!(oidc_config(&args)["issuer"], issuer);
    }
}

#[test]
fn authentik_and_affine_urls_can_come_from_the_environment() {
    let (v, _) = oidc_config_with(
        &[],
        &[
            ("AUTHENTIK_URL", AUTHENTIK),
            ("AFFINE_URL", AFFINE),
            (SECRET_ENV, "s"),
        ],
    );
    assert_eq!(
        v["issuer"],
        "https://auth.example.com/application/o/affine/"
    );
    assert_eq!(v["clientId"], "d56d3246075655bb1c6112674216f5f9ccbf2337");
}

#[test]
fn client_id_flag_is_used_as_given() {
    let v = oidc_config(&["--authentik-url", AUTHENTIK, "--client-id", "my-client"]);
    assert_eq!(v["clientId"], "my-client");
}

/// The client id a blueprint for these inputs carries.
fn blueprint_client_id(affine_url: &str, slug: &str) -> String {
    let r = run_with(
        &["blueprint", "--affine-url", affine_url, "--slug", slug],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let doc: serde_yaml::Value = serde_yaml::from_str(&r.stdout).unwrap();
    doc["entries"]
        .as_sequence()
        .and_then(|e| e.iter().find_map(|e| e["attrs"]["client_id"].as_str()))
        .expect("the blueprint has a client_id")
        .to_string()
}

#[test]
fn the_default_client_id_is_the_one_the_blueprint_carries() {
    for (affine, slug) in [
        (AFFINE, "affine"),
        ("https://affine.example.com/", "affine"),
        ("http://notes.internal:3010/affine", "notes"),
    ] {
        let v = oidc_config(&[
            "--authentik-url",
            AUTHENTIK,
            "--affine-url",
            affine,
            "--slug",
            slug,
        ]);
        assert_eq!(
            v["clientId"],
            blueprint_client_id(affine, slug),
            "{affine} {slug}"
        );
    }
    // Different slugs must not share a client id.
    let a = oidc_config(&["--authentik-url", AUTHENTIK, "--affine-url", AFFINE]);
    let b = oidc_config(&[
        "--authentik-url",
        AUTHENTIK,
        "--affine-url",
        AFFINE,
        "--slug",
        "other",
    ]);
    assert_ne!(a["clientId"], b["clientId"]);
}

#[test]
fn the_secret_comes_from_the_environment_without_a_warning() {
    let (v, stderr) = oidc_config_with(
        &["--authentik-url", AUTHENTIK, "--client-id", "x"],
        &[(SECRET_ENV, "s3cr3t-from-env")],
    );
    assert_eq!(v["clientSecret"], "s3cr3t-from-env");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn without_the_secret_env_a_marked_placeholder_and_a_warning() {
    for env in [&[][..], &[(SECRET_ENV, "")][..]] {
        let (v, stderr) =
            oidc_config_with(&["--authentik-url", AUTHENTIK, "--client-id", "x"], env);
        let placeholder = v["clientSecret"].as_str().unwrap();
        assert!(placeholder.starts_with("REPLACE"), "{placeholder}");
        assert!(
            stderr.starts_with("warning:") && stderr.contains(SECRET_ENV),
            "{stderr}"
        );
    }
}

#[test]
fn missing_issuer_inputs_are_a_usage_error() {
    assert_usage_error(&["--client-id", "x"], "--issuer");
    assert_usage_error(&["--affine-url", AFFINE], "--authentik-url");
}

#[test]
fn missing_client_id_inputs_are_a_usage_error() {
    assert_usage_error(&["--authentik-url", AUTHENTIK], "--client-id");
    assert_usage_error(
        &["--authentik-url", AUTHENTIK, "--client-id", ""],
        "--client-id",
    );
}

#[test]
fn bad_urls_and_slugs_are_usage_errors() {
    let id = ["--client-id", "x"];
    for (args, needle) in [
        (
            vec!["--authentik-url", "ftp://auth.example.com"],
            "--authentik-url",
        ),
        (
            vec!["--authentik-url", "auth.example.com"],
            "--authentik-url",
        ),
        (
            vec!["--issuer", "https://auth.example.com/?x=1"],
            "--issuer",
        ),
        (
            vec!["--authentik-url", AUTHENTIK, "--slug", "token"],
            "reserved",
        ),
        (
            vec!["--authentik-url", AUTHENTIK, "--slug", "a b"],
            "--slug",
        ),
    ] {
        let mut full = args.clone();
        full.extend_from_slice(&id);
        assert_usage_error(&full, needle);
    }
    assert_usage_error(
        &[
            "--authentik-url",
            AUTHENTIK,
            "--affine-url",
            "https://a.example/#x",
        ],
        "--affine-url",
    );
    // The same client id rule as `blueprint`: 1 to 255 characters, no spaces.
    assert_usage_error(
        &["--authentik-url", AUTHENTIK, "--client-id", "a b"],
        "--client-id",
    );
}
