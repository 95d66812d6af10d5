//! `affine-authentik verify` through the built binary, against a stand-in authentik (the
//! blueprint applied by the `authentik_blueprint` module, as a user would) and a stand-in
//! AFFiNE configured with the matching OIDC value. A correct chain passes every check and
//! exits 0; each broken link fails with its OWN check and message and exits 1, and the other
//! links still pass. The authentik token never shows in the output.

mod support;

use serde_json::{json, Value};
use support::affine_standin::{AffineOptions, AffineStandin};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin, ProviderState};
use support::module_run::ModuleCall;
use support::process::{closed_port, command, Captured};

const CLIENT_SECRET: &str = "client-secret-SECRET-0d4e2b";
const WRONG_TOKEN: &str = "wrong-token-SECRET-77e1";
const AUTHENTIK_VERSION: &str = "2026.8.0";

/// One login chain: authentik with the application `slug`, AFFiNE pointing at it.
struct Chain {
    authentik: AuthentikStandin,
    affine: AffineStandin,
    /// The client id the blueprint gave the provider (derived from AFFiNE's URL and the slug).
    client_id: String,
}

impl Chain {
    /// `authentik` once the module has applied the blueprint for the AFFiNE at
    /// `blueprint_url` (`extra`: more module params), and `affine`, not configured yet.
    fn applied(
        authentik: AuthentikStandin,
        affine: AffineStandin,
        blueprint_url: &str,
        extra: Value,
    ) -> Chain {
        let client_id = apply_blueprint(&authentik, blueprint_url, extra);
        Chain {
            authentik,
            affine,
            client_id,
        }
    }

    fn issuer(&self) -> String {
        format!("{}/application/o/affine/", self.authentik.url())
    }

    /// Points AFFiNE at this chain's issuer and client id.
    fn configure(&self) {
        configure_affine(&self.affine, &self.issuer(), &self.client_id);
    }
}

fn affine_standin(version: &str, ssrf_guard: Option<bool>) -> AffineStandin {
    let mut opts = AffineOptions::new(version);
    opts.ssrf_guard = ssrf_guard;
    AffineStandin::start(opts)
}

