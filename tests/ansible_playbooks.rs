//! The `affine_oidc` module under real Ansible: `ansible-playbook`, `ansible` and `ansible-doc`
//! from the pinned ansible-core virtualenv (scripts/test.sh), against stand-in AFFiNE servers
//! on loopback. Each test gets its own directory (library/, inventory, ansible.cfg, HOME and
//! Ansible's temp dirs) so tests running side by side do not meet. Secrets reach Ansible through
//! extra-vars files, vault files or the environment, never the command line (except in the ad
//! hoc test, which says why).

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::affine_standin::{AffineOptions, AffineStandin};
use support::ansible::{Lab, Run};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin, ProviderState};

const ADMIN_EMAIL: &str = "admin@example.com";
/// Distinctive values, so finding one in any output can only mean a leak.
const ADMIN_PASSWORD: &str = "adminpw-Q7x2kLr9-SECRET";
const CLIENT_SECRET: &str = "clientsecret-8Hc3vTq1-SECRET";
const VERSIONS: [&str; 3] = ["0.21.0", "0.25.3", "0.27.0"];

fn affine(version: &str) -> AffineStandin {
    let mut opts = AffineOptions::new(version);
    opts.admin_email = ADMIN_EMAIL.into();
    opts.admin_password = ADMIN_PASSWORD.into();
    // The issuer (a stand-in authentik) is on loopback; AFFiNE 0.27's SSRF guard would refuse it.
    opts.ssrf_guard = Some(false);
    AffineStandin::start(opts)
}

fn authentik_with_app(slug: &str) -> AuthentikStandin {
    let authentik = AuthentikStandin::start(AuthentikOptions::new("2025.10.1"));
    authentik.add_provider(slug, ProviderState::new("AFFiNE"));
    authentik
}

fn issuer_of(authentik: &AuthentikStandin) -> String {
    format!("{}/application/o/affine/", authentik.url())
}

/// An `[affine]` group, one host per stand-in, each with its `affine_url`.
fn affine_group(lab: &Lab, hosts: &[(&str, &AffineStandin)], group_vars: &str) {
    let mut ini = String::from("[affine]\n");
    for (name, server) in hosts {
        ini.push_str(&format!("{name} affine_url={}\n", server.url()));
    }
    ini.push_str(&format!("\n[affine:vars]\n{group_vars}"));
    lab.inventory(&ini);
}

/// A play over the `[affine]` hosts, each task delegated to localhost. `tasks` is YAML at the
/// indentation of a task list item (4 spaces).
fn play(tasks: &str) -> String {
    format!("- name: test play\n  hosts: affine\n  gather_facts: false\n  tasks:\n{tasks}")
}

fn stored(server: &AffineStandin) -> Value {
    server
        .stored_oidc()
        .expect("the OIDC value was written to the stand-in")
}

// -------------------------------------------------------------------------------------------
// The example playbook, as shipped.
// -------------------------------------------------------------------------------------------

