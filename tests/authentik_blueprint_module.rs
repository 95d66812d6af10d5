//! The `authentik_blueprint` Ansible module as Ansible runs it: the BUILT binary given one
//! args file (`module <args-file>` with `_ansible_module_name`, `_ansible_check_mode`,
//! `_ansible_diff`), with both targets: a file for authentik's blueprints directory (`dest`)
//! and authentik's API (a stand-in authentik of each version that matters). Every run is
//! checked for the protocol (stdout is exactly one JSON object) and for secrets (the
//! authentik token and the client secret never in stdout or stderr).

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin, Recorded};
use support::module_run::{ModuleCall, ModuleRun};
use support::process::{closed_port, command, Captured};

const MODULE: &str = "authentik_blueprint";
const AFFINE_URL: &str = "https://affine.example.com";
/// A literal client secret; "-SECRET" marks every secret of this file.
const CLIENT_SECRET: &str = "client-secret-SECRET-5b7f0c";
const WRONG_TOKEN: &str = "wrong-token-SECRET-91d2";
const MASK: &str = "********";
/// The versions the API target must get right: before the redirect-URI list (2024.6),
/// with the invalidation flow (2024.10), and with grant types (2026.8).
const API_VERSIONS: [&str; 3] = ["2024.6.4", "2024.10.5", "2026.8.0"];
/// The blueprint's `metadata.name` (and so the managed instance's name) for slug `affine`.
const INSTANCE_NAME: &str = "AFFiNE OIDC (affine)";

fn standin(version: &str) -> AuthentikStandin {
    AuthentikStandin::start(AuthentikOptions::new(version))
}

/// Every secret a run of this file may know of, for the leak check.
fn secrets(authentik: Option<&AuthentikStandin>) -> Vec<String> {
    let mut s = vec![
        CLIENT_SECRET.to_string(),
        WRONG_TOKEN.to_string(),
        "-SECRET".to_string(),
    ];
    if let Some(a) = authentik {
        s.push(a.token());
    }
    s
}

#[track_caller]
fn run(call: ModuleCall, authentik: Option<&AuthentikStandin>) -> ModuleRun {
    let secrets = secrets(authentik);
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    call.run(&refs)
}

fn call(params: Value) -> ModuleCall {
    ModuleCall::new(MODULE, params)
}

/// Merges `patch` into `base` (a null removes the key).
fn with(base: Value, patch: Value) -> Value {
    let mut m = base.as_object().cloned().unwrap_or_default();
    for (k, v) in patch.as_object().cloned().unwrap_or_default() {
        if v.is_null() {
            m.remove(&k);
        } else {
            m.insert(k, v);
        }
    }
    Value::Object(m)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------------------
// dest: a file for authentik's blueprints directory

fn file_task(dest: &Path) -> Value {
    json!({"affine_url": AFFINE_URL, "dest": dest.to_str().unwrap()})
}

#[test]
fn dest_first_run_writes_the_file_0644_and_changes_then_the_same_content_is_ok_by_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");

    let first = run(call(file_task(&dest)), None);
    first.assert_ok();
    assert!(first.changed(), "{}", first.out.stdout);
    let bytes = fs::read(&dest).expect("the blueprint file is written");
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("version: 1"), "{text}");
    assert!(text.contains("url: https://affine.example.com/oauth/callback"));
    // By default the secret is a reference to authentik's environment: nothing to hide.
    assert!(text.contains("client_secret: !Env AFFINE_OIDC_CLIENT_SECRET"));
    assert_eq!(mode_of(&dest), 0o644);
    assert_eq!(first.json["checksum"], json!(sha256_hex(&bytes)));
    assert_eq!(first.json["blueprint_name"], json!(INSTANCE_NAME));
    // The same text the CLI prints for the same inputs.
    let cli = Captured::of(&mut command(&["blueprint", "--affine-url", AFFINE_URL]));
    assert_eq!(cli.stdout, text);

    let inode = fs::metadata(&dest).unwrap().ino();
    let second = run(call(file_task(&dest)), None);
    second.assert_ok();
    assert!(!second.changed(), "{}", second.out.stdout);
    assert_eq!(second.json["checksum"], first.json["checksum"]);
    assert_eq!(
        fs::metadata(&dest).unwrap().ino(),
        inode,
        "an unchanged file is not rewritten"
    );
}