/// Puts the blueprint for AFFiNE at `affine_url` into `authentik` with the module (API
/// target), as a playbook does; returns the provider's client id.
fn apply_blueprint(authentik: &AuthentikStandin, affine_url: &str, extra: Value) -> String {
    let mut params = json!({
        "affine_url": affine_url,
        "authentik_url": authentik.url(),
        "authentik_token": authentik.token(),
        "client_secret": CLIENT_SECRET,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        params[k] = v;
    }
    let slug = params["slug"].as_str().unwrap_or("affine").to_string();
    ModuleCall::new("authentik_blueprint", params)
        .run(&[CLIENT_SECRET, &authentik.token()])
        .assert_ok();
    authentik.provider(&slug).expect("the provider exists")["client_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Stores AFFiNE's OIDC value as its admin panel would (the stand-in then registers OIDC by
/// its version's rules, fetching the issuer's discovery document).
fn configure_affine(affine: &AffineStandin, issuer: &str, client_id: &str) {
    affine.set_stored_oidc(json!({
        "issuer": issuer,
        "clientId": client_id,
        "clientSecret": CLIENT_SECRET,
        "args": {},
    }));
}

/// A correct chain on these versions.
fn chain(affine_version: &str, ssrf_guard: Option<bool>) -> Chain {
    chain_on(AUTHENTIK_VERSION, affine_version, ssrf_guard)
}

fn chain_on(authentik_version: &str, affine_version: &str, ssrf_guard: Option<bool>) -> Chain {
    let authentik = AuthentikStandin::start(AuthentikOptions::new(authentik_version));
    let affine = affine_standin(affine_version, ssrf_guard);
    let url = affine.url();
    let c = Chain::applied(authentik, affine, &url, json!({}));
    c.configure();
    c
}

/// Waits (0.27 registers in the background) until AFFiNE lists OIDC.
fn wait_registered(affine: &AffineStandin) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !affine.oidc_registered() {
        assert!(
            std::time::Instant::now() < deadline,
            "AFFiNE never registered OIDC"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

struct Verify {
    out: Captured,
}

impl Verify {
    fn lines(&self) -> Vec<&str> {
        self.out.stdout.lines().collect()
    }
    /// Check id → mark, from the human output (`MARK id detail`).
    fn marks(&self) -> Vec<(String, String)> {
        self.lines()
            .iter()
            .filter(|l| !l.starts_with(' ') && l.split_whitespace().count() >= 2)
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let mark = w.next()?;
                ["PASS", "FAIL", "WARN", "SKIP"]
                    .contains(&mark)
                    .then(|| (w.next().unwrap().to_string(), mark.to_string()))
            })
            .collect()
    }
    fn ids_marked(&self, mark: &str) -> Vec<String> {
        self.marks()
            .into_iter()
            .filter(|(_, m)| m == mark)
            .map(|(id, _)| id)
            .collect()
    }
    /// The line of check `id` plus its `fix:` line, if any.
    fn check_text(&self, id: &str) -> String {
        let lines = self.lines();
        let i = lines
            .iter()
            .position(|l| l.split_whitespace().nth(1) == Some(id))
            .unwrap_or_else(|| panic!("no check {id} in:\n{}", self.out.stdout));
        let mut text = lines[i].to_string();
        if let Some(next) = lines
            .get(i + 1)
            .filter(|l| l.trim_start().starts_with("fix:"))
        {
            text.push('\n');
            text.push_str(next);
        }
        text
    }
    #[track_caller]
    fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(
            self.out.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.out.stdout,
            self.out.stderr
        );
        self
    }
    /// Exit 1 and exactly these checks failed, each line naming `words`.
    #[track_caller]
    fn assert_only_failed(&self, expected: &[(&str, &[&str])]) {
        self.assert_exit(1);
        let failed = self.ids_marked("FAIL");
        let want: Vec<String> = expected.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(failed, want, "{}", self.out.stdout);
        for (id, words) in expected {
            let text = self.check_text(id);
            assert!(
                text.contains("\n     fix: "),
                "{id} says what to change: {text}"
            );
            for w in *words {
                assert!(text.contains(w), "{id} lacks {w:?}: {text}");
            }
        }
        assert!(
            self.out
                .stdout
                .contains(&format!("{} check(s) failed", expected.len())),
            "{}",
            self.out.stdout
        );
    }
}

/// `affine-authentik verify ARGS` with `env`; the tool's env vars of the outer world removed.
fn verify(args: &[&str], env: &[(&str, &str)]) -> Verify {
    let out = Captured::of(command(&["verify"]).args(args).envs(env.iter().copied()));
    out.assert_no_secrets(&[CLIENT_SECRET, WRONG_TOKEN, "-SECRET"]);
    Verify { out }
}

/// verify for `chain` by authentik URL and slug, with the token when `token` is set.
fn verify_chain(c: &Chain, token: bool, more: &[&str]) -> Verify {
    let affine_url = c.affine.url();
    let authentik_url = c.authentik.url();
    let mut args = vec![
        "--affine-url",
        affine_url.as_str(),
        "--authentik-url",
        authentik_url.as_str(),
    ];
    args.extend_from_slice(more);
    let token_value = c.authentik.token();
    let env: Vec<(&str, &str)> = if token {
        vec![("AUTHENTIK_TOKEN", token_value.as_str())]
    } else {
        vec![]
    };
    let v = verify(&args, &env);
    v.out.assert_no_secrets(&[&token_value]);
    v
}

const AFFINE_CHECKS: [&str; 6] = [
    "discovery",
    "issuer",
    "affine-registered",
    "authorize-endpoint",
    "client-id",
    "redirect-uri",
];
const AUTHENTIK_CHECKS: [&str; 5] = [
    "authentik-provider",
    "authentik-redirect-uri",
    "authentik-client-id",
    "authentik-grant-types",
    "authentik-scopes",
];

#[test]
fn a_correct_chain_passes_every_check_and_exits_0() {
    for version in ["0.25.3", "0.26.1"] {
        let c = chain(version, None);
        assert!(c.affine.oidc_registered(), "{version}");

        // Without a token: AFFiNE's side of the chain.
        let v = verify_chain(&c, false, &[]);
        v.assert_exit(0);
        assert_eq!(
            v.ids_marked("PASS"),
            AFFINE_CHECKS.to_vec(),
            "{}",
            v.out.stdout
        );
        let last = v.lines().pop().unwrap().to_string();
        assert_eq!(last, "all checks passed");
        for line in &v.lines()[..v.lines().len() - 1] {
            assert!(line.starts_with("PASS "), "{version}: {line}");
        }

        // With the token: authentik's view too, still every line PASS.
        let v = verify_chain(&c, true, &[]);
        v.assert_exit(0);
        let mut all = AFFINE_CHECKS.to_vec();
        all.extend(AUTHENTIK_CHECKS);
        assert_eq!(v.ids_marked("PASS"), all, "{}", v.out.stdout);
        assert!(
            v.ids_marked("WARN").is_empty(),
            "{version}: {}",
            v.out.stdout
        );
    }
}

#[test]
fn a_correct_chain_on_authentik_2024_6_passes_with_its_regex_redirect_uri() {
    // Before 2024.8.5 redirect_uris is a regex string and there is no grant_types setting:
    // the redirect check reads the string form, the grant check says it does not apply.
    let c = chain_on("2024.6.4", "0.25.3", None);
    let v = verify_chain(&c, true, &[]);
    v.assert_exit(0);
    assert_eq!(
        v.ids_marked("FAIL"),
        Vec::<String>::new(),
        "{}",
        v.out.stdout
    );
    assert_eq!(v.ids_marked("SKIP"), ["authentik-grant-types"]);
    assert!(v.check_text("authentik-redirect-uri").starts_with("PASS"));
    assert!(v
        .ids_marked("PASS")
        .contains(&"authentik-scopes".to_string()));
}

#[test]
fn json_output_is_one_object_with_ok_and_every_check() {
    let c = chain("0.25.3", None);
    let v = verify_chain(&c, true, &["--json"]);
    v.assert_exit(0);
    let doc: Value = serde_json::from_str(v.out.stdout.trim()).expect("one JSON object");
    assert_eq!(v.out.stdout.trim().lines().count(), 1);
    assert_eq!(doc["ok"], json!(true));
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), AFFINE_CHECKS.len() + AUTHENTIK_CHECKS.len());
    assert!(checks.iter().all(|c| c["status"] == json!("pass")), "{doc}");

    // A broken link: ok false and the failing check's id, detail and fix.
    configure_affine(&c.affine, &c.issuer(), "some-other-client-id");
    let v = verify_chain(&c, true, &["--json"]);
    v.assert_exit(1);
    let doc: Value = serde_json::from_str(v.out.stdout.trim()).expect("one JSON object");
    assert_eq!(doc["ok"], json!(false));
    let failed: Vec<&Value> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == json!("fail"))
        .collect();
    assert_eq!(failed.len(), 1, "{doc}");
    assert_eq!(failed[0]["id"], json!("client-id"));
    assert!(failed[0]["fix"].as_str().unwrap().contains("client"));
}