#[test]
fn example_playbook_configures_every_version_in_one_run_then_reports_ok() {
    let authentik = authentik_with_app("affine");
    // One instance has its own application, through the per-host `slug` of the example.
    authentik.add_provider("affine-new", ProviderState::new("AFFiNE new"));
    let slugs = ["affine", "affine", "affine-new"];
    let servers: Vec<AffineStandin> = VERSIONS.iter().map(|v| affine(v)).collect();
    let hosts: Vec<String> = VERSIONS
        .iter()
        .map(|v| format!("affine-{}", v.replace('.', "-")))
        .collect();
    let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();

    let lab = Lab::documented_layout();
    // The exact example, with library/ beside it (the documented layout).
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/affine_oidc.yml"),
    )
    .expect("playbooks/affine_oidc.yml");
    lab.write("affine_oidc.yml", &example);
    let mut ini = String::from("[affine]\n");
    for ((host, server), slug) in host_refs.iter().zip(&servers).zip(slugs) {
        let slug = if slug == "affine" {
            String::new()
        } else {
            format!(" slug={slug}")
        };
        ini.push_str(&format!("{host} affine_url={}{slug}\n", server.url()));
    }
    ini.push_str(&format!(
        "\n[affine:vars]\nauthentik_url={}\n",
        authentik.url()
    ));
    lab.inventory(&ini);
    // The vars layout of playbooks/README.md: plain vars next to a vault-encrypted file.
    lab.write(
        "group_vars/affine/vars.yml",
        &format!("affine_admin_email: {ADMIN_EMAIL}\naffine_oidc_wait_timeout: 20\n"),
    );
    lab.write(
        "group_vars/affine/vault.yml",
        &format!(
            "vault_affine_admin_password: {ADMIN_PASSWORD}\nvault_affine_oidc_client_secret: {CLIENT_SECRET}\n"
        ),
    );
    lab.write("vault-pass", "vault-pass-for-the-test\n");
    let mut encrypt = lab.tool("ansible-vault");
    encrypt
        .args(["encrypt", "--vault-password-file", "vault-pass"])
        .arg("group_vars/affine/vault.yml");
    let enc = lab.run(encrypt, "ansible-vault encrypt".into());
    assert_eq!(enc.out.code, Some(0), "{}", enc.show());
    let vault = lab.read("group_vars/affine/vault.yml");
    assert!(vault.starts_with("$ANSIBLE_VAULT;1.1;AES256"), "{vault}");
    assert!(!vault.contains(CLIENT_SECRET));

    let args = ["--vault-password-file", "vault-pass"];
    let first = lab.playbook("affine_oidc.yml", &args, &[]);
    first.assert_recap(&host_refs, &[("ok", 1), ("changed", 1), ("failed", 0)]);
    first.assert_no_secrets(&[ADMIN_PASSWORD, CLIENT_SECRET]);
    for ((server, version), slug) in servers.iter().zip(VERSIONS).zip(slugs) {
        let value = stored(server);
        let issuer = format!("{}/application/o/{slug}/", authentik.url());
        assert_eq!(value["issuer"], issuer, "{version}");
        assert_eq!(value["clientSecret"], CLIENT_SECRET, "{version}");
        assert!(
            !value["clientId"].as_str().unwrap_or("").is_empty(),
            "{version}"
        );
        assert_eq!(server.write_count(), 1, "{version}");
        // wait: true returned only once AFFiNE listed OIDC.
        assert!(server.oidc_registered(), "{version}");
        assert_eq!(server.magic_links_sent(), 0, "{version}");
    }
    // 0.25 and 0.27 registered after fetching authentik's discovery document.
    assert!(servers[1..]
        .iter()
        .all(|s| s.discovery_attempts().iter().any(|a| a.outcome.is_ok())));

    let before: Vec<usize> = servers.iter().map(|s| s.requests().len()).collect();
    let second = lab.playbook("affine_oidc.yml", &args, &[]);
    second.assert_recap(&host_refs, &[("ok", 1), ("changed", 0), ("failed", 0)]);
    second.assert_no_secrets(&[ADMIN_PASSWORD, CLIENT_SECRET]);
    for ((server, version), n) in servers.iter().zip(VERSIONS).zip(before) {
        assert_eq!(
            server.write_count(),
            1,
            "{version}: no write when unchanged"
        );
        // Unchanged and registered: the version, one sign-in and one query, no polling.
        assert_eq!(
            server.requests().len() - n,
            3,
            "{version}: requests of an unchanged reconcile with a password"
        );
    }
}

// -------------------------------------------------------------------------------------------
// Check mode, diff, secrets.
// -------------------------------------------------------------------------------------------

const SET_TASK: &str = r#"    - name: set
      affine_oidc:
        affine_url: "{{ affine_url }}"
        admin_email: admin@example.com
        admin_password: "{{ admin_password }}"
        issuer: "{{ issuer }}"
        client_id: affine-test-client
        client_secret: "{{ client_secret }}"
      delegate_to: localhost
"#;

#[test]
fn check_mode_writes_nothing_on_any_version_but_reports_the_change() {
    let authentik = authentik_with_app("affine");
    let servers: Vec<AffineStandin> = VERSIONS.iter().map(|v| affine(v)).collect();
    let lab = Lab::documented_layout();
    let names = ["v21", "v25", "v27"];
    let pairs: Vec<(&str, &AffineStandin)> = names.iter().copied().zip(&servers).collect();
    affine_group(&lab, &pairs, &format!("issuer={}\n", issuer_of(&authentik)));
    lab.write(
        "secrets.yml",
        &format!("admin_password: {ADMIN_PASSWORD}\nclient_secret: {CLIENT_SECRET}\n"),
    );
    lab.write("set.yml", &play(SET_TASK));

    let run = lab.playbook("set.yml", &["--check", "-v", "-e", "@secrets.yml"], &[]);
    run.assert_recap(&names, &[("changed", 1), ("failed", 0)]);
    run.assert_no_secrets(&[ADMIN_PASSWORD, CLIENT_SECRET]);
    assert!(
        run.out.stdout.contains("check mode, nothing written"),
        "{}",
        run.show()
    );
    for (server, version) in servers.iter().zip(VERSIONS) {
        assert_eq!(server.write_count(), 0, "{version}: check mode wrote");
        assert_eq!(server.stored_oidc(), None, "{version}");
    }
}