#[test]
fn dest_with_a_literal_client_secret_is_written_0600() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let task = with(file_task(&dest), json!({"client_secret": CLIENT_SECRET}));
    let r = run(call(task.clone()).diff(), None);
    r.assert_ok();
    assert!(r.changed());
    assert_eq!(mode_of(&dest), 0o600, "a file holding a secret is private");
    let text = fs::read_to_string(&dest).unwrap();
    assert!(
        text.contains(CLIENT_SECRET),
        "the literal secret is in the file"
    );
    assert_eq!(
        r.json["invocation"]["module_args"]["client_secret"],
        json!("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")
    );
    assert!(
        r.warnings()
            .iter()
            .any(|w| w.contains("file holds the client secret in clear text")),
        "{:?}",
        r.warnings()
    );
    // The unchanged run does not repeat the warning.
    let again = run(call(task), None);
    assert!(!again.assert_ok().changed());
    assert!(again.warnings().is_empty(), "{:?}", again.warnings());
}

#[test]
fn dest_mode_is_honoured_and_a_mode_change_alone_is_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let task = with(file_task(&dest), json!({"mode": "0640"}));
    assert!(run(call(task.clone()), None).assert_ok().changed());
    assert_eq!(mode_of(&dest), 0o640);
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o666)).unwrap();
    assert!(run(call(task.clone()), None).assert_ok().changed());
    assert_eq!(mode_of(&dest), 0o640);
    assert!(!run(call(task), None).assert_ok().changed());
}

#[test]
fn a_yaml_octal_mode_is_taken_as_the_number_it_is() {
    // `mode: 0640` in YAML arrives as the integer 416 = 0o640, as for Ansible's file modules;
    // reading it as the octal string "416" would give r----xrw-.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let task = with(file_task(&dest), json!({"mode": 0o640}));
    assert!(run(call(task.clone()), None).assert_ok().changed());
    assert_eq!(mode_of(&dest), 0o640);
    assert!(!run(call(task), None).assert_ok().changed());
}

#[test]
fn without_mode_an_existing_files_mode_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    assert!(run(call(file_task(&dest)), None).assert_ok().changed());
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(!run(call(file_task(&dest)), None).assert_ok().changed());
    assert_eq!(mode_of(&dest), 0o640);
    // A content change keeps it too.
    let grouped = with(file_task(&dest), json!({"group": "staff"}));
    assert!(run(call(grouped), None).assert_ok().changed());
    assert_eq!(mode_of(&dest), 0o640);
}

#[test]
fn dest_check_mode_reports_the_change_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");

    let r = run(call(file_task(&dest)).check(), None);
    r.assert_ok();
    assert!(r.changed(), "{}", r.out.stdout);
    assert!(r.msg().contains("check mode"), "{}", r.msg());
    assert!(!dest.exists(), "check mode created the file");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temp file left"
    );

    // An existing file that would change stays as it is.
    run(call(file_task(&dest)), None).assert_ok();
    let before = fs::read(&dest).unwrap();
    let changed = with(file_task(&dest), json!({"group": "affine-users"}));
    let r = run(call(changed).check(), None);
    assert!(r.assert_ok().changed());
    assert_eq!(fs::read(&dest).unwrap(), before);

    // And removal in check mode removes nothing.
    let absent = with(file_task(&dest), json!({"state": "absent"}));
    assert!(run(call(absent).check(), None).assert_ok().changed());
    assert!(dest.exists());
}

#[test]
fn dest_diff_is_the_yaml_text_before_and_after_with_a_literal_secret_masked() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let task = with(file_task(&dest), json!({"client_secret": CLIENT_SECRET}));
    run(call(task.clone()), None).assert_ok();

    // Another group and another secret: both show, the secrets only as the mask.
    let other_secret = "other-secret-SECRET-33aa";
    let changed = with(
        task.clone(),
        json!({"group": "affine-users", "client_secret": other_secret}),
    );
    let r = run(call(changed).diff(), None);
    r.out.assert_no_secrets(&[other_secret]);
    r.assert_ok();
    let diff = &r.json["diff"];
    let before = diff["before"].as_str().expect("before is YAML text");
    let after = diff["after"].as_str().expect("after is YAML text");
    assert!(before.contains("version: 1") && after.contains("version: 1"));
    assert!(!before.contains("authentik_policies.policybinding"));
    assert!(
        after.contains("authentik_policies.policybinding"),
        "{after}"
    );
    assert!(
        before.contains(&format!("client_secret: {MASK}")),
        "{before}"
    );
    assert!(after.contains(&format!("client_secret: {MASK}")), "{after}");
    assert_eq!(diff["after_header"], json!(dest.to_str().unwrap()));

    // Without _ansible_diff there is no diff.
    let r = run(call(task), None);
    assert!(r.json.get("diff").is_none(), "{}", r.out.stdout);
}

#[test]
fn dest_backup_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    run(call(file_task(&dest)), None).assert_ok();
    let old = fs::read_to_string(&dest).unwrap();

    let task = with(
        file_task(&dest),
        json!({"group": "affine-users", "backup": true}),
    );
    let r = run(call(task), None);
    r.assert_ok();
    let backup = r.json["backup_file"]
        .as_str()
        .expect("backup_file is returned");
    assert_ne!(Path::new(backup), dest);
    assert_eq!(fs::read_to_string(backup).unwrap(), old);
    assert!(fs::read_to_string(&dest)
        .unwrap()
        .contains("authentik_policies.policybinding"));
}

