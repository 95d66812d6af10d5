//! `affine-authentik apply`: the module's reconcile from a shell, against a stand-in AFFiNE.
//! Secrets come only from the environment and never appear in stdout or stderr.

mod support;

use std::fs;

use serde_json::{json, Value};
use support::affine_standin::{AffineOptions, AffineStandin};
use support::process::{command, refs, secret_values, unreachable_issuer, Captured};

const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-pass-SECRET";
const CLIENT_ID: &str = "affine-client-id";
const CLIENT_SECRET: &str = "apply-client-secret-SECRET-41";
const MASK: &str = "********";

/// Runs `apply ARGS` with `env`, then checks that no secret (those in `env`, the known
/// ones, and every session id the stand-in saw) is in stdout or stderr.
#[track_caller]
fn apply(args: &[&str], env: &[(&str, &str)], affine: Option<&AffineStandin>) -> Captured {
    let run = Captured::of(command(&["apply"]).args(args).envs(env.iter().copied()));
    run.assert_no_secrets(&[ADMIN_PASSWORD, CLIENT_SECRET, "-SECRET"]);
    let mut secrets = secret_values(env);
    if let Some(affine) = affine {
        secrets.extend(affine.session_material());
    }
    run.assert_no_secrets(&refs(&secrets));
    run
}

fn api_args(affine: &AffineStandin) -> Vec<String> {
    vec![
        "--affine-url".into(),
        affine.url(),
        "--admin-email".into(),
        ADMIN_EMAIL.into(),
        "--issuer".into(),
        unreachable_issuer().into(),
        "--client-id".into(),
        CLIENT_ID.into(),
        "--timeout".into(),
        "5".into(),
    ]
}

const SECRETS_ENV: [(&str, &str); 2] = [
    ("AFFINE_ADMIN_PASSWORD", ADMIN_PASSWORD),
    ("AFFINE_OIDC_CLIENT_SECRET", CLIENT_SECRET),
];

/// 0.26.1 rejects nothing the CLI can send, and its single discovery attempt after a write
/// fails fast here (no DNS), which is all these tests need.
fn standin() -> AffineStandin {
    AffineStandin::start(AffineOptions::new("0.26.1"))
}