#[test]
fn diff_masks_the_secret_and_still_shows_a_changed_one() {
    let authentik = authentik_with_app("affine");
    let server = affine("0.27.0");
    let lab = Lab::documented_layout();
    affine_group(&lab, &[("affine27", &server)], "");
    let new_secret = "clientsecret-rotated-5Zp0mWx4-SECRET";
    lab.write(
        "secrets.yml",
        &format!(
            "admin_password: {ADMIN_PASSWORD}\nold_secret: {CLIENT_SECRET}\nnew_secret: {new_secret}\n"
        ),
    );
    let task = |name: &str, secret: &str| {
        format!(
            r#"    - name: {name}
      affine_oidc:
        affine_url: "{{{{ affine_url }}}}"
        admin_email: admin@example.com
        admin_password: "{{{{ admin_password }}}}"
        issuer: {issuer}
        client_id: affine-test-client
        client_secret: "{{{{ {secret} }}}}"
        args:
          scope: openid profile email
      delegate_to: localhost
"#,
            issuer = issuer_of(&authentik)
        )
    };
    let tasks = [
        task("first", "old_secret"),
        task("secret rotated", "new_secret"),
        task("unchanged", "new_secret"),
    ]
    .concat();
    lab.write("diff.yml", &play(&tasks));

    let run = lab.playbook("diff.yml", &["--diff", "-e", "@secrets.yml"], &[]);
    run.assert_recap(&["affine27"], &[("ok", 3), ("changed", 2), ("failed", 0)]);
    run.assert_no_secrets(&[ADMIN_PASSWORD, CLIENT_SECRET, new_secret]);

    let first = run.task("first");
    assert!(first.contains("--- before:"), "{first}");
    assert!(first.contains("+++ after:"), "{first}");
    assert!(
        first.contains(&format!("+    \"issuer\": \"{}\"", issuer_of(&authentik))),
        "{first}"
    );
    assert!(
        first
            .lines()
            .any(|l| l.starts_with('+') && l.contains("\"clientSecret\": \"********")),
        "the new secret is shown masked: {first}"
    );

    // Only the secret differs, and the diff still says so.
    let rotated = run.task("secret rotated");
    let changed_lines: Vec<&str> = rotated
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert!(
        !changed_lines.is_empty(),
        "no diff for a rotated secret: {rotated}"
    );
    assert!(
        changed_lines.iter().all(|l| l.contains("clientSecret")),
        "{rotated}"
    );
    assert!(rotated.contains("changed: [affine27"), "{rotated}");

    let unchanged = run.task("unchanged");
    assert!(!unchanged.contains("--- before"), "{unchanged}");
    assert!(unchanged.contains("ok: [affine27"), "{unchanged}");
    assert_eq!(stored(&server)["clientSecret"], new_secret);
    assert_eq!(server.write_count(), 2);
}

