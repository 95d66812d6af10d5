//! The smoke set on every maintained ansible-core (2.17 to 2.21, one pinned virtualenv each,
//! made by scripts/test.sh), from the collection as a user installs it: scripts/build-collection.sh
//! builds the tarball of the binary under test, `ansible-galaxy collection install` puts it in
//! the lab, and the modules are called by FQCN with `module_defaults` for the action group.
//! The newest series also runs the whole suite (tests/ansible_playbooks.rs and the others).
//!
//! One test per series, so a failure names the version.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::affine_standin::{AffineOptions, AffineStandin};
use support::ansible::{ansible_bin_of, Lab, Run};
use support::process::unreachable_issuer;

const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "adminpw-smoke-Zr71-SECRET";
const CLIENT_SECRET: &str = "clientsecret-smoke-Wq38-SECRET";
const AUTHENTIK_TOKEN: &str = "authentik-token-smoke-Kp52-SECRET";
const NO_LOG: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";
const COLLECTION: &str = "affine_authentik.sso";

/// A play over `[affine]`, delegated to the controller, with every shared option set once by
/// the collection's action group (both modules' credentials included: each module gets only
/// those it takes). `affine_oidc` sets OIDC through the API; `authentik_blueprint` writes a
/// blueprint file, so no authentik is needed.
fn smoke_play(results: &str) -> String {
    format!(
        r#"- name: smoke
  hosts: affine
  gather_facts: false
  module_defaults:
    group/{COLLECTION}.all:
      affine_url: "{{{{ affine_url }}}}"
      admin_email: {ADMIN_EMAIL}
      admin_password: "{{{{ admin_password }}}}"
      authentik_token: "{{{{ authentik_token }}}}"
      validate_certs: true
      timeout: 15
  tasks:
    - name: oidc
      {COLLECTION}.affine_oidc:
        issuer: {issuer}
        client_id: smoke-client
        client_secret: "{{{{ client_secret }}}}"
      delegate_to: localhost
      register: oidc
    - name: blueprint
      {COLLECTION}.authentik_blueprint:
        client_secret_env: AFFINE_OIDC_CLIENT_SECRET
        dest: "{{{{ playbook_dir }}}}/blueprints/affine.yaml"
      delegate_to: localhost
      register: blueprint
    - name: dump
      copy:
        content: "{{{{ {{'oidc': oidc, 'blueprint': blueprint}} | to_json }}}}"
        dest: {results}
      delegate_to: localhost
      check_mode: false
      changed_when: false
"#,
        issuer = unreachable_issuer()
    )
}

