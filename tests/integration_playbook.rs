//! The whole integration under real `ansible-playbook` (the pinned ansible-core): the shipped
//! playbooks/integration.yml against one stand-in authentik and three stand-in AFFiNE
//! instances, and the `authentik_blueprint` module's file and API targets in a play. Secrets
//! reach Ansible through vars files and the environment, never the command line, and never
//! show in its output.
//!
//! AFFiNE 0.27 is left out of the playbook run on purpose: its SSRF guard refuses issuers on
//! loopback addresses, and every stand-in listens on 127.0.0.1 (verify's warning for that
//! case is proven in tests/verify_cli.rs).

mod support;

use std::path::{Path, PathBuf};

use serde_json::json;
use support::affine_standin::{AffineOptions, AffineStandin};
use support::ansible::{Lab, Run};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin};
use support::process::{bin, command, Captured};

const ADMIN_EMAIL: &str = "admin@example.com";
/// Distinctive values, so finding one (or the marker) in any output can only mean a leak.
const ADMIN_PASSWORD: &str = "adminpw-Zr4c9Wq1-SECRET";
const CLIENT_SECRET: &str = "clientsecret-Lm2x8Ty6-SECRET";
const AUTHENTIK_TOKEN: &str = "authentik-token-Hd7k3Pz0-SECRET";
const SECRET_MARKER: &str = "-SECRET";

fn integration_playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/integration.yml")
}

fn authentik(version: &str) -> AuthentikStandin {
    let mut opts = AuthentikOptions::new(version);
    opts.token = AUTHENTIK_TOKEN.into();
    AuthentikStandin::start(opts)
}

fn affine(version: &str) -> AffineStandin {
    let mut opts = AffineOptions::new(version);
    opts.admin_email = ADMIN_EMAIL.into();
    opts.admin_password = ADMIN_PASSWORD.into();
    AffineStandin::start(opts)
}

#[track_caller]
fn assert_no_secret(run: &Run) {
    run.assert_no_secrets(&[
        ADMIN_PASSWORD,
        CLIENT_SECRET,
        AUTHENTIK_TOKEN,
        SECRET_MARKER,
    ]);
}

/// The `[affine]` group: one host per AFFiNE, each with its `affine_url` and `slug`, as
/// playbooks/inventory.example.ini lays it out; shared values as group vars.
fn affine_inventory(lab: &Lab, hosts: &[(&str, &AffineStandin)], authentik: &AuthentikStandin) {
    let mut ini = String::from("[affine]\n");
    for (name, server) in hosts {
        ini.push_str(&format!("{name} affine_url={} slug={name}\n", server.url()));
    }
    ini.push_str(&format!(
        "\n[affine:vars]\nauthentik_url={}\naffine_admin_email={ADMIN_EMAIL}\naffine_authentik_bin={}\n",
        authentik.url(),
        bin()
    ));
    lab.inventory(&ini);
    // The secrets a user keeps vault-encrypted, in a vars file beside the inventory.
    lab.write(
        "inventory/group_vars/affine/secrets.yml",
        &format!(
            "vault_affine_oidc_client_secret: {CLIENT_SECRET}\nvault_affine_admin_password: {ADMIN_PASSWORD}\n"
        ),
    );
}

/// `affine-authentik verify` for one instance, the token from the environment.
fn verify(affine_url: &str, authentik: &AuthentikStandin, slug: &str) -> Captured {
    Captured::of(
        command(&[
            "verify",
            "--affine-url",
            affine_url,
            "--authentik-url",
            &authentik.url(),
            "--slug",
            slug,
        ])
        .env("AUTHENTIK_TOKEN", AUTHENTIK_TOKEN),
    )
}