#[test]
fn verbose_output_and_registered_results_hold_no_secret() {
    let authentik = authentik_with_app("affine");
    let server = affine("0.27.0");
    // Seeded as if typed into the admin panel: AFFiNE echoes it back unredacted in appConfig.
    let seeded = "clientsecret-seeded-Jd82nQ-SECRET";
    server.set_stored_oidc(json!({
        "issuer": issuer_of(&authentik),
        "clientId": "old-client",
        "clientSecret": seeded,
        "args": {}
    }));
    let token = server.session_token_for_admin();
    let wrong_password = "wrongpw-Lk29xq-SECRET";
    let token_secret = "clientsecret-token-Vb61sR-SECRET";
    let check_secret = "clientsecret-check-Hn47eY-SECRET";
    let lab = Lab::documented_layout();
    affine_group(&lab, &[("affine27", &server)], "");
    lab.write(
        "secrets.yml",
        &format!(
            "admin_password: {ADMIN_PASSWORD}\nclient_secret: {CLIENT_SECRET}\n\
             token: {token}\nwrong_password: {wrong_password}\ntoken_secret: {token_secret}\n\
             check_secret: {check_secret}\n"
        ),
    );
    let issuer = issuer_of(&authentik);
    let results = lab.path("results");
    std::fs::create_dir_all(&results).expect("mkdir results");
    let dump = |register: &str| {
        format!(
            "    - name: dump {register}\n      copy:\n        content: \"{{{{ {register} | to_json }}}}\"\n        dest: {}/{register}.json\n      delegate_to: localhost\n",
            results.display()
        )
    };
    let tasks = format!(
        r#"    - name: with a password
      affine_oidc:
        affine_url: "{{{{ affine_url }}}}"
        admin_email: admin@example.com
        admin_password: "{{{{ admin_password }}}}"
        issuer: {issuer}
        client_id: affine-test-client
        client_secret: "{{{{ client_secret }}}}"
        wait: true
        wait_timeout: 20
      delegate_to: localhost
      register: with_password
{dump_password}    - name: with a session token
      affine_oidc:
        affine_url: "{{{{ affine_url }}}}"
        session_token: "{{{{ token }}}}"
        issuer: {issuer}
        client_id: affine-test-client
        client_secret: "{{{{ token_secret }}}}"
      delegate_to: localhost
      register: with_token
{dump_token}    - name: in check mode
      affine_oidc:
        affine_url: "{{{{ affine_url }}}}"
        session_token: "{{{{ token }}}}"
        issuer: {issuer}
        client_id: affine-test-client
        client_secret: "{{{{ check_secret }}}}"
      check_mode: true
      delegate_to: localhost
      register: in_check_mode
{dump_check}    - name: with a wrong password
      affine_oidc:
        affine_url: "{{{{ affine_url }}}}"
        admin_email: admin@example.com
        admin_password: "{{{{ wrong_password }}}}"
        issuer: {issuer}
        client_secret: "{{{{ client_secret }}}}"
      delegate_to: localhost
      register: refused
      ignore_errors: true
{dump_refused}"#,
        dump_password = dump("with_password"),
        dump_token = dump("with_token"),
        dump_check = dump("in_check_mode"),
        dump_refused = dump("refused"),
    );
    lab.write("verbose.yml", &play(&tasks));

    // ansible-core 2.21 asks a module for `invocation` only with INJECT_INVOCATION; asked for,
    // it is in -vvv and in every registered result, and must hold placeholders only.
    let run = lab.playbook(
        "verbose.yml",
        &[
            "-vvv",
            "--diff",
            "-e",
            "@secrets.yml",
            "-e",
            "ansible_inject_invocation=true",
        ],
        &[],
    );
    run.assert_recap(&["affine27"], &[("failed", 0), ("ignored", 1)]);

    let sessions = server.session_material();
    assert!(
        sessions.len() >= 2,
        "expected the signed-in session and the token in the request log: {sessions:?}"
    );
    assert!(sessions.contains(&token));
    let mut secrets: Vec<&str> = vec![
        ADMIN_PASSWORD,
        CLIENT_SECRET,
        seeded,
        wrong_password,
        token_secret,
        check_secret,
    ];
    secrets.extend(sessions.iter().map(String::as_str));
    run.assert_no_secrets(&secrets);
    // -vvv did print the results (so the check above looked at something).
    assert!(
        run.out
            .stdout
            .contains("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"),
        "{}",
        run.show()
    );

    for name in ["with_password", "with_token", "in_check_mode", "refused"] {
        let text = lab.read(&format!("results/{name}.json"));
        for s in &secrets {
            assert!(
                !text.contains(s),
                "a secret leaked into the registered {name}: {text}"
            );
        }
        let result: Value = serde_json::from_str(&text).expect("to_json gave JSON");
        assert!(result.get("changed").is_some(), "{name}: {text}");
        // Asked for, `invocation` is kept in registered results (2.21; 2.17-2.20 drop it),
        // its no_log values placeholders.
        let args = &result["invocation"]["module_args"];
        assert!(args.is_object(), "{name}: {text}");
        for p in ["admin_password", "session_token", "client_secret"] {
            assert!(
                args[p].is_null() || args[p] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER",
                "{name}.{p}: {text}"
            );
        }
    }
    let with_password: Value =
        serde_json::from_str(&lab.read("results/with_password.json")).unwrap();
    assert_eq!(with_password["changed"], true);
    assert_eq!(with_password["existing"]["clientId"], "old-client");
    assert_eq!(with_password["existing"]["clientSecret"], "********");
    assert_eq!(with_password["end_state"]["clientId"], "affine-test-client");
    assert_eq!(with_password["oidc_registered"], true);
    let refused: Value = serde_json::from_str(&lab.read("results/refused.json")).unwrap();
    assert_eq!(refused["failed"], true, "{refused}");
    assert!(
        refused["msg"]
            .as_str()
            .unwrap_or("")
            .contains("wrong e-mail or password"),
        "{refused}"
    );
    let in_check: Value = serde_json::from_str(&lab.read("results/in_check_mode.json")).unwrap();
    assert_eq!(in_check["changed"], true, "{in_check}");
    assert_eq!(stored(&server)["clientSecret"], token_secret);
    assert_eq!(server.write_count(), 2);
}

// -------------------------------------------------------------------------------------------
// state: absent, the file backend, parameters, ad hoc, ansible-doc.
// -------------------------------------------------------------------------------------------