fn wanted() -> Value {
    json!({"args": {}, "issuer": unreachable_issuer(), "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})
}

#[test]
fn apply_changes_then_reports_ok_with_secrets_from_the_environment() {
    let affine = standin();
    let args = api_args(&affine);
    let first = apply(&refs(&args), &SECRETS_ENV, Some(&affine));
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.starts_with("changed: "), "{}", first.stdout);
    assert_eq!(affine.stored_oidc(), Some(wanted()));
    assert_eq!(affine.write_count(), 1);

    let second = apply(&refs(&args), &SECRETS_ENV, Some(&affine));
    assert_eq!(second.code, Some(0), "{}{}", second.stdout, second.stderr);
    assert!(second.stdout.starts_with("ok: "), "{}", second.stdout);
    assert_eq!(second.stdout.lines().count(), 1, "{}", second.stdout);
    assert_eq!(affine.write_count(), 1);
}

#[test]
fn apply_takes_a_session_token_from_the_environment() {
    let affine = standin();
    let token = affine.session_token_for_admin();
    let args = api_args(&affine);
    let run = apply(
        &refs(&args),
        &[
            ("AFFINE_SESSION_TOKEN", token.as_str()),
            ("AFFINE_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ],
        Some(&affine),
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("changed: "), "{}", run.stdout);
    assert_eq!(affine.sign_in_count(), 0);
    assert_eq!(affine.stored_oidc(), Some(wanted()));
}

#[test]
fn secrets_are_not_accepted_on_the_command_line() {
    for flag in ["--admin-password", "--client-secret", "--session-token"] {
        let run = apply(&[flag, "cli-secret-SECRET-3"], &[], None);
        assert_eq!(
            run.code,
            Some(2),
            "{flag} must not exist: {}{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn apply_without_the_client_secret_in_the_environment_names_the_variable() {
    let affine = standin();
    let args = api_args(&affine);
    let run = apply(
        &refs(&args),
        &[("AFFINE_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        Some(&affine),
    );
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("AFFINE_OIDC_CLIENT_SECRET"),
        "{}",
        run.stderr
    );
    assert!(affine.requests().is_empty());
}

#[test]
fn apply_check_writes_nothing_and_says_what_would_change() {
    let affine = standin();
    let mut args = api_args(&affine);
    args.push("--check".into());
    let run = apply(&refs(&args), &SECRETS_ENV, Some(&affine));
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("changed: "), "{}", run.stdout);
    assert!(run.stdout.contains("check mode"), "{}", run.stdout);
    assert_eq!(affine.write_count(), 0);
    assert_eq!(affine.stored_oidc(), None);
}

#[test]
fn apply_diff_shows_the_change_with_the_secret_masked() {
    let old_secret = "old-apply-secret-SECRET-7";
    let affine = standin();
    let mut stored = wanted();
    stored["clientSecret"] = json!(old_secret);
    stored["clientId"] = json!("old-client-id");
    affine.set_stored_oidc(stored);
    let mut args = api_args(&affine);
    args.push("--diff".into());
    let run = apply(&refs(&args), &SECRETS_ENV, Some(&affine));
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains(old_secret), "{}", run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("changed: "), "{}", run.stdout);
    assert!(
        lines.contains(&"--- before") && lines.contains(&"+++ after"),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&"- clientId: \"old-client-id\""),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&"+ clientId: \"affine-client-id\""),
        "{}",
        run.stdout
    );
    let secret_lines: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("clientSecret:"))
        .collect();
    assert_eq!(
        secret_lines.len(),
        2,
        "a changed secret is a -/+ pair: {}",
        run.stdout
    );
    assert!(
        secret_lines.iter().all(|l| l.contains(MASK)),
        "{}",
        run.stdout
    );
    assert!(
        lines.contains(&format!("  issuer: \"{}\"", unreachable_issuer()).as_str()),
        "{}",
        run.stdout
    );
}

#[test]
fn a_failing_apply_exits_non_zero_with_one_line_on_stderr_and_no_secret() {
    let affine = standin();
    let args = api_args(&affine);
    let wrong = "wrong-pass-SECRET-5";
    let run = apply(
        &refs(&args),
        &[
            ("AFFINE_ADMIN_PASSWORD", wrong),
            ("AFFINE_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ],
        Some(&affine),
    );
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("affine-authentik: error: "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("wrong e-mail or password"),
        "{}",
        run.stderr
    );

    let old = AffineStandin::start(AffineOptions::new("0.20.0"));
    let args = api_args(&old);
    let run = apply(&refs(&args), &SECRETS_ENV, Some(&old));
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("OAUTH_OIDC_ISSUER"), "{}", run.stderr);
}

#[test]
fn apply_help_does_not_show_secrets_from_the_environment() {
    let run = apply(&["--help"], &SECRETS_ENV, None);
    assert_eq!(run.code, Some(0));
    assert!(
        run.stdout.contains("AFFINE_OIDC_CLIENT_SECRET"),
        "{}",
        run.stdout
    );
}

#[test]
fn apply_to_a_config_file_warns_about_the_restart_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let path_str = path.to_str().unwrap();
    let args = [
        "--config-file",
        path_str,
        "--issuer",
        unreachable_issuer(),
        "--client-id",
        CLIENT_ID,
        "--arg",
        "scope=openid profile email",
    ];
    let env = [("AFFINE_OIDC_CLIENT_SECRET", CLIENT_SECRET)];
    let run = apply(&args, &env, None);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("changed: "), "{}", run.stdout);
    assert!(run.stderr.starts_with("warning: "), "{}", run.stderr);
    assert!(run.stderr.contains("restart"), "{}", run.stderr);
    let doc: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        doc["oauth"]["providers.oidc"]["args"],
        json!({"scope": "openid profile email"})
    );
    let again = apply(&args, &env, None);
    assert!(again.stdout.starts_with("ok: "), "{}", again.stdout);
    assert!(again.stderr.is_empty(), "{}", again.stderr);
}

#[test]
fn a_value_affine_rejects_fails_without_quoting_the_secret() {
    // AFFiNE (0.22+) wants an issuer matching ^https?:// and its INVALID_APP_CONFIG message
    // quotes the whole value, clientSecret included. An upper-case scheme is a valid URL
    // for us and invalid for AFFiNE: the error must reach stderr with the secret masked.
    let affine = AffineStandin::start(AffineOptions::new("0.25.0"));
    let upper = unreachable_issuer().replace("http://", "HTTP://");
    let mut args = api_args(&affine);
    let at = args.iter().position(|a| a == "--issuer").unwrap() + 1;
    args[at] = upper;
    for check in [false, true] {
        let mut args = args.clone();
        if check {
            args.push("--check".into());
        }
        let run = apply(&refs(&args), &SECRETS_ENV, Some(&affine));
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("issuer"), "{}", run.stderr);
        assert!(run.stderr.contains(MASK), "{}", run.stderr);
    }
    assert_eq!(affine.write_count(), 0);
}