#[test]
fn the_integration_playbook_wires_three_affine_versions_to_one_authentik_then_changes_nothing() {
    let lab = Lab::new();
    let authentik = authentik("2026.8.0");
    let servers = [
        ("affine-021", affine("0.21.0")),
        ("affine-025", affine("0.25.3")),
        ("affine-0261", affine("0.26.1")),
    ];
    let hosts: Vec<(&str, &AffineStandin)> = servers.iter().map(|(n, s)| (*n, s)).collect();
    let names: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
    affine_inventory(&lab, &hosts, &authentik);

    // First run: the token from the controller's environment; verbose, so every result
    // (verify's argv among them) is printed and checked for secrets.
    let first = lab.playbook(
        integration_playbook(),
        &["-v"],
        &[("AUTHENTIK_TOKEN", AUTHENTIK_TOKEN)],
    );
    assert_no_secret(&first);
    assert!(
        first
            .task("Walk the login chain (affine-authentik verify)")
            .contains("\"--affine-url\""),
        "verify's argv is shown: {}",
        first.show()
    );
    // Per host: the blueprint and the AFFiNE setting change; verify and its check do not.
    first.assert_recap(&names, &[("changed", 2), ("failed", 0), ("ok", 4)]);
    assert_eq!(
        first
            .task("Every link of the login chain holds")
            .matches("every check passed")
            .count(),
        3,
        "{}",
        first.show()
    );

    // What the stand-ins now hold: one application per instance, AFFiNE pointing at it.
    assert_eq!(authentik.instances().len(), 3);
    for (name, server) in &hosts {
        let provider = authentik
            .provider(name)
            .unwrap_or_else(|| panic!("no provider for {name}"));
        assert_eq!(
            provider["name"],
            json!(format!("Provider for AFFiNE ({name})"))
        );
        assert_eq!(provider["client_secret"], json!(CLIENT_SECRET));
        let stored = server.stored_oidc().expect("AFFiNE's OIDC setting written");
        assert_eq!(
            stored["issuer"],
            json!(format!("{}/application/o/{name}/", authentik.url()))
        );
        assert_eq!(stored["clientId"], provider["client_id"]);
        assert_eq!(stored["clientSecret"], json!(CLIENT_SECRET));
        assert!(server.oidc_registered(), "{name}");
        // And verify, run by hand afterwards, agrees.
        let v = verify(&server.url(), &authentik, name);
        assert_eq!(v.code, Some(0), "{name}: {}", v.stdout);
        v.assert_no_secrets(&[AUTHENTIK_TOKEN]);
    }
    let applied = authentik.applied_count();
    let writes: Vec<usize> = servers.iter().map(|(_, s)| s.write_count()).collect();

    // Second run: the token from a vars file instead (verify then reads it on stdin), verbose
    // output, and nothing to change anywhere.
    lab.write(
        "inventory/group_vars/affine/authentik.yml",
        &format!("vault_authentik_token: {AUTHENTIK_TOKEN}\n"),
    );
    let second = lab.playbook(integration_playbook(), &["-v"], &[]);
    assert_no_secret(&second);
    second.assert_recap(&names, &[("changed", 0), ("failed", 0), ("ok", 4)]);
    assert_eq!(
        authentik.applied_count(),
        applied,
        "no blueprint re-applied"
    );
    let writes_after: Vec<usize> = servers.iter().map(|(_, s)| s.write_count()).collect();
    assert_eq!(writes_after, writes, "no AFFiNE setting rewritten");
    // verify ran with the token: its authentik checks are in the report.
    assert!(
        second
            .task("Every link of the login chain holds")
            .contains("every check passed"),
        "{}",
        second.show()
    );
    let token_used = authentik
        .requests()
        .iter()
        .filter(|r| {
            r.path_only()
                .starts_with("/api/v3/core/applications/affine-")
        })
        .count();
    // verify asked for each of the three providers in both runs and by hand (9), and the
    // module once per provider and run, looking for an encryption key to remove (6).
    assert_eq!(
        token_used, 15,
        "verify asked authentik for each provider: in both runs and by hand"
    );
}

#[test]
fn a_link_the_playbook_cannot_fix_fails_the_verify_task_naming_the_check() {
    // authentik's discovery announces another issuer (a proxy rewriting it, say). AFFiNE 0.25
    // does not compare issuers, so it registers and the modules succeed; a 0.26+ login would
    // fail, and verify says so.
    let lab = Lab::new();
    let authentik = authentik("2026.8.0");
    authentik.set_issuer_override(Some(
        "https://auth.elsewhere.example/application/o/x/".into(),
    ));
    let server = affine("0.25.3");
    affine_inventory(&lab, &[("affine-025", &server)], &authentik);
    let run = lab.playbook(
        integration_playbook(),
        &[],
        &[("AUTHENTIK_TOKEN", AUTHENTIK_TOKEN)],
    );
    assert_no_secret(&run);
    assert_eq!(run.out.code, Some(2), "{}", run.show());
    let recap = run.recap();
    assert_eq!(recap["affine-025"]["failed"], 1, "{}", run.show());
    assert_eq!(recap["affine-025"]["changed"], 2, "{}", run.show());
    let task = run.task("Every link of the login chain holds");
    assert!(
        task.contains("[issuer] the discovery document names issuer https://auth.elsewhere.example/application/o/x/"),
        "{}",
        run.show()
    );
    assert!(task.contains("fix: set AFFiNE's OIDC issuer"), "{task}");
    assert!(
        !task.contains("[discovery]"),
        "only the broken link: {task}"
    );
}