#[test]
fn state_absent_writes_the_defaults_once() {
    let server = affine("0.25.3");
    let seeded = "clientsecret-absent-Pq73tz-SECRET";
    server.set_stored_oidc(json!({
        "issuer": "http://127.0.0.1:1/application/o/affine/",
        "clientId": "old-client",
        "clientSecret": seeded,
        "args": {"scope": "openid"}
    }));
    let lab = Lab::documented_layout();
    affine_group(&lab, &[("affine25", &server)], "");
    lab.write(
        "secrets.yml",
        &format!("admin_password: {ADMIN_PASSWORD}\n"),
    );
    let task = |name: &str, register: &str| {
        format!(
            r#"    - name: {name}
      affine_oidc:
        affine_url: "{{{{ affine_url }}}}"
        admin_email: admin@example.com
        admin_password: "{{{{ admin_password }}}}"
        state: absent
      delegate_to: localhost
      register: {register}
"#
        )
    };
    let tasks = format!(
        "{}{}    - assert:\n        that: [removed is changed, again is not changed]\n",
        task("remove", "removed"),
        task("remove again", "again")
    );
    lab.write("absent.yml", &play(&tasks));
    let run = lab.playbook("absent.yml", &["--diff", "-v", "-e", "@secrets.yml"], &[]);
    run.assert_recap(&["affine25"], &[("changed", 1), ("failed", 0)]);
    run.assert_no_secrets(&[ADMIN_PASSWORD, seeded]);
    assert_eq!(
        stored(&server),
        json!({"clientId": "", "clientSecret": "", "issuer": "", "args": {}})
    );
    assert_eq!(server.write_count(), 1);
    assert!(!server.oidc_registered());
}

#[test]
fn file_backend_keeps_every_other_key_in_order() {
    let lab = Lab::documented_layout();
    lab.inventory("[affine]\naffine-file\n");
    let original = r#"{
  "$schema": "https://github.com/toeverything/affine/releases/latest/download/config.schema.json",
  "server": {
    "name": "Team AFFiNE",
    "externalUrl": "https://affine.example.com"
  },
  "oauth": {
    "providers.google": {
      "clientId": "google-client",
      "clientSecret": "google-secret-keep-SECRET"
    },
    "providers.github": {
      "clientId": "gh",
      "clientSecret": "github-secret-keep-SECRET"
    }
  },
  "mailer": {
    "SMTP.host": "smtp.example.com",
    "SMTP.port": 465
  }
}
"#;
    let present = lab.write("config/present.json", original);
    std::fs::set_permissions(&present, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut with_oidc: Value = serde_json::from_str(original).unwrap();
    with_oidc["oauth"]["providers.oidc"] = json!({
        "issuer": "https://auth.example.com/application/o/affine/",
        "clientId": "gone-client",
        "clientSecret": "clientsecret-file-old-SECRET",
        "args": {}
    });
    with_oidc["auth"] = json!({"allowSignup": false});
    let absent_before = serde_json::to_string_pretty(&with_oidc).unwrap();
    lab.write("config/absent.json", &absent_before);
    lab.write("secrets.yml", &format!("client_secret: {CLIENT_SECRET}\n"));

    let file_task = |name: &str, file: &str, extra: &str, register: &str| {
        format!(
            r#"    - name: {name}
      affine_oidc:
        config_file: "{{{{ playbook_dir }}}}/config/{file}"
{extra}      delegate_to: localhost
      register: {register}
"#
        )
    };
    let present_args = r#"        authentik_url: https://auth.example.com
        client_id: affine-file-client
        client_secret: "{{ client_secret }}"
        backup: true
"#;
    let tasks = [
        file_task("set", "present.json", present_args, "set1"),
        file_task("set again", "present.json", present_args, "set2"),
        file_task(
            "set in check mode",
            "present.json",
            r#"        authentik_url: https://auth.example.com
        client_id: affine-file-client
        client_secret: other-check-SECRET
"#,
            "set3",
        )
        .replace(
            "      delegate_to",
            "      check_mode: true\n      delegate_to",
        ),
        file_task("remove", "absent.json", "        state: absent\n", "rm1"),
        file_task(
            "remove again",
            "absent.json",
            "        state: absent\n",
            "rm2",
        ),
        r#"    - assert:
        that:
          - set1 is changed
          - set1.backup_file is defined
          - set2 is not changed
          - set3 is changed
          - rm1 is changed
          - rm2 is not changed
"#
        .to_string(),
    ]
    .concat();
    lab.write("file.yml", &play(&tasks));

    // The module runs on "localhost" for a host with no address: delegate_to keeps it local.
    let run = lab.playbook("file.yml", &["--diff", "-v", "-e", "@secrets.yml"], &[]);
    run.assert_recap(&["affine-file"], &[("changed", 3), ("failed", 0)]);
    run.assert_no_secrets(&[
        CLIENT_SECRET,
        "other-check-SECRET",
        "google-secret-keep-SECRET",
        "github-secret-keep-SECRET",
        "clientsecret-file-old-SECRET",
    ]);
    assert!(
        run.out.text().contains("restart"),
        "the restart warning: {}",
        run.show()
    );

    // Present: the OIDC key added, everything else (and its order) as it was.
    let after: Value = serde_json::from_str(&lab.read("config/present.json")).unwrap();
    let oidc = &after["oauth"]["providers.oidc"];
    assert_eq!(
        oidc["issuer"],
        "https://auth.example.com/application/o/affine/"
    );
    assert_eq!(oidc["clientId"], "affine-file-client");
    assert_eq!(
        oidc["clientSecret"], CLIENT_SECRET,
        "check mode must not have written"
    );
    let mut rest = after.clone();
    rest["oauth"]
        .as_object_mut()
        .unwrap()
        .shift_remove("providers.oidc");
    let want: Value = serde_json::from_str(original).unwrap();
    assert_eq!(
        serde_json::to_string(&rest).unwrap(),
        serde_json::to_string(&want).unwrap(),
        "other keys or their order changed"
    );
    let mode = std::fs::metadata(&present).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the file's mode was not kept");
    let backups: Vec<PathBuf> = std::fs::read_dir(lab.path("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("present.json") && n != "present.json"
        })
        .collect();
    assert_eq!(backups.len(), 1, "one backup: {backups:?}");
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), original);

    // Absent: the key gone, the rest kept in order.
    let after: Value = serde_json::from_str(&lab.read("config/absent.json")).unwrap();
    let mut want = with_oidc.clone();
    want["oauth"]
        .as_object_mut()
        .unwrap()
        .shift_remove("providers.oidc");
    assert_eq!(
        serde_json::to_string(&after).unwrap(),
        serde_json::to_string(&want).unwrap()
    );
}