#[test]
fn an_issuer_for_another_slug_fails_discovery() {
    let c = chain("0.25.3", None);
    let affine_url = c.affine.url();
    let wrong = format!("{}/application/o/affine-typo/", c.authentik.url());
    // The application is `affine`; only the issuer's path is wrong. (Without --slug the
    // slug would be read from the issuer, and the derived client id would differ too.)
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--issuer",
            &wrong,
            "--slug",
            "affine",
        ],
        &[],
    );
    v.assert_only_failed(&[(
        "discovery",
        &[
            "affine-typo//.well-known/openid-configuration",
            "HTTP 404",
            "slug",
        ],
    )]);
    assert_eq!(v.ids_marked("SKIP"), ["issuer", "authorize-endpoint"]);

    // The same mistake by --slug.
    let v = verify_chain(
        &c,
        false,
        &["--slug", "affine-typo", "--client-id", &c.client_id],
    );
    v.assert_only_failed(&[("discovery", &["HTTP 404"])]);
}

#[test]
fn an_issuer_without_the_application_path_fails_discovery() {
    let c = chain("0.25.3", None);
    let affine_url = c.affine.url();
    // authentik's global issuer path, as if issuer_mode were global.
    let wrong = format!("{}/application/o/", c.authentik.url());
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--issuer",
            &wrong,
            "--client-id",
            &c.client_id,
        ],
        &[],
    );
    v.assert_only_failed(&[("discovery", &["/application/o//.well-known", "<slug>"])]);
}