/// A play over localhost exercising `authentik_blueprint` step by step; each step's result
/// is asserted inside the play, so a wrong `changed` fails the run.
const MODULE_PLAY: &str = r#"
- name: authentik_blueprint under ansible-playbook
  hosts: localhost
  gather_facts: false
  vars:
    file_task: &file
      affine_url: https://affine.example.com
      dest: "{{ dest }}"
  tasks:
    - name: file, check mode
      authentik_blueprint: *file
      check_mode: true
      register: r
    - ansible.builtin.stat: {path: "{{ dest }}"}
      register: st
    - ansible.builtin.assert:
        that: [r.changed, not st.stat.exists]
    - name: file, write
      authentik_blueprint: *file
      register: r
    - ansible.builtin.stat: {path: "{{ dest }}"}
      register: st
    - ansible.builtin.assert:
        that: [r.changed, st.stat.exists, st.stat.mode == '0644', st.stat.checksum is string]
    - name: file, again
      authentik_blueprint: *file
      register: r
    - ansible.builtin.assert:
        that: [not r.changed]
    - name: file, absent in check mode
      authentik_blueprint:
        <<: *file
        state: absent
      check_mode: true
      register: r
    - ansible.builtin.stat: {path: "{{ dest }}"}
      register: st
    - ansible.builtin.assert:
        that: [r.changed, st.stat.exists]
    - name: file, absent
      authentik_blueprint:
        <<: *file
        state: absent
      register: r
    - ansible.builtin.stat: {path: "{{ dest }}"}
      register: st
    - ansible.builtin.assert:
        that: [r.changed, not st.stat.exists]
    - name: file, absent again
      authentik_blueprint:
        <<: *file
        state: absent
      register: r
    - ansible.builtin.assert:
        that: [not r.changed]

    - name: API, check mode
      authentik_blueprint: &api
        affine_url: https://affine.example.com
        authentik_url: "{{ authentik_url }}"
        client_secret: "{{ vault_client_secret }}"
      check_mode: true
      register: r
    - ansible.builtin.assert:
        that: [r.changed, "'would be created' in r.msg"]
    - name: API, create and apply
      authentik_blueprint: *api
      register: r
    - ansible.builtin.assert:
        that: [r.changed, "'created and applied' in r.msg", r.authentik_version == '2026.5.0']
    - name: API, again
      authentik_blueprint: *api
      register: r
    - ansible.builtin.assert:
        that: [not r.changed]
    - name: API, absent in check mode
      authentik_blueprint:
        <<: *api
        state: absent
      check_mode: true
      register: r
    - ansible.builtin.assert:
        that: [r.changed]
    - name: API, absent with the objects
      authentik_blueprint:
        <<: *api
        state: absent
        remove_objects: true
      register: r
    - ansible.builtin.assert:
        that: [r.changed]
    - name: API, absent again
      authentik_blueprint:
        <<: *api
        state: absent
      register: r
    - ansible.builtin.assert:
        that: [not r.changed]
"#;

#[test]
fn authentik_blueprint_file_and_api_targets_under_ansible_playbook() {
    let lab = Lab::new();
    let authentik = authentik("2026.5.0");
    lab.inventory("");
    let dest = lab.path("blueprints/affine.yaml");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    lab.write(
        "vars.yml",
        &format!(
            "dest: {}\nauthentik_url: {}\nvault_client_secret: {CLIENT_SECRET}\n",
            dest.display(),
            authentik.url()
        ),
    );
    let play = lab.write("blueprint.yml", MODULE_PLAY);
    let run = lab.playbook(
        &play,
        &["-e", "@vars.yml", "--diff"],
        &[("AUTHENTIK_TOKEN", AUTHENTIK_TOKEN)],
    );
    assert_no_secret(&run);
    run.assert_recap(&["localhost"], &[("failed", 0)]);
    // The diff Ansible printed is the blueprint text, the secret masked.
    assert!(
        run.task("API, create and apply")
            .contains("client_secret: ********"),
        "{}",
        run.show()
    );
    assert!(authentik.instances().is_empty());
    assert!(authentik.provider("affine").is_none(), "remove_objects");
    assert_eq!(
        authentik.applied_count(),
        2,
        "the blueprint, then its removal"
    );
}

#[test]
fn the_example_inventory_gives_each_instance_its_url_and_slug_against_one_authentik() {
    let lab = Lab::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/inventory.example.ini");
    let mut cmd = lab.tool("ansible-inventory");
    cmd.arg("-i").arg(&example).arg("--list");
    let out = Captured::from_output(cmd.output().expect("ansible-inventory"));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let inv: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON inventory");
    let hosts = inv["affine"]["hosts"].as_array().expect("an affine group");
    assert!(hosts.len() >= 3, "several instances: {hosts:?}");
    let vars = &inv["_meta"]["hostvars"];
    let mut slugs = std::collections::BTreeSet::new();
    for host in hosts {
        let v = &vars[host.as_str().unwrap()];
        assert!(
            v["affine_url"].as_str().unwrap().starts_with("https://"),
            "{v}"
        );
        assert!(
            slugs.insert(v["slug"].as_str().unwrap().to_string()),
            "slugs are unique"
        );
        assert_eq!(
            v["authentik_url"],
            json!("https://auth.example.com"),
            "one authentik"
        );
    }

    // And the playbook is valid for ansible-playbook with it.
    let mut cmd = lab.tool("ansible-playbook");
    cmd.arg("-i")
        .arg(&example)
        .arg("--syntax-check")
        .arg(integration_playbook());
    let out = Captured::from_output(cmd.output().expect("ansible-playbook"));
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
}