#[test]
fn an_explicit_issuer_wins_over_authentik_url_from_the_environment() {
    // AUTHENTIK_URL exported for the other commands must not clash with --issuer here.
    let affine = standin();
    let args = api_args(&affine);
    let mut env = SECRETS_ENV.to_vec();
    env.push(("AUTHENTIK_URL", "https://auth.example.com"));
    let run = apply(&refs(&args), &env, Some(&affine));
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(affine.stored_oidc(), Some(wanted()));
}

#[test]
fn authentik_url_from_the_environment_gives_the_issuer() {
    let affine = standin();
    let args: Vec<String> = api_args(&affine)
        .into_iter()
        .filter(|a| a != "--issuer" && a != unreachable_issuer())
        .collect();
    let mut env = SECRETS_ENV.to_vec();
    env.push(("AUTHENTIK_URL", "https://auth.example.com/"));
    let run = apply(&refs(&args), &env, Some(&affine));
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        affine.stored_oidc().unwrap()["issuer"],
        json!("https://auth.example.com/application/o/affine/")
    );
}

#[test]
fn usage_errors_name_this_commands_flags_not_the_modules_parameters() {
    let affine = standin();
    let url = affine.url();
    let run = apply(
        &[
            "--affine-url",
            &url,
            "--admin-email",
            ADMIN_EMAIL,
            "--client-id",
            CLIENT_ID,
        ],
        &SECRETS_ENV,
        Some(&affine),
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("--issuer") && run.stderr.contains("--authentik-url"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("authentik_url"), "{}", run.stderr);
    assert!(affine.requests().is_empty());
}

#[test]
fn apply_on_affine_0_20_names_the_oauth_oidc_variables_before_signing_in() {
    // 0.17-0.20 mask any refusal as "Internal Server Error" (with the OAuth plugin on or
    // off); the version, asked first, gives the message that says what to do instead.
    for oauth_plugin in [false, true] {
        let mut opts = AffineOptions::new("0.20.0");
        opts.oauth_plugin = oauth_plugin;
        let old = AffineStandin::start(opts);
        let args = api_args(&old);
        let run = apply(&refs(&args), &SECRETS_ENV, Some(&old));
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        for words in ["0.20.0", "OAUTH_OIDC_ISSUER", "OAUTH_OIDC_CLIENT_SECRET"] {
            assert!(run.stderr.contains(words), "{words}: {}", run.stderr);
        }
        assert!(!run.stderr.contains("malformed"), "{}", run.stderr);
        assert_eq!(old.sign_in_count(), 0, "no sign-in spent on it");
    }
}

#[test]
fn apply_accepts_an_affine_newer_than_it_knows_with_one_warning_naming_it() {
    let newer = AffineStandin::start(AffineOptions::new("0.28.0"));
    let args = api_args(&newer);
    let run = apply(&refs(&args), &SECRETS_ENV, Some(&newer));
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("changed: "), "{}", run.stdout);
    assert_eq!(newer.stored_oidc(), Some(wanted()));
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert!(
        warnings[0].contains("0.28.0") && warnings[0].contains("newer"),
        "{}",
        warnings[0]
    );
}

#[test]
fn missing_credentials_and_secret_are_named_together_once() {
    // A new user's first try: neither the administrator nor the client secret. Both are
    // said in one message, the variables once each, and nothing is sent anywhere.
    let r = apply(
        &[
            "--affine-url",
            "http://127.0.0.1:9",
            "--authentik-url",
            "https://auth.example.com",
        ],
        &[],
        None,
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let line = r.stderr.trim();
    assert!(line.contains("AFFiNE's administrator is missing"), "{line}");
    assert!(
        line.contains("AFFINE_OIDC_CLIENT_SECRET is required"),
        "{line}"
    );
    assert_eq!(line.matches("AFFINE_SESSION_TOKEN").count(), 1, "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
}