#[test]
fn a_discovery_document_naming_another_issuer_fails_the_issuer_check() {
    // AFFiNE 0.25 registered before authentik's announced issuer changed (0.26+ would
    // refuse to register at all: the issuer-equality check).
    let c = chain("0.25.3", None);
    let announced = format!("{}/application/o/other-path/", c.authentik.url());
    c.authentik.set_issuer_override(Some(announced.clone()));
    let v = verify_chain(&c, false, &[]);
    v.assert_only_failed(&[(
        "issuer",
        &[
            &format!("names issuer {announced}"),
            &format!("configured with {}", c.issuer()),
        ],
    )]);
}

#[test]
fn unreachable_discovery_fails_discovery() {
    let c = chain("0.25.3", None);
    c.authentik.set_discovery_available(false);
    let v = verify_chain(&c, false, &[]);
    v.assert_only_failed(&[("discovery", &["HTTP 503", "reach the issuer"])]);

    // Nothing listening at all.
    let port = closed_port();
    let affine_url = c.affine.url();
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--issuer",
            &format!("http://127.0.0.1:{port}/application/o/affine/"),
            "--client-id",
            &c.client_id,
        ],
        &[],
    );
    v.assert_only_failed(&[("discovery", &[&format!("127.0.0.1:{port}")])]);
}

#[test]
fn oidc_not_registered_in_affine_fails_affine_registered() {
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let affine = affine_standin("0.26.1", None);
    let url = affine.url();
    let c = Chain::applied(authentik, affine, &url, json!({}));
    // Never configured.
    let v = verify_chain(&c, true, &[]);
    v.assert_only_failed(&[("affine-registered", &["does not list OIDC", "affine_oidc"])]);
    assert!(v.ids_marked("SKIP").contains(&"preflight".to_string()));

    // Configured while the issuer was down: 0.22-0.26 try once, so it stays unregistered
    // after authentik is back, and the fix says to rewrite or restart.
    c.authentik.set_discovery_available(false);
    c.configure();
    c.authentik.set_discovery_available(true);
    assert!(!c.affine.oidc_registered());
    let v = verify_chain(&c, false, &[]);
    v.assert_only_failed(&[(
        "affine-registered",
        &[
            "does not list OIDC",
            "rewrite the setting or restart AFFiNE",
        ],
    )]);
}

#[test]
fn a_blueprint_for_another_affine_url_fails_authentiks_redirect_uri() {
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let affine = affine_standin("0.25.3", None);
    // Same client id on both sides, but the provider allows another AFFiNE's callback.
    let c = Chain::applied(
        authentik,
        affine,
        "https://affine.elsewhere.example",
        json!({"client_id": "shared-client-id"}),
    );
    c.configure();
    let v = verify_chain(&c, true, &["--client-id", "shared-client-id"]);
    v.assert_only_failed(&[(
        "authentik-redirect-uri",
        &[
            &format!("does not allow {}/oauth/callback", c.affine.url()),
            "affine.elsewhere.example",
            "--affine-url",
        ],
    )]);
}

#[test]
fn affine_sending_another_redirect_uri_fails_redirect_uri() {
    // AFFiNE's external URL (what it puts in redirect_uri) is 127.0.0.1:PORT; the public URL
    // the user checks is localhost:PORT, for which the blueprint was made.
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let affine = affine_standin("0.25.3", None);
    let public = affine.url().replace("127.0.0.1", "localhost");
    let c = Chain::applied(authentik, affine, &public, json!({}));
    c.configure();
    let authentik_url = c.authentik.url();
    let token = c.authentik.token();
    let v = verify(
        &["--affine-url", &public, "--authentik-url", &authentik_url],
        &[("AUTHENTIK_TOKEN", &token)],
    );
    v.assert_only_failed(&[(
        "redirect-uri",
        &[
            &format!(
                "AFFiNE sends redirect_uri \"{}/oauth/callback\"",
                c.affine.url()
            ),
            &format!("expected \"{public}/oauth/callback\""),
            "AFFINE_SERVER_EXTERNAL_URL",
        ],
    )]);
}