const TESTER: &str = "affine-tester";
const TESTER_PASSWORD: &str = "tester-password-Qx5v2Nb8-SECRET";

#[test]
fn the_integration_playbook_then_verify_login_signs_a_user_in_on_every_supported_pair() {
    // For each authentik shape in use, one authentik and three AFFiNE versions around
    // 0.25.7's stricter login (0.27 with its SSRF guard off: every stand-in is on loopback):
    // the playbook sets everything up, verify --login then logs a user in through it all,
    // and the second run changes nothing.
    for authentik_version in ["2024.10.2", "2025.8.3", "2026.2.2", "2026.8.0"] {
        let lab = Lab::new();
        let authentik = authentik(authentik_version);
        authentik.add_user(support::authentik_standin::LoginUser::new(
            TESTER,
            TESTER_PASSWORD,
        ));
        let servers: Vec<(&str, AffineStandin)> = [
            ("affine-0256", "0.25.6"),
            ("affine-0261", "0.26.1"),
            ("affine-027", "0.27.0"),
        ]
        .into_iter()
        .map(|(name, version)| {
            let mut opts = AffineOptions::new(version);
            opts.admin_email = ADMIN_EMAIL.into();
            opts.admin_password = ADMIN_PASSWORD.into();
            opts.ssrf_guard = Some(false);
            (name, AffineStandin::start(opts))
        })
        .collect();
        let hosts: Vec<(&str, &AffineStandin)> = servers.iter().map(|(n, s)| (*n, s)).collect();
        let names: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
        affine_inventory(&lab, &hosts, &authentik);
        lab.write(
            "inventory/group_vars/affine/login.yml",
            &format!(
                "affine_verify_login: {TESTER}\nvault_affine_verify_login_password: {TESTER_PASSWORD}\n"
            ),
        );
        let env = [("AUTHENTIK_TOKEN", AUTHENTIK_TOKEN)];
        let first = lab.playbook(integration_playbook(), &["-v"], &env);
        first.assert_no_secrets(&[
            TESTER_PASSWORD,
            ADMIN_PASSWORD,
            CLIENT_SECRET,
            AUTHENTIK_TOKEN,
        ]);
        first.assert_recap(&names, &[("changed", 2), ("failed", 0), ("ok", 4)]);
        let report = first.task("Every link of the login chain holds");
        assert_eq!(
            report.matches("every check passed").count(),
            3,
            "authentik {authentik_version}: {}",
            first.show()
        );
        // Each AFFiNE now has the authentik user, made by their first login.
        for (name, server) in &hosts {
            assert!(
                server
                    .users()
                    .iter()
                    .any(|u| u.email == format!("{TESTER}@example.com") && u.created_by_oidc),
                "authentik {authentik_version}, {name}: no user made by the login"
            );
        }
        let second = lab.playbook(integration_playbook(), &["-v"], &env);
        second.assert_no_secrets(&[
            TESTER_PASSWORD,
            ADMIN_PASSWORD,
            CLIENT_SECRET,
            AUTHENTIK_TOKEN,
        ]);
        second.assert_recap(&names, &[("changed", 0), ("failed", 0), ("ok", 4)]);
    }
}

#[test]
fn the_integration_playbook_in_check_mode_changes_nothing_and_reports_what_verify_finds() {
    let lab = Lab::new();
    let authentik = authentik("2026.8.0");
    let server = affine("0.26.1");
    affine_inventory(&lab, &[("affine-0261", &server)], &authentik);
    let run = lab.playbook(
        integration_playbook(),
        &["--check"],
        &[("AUTHENTIK_TOKEN", AUTHENTIK_TOKEN)],
    );
    assert_no_secret(&run);
    // Both changes are only reported; verify runs and says what is broken today.
    run.assert_recap(&["affine-0261"], &[("changed", 2), ("failed", 0)]);
    assert!(
        authentik.instances().is_empty(),
        "check mode created nothing"
    );
    assert_eq!(server.write_count(), 0);
    let report = run.task("Every link of the login chain holds");
    assert!(
        report.contains("check mode: before the changes above") && report.contains("[discovery]"),
        "{}",
        run.show()
    );
}
