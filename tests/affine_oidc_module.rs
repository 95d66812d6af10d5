//! The `affine_oidc` Ansible module as Ansible runs it: the BUILT binary given one args
//! file (task params plus `_ansible_*` keys), against a stand-in AFFiNE of each version.
//! Every run is checked for the protocol (stdout is exactly one JSON object) and for
//! secrets (none of them anywhere in stdout or stderr).

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use support::affine_standin::{AffineOptions, AffineStandin, Fault, Recorded};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin, ProviderState};
use support::module_run::ModuleCall;
use support::process::{closed_port, command, unreachable_issuer};

/// The versions the module must get right (0.21: no validation; 0.25: validateAppConfig is
/// a Mutation; 0.26.1: a Query only; 0.27: background discovery and the SSRF guard).
const VERSIONS: [&str; 4] = ["0.21.0", "0.25.0", "0.26.1", "0.27.0"];

// The stand-in's admin (AffineOptions::new).
const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-pass-SECRET";
const CLIENT_ID: &str = "affine-client-id";
/// Every secret value in this file contains "-SECRET", so a leak of any of them (or of a
/// part of one) is caught by the marker check as well as by the exact-value check.
const CLIENT_SECRET: &str = "client-secret-SECRET-7c1e9a";
const SECRET_MARKER: &str = "-SECRET";
const MASK: &str = "********";

// ---------------------------------------------------------------------------------------
// Running the module

/// An `affine_oidc` task with `params`. Every run also looks for this file's secrets and
/// the marker in the output (ModuleCall::run adds the secret params and env values).
fn task(params: Value) -> ModuleCall {
    ModuleCall::new("affine_oidc", params)
        .secret(ADMIN_PASSWORD)
        .secret(CLIENT_SECRET)
        .secret(SECRET_MARKER)
}

// ---------------------------------------------------------------------------------------
// Fixtures

fn standin(version: &str) -> AffineStandin {
    AffineStandin::start(AffineOptions::new(version))
}