#[test]
fn dest_state_absent_removes_the_file_then_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    run(call(file_task(&dest)), None).assert_ok();
    let absent = with(file_task(&dest), json!({"state": "absent"}));

    let r = run(call(absent.clone()).diff(), None);
    assert!(r.assert_ok().changed());
    assert!(!dest.exists());
    assert!(
        r.msg().contains("authentik keeps the objects"),
        "{}",
        r.msg()
    );
    assert_eq!(r.json["diff"]["after"], json!(""));

    let again = run(call(absent), None);
    assert!(!again.assert_ok().changed(), "{}", again.out.stdout);
}

#[test]
fn a_bad_parameter_fails_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let cases = [
        // authentik reserves this slug (it collides with /application/o/token/).
        (json!({"slug": "token"}), vec!["slug", "token"]),
        (json!({"mode": "rw-r--r--"}), vec!["mode"]),
        (json!({"state": "gone"}), vec!["state"]),
        (
            json!({"authentik_version": "2019.1"}),
            vec!["authentik version"],
        ),
        (json!({"slugg": "affine"}), vec!["unsupported", "slugg"]),
        (
            json!({"authentik_url": "https://auth.example.com"}),
            vec!["mutually exclusive", "dest", "authentik_url"],
        ),
        (
            json!({"client_secret": CLIENT_SECRET, "client_secret_env": "X"}),
            vec!["mutually exclusive"],
        ),
    ];
    for (patch, words) in cases {
        let r = run(call(with(file_task(&dest), patch.clone())), None);
        r.assert_failed_with(&words);
        assert!(!dest.exists(), "{patch} wrote the file");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    // Neither a file nor authentik: say what to give.
    let r = run(call(json!({"affine_url": AFFINE_URL})), None);
    r.assert_failed_with(&["dest", "authentik_url"]);
}

// ---------------------------------------------------------------------------------------
// The API target

fn api_task(authentik: &AuthentikStandin) -> Value {
    json!({
        "affine_url": AFFINE_URL,
        "authentik_url": authentik.url(),
        "authentik_token": authentik.token(),
        "client_secret": CLIENT_SECRET,
    })
}

/// Requests recorded after the first `from`, as "METHOD /path" without the query.
fn requests_since(authentik: &AuthentikStandin, from: usize) -> Vec<String> {
    authentik.requests()[from..]
        .iter()
        .map(|r: &Recorded| format!("{} {}", r.method, r.path_only()))
        .collect()
}

fn writes(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| !r.starts_with("GET "))
        .cloned()
        .collect()
}

#[test]
fn api_creates_and_applies_then_a_second_run_is_ok_without_patch_or_apply_on_every_version() {
    for version in API_VERSIONS {
        let authentik = standin(version);
        let first = run(call(api_task(&authentik)), Some(&authentik));
        first.assert_ok();
        assert!(first.changed(), "{version}: {}", first.out.stdout);
        assert!(
            first.msg().contains("created and applied"),
            "{version}: {}",
            first.msg()
        );
        assert_eq!(first.json["authentik_version"], json!(version));
        let w = writes(&requests_since(&authentik, 0));
        assert_eq!(w.len(), 2, "{version}: {w:?}");
        assert_eq!(w[0], "POST /api/v3/managed/blueprints/");
        assert!(
            w[1].starts_with("POST /api/v3/managed/blueprints/") && w[1].ends_with("/apply/"),
            "{w:?}"
        );
        let instances = authentik.instances();
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0]["name"], json!(INSTANCE_NAME));
        assert_eq!(instances[0]["status"], json!("successful"));
        assert_eq!(authentik.applied_count(), 1);

        // What authentik now holds, in this version's shape.
        let provider = authentik
            .provider("affine")
            .expect("the blueprint created the provider");
        assert_eq!(provider["client_secret"], json!(CLIENT_SECRET));
        let callback = "https://affine.example.com/oauth/callback";
        if version == "2024.6.4" {
            assert_eq!(
                provider["redirect_uris"],
                json!("https://affine\\.example\\.com/oauth/callback")
            );
        } else {
            let uris = provider["redirect_uris"].as_array().expect("a list");
            assert_eq!(uris.len(), 1, "{provider}");
            assert_eq!(uris[0]["matching_mode"], json!("strict"));
            assert_eq!(uris[0]["url"], json!(callback));
        }
        // openid, email, profile and offline_access; from 2025.10 the email mapping is the
        // blueprint's own, since authentik's managed one says email_verified: false there.
        assert_eq!(
            provider["property_mappings"].as_array().map(Vec::len),
            Some(4),
            "{version}: {provider}"
        );
        let managed_email = authentik
            .provider_scopes("affine")
            .contains(&"goauthentik.io/providers/oauth2/scope-email".to_string());
        let from_2025_10 = version.starts_with("2026") || version.starts_with("2025.1");
        assert_eq!(managed_email, !from_2025_10, "{version}");
        assert_eq!(provider["encryption_key"], Value::Null, "{version}");

        let seen = authentik.requests().len();
        let second = run(call(api_task(&authentik)), Some(&authentik));
        second.assert_ok();
        assert!(!second.changed(), "{version}: {}", second.out.stdout);
        let after = requests_since(&authentik, seen);
        assert!(
            writes(&after).is_empty(),
            "{version}: an unchanged run wrote: {after:?}"
        );
        assert_eq!(authentik.applied_count(), 1, "no second apply");

        // Check mode and --diff agree: nothing would change, so no diff to show.
        let seen = authentik.requests().len();
        let checked = run(call(api_task(&authentik)).check().diff(), Some(&authentik));
        assert!(
            !checked.assert_ok().changed(),
            "{version}: {}",
            checked.msg()
        );
        assert!(checked.msg().contains("is up to date"), "{}", checked.msg());
        let before = checked.json["diff"]["before"].as_str().unwrap_or_default();
        let after = checked.json["diff"]["after"].as_str().unwrap_or_default();
        assert_eq!(before, after, "{version}: the diff shows a difference");
        assert!(writes(&requests_since(&authentik, seen)).is_empty());
    }
}