fn smoke(series: &str) {
    let lab = Lab::with_collection(ansible_bin_of(series));
    let mut opts = AffineOptions::new("0.27.0");
    opts.admin_email = ADMIN_EMAIL.into();
    opts.admin_password = ADMIN_PASSWORD.into();
    let affine = AffineStandin::start(opts);
    lab.inventory(&format!("[affine]\naffine27 affine_url={}\n", affine.url()));
    lab.write(
        "secrets.yml",
        &format!(
            "admin_password: {ADMIN_PASSWORD}\nclient_secret: {CLIENT_SECRET}\nauthentik_token: {AUTHENTIK_TOKEN}\n"
        ),
    );
    std::fs::create_dir_all(lab.path("blueprints")).expect("mkdir");
    let results = lab.path("results.json");
    lab.write("smoke.yml", &smoke_play(&results.display().to_string()));
    let secrets = [ADMIN_PASSWORD, CLIENT_SECRET, AUTHENTIK_TOKEN];
    let args = ["-e", "@secrets.yml"];
    let play = |extra: &[&str]| -> Run {
        let all: Vec<&str> = args.iter().chain(extra).copied().collect();
        let run = lab.playbook("smoke.yml", &all, &[]);
        run.assert_no_secrets(&secrets);
        run
    };

    // Check mode: both report the change, neither writes.
    let check = play(&["--check"]);
    check.assert_recap(&["affine27"], &[("changed", 2), ("failed", 0)]);
    assert_eq!(affine.write_count(), 0, "{}", check.show());
    assert!(!lab.path("blueprints/affine.yaml").exists());

    // Diff: the change, the secret masked; -vvv shows each result.
    let first = play(&["--diff", "-vvv"]);
    first.assert_recap(&["affine27"], &[("changed", 2), ("failed", 0)]);
    let oidc_out = first.task("oidc");
    assert!(oidc_out.contains("+++ after"), "{oidc_out}");
    assert!(
        oidc_out.contains("\"clientSecret\": \"********"),
        "{oidc_out}"
    );
    assert_eq!(affine.write_count(), 1);
    assert_eq!(
        affine.stored_oidc().expect("written")["clientSecret"],
        CLIENT_SECRET
    );
    assert!(lab.path("blueprints/affine.yaml").is_file());
    // invocation as a Python module's: 2.17-2.20 always return it (-vvv shows it, the
    // strategy drops it from `register`); 2.21 only when INJECT_INVOCATION asks.
    let shows_invocation = oidc_out.contains("\"invocation\"");
    assert_eq!(shows_invocation, series != "2.21", "{oidc_out}");
    if shows_invocation {
        assert!(oidc_out.contains(NO_LOG), "{oidc_out}");
    }

    // A registered result: no secret, no invocation (stripped, or never sent).
    let registered = std::fs::read_to_string(&results).expect("results");
    for s in secrets {
        assert!(!registered.contains(s), "{s} in {registered}");
    }
    let registered: Value = serde_json::from_str(&registered).expect("JSON");
    assert_eq!(registered["oidc"]["changed"], true, "{registered}");
    assert_eq!(registered["blueprint"]["changed"], true, "{registered}");
    assert!(
        registered["oidc"].get("invocation").is_none(),
        "{registered}"
    );

    // Then ok.
    let second = play(&[]);
    second.assert_recap(&["affine27"], &[("changed", 0), ("failed", 0)]);
    assert_eq!(affine.write_count(), 1);

    // Asked for (2.21's setting; ignored before): a registered invocation, secrets masked.
    let injected = play(&["-e", "ansible_inject_invocation=true"]);
    injected.assert_recap(&["affine27"], &[("changed", 0), ("failed", 0)]);
    let registered: Value =
        serde_json::from_str(&std::fs::read_to_string(&results).expect("results")).unwrap();
    let args = &registered["oidc"]["invocation"]["module_args"];
    if series == "2.21" {
        assert_eq!(args["client_secret"], NO_LOG, "{registered}");
        assert_eq!(args["admin_password"], NO_LOG, "{registered}");
        assert_eq!(args["timeout"], 15, "the group's default: {registered}");
        let bp = &registered["blueprint"]["invocation"]["module_args"];
        assert_eq!(bp["authentik_token"], NO_LOG, "{registered}");
    } else {
        assert!(args.is_null(), "{registered}");
    }

    // ansible-doc: both modules in -l, each by FQCN with exactly the options it accepts.
    let mut list = lab.tool("ansible-doc");
    list.args(["-l", COLLECTION]);
    let list = lab.run(list, format!("ansible-doc -l {COLLECTION}"));
    assert_eq!(list.out.code, Some(0), "{}", list.show());
    assert!(!list.out.stderr.contains("WARNING"), "{}", list.show());
    let listed: BTreeSet<&str> = list
        .out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let want: BTreeSet<&str> = [
        "affine_authentik.sso.affine_oidc",
        "affine_authentik.sso.authentik_blueprint",
    ]
    .into();
    assert_eq!(listed, want, "{}", list.show());
    for module in affine_authentik::ansible::MODULES.iter() {
        let fqcn = format!("{COLLECTION}.{}", module.name);
        let mut doc = lab.tool("ansible-doc");
        doc.args(["--json", &fqcn]);
        let doc = lab.run(doc, format!("ansible-doc --json {fqcn}"));
        assert_eq!(doc.out.code, Some(0), "{}", doc.show());
        let json: Value = serde_json::from_str(&doc.out.stdout).expect("ansible-doc --json");
        let documented: BTreeSet<String> = json[&fqcn]["doc"]["options"]
            .as_object()
            .unwrap_or_else(|| panic!("{}", doc.show()))
            .keys()
            .cloned()
            .collect();
        let accepted: BTreeSet<String> = module
            .spec
            .params
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(documented, accepted, "{fqcn}");
        assert!(json[&fqcn]["examples"].is_string(), "{}", doc.show());
    }
}

#[test]
fn collection_smoke_on_ansible_core_2_17() {
    smoke("2.17");
}

#[test]
fn collection_smoke_on_ansible_core_2_18() {
    smoke("2.18");
}

#[test]
fn collection_smoke_on_ansible_core_2_19() {
    smoke("2.19");
}

#[test]
fn collection_smoke_on_ansible_core_2_20() {
    smoke("2.20");
}

#[test]
fn collection_smoke_on_ansible_core_2_21() {
    smoke("2.21");
}