/// `state: present` with e-mail and password against `affine`.
fn present(affine: &AffineStandin) -> Value {
    json!({
        "affine_url": affine.url(),
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "issuer": unreachable_issuer(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "timeout": 5,
    })
}

/// [`present`] with `token` as the session token instead of e-mail and password.
fn present_with_token(affine: &AffineStandin, token: &str) -> Value {
    with(
        present(affine),
        json!({"admin_email": null, "admin_password": null, "session_token": token}),
    )
}

/// `base` with `patch`'s keys set (a null value removes the key).
fn with(base: Value, patch: Value) -> Value {
    let mut map: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
    for (k, v) in patch.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
    Value::Object(map)
}

fn wanted_value() -> Value {
    json!({"args": {}, "issuer": unreachable_issuer(), "clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})
}

/// What the task stores on AFFiNE `version`: before 0.25.7 with `args.scope` asking for
/// `offline_access`, since those versions refuse a token answer without a refresh token.
fn wanted_value_on(version: &str) -> Value {
    let mut value = wanted_value();
    let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
    let patch: u32 = version.split('.').nth(2).unwrap().parse().unwrap();
    if (minor, patch) < (25, 7) {
        value["args"] = json!({"scope": "openid profile email offline_access"});
    }
    value
}

fn affine_defaults() -> Value {
    json!({"args": {}, "issuer": "", "clientId": "", "clientSecret": ""})
}

fn requests_to(affine: &AffineStandin, path: &str) -> Vec<Recorded> {
    affine
        .requests()
        .into_iter()
        .filter(|r| r.path_only() == path)
        .collect()
}

/// The GraphQL documents received whose text mentions `field`.
fn graphql_documents_with(affine: &AffineStandin, field: &str) -> Vec<String> {
    requests_to(affine, "/graphql")
        .iter()
        .filter_map(|r| r.json())
        .filter_map(|b| b["query"].as_str().map(str::to_string))
        .filter(|q| q.contains(field))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Protocol and dispatch

#[test]
fn basename_affine_oidc_runs_the_module_without_the_module_name_key() {
    let affine = standin("0.26.1");
    let mut t = task(present(&affine));
    t.basename = true;
    t.with_module_name = false;
    let run = t.run_against(&affine);
    run.assert_ok();
    assert!(run.changed(), "{}", run.out.stdout);
    assert_eq!(affine.stored_oidc(), Some(wanted_value()));
    // And with the key, as Ansible sends it.
    t.with_module_name = true;
    let again = t.run_against(&affine);
    again.assert_ok();
    assert!(!again.changed(), "{}", again.out.stdout);
}

#[test]
fn the_module_subcommand_rejects_an_unknown_module_name_as_one_json_object() {
    let mut t = task(json!({"_ansible_module_name": "no_such_module"}));
    t.with_module_name = false;
    // No module read the parameters, so there is no invocation to report.
    t.expect_invocation = false;
    t.run(&[])
        .assert_failed_with(&["no_such_module", "affine_oidc"]);
}

#[test]
fn an_args_file_that_is_not_json_fails_as_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("args");
    fs::write(&path, "key=value other=1").unwrap();
    let out = command(&["module"]).arg(&path).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["failed"], json!(true));
    assert!(
        v["msg"].as_str().unwrap().contains("not a JSON object"),
        "{v}"
    );
}

#[test]
fn an_args_file_with_a_byte_order_mark_is_read() {
    // A BOM is not JSON but says nothing: the module reads past it, and then reports on the
    // arguments themselves (here: the required ones are missing).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("args");
    fs::write(
        &path,
        "\u{feff}{\"_ansible_module_name\": \"affine_oidc\", \"state\": \"present\"}",
    )
    .unwrap();
    let out = command(&["module"]).arg(&path).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["failed"], json!(true));
    let msg = v["msg"].as_str().unwrap();
    assert!(!msg.contains("not a JSON object"), "{v}");
    assert!(msg.contains("affine_url"), "{v}");
}

#[test]
fn a_timeout_too_large_for_the_clock_is_refused_not_a_panic() {
    // This was the one natural panic found (`now + timeout` overflowed inside the HTTP
    // client, issue 9); it is now a usage error naming the limit. No input is known to
    // panic any more, so the panic hook's one-JSON-object path has no trigger from outside.
    let affine = standin("0.26.1");
    let t = task(with(present(&affine), json!({"timeout": i64::MAX})));
    let run = t.run_against(&affine);
    run.assert_failed_with(&["timeout", "3600"]);
    assert!(!run.msg().contains("internal error"), "{}", run.msg());
}

// ---------------------------------------------------------------------------------------
// Idempotence and stored value

#[test]
fn first_run_changes_second_run_is_ok_and_the_stored_value_is_affines_shape_on_every_version() {
    for version in VERSIONS {
        let affine = standin(version);
        let first = task(present(&affine)).run_against(&affine);
        first.assert_ok();
        assert!(first.changed(), "{version}: {}", first.out.stdout);
        assert_eq!(
            affine.stored_oidc(),
            Some(wanted_value_on(version)),
            "{version}: stored value (args included)"
        );
        assert_eq!(affine.write_count(), 1, "{version}");
        assert_eq!(first.json["affine_version"], json!(version), "{version}");
        assert_eq!(first.json["end_state"]["clientSecret"], json!(MASK));
        assert_eq!(
            first.json["end_state"]["issuer"],
            json!(unreachable_issuer())
        );
        assert_eq!(first.json["existing"]["clientSecret"], json!(""));
        assert!(first.json.get("diff").is_none(), "no diff unless asked");
        let args = &first.json["invocation"]["module_args"];
        assert_eq!(
            args["client_secret"],
            json!("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")
        );
        assert_eq!(
            args["admin_password"],
            json!("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")
        );
        assert_eq!(args["client_id"], json!(CLIENT_ID));

        let second = task(present(&affine)).run_against(&affine);
        second.assert_ok();
        assert!(!second.changed(), "{version}: {}", second.out.stdout);
        assert_eq!(affine.write_count(), 1, "{version}: no second write");
    }
}

#[test]
fn an_issuer_differing_only_by_a_trailing_slash_is_no_change() {
    for version in ["0.21.0", "0.26.1"] {
        let affine = standin(version);
        let mut stored = wanted_value_on(version);
        stored["issuer"] = json!(unreachable_issuer().trim_end_matches('/'));
        affine.set_stored_oidc(stored.clone());
        let run = task(present(&affine)).run_against(&affine);
        run.assert_ok();
        assert!(!run.changed(), "{version}: {}", run.out.stdout);
        assert_eq!(affine.write_count(), 0);
        assert_eq!(affine.stored_oidc(), Some(stored));
    }
}

#[test]
fn a_stored_value_without_args_equals_a_wanted_empty_args() {
    // A value without `args` (0.21 accepted one, and it stays through upgrades) reads back
    // as `args: {}`: against a wanted empty args, not a change. (On 0.21 itself the task
    // wants args.scope, see the_scope_asks_for_offline_access_before_affine_0_25_7.)
    let affine = standin("0.26.1");
    let mut stored = wanted_value();
    stored.as_object_mut().unwrap().remove("args");
    affine.set_stored_oidc(stored);
    let run = task(present(&affine)).run_against(&affine);
    run.assert_ok();
    assert!(!run.changed(), "{}", run.out.stdout);
}

#[test]
fn state_absent_writes_affines_defaults_and_is_idempotent() {
    for version in VERSIONS {
        let affine = standin(version);
        task(present(&affine)).run_against(&affine).assert_ok();
        let absent = with(
            present(&affine),
            json!({"state": "absent", "issuer": null, "client_secret": null, "client_id": null}),
        );
        let first = task(absent.clone()).run_against(&affine);
        first.assert_ok();
        assert!(first.changed(), "{version}: {}", first.out.stdout);
        assert_eq!(affine.stored_oidc(), Some(affine_defaults()), "{version}");
        assert_eq!(affine.write_count(), 2);
        let second = task(absent).run_against(&affine);
        second.assert_ok();
        assert!(!second.changed(), "{version}: {}", second.out.stdout);
        assert_eq!(
            affine.write_count(),
            2,
            "{version}: no write when absent already"
        );
    }
}

#[test]
fn authentik_url_and_slug_give_the_issuer_and_the_client_id_is_derived_from_affine_url() {
    let affine = standin("0.21.0");
    let authentik = format!("http://127.0.0.1:{}", closed_port());
    let params = with(
        present(&affine),
        json!({"issuer": null, "client_id": null, "authentik_url": format!("{authentik}/"), "slug": "notes"}),
    );
    task(params).run_against(&affine).assert_ok();
    let stored = affine.stored_oidc().expect("written");
    assert_eq!(
        stored["issuer"],
        json!(format!("{authentik}/application/o/notes/"))
    );
    let expected_id = affine_authentik::client_id::derive_client_id(
        &affine_authentik::web_url::BaseUrl::parse("u", &affine.url()).unwrap(),
        &affine_authentik::slug::Slug::parse("s", "notes").unwrap(),
    );
    assert_eq!(stored["clientId"], json!(expected_id));
}

// ---------------------------------------------------------------------------------------
// Check mode and diff

#[test]
fn check_mode_reports_the_change_writes_nothing_and_validates_in_each_versions_form() {
    // (version, the operation keyword of validateAppConfig, or None where it is absent)
    let cases = [
        ("0.21.0", None),
        ("0.25.0", Some("mutation")),
        ("0.26.1", Some("query")),
        ("0.27.0", Some("query")),
    ];
    for (version, form) in cases {
        let affine = standin(version);
        let run = task(present(&affine)).check().run_against(&affine);
        run.assert_ok();
        assert!(run.changed(), "{version}: {}", run.out.stdout);
        assert_eq!(affine.write_count(), 0, "{version}: check mode wrote");
        assert_eq!(affine.stored_oidc(), None, "{version}");
        assert!(run.msg().contains("check mode"), "{version}: {}", run.msg());
        assert!(
            graphql_documents_with(&affine, "updateAppConfig").is_empty(),
            "{version}: an update was sent in check mode"
        );
        let validations = graphql_documents_with(&affine, "validateAppConfig");
        match form {
            None => assert!(validations.is_empty(), "{version}: {validations:?}"),
            Some(keyword) => {
                assert_eq!(validations.len(), 1, "{version}: {validations:?}");
                assert!(
                    validations[0].trim_start().starts_with(keyword),
                    "{version}: expected a {keyword}: {}",
                    validations[0]
                );
            }
        }
    }
}

#[test]
fn check_mode_when_nothing_changes_reports_ok_without_validating() {
    let affine = standin("0.26.1");
    affine.set_stored_oidc(wanted_value());
    let run = task(present(&affine)).check().run_against(&affine);
    run.assert_ok();
    assert!(!run.changed(), "{}", run.out.stdout);
    assert!(graphql_documents_with(&affine, "validateAppConfig").is_empty());
}

#[test]
fn check_mode_fails_for_a_value_affine_would_reject_without_quoting_the_secret() {
    let affine = standin("0.25.0");
    let params = with(present(&affine), json!({"args": {"scope": 5}}));
    let run = task(params).check().run_against(&affine);
    run.assert_failed_with(&["reject", "args.scope"]);
    assert_eq!(affine.write_count(), 0);
}

#[test]
fn diff_is_returned_only_with_ansible_diff_and_masks_the_secret() {
    let affine = standin("0.26.1");
    let without = task(present(&affine)).check().run_against(&affine);
    assert!(without.json.get("diff").is_none(), "{}", without.out.stdout);

    let run = task(present(&affine)).diff().run_against(&affine);
    run.assert_ok();
    let diff = &run.json["diff"];
    assert_eq!(diff["before"]["issuer"], json!(""), "{diff}");
    assert_eq!(
        diff["after"]["issuer"],
        json!(unreachable_issuer()),
        "{diff}"
    );
    assert_eq!(diff["after"]["clientId"], json!(CLIENT_ID));
    assert_eq!(diff["after"]["args"], json!({}));
    let after_secret = diff["after"]["clientSecret"].as_str().unwrap();
    assert!(after_secret.starts_with(MASK), "{diff}");
    assert!(diff["before_header"].is_string() && diff["after_header"].is_string());
}

#[test]
fn a_changed_secret_still_shows_as_a_difference_in_the_diff() {
    let old_secret = "old-client-secret-SECRET-55";
    let affine = standin("0.26.1");
    let mut stored = wanted_value();
    stored["clientSecret"] = json!(old_secret);
    affine.set_stored_oidc(stored);
    let run = task(present(&affine))
        .diff()
        .secret(old_secret)
        .run_against(&affine);
    run.assert_ok();
    assert!(run.changed(), "{}", run.out.stdout);
    assert!(run.msg().contains("clientSecret"), "{}", run.msg());
    let diff = &run.json["diff"];
    assert_ne!(
        diff["before"]["clientSecret"], diff["after"]["clientSecret"],
        "a changed secret must differ in the diff: {diff}"
    );
    assert_eq!(diff["before"]["clientSecret"], json!(MASK));
    assert_eq!(diff["before"]["issuer"], diff["after"]["issuer"]);
    assert_eq!(
        affine.stored_oidc().unwrap()["clientSecret"],
        json!(CLIENT_SECRET)
    );
}

// ---------------------------------------------------------------------------------------
// Secrets in error paths

#[test]
fn affine_rejecting_the_value_fails_without_quoting_the_secret() {
    // AFFiNE's INVALID_APP_CONFIG message quotes the whole value, clientSecret included.
    let affine = standin("0.25.0");
    let params = with(present(&affine), json!({"args": {"scope": 5}}));
    let run = task(params).diff().run_against(&affine);
    run.assert_failed_with(&["rejected the OIDC value", "args.scope"]);
    assert!(run.msg().contains(MASK), "{}", run.msg());
    assert_eq!(affine.write_count(), 0, "nothing half-written");
    assert_eq!(affine.stored_oidc(), None);
}

#[test]
fn a_secret_with_json_special_characters_is_masked_when_affine_quotes_it_encoded() {
    // AFFiNE's message embeds the value as JSON, so `"` and `\` arrive escaped: the
    // escaped form is the secret too.
    let tricky = r#"quote"-SECRET-back\slash"#;
    let escaped = serde_json::to_string(tricky).unwrap();
    let escaped = escaped.trim_matches('"');
    let affine = standin("0.25.0");
    let params = with(
        present(&affine),
        json!({"client_secret": tricky, "args": {"scope": 5}}),
    );
    for check in [false, true] {
        let mut t = task(params.clone()).secret(escaped);
        t.check = check;
        let run = t.run_against(&affine);
        run.assert_failed_with(&["args.scope"]);
        assert!(!run.msg().contains(escaped), "{}", run.msg());
        assert!(!run.msg().contains(tricky), "{}", run.msg());
    }
}

#[test]
fn an_unknown_parameter_fails_naming_it() {
    let affine = standin("0.26.1");
    let run = task(with(present(&affine), json!({"isuer": "https://typo/"}))).run_against(&affine);
    run.assert_failed_with(&["Unsupported parameters", "isuer"]);
    assert!(affine.requests().is_empty(), "no request before the check");
}

#[test]
fn a_misspelled_secret_parameter_fails_without_echoing_its_value() {
    let affine = standin("0.26.1");
    let typo_secret = "typo-secret-SECRET-31";
    let params = with(
        present(&affine),
        json!({"client_secret": null, "clientsecret": typo_secret}),
    );
    let run = task(params).secret(typo_secret).run_against(&affine);
    run.assert_failed_with(&["clientsecret"]);
}

#[test]
fn a_type_error_on_a_no_log_parameter_does_not_echo_the_value() {
    let affine = standin("0.26.1");
    let in_list = "listed-secret-SECRET-9";
    let params = with(present(&affine), json!({"client_secret": [in_list]}));
    let run = task(params).secret(in_list).run_against(&affine);
    run.assert_failed_with(&["client_secret"]);
    let dict_password = "dict-password-SECRET-2";
    let params = with(
        present(&affine),
        json!({"admin_password": {"value": dict_password}}),
    );
    let run = task(params).secret(dict_password).run_against(&affine);
    run.assert_failed_with(&["admin_password"]);
}

// ---------------------------------------------------------------------------------------
// Requests and sign-in

#[test]
fn an_unchanged_reconcile_costs_three_requests_with_a_password_and_two_with_a_session_token() {
    let affine = standin("0.27.0");
    affine.set_stored_oidc(wanted_value());

    let before = affine.requests().len();
    let run = task(present(&affine)).run_against(&affine);
    run.assert_ok();
    assert!(!run.changed());
    // The version (which every AFFiNE answers, so 0.17-0.20 are told apart first), the
    // sign-in, then serverConfig and appConfig in one query.
    let with_password = affine.requests().len() - before;
    assert!(
        with_password <= 3,
        "{with_password} requests with email/password"
    );
    assert_eq!(affine.sign_in_count(), 1, "one sign-in per run");

    let token = affine.session_token_for_admin();
    let params = present_with_token(&affine, &token);
    let before = affine.requests().len();
    let run = task(params).run_against(&affine);
    run.assert_ok();
    assert!(!run.changed());
    assert_eq!(
        affine.requests().len() - before,
        2,
        "the version and the state with a session token"
    );
    assert_eq!(affine.sign_in_count(), 1, "no sign-in with a session token");
}

#[test]
fn an_empty_admin_password_fails_and_never_calls_sign_in() {
    // AFFiNE answers a sign-in without a password by e-mailing a magic link.
    let affine = standin("0.26.1");
    let run = task(with(present(&affine), json!({"admin_password": ""}))).run_against(&affine);
    run.assert_failed_with(&["password"]);
    assert_eq!(affine.magic_links_sent(), 0);
    assert!(requests_to(&affine, "/api/auth/sign-in").is_empty());

    // Nor from an empty environment variable, nor with no password at all.
    let params = with(present(&affine), json!({"admin_password": null}));
    let run = task(params.clone())
        .env("AFFINE_ADMIN_PASSWORD", "")
        .run_against(&affine);
    run.assert_failed_with(&["admin_password"]);
    let run = task(params).run_against(&affine);
    run.assert_failed_with(&["admin_password"]);
    assert_eq!(affine.magic_links_sent(), 0);
    assert!(requests_to(&affine, "/api/auth/sign-in").is_empty());
}

#[test]
fn a_rate_limited_sign_in_honours_retry_after_and_succeeds() {
    let affine = standin("0.26.1");
    affine.set_fault(Fault::RateLimit {
        retry_after_secs: 1,
        times: 1,
    });
    let run = task(present(&affine)).run_against(&affine);
    run.assert_ok();
    assert!(run.changed());
    assert_eq!(requests_to(&affine, "/api/auth/sign-in").len(), 2);
    assert!(
        run.elapsed >= Duration::from_secs(1),
        "retried after {:?}, before Retry-After",
        run.elapsed
    );
    assert_eq!(affine.stored_oidc(), Some(wanted_value()));
}

#[test]
fn a_rate_limit_longer_than_the_timeout_fails_with_advice() {
    let affine = standin("0.26.1");
    affine.set_fault(Fault::RateLimit {
        retry_after_secs: 30,
        times: 5,
    });
    let run = task(with(present(&affine), json!({"timeout": 2}))).run_against(&affine);
    run.assert_failed_with(&["429", "session_token"]);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

// ---------------------------------------------------------------------------------------
// Failures: each one `failed: true` with a message a person can act on

#[test]
fn connection_refused_fails_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let params = json!({"affine_url": url, "admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD,
        "issuer": unreachable_issuer(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": 2});
    task(params)
        .run(&[])
        .assert_failed_with(&["refused the connection", &url]);
}

#[test]
fn an_unresolvable_host_fails_as_dns() {
    let params = json!({"affine_url": "http://affine.invalid", "admin_email": ADMIN_EMAIL, "admin_password": ADMIN_PASSWORD,
        "issuer": unreachable_issuer(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": 5});
    task(params)
        .run(&[])
        .assert_failed_with(&["DNS", "affine.invalid"]);
}

#[test]
fn a_slow_server_fails_as_a_timeout_after_the_timeout() {
    let affine = standin("0.26.1");
    affine.set_fault(Fault::Delay(Duration::from_secs(4)));
    let run = task(with(present(&affine), json!({"timeout": 1}))).run_against(&affine);
    run.assert_failed_with(&["timeout"]);
    assert!(
        run.elapsed < Duration::from_secs(3),
        "took {:?} with timeout=1",
        run.elapsed
    );
}

#[test]
fn an_http_5xx_fails_saying_so() {
    let affine = standin("0.26.1");
    affine.set_fault(Fault::Status(502));
    // Signed in with a password, then with a session token.
    let token = affine.session_token_for_admin();
    for params in [present(&affine), present_with_token(&affine, &token)] {
        task(params)
            .run_against(&affine)
            .assert_failed_with(&["HTTP 502", "server's logs"]);
    }
    assert_eq!(affine.write_count(), 0);
}

#[test]
fn a_dropped_connection_fails_saying_so() {
    let affine = standin("0.26.1");
    affine.set_fault(Fault::DropConnection);
    task(present(&affine))
        .run_against(&affine)
        .assert_failed_with(&["closed the connection"]);
}

#[test]
fn a_non_json_answer_fails_pointing_at_the_url() {
    let affine = standin("0.26.1");
    affine.set_fault(Fault::NonJson);
    // Signed in with a password, then with a session token.
    let token = affine.session_token_for_admin();
    for params in [present(&affine), present_with_token(&affine, &token)] {
        task(params)
            .run_against(&affine)
            .assert_failed_with(&["not answer with JSON", "URL"]);
    }
}

#[test]
fn a_wrong_password_fails_as_wrong_credentials() {
    let affine = standin("0.26.1");
    let wrong = "wrong-pass-SECRET-1";
    let run = task(with(present(&affine), json!({"admin_password": wrong}))).run_against(&affine);
    run.assert_failed_with(&["wrong e-mail or password", ADMIN_EMAIL]);
    assert_eq!(affine.write_count(), 0);
}

#[test]
fn an_invalid_session_token_fails_asking_to_renew_it() {
    let affine = standin("0.26.1");
    let params = present_with_token(&affine, "expired-token-SECRET-0");
    task(params)
        .run_against(&affine)
        .assert_failed_with(&["not signed in", "session token"]);
}

#[test]
fn a_user_who_is_not_an_admin_fails_saying_so() {
    let user_password = "user-pass-SECRET-8";
    let mut opts = AffineOptions::new("0.26.1");
    opts.users = vec![("user@example.com".into(), user_password.into())];
    let affine = AffineStandin::start(opts);
    let params = with(
        present(&affine),
        json!({"admin_email": "user@example.com", "admin_password": user_password}),
    );
    task(params)
        .run_against(&affine)
        .assert_failed_with(&["not an administrator"]);
    assert_eq!(affine.write_count(), 0);
}

#[test]
fn an_affine_older_than_0_21_fails_naming_the_oauth_oidc_env_vars() {
    let affine = standin("0.20.0");
    task(present(&affine))
        .run_against(&affine)
        .assert_failed_with(&[
            "0.20.0",
            "OAUTH_OIDC_ISSUER",
            "OAUTH_OIDC_CLIENT_ID",
            "OAUTH_OIDC_CLIENT_SECRET",
        ]);
}

#[test]
fn an_affine_newer_than_the_module_knows_is_set_with_one_warning_naming_it() {
    let affine = standin("0.28.0");
    let run = task(present(&affine)).run_against(&affine);
    run.assert_ok();
    assert!(run.changed());
    assert_eq!(affine.stored_oidc(), Some(wanted_value()));
    let newer: Vec<String> = run
        .warnings()
        .into_iter()
        .filter(|w| w.contains("newer"))
        .collect();
    assert_eq!(newer.len(), 1, "{:?}", run.warnings());
    assert!(newer[0].contains("0.28.0"), "{}", newer[0]);
}

#[test]
fn tls_to_a_plain_http_port_fails_with_the_ca_path_and_validate_certs_hint() {
    let affine = standin("0.26.1");
    let https = affine.url().replace("http://", "https://");
    let run = task(with(
        present(&affine),
        json!({"affine_url": https, "timeout": 3}),
    ))
    .run_against(&affine);
    run.assert_failed_with(&["TLS", "ca_path", "validate_certs"]);
}

/// A plain-HTTP server the way Node (AFFiNE) or nginx answer bytes they cannot parse:
/// `400 Bad Request`, then close. Serves connections until the test process ends.
fn plain_http_answering_400() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    url
}

#[test]
fn tls_to_a_plain_http_server_that_answers_400_fails_with_the_ca_path_hint() {
    // The stand-in closes the socket on a ClientHello; AFFiNE itself (Node) and nginx
    // answer 400 in plain text, which rustls reports differently.
    let params = json!({"affine_url": plain_http_answering_400(), "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD, "issuer": unreachable_issuer(), "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "timeout": 3});
    task(params)
        .run(&[])
        .assert_failed_with(&["TLS", "ca_path", "validate_certs"]);
}

// ---------------------------------------------------------------------------------------
// Argument checking

#[test]
fn ad_hoc_string_values_are_coerced_like_ansible() {
    // `ansible -m affine_oidc -a 'timeout=30 validate_certs=yes wait=1'` sends strings.
    let affine = standin("0.21.0");
    let params = with(
        present(&affine),
        json!({"timeout": "30", "validate_certs": "yes", "wait": "1", "wait_timeout": "5", "backup": "no"}),
    );
    let run = task(params).run_against(&affine);
    run.assert_ok();
    let args = &run.json["invocation"]["module_args"];
    assert_eq!(args["timeout"], json!(30));
    assert_eq!(args["validate_certs"], json!(true));
    assert_eq!(args["wait"], json!(true));
    assert_eq!(args["backup"], json!(false));
    // wait=1 took effect: 0.21 registers OIDC as soon as id and secret are set.
    assert_eq!(
        run.json["oidc_registered"],
        json!(true),
        "{}",
        run.out.stdout
    );
}

#[test]
fn a_non_numeric_timeout_fails_naming_it() {
    let affine = standin("0.26.1");
    task(with(present(&affine), json!({"timeout": "soon"})))
        .run_against(&affine)
        .assert_failed_with(&["timeout", "int"]);
    assert!(affine.requests().is_empty());
}

#[test]
fn issuer_and_authentik_url_are_mutually_exclusive() {
    let affine = standin("0.26.1");
    task(with(
        present(&affine),
        json!({"authentik_url": "https://auth.example.com"}),
    ))
    .run_against(&affine)
    .assert_failed_with(&["mutually exclusive", "issuer", "authentik_url"]);
    assert!(affine.requests().is_empty());
}

#[test]
fn environment_fallbacks_give_the_url_and_the_password_credentials() {
    let affine = standin("0.26.1");
    let params = json!({"issuer": unreachable_issuer(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": 5});
    let run = task(params)
        .env("AFFINE_URL", &affine.url())
        .env("AFFINE_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("AFFINE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .run_against(&affine);
    run.assert_ok();
    assert!(run.changed());
    assert_eq!(affine.sign_in_count(), 1);
    assert_eq!(affine.stored_oidc(), Some(wanted_value()));
    // A password from the environment is still hidden in the invocation.
    assert_eq!(
        run.json["invocation"]["module_args"]["admin_password"],
        json!("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")
    );
}

#[test]
fn environment_fallback_gives_the_session_token() {
    let affine = standin("0.26.1");
    let token = affine.session_token_for_admin();
    let params = json!({"issuer": unreachable_issuer(), "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "timeout": 5});
    let run = task(params)
        .env("AFFINE_URL", &affine.url())
        .env("AFFINE_SESSION_TOKEN", &token)
        .run_against(&affine);
    run.assert_ok();
    assert!(run.changed());
    assert_eq!(affine.sign_in_count(), 0);
    assert!(requests_to(&affine, "/api/auth/sign-in").is_empty());
    assert_eq!(affine.stored_oidc(), Some(wanted_value()));
}

// ---------------------------------------------------------------------------------------
// wait: true

/// A stand-in authentik serving the discovery document of application `affine`.
fn authentik_with_affine_app() -> (AuthentikStandin, String) {
    let authentik = AuthentikStandin::start(AuthentikOptions::new("2025.10.1"));
    authentik.add_provider("affine", ProviderState::new("affine"));
    let issuer = format!("{}/application/o/affine/", authentik.url());
    (authentik, issuer)
}

#[test]
fn wait_reports_oidc_registered_once_affine_has_discovered_the_issuer() {
    for version in ["0.25.0", "0.26.1", "0.27.0"] {
        let (_authentik, idp) = authentik_with_affine_app();
        let mut opts = AffineOptions::new(version);
        // The stand-in authentik listens on loopback, which 0.27's guard refuses.
        opts.ssrf_guard = Some(false);
        let affine = AffineStandin::start(opts);
        let params = with(
            present(&affine),
            json!({"issuer": idp, "wait": true, "wait_timeout": 10}),
        );
        let run = task(params).run_against(&affine);
        run.assert_ok();
        assert!(run.changed(), "{version}: {}", run.out.stdout);
        assert_eq!(run.json["oidc_registered"], json!(true), "{version}");
        assert!(affine.oidc_registered(), "{version}");
        assert!(
            run.elapsed < Duration::from_secs(8),
            "{version}: {:?}",
            run.elapsed
        );
    }
}

#[test]
fn wait_fails_after_wait_timeout_when_affine_cannot_reach_the_issuer() {
    let affine = standin("0.25.0");
    let params = with(present(&affine), json!({"wait": true, "wait_timeout": 1}));
    let run = task(params).run_against(&affine);
    run.assert_failed_after_a_change_with(&[
        "within 1s",
        "discovery",
        "rewrite the setting or restart",
    ]);
    assert!(
        run.elapsed >= Duration::from_secs(1) && run.elapsed < Duration::from_secs(5),
        "{:?}",
        run.elapsed
    );
}

#[test]
fn wait_on_0_27_with_the_ssrf_guard_hints_at_private_addresses() {
    let (_authentik, idp) = authentik_with_affine_app();
    let affine = standin("0.27.0");
    let params = with(
        present(&affine),
        json!({"issuer": idp, "wait": true, "wait_timeout": 1}),
    );
    task(params)
        .run_against(&affine)
        .assert_failed_after_a_change_with(&["private"]);
    assert!(!affine.oidc_registered());
}

#[test]
fn a_wait_that_times_out_after_a_write_still_reports_the_change() {
    let affine = standin("0.25.0");
    let params = with(present(&affine), json!({"wait": true, "wait_timeout": 1}));
    let run = task(params).run_against(&affine);
    run.assert_failed_after_a_change_with(&["within 1s"]);
    assert_eq!(affine.write_count(), 1);
}

#[test]
fn wait_saves_again_when_0_22_to_0_26_gave_up_after_one_discovery() {
    // The quick-start order: AFFiNE is set before authentik has the application, so its one
    // discovery attempt fails; once authentik has it, a run with wait must make AFFiNE retry.
    let authentik = AuthentikStandin::start(AuthentikOptions::new("2025.10.1"));
    let idp = format!("{}/application/o/affine/", authentik.url());
    let affine = standin("0.25.0");
    let params = with(
        present(&affine),
        json!({"issuer": idp, "wait": true, "wait_timeout": 1}),
    );
    task(params.clone())
        .run_against(&affine)
        .assert_failed_after_a_change_with(&["within 1s"]);
    assert!(!affine.oidc_registered());

    authentik.add_provider("affine", ProviderState::new("affine"));
    let run = task(params.clone()).run_against(&affine);
    run.assert_ok();
    assert!(run.changed(), "{}", run.out.stdout);
    assert!(
        run.msg().contains("saved the same value again"),
        "{}",
        run.msg()
    );
    assert_eq!(affine.write_count(), 2);
    assert!(affine.oidc_registered());

    // Registered now: the next run is a plain ok, no write.
    let again = task(params).run_against(&affine);
    again.assert_ok();
    assert!(!again.changed(), "{}", again.out.stdout);
    assert_eq!(affine.write_count(), 2);
}

#[test]
fn without_wait_an_unregistered_0_25_is_not_rewritten_but_warned_about() {
    let affine = standin("0.25.0");
    task(present(&affine)).run_against(&affine).assert_ok();
    let run = task(present(&affine)).run_against(&affine);
    run.assert_ok();
    assert!(!run.changed());
    assert_eq!(affine.write_count(), 1);
    let warnings = run.warnings().join(" ");
    assert!(warnings.contains("has not registered OIDC"), "{warnings}");
}

#[test]
fn a_numeric_client_secret_is_masked_when_affine_quotes_it() {
    // YAML `client_secret: 12345678` arrives as a number; AFFiNE 0.25 rejects scope = 5 and
    // quotes the whole value, secret included, in its message.
    let affine = standin("0.25.0");
    let params = with(
        present(&affine),
        json!({"client_secret": 81234567, "args": {"scope": 5}}),
    );
    let run = task(params).secret("81234567").run_against(&affine);
    run.assert_failed_with(&["rejected"]);
    assert!(!run.out.stdout.contains("81234567"), "{}", run.out.stdout);
}

// ---------------------------------------------------------------------------------------
// The file backend (config.json)

fn file_params(path: &Path) -> Value {
    json!({
        "config_file": path.to_str().unwrap(),
        "issuer": unreachable_issuer(),
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    })
}

#[test]
fn config_file_is_created_with_schema_and_mode_0600_and_the_restart_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let run = task(file_params(&path)).run(&[]);
    run.assert_ok();
    assert!(run.changed());
    let text = fs::read_to_string(&path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["$schema"].is_string(), "{text}");
    assert!(text.trim_start().starts_with("{\n  \"$schema\""), "{text}");
    assert_eq!(doc["oauth"]["providers.oidc"], wanted_value());
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let warnings = run.json["warnings"].as_array().expect("warnings").clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("restart")),
        "{warnings:?}"
    );
}

#[test]
fn config_file_keeps_other_keys_their_order_and_mode_and_the_second_run_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let original = r#"{
  "$schema": "https://example.com/schema.json",
  "server": {"name": "My AFFiNE", "externalUrl": "https://affine.example.com"},
  "oauth": {"providers.google": {"clientId": "g", "clientSecret": "g-secret"}, "zeta": 1},
  "mailer": {"SMTP.host": "smtp.example.com"},
  "auth": {"allowSignup": false}
}"#;
    fs::write(&path, original).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let run = task(file_params(&path)).run(&[]);
    run.assert_ok();
    assert!(run.changed());
    let text = fs::read_to_string(&path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let before: Value = serde_json::from_str(original).unwrap();
    for key in ["$schema", "server", "mailer", "auth"] {
        assert_eq!(doc[key], before[key], "{key} changed");
    }
    assert_eq!(
        doc["oauth"]["providers.google"],
        before["oauth"]["providers.google"]
    );
    assert_eq!(doc["oauth"]["providers.oidc"], wanted_value());
    let order = [
        "\"$schema\"",
        "\"server\"",
        "\"oauth\"",
        "\"providers.google\"",
        "\"zeta\"",
        "\"providers.oidc\"",
        "\"mailer\"",
        "\"auth\"",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|k| {
            text.find(k)
                .unwrap_or_else(|| panic!("{k} missing: {text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "key order not kept:\n{text}"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640,
        "mode kept"
    );

    let written = fs::read(&path).unwrap();
    let second = task(file_params(&path)).run(&[]);
    second.assert_ok();
    assert!(!second.changed(), "{}", second.out.stdout);
    assert_eq!(
        fs::read(&path).unwrap(),
        written,
        "second run rewrote the file"
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left behind"
    );
}

#[test]
fn config_file_backup_leaves_a_copy_of_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let original = "{\"server\": {\"name\": \"n\"}}\n";
    fs::write(&path, original).unwrap();
    let run = task(with(file_params(&path), json!({"backup": true}))).run(&[]);
    run.assert_ok();
    let backup = PathBuf::from(run.json["backup_file"].as_str().expect("backup_file"));
    assert_eq!(backup.parent(), Some(dir.path()));
    assert_eq!(fs::read_to_string(&backup).unwrap(), original);
    assert_ne!(fs::read_to_string(&path).unwrap(), original);
}

#[test]
fn config_file_with_invalid_json_fails_and_stays_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let original = b"{\"server\": {\"name\": \"n\",}  // trailing comma\n";
    fs::write(&path, original).unwrap();
    task(with(file_params(&path), json!({"backup": true})))
        .run(&[])
        .assert_failed_with(&["not valid JSON", "untouched"]);
    assert_eq!(fs::read(&path).unwrap(), original);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no backup, no temp file"
    );
}

#[test]
fn config_file_check_mode_reports_the_change_and_leaves_the_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("new.json");
    let run = task(file_params(&missing)).check().run(&[]);
    run.assert_ok();
    assert!(run.changed());
    assert!(!missing.exists(), "check mode created the file");

    let path = dir.path().join("config.json");
    let original = b"{\"oauth\": {\"providers.oidc\": {\"issuer\": \"\", \"clientId\": \"\", \"clientSecret\": \"\", \"args\": {}}}}";
    fs::write(&path, original).unwrap();
    let run = task(file_params(&path)).check().diff().run(&[]);
    run.assert_ok();
    assert!(run.changed());
    assert_eq!(
        run.json["diff"]["after"]["issuer"],
        json!(unreachable_issuer())
    );
    assert_eq!(fs::read(&path).unwrap(), original);
}

#[test]
fn config_file_state_absent_removes_only_the_oidc_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    task(file_params(&path)).run(&[]).assert_ok();
    let params = json!({"config_file": path.to_str().unwrap(), "state": "absent"});
    let run = task(params.clone()).run(&[]);
    run.assert_ok();
    assert!(run.changed());
    let doc: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert!(doc["$schema"].is_string());
    assert!(doc["oauth"].get("providers.oidc").is_none(), "{doc}");
    let again = task(params).run(&[]);
    again.assert_ok();
    assert!(!again.changed());
}

#[test]
fn the_scope_asks_for_offline_access_before_affine_0_25_7() {
    // AFFiNE before 0.25.7 refuses a token answer without a refresh_token, which authentik
    // sends only for offline_access: the task asks for it there, and only there.
    for (version, scope) in [
        ("0.25.0", Some("openid profile email offline_access")),
        ("0.26.1", None),
    ] {
        let affine = standin(version);
        task(present(&affine)).run_against(&affine).assert_ok();
        let stored = affine.stored_oidc().unwrap();
        assert_eq!(stored["args"]["scope"].as_str(), scope, "{version}");
        let again = task(present(&affine)).run_against(&affine);
        assert!(
            !again.assert_ok().changed(),
            "{version}: {}",
            again.out.stdout
        );
    }
    // A scope of the user's without it is kept, with a warning that the login will fail.
    let affine = standin("0.25.0");
    let run = task(with(
        present(&affine),
        json!({"args": {"scope": "openid profile email"}}),
    ))
    .run_against(&affine);
    run.assert_ok();
    assert!(
        run.warnings()
            .iter()
            .any(|w| w.contains("refresh_token") && w.contains("offline_access")),
        "{:?}",
        run.warnings()
    );
    assert_eq!(
        affine.stored_oidc().unwrap()["args"]["scope"],
        json!("openid profile email")
    );
}