#[test]
fn bad_parameters_fail_the_task_by_name() {
    let lab = Lab::documented_layout();
    lab.inventory("[affine]\naffine-bad affine_url=http://127.0.0.1:9\n");
    lab.write("secrets.yml", &format!("client_secret: {CLIENT_SECRET}\n"));
    let task = |name: &str, params: &str| {
        format!(
            "    - name: {name}\n      affine_oidc:\n{params}      delegate_to: localhost\n      ignore_errors: true\n"
        )
    };
    let base = r#"        issuer: https://auth.example.com/application/o/affine/
        client_secret: "{{ client_secret }}"
        session_token: tok
"#;
    let tasks = [
        task("typo", &format!("        afine_url: \"{{{{ affine_url }}}}\"\n{base}")),
        task(
            "not a number",
            &format!("        affine_url: \"{{{{ affine_url }}}}\"\n        timeout: soon\n{base}"),
        ),
        task(
            "not a choice",
            &format!("        affine_url: \"{{{{ affine_url }}}}\"\n        state: gone\n{base}"),
        ),
        task(
            "exclusive",
            &format!(
                "        affine_url: \"{{{{ affine_url }}}}\"\n        authentik_url: https://auth.example.com\n{base}"
            ),
        ),
    ]
    .concat();
    lab.write("bad.yml", &play(&tasks));
    let run = lab.playbook("bad.yml", &["-e", "@secrets.yml"], &[]);
    run.assert_recap(
        &["affine-bad"],
        &[("failed", 0), ("ignored", 4), ("changed", 0)],
    );
    run.assert_no_secrets(&[CLIENT_SECRET]);
    let expect = [
        (
            "typo",
            "Unsupported parameters for (affine_oidc) module: afine_url",
        ),
        (
            "not a number",
            "argument 'timeout' is of type str and we were unable to convert to int",
        ),
        (
            "not a choice",
            "value of state must be one of: present, absent, got: gone",
        ),
        (
            "exclusive",
            "parameters are mutually exclusive: issuer|authentik_url",
        ),
    ];
    for (task, msg) in expect {
        let out = run.task(task);
        assert!(out.contains("FAILED!"), "{task}: {out}");
        assert!(out.contains(msg), "{task}: {out}");
    }
}

/// `ansible localhost -m affine_oidc -a MODULE_ARGS` with the module from `-M library`, the
/// admin password from the module's environment fallback; `what` names the run.
fn ad_hoc(lab: &Lab, module_args: &str, what: &str) -> Run {
    let mut cmd = lab.tool("ansible");
    cmd.arg("-i")
        .arg(lab.inventory_file())
        .args(["-M", "library", "localhost", "-m", "affine_oidc"])
        .arg("-a")
        .arg(module_args)
        .env("AFFINE_ADMIN_PASSWORD", ADMIN_PASSWORD);
    lab.run(cmd, format!("ansible localhost -m affine_oidc ({what})"))
}