#[test]
fn affine_configured_with_another_client_id_fails_client_id() {
    let c = chain("0.26.1", None);
    configure_affine(&c.affine, &c.issuer(), "copied-the-wrong-id");
    let v = verify_chain(&c, true, &[]);
    v.assert_only_failed(&[(
        "client-id",
        &[
            "AFFiNE sends client_id \"copied-the-wrong-id\"",
            &format!("expected {:?}", c.client_id),
        ],
    )]);
    // authentik's provider still holds the expected id.
    assert!(v
        .ids_marked("PASS")
        .contains(&"authentik-client-id".to_string()));

    // And the other way round: both AFFiNE and verify use an id authentik's provider lacks.
    let v = verify_chain(&c, true, &["--client-id", "copied-the-wrong-id"]);
    v.assert_only_failed(&[(
        "authentik-client-id",
        &["the provider's client_id is", "same client id"],
    )]);
}

#[test]
fn a_provider_without_grant_types_or_scopes_fails_its_authentik_check() {
    // A provider made by hand on 2026.8 without grant types: every login fails.
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let affine = affine_standin("0.25.3", None);
    let mut p = ProviderState::new("hand-made");
    p.redirect_uris = vec![("strict".into(), format!("{}/oauth/callback", affine.url()))];
    p.grant_types = vec![];
    let client_id = p.client_id.clone();
    authentik.add_provider("affine", p);
    let c = Chain {
        authentik,
        affine,
        client_id,
    };
    c.configure();
    let v = verify_chain(&c, true, &["--client-id", &c.client_id]);
    v.assert_only_failed(&[(
        "authentik-grant-types",
        &[
            "authorization_code",
            "grant_types [authorization_code, refresh_token]",
        ],
    )]);

    // Scopes: only openid mapped.
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let mut p = ProviderState::new("hand-made");
    p.redirect_uris = vec![(
        "strict".into(),
        format!("{}/oauth/callback", c.affine.url()),
    )];
    p.scope_mappings = vec!["goauthentik.io/providers/oauth2/scope-openid".into()];
    let client_id = p.client_id.clone();
    authentik.add_provider("affine", p);
    let issuer = format!("{}/application/o/affine/", authentik.url());
    configure_affine(&c.affine, &issuer, &client_id);
    let affine_url = c.affine.url();
    let authentik_url = authentik.url();
    let token = authentik.token();
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--authentik-url",
            &authentik_url,
            "--client-id",
            &client_id,
        ],
        &[("AUTHENTIK_TOKEN", &token)],
    );
    v.assert_only_failed(&[("authentik-scopes", &["email, profile"])]);
}

#[test]
fn the_authentik_token_enables_authentiks_checks_and_never_shows() {
    let c = chain("0.25.3", None);
    // Wrong token: one failing check saying so, the token nowhere.
    let affine_url = c.affine.url();
    let authentik_url = c.authentik.url();
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--authentik-url",
            &authentik_url,
        ],
        &[("AUTHENTIK_TOKEN", WRONG_TOKEN)],
    );
    v.assert_only_failed(&[(
        "authentik-provider",
        &["refused the token", "AUTHENTIK_TOKEN"],
    )]);

    // From a file, the same as from the environment; in --json output too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", c.authentik.token())).unwrap();
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--authentik-url",
            &authentik_url,
            "--authentik-token-file",
            file.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    v.assert_exit(0);
    v.out.assert_no_secrets(&[&c.authentik.token()]);
    assert!(v.out.stdout.contains("authentik-scopes"));

    // The token went to authentik as a bearer token, and only there.
    assert!(c
        .affine
        .requests()
        .iter()
        .all(|r| r.header("authorization").is_none()));

    // AUTHENTIK_TOKEN exported for other tools, without authentik's URL: the authentik
    // checks are skipped, the others run.
    let v = verify(
        &["--affine-url", &affine_url, "--issuer", &c.issuer()],
        &[("AUTHENTIK_TOKEN", WRONG_TOKEN)],
    );
    v.assert_exit(0);
    assert!(
        !v.out.stdout.contains("authentik-provider"),
        "{}",
        v.out.stdout
    );
    // A token file asks for those checks explicitly: without the URL, a usage error.
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--issuer",
            &c.issuer(),
            "--authentik-token-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    v.assert_exit(2);
    assert!(v.out.stderr.contains("--authentik-url"), "{}", v.out.stderr);
}