#[test]
fn api_2026_2_and_2026_5_get_their_own_provider_shapes() {
    // 2026.2: no grant_types field at all (the stand-in rejects it as unknown).
    let old = standin("2026.2.1");
    run(call(api_task(&old)), Some(&old)).assert_ok();
    let p = old.provider("affine").unwrap();
    assert!(p.get("grant_types").is_none(), "{p}");
    assert_eq!(
        p["redirect_uris"],
        json!([{"matching_mode": "strict", "url": "https://affine.example.com/oauth/callback"}])
    );

    // 2026.5: grant_types must be set (else []: every login fails); redirect_uri_type appears.
    let new = standin("2026.5.0");
    run(call(api_task(&new)), Some(&new)).assert_ok();
    let p = new.provider("affine").unwrap();
    assert_eq!(
        p["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        p["redirect_uris"][0]["redirect_uri_type"],
        json!("authorization")
    );

    // The 2026.5 shape pushed to 2026.2 is taken as real authentik takes it: the fields
    // 2026.2 does not know are ignored, not stored (recorded on 2026.2.2).
    let old2 = standin("2026.2.1");
    run(
        call(with(
            api_task(&old2),
            json!({"authentik_version": "2026.5.0"}),
        )),
        Some(&old2),
    )
    .assert_ok();
    let p = old2.provider("affine").unwrap();
    assert!(p.get("grant_types").is_none(), "{p}");
    assert!(
        p["redirect_uris"][0].get("redirect_uri_type").is_none(),
        "{p}"
    );
}

#[test]
fn api_content_is_updated_and_reapplied_only_when_it_differs() {
    let authentik = standin("2026.8.0");
    run(call(api_task(&authentik)), Some(&authentik)).assert_ok();
    let pk = authentik.instances()[0]["pk"].clone();

    let seen = authentik.requests().len();
    let grouped = with(api_task(&authentik), json!({"group": "authentik Admins"}));
    let r = run(call(grouped.clone()).diff(), Some(&authentik));
    r.assert_ok();
    assert!(r.changed());
    assert!(r.msg().contains("updated and applied"), "{}", r.msg());
    let w = writes(&requests_since(&authentik, seen));
    assert_eq!(
        w,
        vec![
            format!("PATCH /api/v3/managed/blueprints/{}/", pk.as_str().unwrap()),
            format!(
                "POST /api/v3/managed/blueprints/{}/apply/",
                pk.as_str().unwrap()
            ),
        ]
    );
    assert_eq!(authentik.instances().len(), 1, "updated, not a second one");
    assert!(authentik.instances()[0]["content"]
        .as_str()
        .unwrap()
        .contains("authentik Admins"));
    assert_eq!(authentik.applied_count(), 2);
    // The diff is the blueprint text, secret masked.
    let diff = &r.json["diff"];
    assert!(diff["before"]
        .as_str()
        .unwrap()
        .contains(&format!("client_secret: {MASK}")));
    assert!(diff["after"]
        .as_str()
        .unwrap()
        .contains("authentik_policies.policybinding"));

    let seen = authentik.requests().len();
    assert!(!run(call(grouped), Some(&authentik)).assert_ok().changed());
    assert!(writes(&requests_since(&authentik, seen)).is_empty());
}

#[test]
fn api_authentik_version_is_detected_from_the_version_endpoint_unless_given() {
    let authentik = standin("2024.10.5");
    let r = run(call(api_task(&authentik)).check(), Some(&authentik));
    assert_eq!(r.assert_ok().json["authentik_version"], json!("2024.10.5"));
    assert!(requests_since(&authentik, 0).contains(&"GET /api/v3/admin/version/".to_string()));

    let seen = authentik.requests().len();
    let given = with(
        api_task(&authentik),
        json!({"authentik_version": "2024.10.5"}),
    );
    run(call(given).check(), Some(&authentik)).assert_ok();
    assert!(
        !requests_since(&authentik, seen).contains(&"GET /api/v3/admin/version/".to_string()),
        "a given version is not asked for"
    );
}

#[test]
fn api_an_authentik_newer_than_known_is_served_the_newest_rules_with_one_warning() {
    // The version read from the server (a release candidate here) and the one given.
    let authentik = standin("2026.11.0");
    for task in [
        api_task(&authentik),
        with(
            api_task(&authentik),
            json!({"authentik_version": "2026.11"}),
        ),
    ] {
        let r = run(call(task).check(), Some(&authentik));
        r.assert_ok();
        let newer: Vec<String> = r
            .warnings()
            .into_iter()
            .filter(|w| w.contains("authentik 2026.11.0 is newer than this tool knows"))
            .collect();
        assert_eq!(newer.len(), 1, "{:?}", r.warnings());
    }
    let r = run(call(api_task(&authentik)), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert_eq!(authentik.applied_count(), 1);
}

#[test]
fn api_each_missing_referenced_object_is_named_before_anything_is_sent() {
    // A flow, a key, a scope mapping and a group that authentik lacks: each is named with
    // where to create it and the parameter that asked for it, in one message, and nothing
    // is written. Check mode says the same: a run that would fail says so ahead.
    for check_mode in [false, true] {
        let authentik = standin("2026.2.2");
        let seen = authentik.requests().len();
        let task = with(
            api_task(&authentik),
            json!({
                "authorization_flow": "no-such-flow",
                "signing_key": "No Such Key",
                "scopes": ["openid", "email", "profile", "nosuch"],
                "group": "no-such-group",
            }),
        );
        let call = if check_mode {
            call(task).check()
        } else {
            call(task)
        };
        let r = run(call, Some(&authentik));
        r.assert_failed_with(&[
            "nothing was sent",
            "no flow with slug \"no-such-flow\"",
            "Flows and Stages > Flows; or fix authorization_flow",
            "no certificate key pair with name \"No Such Key\"",
            "System > Certificates; or fix signing_key",
            "no scope mapping with managed \"goauthentik.io/providers/oauth2/scope-nosuch\"",
            "misspelled or the mapping was deleted",
            "or fix scopes",
            "no group with name \"no-such-group\"",
            "Directory > Groups; or fix group",
        ]);
        assert!(
            writes(&requests_since(&authentik, seen)).is_empty(),
            "check mode {check_mode}: {:?}",
            requests_since(&authentik, seen)
        );
        assert!(authentik.instances().is_empty());
    }
}

#[test]
fn api_objects_that_exist_are_not_reported_missing() {
    // The defaults authentik ships, a group that exists: the lookups find them all.
    let authentik = standin("2024.10.2");
    let task = with(api_task(&authentik), json!({"group": "authentik Admins"}));
    let r = run(call(task), Some(&authentik));
    r.assert_ok();
    assert!(r.changed(), "{}", r.msg());
    assert_eq!(authentik.applied_count(), 1);
}

#[test]
fn api_validation_failure_fails_with_authentiks_log_lines_and_creates_nothing() {
    // A blueprint for 2026.8 on a 2024.6 authentik, whose invalidation flow's slug a template
    // builds with !Format (so it is not looked up ahead): authentik's own refusal comes back
    // with its log lines.
    let dir = tempfile::tempdir().unwrap();
    let template = builtin_template_with(
        dir.path(),
        "[slug, {{ invalidation_flow | yaml }}]",
        "[slug, !Format [\"%s\", {{ invalidation_flow | yaml }}]]",
    );
    let authentik = standin("2024.6.4");
    let forced = with(
        api_task(&authentik),
        json!({"authentik_version": "2026.8.0", "template": template.to_str().unwrap()}),
    );
    let r = run(call(forced), Some(&authentik));
    // authentik ignores attributes it does not know (invalidation_flow, grant_types), but
    // the list form of redirect_uris is a type 2024.6 refuses.
    r.assert_failed_with(&[
        "HTTP 400",
        "Failed to validate blueprint",
        "redirect_uris",
        "Not a valid string",
    ]);
    assert!(authentik.instances().is_empty());
    assert_eq!(authentik.applied_count(), 0);

    // The secret read with !Env from a variable authentik's environment lacks.
    let authentik = standin("2026.8.0");
    let task = with(
        api_task(&authentik),
        json!({"client_secret": null, "client_secret_env": "AFFINE_AUTHENTIK_TEST_NEVER_SET"}),
    );
    let r = run(call(task), Some(&authentik));
    r.assert_failed_with(&[
        "client_secret",
        "!Env AFFINE_AUTHENTIK_TEST_NEVER_SET",
        "authentik's server and worker",
    ]);
    assert!(authentik.instances().is_empty());
}

/// The built-in template with `from` replaced by `to`, written into `dir`.
fn builtin_template_with(dir: &Path, from: &str, to: &str) -> PathBuf {
    let template = dir.join("affine.yaml.j2");
    let builtin = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/blueprint.yaml.j2"),
    )
    .unwrap();
    assert!(
        builtin.contains(from),
        "the built-in template changed: no {from:?}"
    );
    fs::write(&template, builtin.replace(from, to)).unwrap();
    template
}

/// The built-in template with a sub_mode authentik does not know: it passes the
/// generator's own checks (they guard what AFFiNE needs), authentik refuses it.
fn template_with_a_bad_sub_mode(dir: &Path) -> PathBuf {
    builtin_template_with(dir, "sub_mode: hashed_user_id", "sub_mode: hashed_user_idd")
}

#[test]
fn api_a_custom_template_authentik_rejects_fails_with_its_log() {
    // 2025.8: the provider entry holds no !KeyOf (the managed email mapping is still
    // right there), so authentik answers 400 with its logs.
    let dir = tempfile::tempdir().unwrap();
    let template = template_with_a_bad_sub_mode(dir.path());
    let authentik = standin("2025.8.3");
    let task = with(
        api_task(&authentik),
        json!({"template": template.to_str().unwrap()}),
    );
    let r = run(call(task), Some(&authentik));
    r.assert_failed_with(&[
        "Failed to validate blueprint",
        "sub_mode",
        "hashed_user_idd",
    ]);
    assert!(authentik.instances().is_empty());
}

#[test]
fn api_authentiks_empty_405_is_explained_as_its_own_error_page() {
    // The recorded case: a policy binding (it holds `target: !KeyOf`) whose group matches
    // nothing makes authentik 2025.2+ crash while logging it, and answer HTTP 405 with an
    // empty text/html page. A template that builds the group's name with !Format gets past
    // the lookup ahead, so authentik's own answer comes back, explained.
    let dir = tempfile::tempdir().unwrap();
    let template = builtin_template_with(
        dir.path(),
        "[name, {{ group | yaml }}]",
        "[name, !Format [\"%s\", {{ group | yaml }}]]",
    );
    let authentik = standin("2026.2.2");
    let task = with(
        api_task(&authentik),
        json!({"template": template.to_str().unwrap(), "group": "no-such-group"}),
    );
    let r = run(call(task), Some(&authentik));
    r.assert_failed_with(&[
        "HTTP 405 with an empty page",
        "authentik's own error page",
        "not a refusal of the method",
        "system_exception",
        "the blueprint binds the group \"no-such-group\"",
    ]);
    assert!(authentik.instances().is_empty());
}

#[test]
fn api_wrong_token_fails_about_the_token_without_showing_it() {
    let authentik = standin("2026.8.0");
    let task = with(
        api_task(&authentik),
        json!({"authentik_token": WRONG_TOKEN}),
    );
    let r = run(call(task), Some(&authentik));
    r.assert_failed_with(&["token", "403"]);
    assert!(authentik.instances().is_empty());

    // From the environment, as a playbook run on the controller gives it: same rules.
    let mut task = api_task(&authentik);
    task.as_object_mut().unwrap().remove("authentik_token");
    let r = run(
        call(task.clone()).env("AUTHENTIK_TOKEN", WRONG_TOKEN),
        Some(&authentik),
    );
    r.assert_failed_with(&["token"]);
    // And the right one from the environment works.
    let r = run(
        call(task).env("AUTHENTIK_TOKEN", &authentik.token()),
        Some(&authentik),
    );
    assert!(r.assert_ok().changed());
    assert_eq!(
        r.json["invocation"]["module_args"]["authentik_token"],
        json!("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")
    );
}

#[test]
fn api_state_absent_removes_the_instance_and_warns_that_authentik_keeps_the_objects() {
    let authentik = standin("2026.8.0");
    run(call(api_task(&authentik)), Some(&authentik)).assert_ok();
    let absent = with(api_task(&authentik), json!({"state": "absent"}));

    let r = run(call(absent.clone()), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert!(authentik.instances().is_empty());
    let warnings = r.warnings().join(" ");
    assert!(
        warnings.contains("remove_objects") && warnings.contains("keeps"),
        "{warnings}"
    );
    assert!(
        authentik.provider("affine").is_some(),
        "the provider stays without remove_objects"
    );

    let again = run(call(absent), Some(&authentik));
    assert!(!again.assert_ok().changed(), "{}", again.out.stdout);
}

#[test]
fn api_remove_objects_deletes_the_provider_and_the_application() {
    let authentik = standin("2026.8.0");
    let grouped = with(api_task(&authentik), json!({"group": "authentik Admins"}));
    run(call(grouped.clone()), Some(&authentik)).assert_ok();
    assert!(authentik.application("affine").is_some());

    let remove = with(grouped, json!({"state": "absent", "remove_objects": true}));
    let r = run(call(remove), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert!(r.warnings().is_empty(), "{:?}", r.warnings());
    assert!(authentik.instances().is_empty());
    assert!(authentik.application("affine").is_none());
    assert!(authentik.provider("affine").is_none());
    // The removal travelled without the literal secret: an absent entry needs no attrs.
    let patch = authentik
        .requests()
        .into_iter()
        .rfind(|r| r.method == "PATCH")
        .expect("the removal blueprint was sent");
    assert!(!patch.body.contains(CLIENT_SECRET));
    assert!(patch.body.contains("state: absent"), "{}", patch.body);
}

#[test]
fn api_check_mode_sends_no_post_patch_or_delete() {
    let authentik = standin("2026.8.0");
    // Would create.
    let r = run(call(api_task(&authentik)).check().diff(), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert!(r.msg().contains("would be created"), "{}", r.msg());
    assert!(writes(&requests_since(&authentik, 0)).is_empty());
    assert!(authentik.instances().is_empty());

    run(call(api_task(&authentik)), Some(&authentik)).assert_ok();
    // Would update.
    let seen = authentik.requests().len();
    let grouped = with(api_task(&authentik), json!({"group": "authentik Admins"}));
    let r = run(call(grouped).check(), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert!(r.msg().contains("would be updated"), "{}", r.msg());
    // Would remove, with the objects.
    let remove = with(
        api_task(&authentik),
        json!({"state": "absent", "remove_objects": true}),
    );
    let r = run(call(remove).check(), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert!(
        writes(&requests_since(&authentik, seen)).is_empty(),
        "{:?}",
        requests_since(&authentik, seen)
    );
    assert_eq!(authentik.instances().len(), 1);
    assert!(authentik.provider("affine").is_some());
    assert_eq!(authentik.applied_count(), 1);
}

#[test]
fn api_every_request_carries_the_token_as_bearer_and_no_secret_reaches_the_output() {
    let authentik = standin("2026.8.0");
    let r = run(call(api_task(&authentik)).diff(), Some(&authentik));
    r.assert_ok();
    // The diff holds the blueprint text, with the literal secret masked.
    let after = r.json["diff"]["after"].as_str().unwrap();
    assert!(after.contains(&format!("client_secret: {MASK}")), "{after}");
    let bearer = format!("Bearer {}", authentik.token());
    for req in authentik.requests() {
        assert_eq!(
            req.header("authorization"),
            Some(bearer.as_str()),
            "{}",
            req.path
        );
    }
    // A failure deep inside (authentik down) still prints no secret.
    let down = with(
        api_task(&authentik),
        json!({"authentik_url": format!("http://127.0.0.1:{}", closed_port())}),
    );
    run(call(down), Some(&authentik)).assert_failed_with(&["127.0.0.1"]);
}

#[test]
fn api_an_instance_with_the_content_but_never_applied_is_applied() {
    // A first run created the instance, then its apply failed (a timeout, a 502 from the
    // proxy): the content is right, the provider does not exist. The next run must apply.
    let authentik = standin("2026.8.0");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let same = json!({"authentik_version": "2026.8.0", "client_secret": CLIENT_SECRET});
    run(call(with(file_task(&dest), same.clone())), None).assert_ok();
    let content = fs::read_to_string(&dest).unwrap();
    let created = reqwest::blocking::Client::new()
        .post(format!("{}/api/v3/managed/blueprints/", authentik.url()))
        .bearer_auth(authentik.token())
        .json(&json!({"name": INSTANCE_NAME, "content": content, "context": {}, "enabled": true}))
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    assert_ne!(authentik.instances()[0]["status"], json!("successful"));
    assert!(authentik.provider("affine").is_none());

    let task = with(api_task(&authentik), same);
    let check = run(call(task.clone()).check(), Some(&authentik));
    assert!(check.assert_ok().changed(), "{}", check.out.stdout);
    let r = run(call(task.clone()), Some(&authentik));
    assert!(r.assert_ok().changed(), "{}", r.out.stdout);
    assert!(r.msg().contains("last apply had status"), "{}", r.msg());
    assert_eq!(authentik.applied_count(), 1);
    assert!(authentik.provider("affine").is_some());
    assert_eq!(authentik.instances()[0]["status"], json!("successful"));
    let seen = authentik.requests().len();
    assert!(!run(call(task), Some(&authentik)).assert_ok().changed());
    assert!(writes(&requests_since(&authentik, seen)).is_empty());
}

#[test]
fn api_waits_for_an_apply_that_authentik_only_queued() {
    // authentik's task-queue versions: apply answers at once, the apply happens later.
    let authentik = standin("2026.8.0");
    authentik.set_apply_delay(Some(std::time::Duration::from_millis(700)));
    let task = api_task(&authentik);
    let started = std::time::Instant::now();
    let r = run(call(task.clone()), Some(&authentik));
    r.assert_ok();
    assert!(r.changed());
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(700),
        "it waited for the queued apply"
    );
    assert!(authentik.provider("affine").is_some());
    let pk = authentik.instances()[0]["pk"].as_str().unwrap().to_string();
    let polls = requests_since(&authentik, 0)
        .iter()
        .filter(|r| **r == format!("GET /api/v3/managed/blueprints/{pk}/"))
        .count();
    assert!(
        polls >= 2,
        "the instance was read until the apply showed: {polls}"
    );

    // An update waits the same way (the old `successful` is not taken for the new apply).
    let grouped = with(task, json!({"group": "authentik Admins"}));
    let r = run(call(grouped), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert_eq!(authentik.applied_count(), 2);

    // A queue that does not get to it within `timeout`: a failure saying so.
    let slow = standin("2026.8.0");
    slow.set_apply_delay(Some(std::time::Duration::from_secs(4)));
    let task = with(api_task(&slow), json!({"timeout": 1}));
    run(call(task), Some(&slow)).assert_failed_with(&["has not finished applying", "1 s"]);
}

#[test]
fn api_an_encryption_key_set_by_hand_is_removed_by_applying_again_with_a_warning() {
    let authentik = standin("2026.2.2");
    run(call(api_task(&authentik)), Some(&authentik)).assert_ok();
    // Someone sets an encryption key in authentik's admin interface: every login fails.
    let provider = authentik.provider("affine").unwrap();
    let url = format!(
        "{}/api/v3/providers/oauth2/{}/",
        authentik.url(),
        provider["pk"]
    );
    let status = reqwest::blocking::Client::new()
        .patch(url)
        .bearer_auth(authentik.token())
        .json(&json!({"encryption_key": provider["signing_key"]}))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert!(!authentik.provider("affine").unwrap()["encryption_key"].is_null());

    // Check mode says so and writes nothing.
    let seen = authentik.requests().len();
    let r = run(call(api_task(&authentik)).check(), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert!(r.msg().contains("would be applied again"), "{}", r.msg());
    assert!(
        r.warnings().iter().any(|w| w.contains("would remove")),
        "{:?}",
        r.warnings()
    );
    assert!(writes(&requests_since(&authentik, seen)).is_empty());

    // A real run applies the unchanged instance again: the key is gone.
    let applied = authentik.applied_count();
    let r = run(call(api_task(&authentik)), Some(&authentik));
    assert!(r.assert_ok().changed());
    assert!(
        r.msg()
            .contains("applied again: the provider has an encryption key set by hand"),
        "{}",
        r.msg()
    );
    assert!(
        r.warnings()
            .iter()
            .any(|w| w.contains("encryption key") && w.contains("removed")),
        "{:?}",
        r.warnings()
    );
    assert_eq!(authentik.applied_count(), applied + 1);
    assert!(authentik.provider("affine").unwrap()["encryption_key"].is_null());
    // And then nothing more to do.
    assert!(!run(call(api_task(&authentik)), Some(&authentik))
        .assert_ok()
        .changed());
}

#[test]
fn scopes_add_to_the_ones_affine_asks_for() {
    // `scopes: [openid]` (once a way to drop email and profile) still maps all of them: a
    // provider without them is a login that cannot work.
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let task = with(
        file_task(&dest),
        json!({"scopes": ["openid"], "authentik_version": "2025.8.3"}),
    );
    run(call(task), None).assert_ok();
    let text = fs::read_to_string(&dest).unwrap();
    for scope in ["openid", "email", "profile", "offline_access"] {
        let find = format!("[managed, goauthentik.io/providers/oauth2/scope-{scope}]");
        assert_eq!(text.matches(&find).count(), 1, "{scope}: {text}");
    }
}