#[test]
fn ad_hoc_with_string_values() {
    let authentik = authentik_with_app("affine");
    let server = affine("0.25.3");
    let lab = Lab::documented_layout();
    // A throwaway secret on a command line, which ad hoc `-a k=v` needs; only this test does
    // it. The admin password comes from the environment fallback instead.
    let throwaway = "throwaway-adhoc-secret";
    let module_args = format!(
        "affine_url={} admin_email={ADMIN_EMAIL} issuer={} client_id=adhoc-client \
         client_secret={throwaway} wait=yes wait_timeout=20 timeout=10 validate_certs=yes \
         args=scope=openid,claim_name=preferred_username",
        server.url(),
        issuer_of(&authentik)
    );
    let first = ad_hoc(&lab, &module_args, "first");
    assert_eq!(first.out.code, Some(0), "{}", first.show());
    assert!(
        first.out.stdout.contains("localhost | CHANGED"),
        "{}",
        first.show()
    );
    first.assert_no_secrets(&[ADMIN_PASSWORD, throwaway]);
    let value = stored(&server);
    assert_eq!(value["clientId"], "adhoc-client");
    assert_eq!(value["clientSecret"], throwaway);
    assert_eq!(
        value["args"],
        json!({"scope": "openid", "claim_name": "preferred_username"})
    );
    assert!(server.oidc_registered());

    let second = ad_hoc(&lab, &module_args, "second");
    assert_eq!(second.out.code, Some(0), "{}", second.show());
    assert!(
        second.out.stdout.contains("localhost | SUCCESS"),
        "{}",
        second.show()
    );
    assert_eq!(server.write_count(), 1);
    assert_eq!(server.magic_links_sent(), 0);
}

#[test]
fn ansible_doc_shows_every_option() {
    let lab = Lab::documented_layout();
    let mut cmd = lab.tool("ansible-doc");
    cmd.args(["-M", "library", "affine_oidc"]);
    let text = lab.run(cmd, "ansible-doc -M library affine_oidc".into());
    assert_eq!(text.out.code, Some(0), "{}", text.show());
    for needle in [
        "affine_url",
        "client_secret",
        "wait_timeout",
        "EXAMPLES",
        "RETURN",
    ] {
        assert!(
            text.out.stdout.contains(needle),
            "{needle}: {}",
            text.show()
        );
    }

    // The documented options are exactly the parameters the module accepts.
    let mut cmd = lab.tool("ansible-doc");
    cmd.args(["-M", "library", "--json", "affine_oidc"]);
    let json_run = lab.run(cmd, "ansible-doc --json".into());
    assert_eq!(json_run.out.code, Some(0), "{}", json_run.show());
    let doc: Value = serde_json::from_str(&json_run.out.stdout).expect("ansible-doc --json");
    let documented: BTreeSet<String> = doc["affine_oidc"]["doc"]["options"]
        .as_object()
        .unwrap_or_else(|| panic!("{}", json_run.show()))
        .keys()
        .cloned()
        .collect();
    let accepted: BTreeSet<String> = affine_authentik::ansible::affine_oidc::SPEC
        .params
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(documented, accepted);
}

#[test]
fn unchanged_reconcile_takes_three_requests_with_a_password_two_with_a_token() {
    let issuer = "http://127.0.0.1:1/application/o/affine/";
    let wanted = json!({
        "issuer": issuer,
        "clientId": "affine-test-client",
        "clientSecret": CLIENT_SECRET,
        "args": {}
    });
    let (with_password, with_token) = (affine("0.26.1"), affine("0.26.1"));
    with_password.set_stored_oidc(wanted.clone());
    with_token.set_stored_oidc(wanted);
    let token = with_token.session_token_for_admin();
    let lab = Lab::documented_layout();
    lab.inventory(&format!(
        "[affine]\npw affine_url={}\ntok affine_url={}\n",
        with_password.url(),
        with_token.url()
    ));
    lab.write(
        "host_vars/pw.yml",
        &format!("admin_email: {ADMIN_EMAIL}\nadmin_password: {ADMIN_PASSWORD}\n"),
    );
    lab.write("host_vars/tok.yml", &format!("session_token: {token}\n"));
    lab.write("secrets.yml", &format!("client_secret: {CLIENT_SECRET}\n"));
    let task = format!(
        r#"    - name: unchanged
      affine_oidc:
        affine_url: "{{{{ affine_url }}}}"
        admin_email: "{{{{ admin_email | default(omit) }}}}"
        admin_password: "{{{{ admin_password | default(omit) }}}}"
        session_token: "{{{{ session_token | default(omit) }}}}"
        issuer: {issuer}
        client_id: affine-test-client
        client_secret: "{{{{ client_secret }}}}"
      delegate_to: localhost
"#
    );
    lab.write("unchanged.yml", &play(&task));
    let (n_pw, n_tok) = (with_password.requests().len(), with_token.requests().len());
    let run = lab.playbook("unchanged.yml", &["-e", "@secrets.yml"], &[]);
    run.assert_recap(&["pw", "tok"], &[("ok", 1), ("changed", 0), ("failed", 0)]);
    // The version first (every AFFiNE answers it), the sign-in, then one state query.
    assert_eq!(with_password.requests().len() - n_pw, 3);
    assert_eq!(with_token.requests().len() - n_tok, 2);
    assert_eq!(with_token.sign_in_count(), 0);
}