#[test]
fn the_slug_and_client_id_follow_an_issuer_for_another_application() {
    // An AFFiNE set up for application `team`: --issuer alone names the slug, so the
    // expected client id is the one derived for `team`, as the blueprint derived it.
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let affine = affine_standin("0.25.3", None);
    let client_id = apply_blueprint(&authentik, &affine.url(), json!({"slug": "team"}));
    let issuer = format!("{}/application/o/team/", authentik.url());
    configure_affine(&affine, &issuer, &client_id);
    let affine_url = affine.url();
    let token = authentik.token();
    let authentik_url = authentik.url();
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--issuer",
            &issuer,
            "--authentik-url",
            &authentik_url,
        ],
        &[("AUTHENTIK_TOKEN", &token)],
    );
    v.assert_exit(0);
}

#[test]
fn affine_0_27_with_a_loopback_issuer_gets_the_ssrf_warning_and_0_25_does_not() {
    // Guard off (as if authentik were on a public address for AFFiNE): every check passes,
    // and the warning still says 0.27 would refuse this issuer. Warnings do not fail.
    let c = chain("0.27.0", Some(false));
    wait_registered(&c.affine);
    let v = verify_chain(&c, true, &[]);
    v.assert_exit(0);
    assert_eq!(v.ids_marked("FAIL"), Vec::<String>::new());
    assert_eq!(v.ids_marked("WARN"), ["affine-private-issuer"]);
    let text = v.check_text("affine-private-issuer");
    assert!(
        text.contains("127.0.0.1") && text.contains("SSRF"),
        "{text}"
    );

    // Guard on, as 0.27 ships: AFFiNE never registers OIDC; the warning tells why.
    let c = chain("0.27.0", None);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let v = verify_chain(&c, false, &[]);
    v.assert_only_failed(&[("affine-registered", &["does not list OIDC"])]);
    assert_eq!(v.ids_marked("WARN"), ["affine-private-issuer"]);

    // 0.25 has no such guard: no warning for the same loopback issuer.
    let c = chain("0.25.3", None);
    let v = verify_chain(&c, false, &[]);
    v.assert_exit(0);
    assert!(v.ids_marked("WARN").is_empty(), "{}", v.out.stdout);
    assert!(!v.out.stdout.contains("SSRF"));
}

#[test]
fn without_an_issuer_or_authentik_url_verify_is_a_usage_error() {
    let v = verify(&["--affine-url", "https://affine.example.com"], &[]);
    v.assert_exit(2);
    assert!(
        v.out.stderr.contains("--issuer") && v.out.stderr.contains("--authentik-url"),
        "{}",
        v.out.stderr
    );
    assert!(v.out.stdout.is_empty());
}

#[test]
fn authentiks_checks_look_at_the_provider_of_this_slug_among_several() {
    // Two AFFiNE on one authentik; the other application's provider sorts first by name.
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let affine = affine_standin("0.25.3", None);
    apply_blueprint(
        &authentik,
        "https://another-affine.example.com",
        json!({"slug": "another", "name": "Another", "provider_name": "AAA first provider"}),
    );
    let url = affine.url();
    let c = Chain::applied(authentik, affine, &url, json!({}));
    c.configure();
    // The stand-in, like authentik, ignores list filters it does not know (such as
    // `application__slug`): a lookup relying on one would judge the other provider.
    let authentik_url = c.authentik.url();
    let affine_url = c.affine.url();
    let token = c.authentik.token();
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--issuer",
            &c.issuer(),
            "--authentik-url",
            &authentik_url,
        ],
        &[("AUTHENTIK_TOKEN", &token)],
    );
    v.assert_exit(0);
    let mut all = AFFINE_CHECKS.to_vec();
    all.extend(AUTHENTIK_CHECKS);
    assert_eq!(v.ids_marked("PASS"), all, "{}", v.out.stdout);
}