/// Ad hoc `k=v` dicts the way AnsibleModule reads them (`check_type_dict`): a quoted value may
/// hold spaces, as the usual scope does.
#[test]
fn ad_hoc_dict_with_a_quoted_value_like_ansible() {
    let server = affine("0.25.3");
    let lab = Lab::documented_layout();
    // A throwaway secret on the command line, as in ad_hoc_with_string_values.
    let module_args = format!(
        "affine_url={} admin_email={ADMIN_EMAIL} issuer=https://auth.example.com/application/o/affine/ \
         client_id=adhoc-client client_secret=throwaway-adhoc-secret \
         args=\"scope='openid profile email', claim_name=preferred_username\"",
        server.url()
    );
    let run = ad_hoc(&lab, &module_args, "quoted dict value");
    assert_eq!(run.out.code, Some(0), "{}", run.show());
    assert_eq!(
        stored(&server)["args"],
        json!({"scope": "openid profile email", "claim_name": "preferred_username"})
    );
}

/// A secret too short for the string redactor (src/secret.rs masks 4 characters and up) must
/// not come back inside AFFiNE's error message, which quotes the whole rejected value.
#[test]
fn a_short_secret_stays_out_of_an_error_that_quotes_the_value() {
    let server = affine("0.27.0");
    let lab = Lab::documented_layout();
    affine_group(&lab, &[("affine27", &server)], "");
    lab.write(
        "secrets.yml",
        &format!("admin_password: {ADMIN_PASSWORD}\nclient_secret: s1x\n"),
    );
    // A bool claim: AFFiNE 0.22+ rejects it and quotes the value, clientSecret included.
    let task = r#"    - name: rejected
      affine_oidc:
        affine_url: "{{ affine_url }}"
        admin_email: admin@example.com
        admin_password: "{{ admin_password }}"
        issuer: https://auth.example.com/application/o/affine/
        client_id: affine-test-client
        client_secret: "{{ client_secret }}"
        args: {claim_email_verified: true}
      delegate_to: localhost
      ignore_errors: true
"#;
    lab.write("short.yml", &play(task));
    let run = lab.playbook("short.yml", &["-e", "@secrets.yml"], &[]);
    run.assert_recap(&["affine27"], &[("ignored", 1)]);
    let text = run.out.text();
    assert!(
        !text.contains(r#"clientSecret\":\"s1x"#) && !text.contains(r#""clientSecret":"s1x""#),
        "{}",
        run.show()
    );
    assert_eq!(server.write_count(), 0);
}

// -------------------------------------------------------------------------------------------
// From the installed collection: the architecture the action plugin picks, no Python needed.
// -------------------------------------------------------------------------------------------

/// The action plugin asks the host the task runs on for `uname -sm` and runs the binary built
/// for it. Here the host is the controller through `connection: local` with no usable Python
/// (`ansible_python_interpreter` points nowhere): the binary module runs all the same. A fake
/// `uname` first in PATH then plays an aarch64 host (this test collection carries only the
/// host's build, so it must say which binary it lacks) and a riscv64 one (refused by name).
#[test]
fn collection_picks_the_binary_by_the_hosts_architecture_without_python() {
    let lab = Lab::with_collection(support::ansible::ansible_bin());
    lab.inventory(
        "[nopython]\nbare ansible_connection=local ansible_python_interpreter=/nonexistent/python3\n",
    );
    let task = r#"- name: arch
  hosts: nopython
  gather_facts: false
  tasks:
    - name: blueprint
      affine_authentik.sso.authentik_blueprint:
        affine_url: https://affine.example.com
        dest: "{{ playbook_dir }}/affine.yaml"
"#;
    lab.write("arch.yml", task);
    let run = lab.playbook("arch.yml", &[], &[]);
    run.assert_recap(&["bare"], &[("changed", 1), ("failed", 0)]);
    assert!(lab.path("affine.yaml").is_file());

    let host_arch = std::env::consts::ARCH;
    let other = if host_arch == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let path = std::env::var("PATH").unwrap_or_default();
    for (machine, expect) in [
        (
            other,
            format!("holds no binary for {other} (looked for affine_authentik.sso.__bin__.{other}.affine_authentik"),
        ),
        (
            "riscv64",
            "runs on Linux x86_64 and aarch64; the host this task runs on is Linux riscv64"
                .to_string(),
        ),
    ] {
        lab.write(
            &format!("fake-{machine}/uname"),
            &format!("#!/bin/sh\necho 'Linux {machine}'\n"),
        );
        let fake = lab.path(&format!("fake-{machine}"));
        std::fs::set_permissions(fake.join("uname"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let run = lab.playbook(
            "arch.yml",
            &[],
            &[("PATH", &format!("{}:{path}", fake.display()))],
        );
        assert_eq!(run.out.code, Some(2), "{}", run.show());
        assert!(run.out.stdout.contains(&expect), "{machine}: {}", run.show());
    }
}
