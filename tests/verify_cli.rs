//! `affine-authentik verify` through the built binary, against a stand-in authentik (the
//! blueprint applied by the `authentik_blueprint` module, as a user would) and a stand-in
//! AFFiNE configured with the matching OIDC value. A correct chain passes every check and
//! exits 0; each broken link fails with its OWN check and message and exits 1, and the other
//! links still pass. Every check prints a line, a SKIP saying what it needs when it cannot
//! run. No secret (authentik token, AFFiNE password or session, either client secret) ever
//! shows in the output.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use support::affine_standin::{AffineOptions, AffineStandin};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin, LoginUser, ProviderState};
use support::http_standin::{HttpServer, Request, Response, Service};
use support::module_run::ModuleCall;
use support::process::{closed_port, command, refs, Captured};

const CLIENT_SECRET: &str = "client-secret-SECRET-0d4e2b";
const WRONG_TOKEN: &str = "wrong-token-SECRET-77e1";
const AUTHENTIK_VERSION: &str = "2026.8.0";
/// The stand-in AFFiNE's administrator (AffineOptions::new).
const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-pass-SECRET";

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

/// An issuer whose answers a test scripts, path by path (anything else: 404), to meet what
/// the stand-in authentik never does: redirect loops, a missing Location, huge bodies.
struct ScriptedIssuer {
    server: HttpServer,
    routes: Arc<Routes>,
}

struct Routes(Mutex<HashMap<String, Response>>);

impl Service for Routes {
    fn handle(&self, req: &Request) -> Response {
        self.0
            .lock()
            .unwrap()
            .get(req.path_only())
            .cloned()
            .unwrap_or_else(|| Response::html(404, "<h1>Not Found</h1>"))
    }
}

impl ScriptedIssuer {
    fn start() -> Self {
        let (server, routes) =
            HttpServer::start(0, |_| Arc::new(Routes(Mutex::new(HashMap::new()))));
        ScriptedIssuer { server, routes }
    }
    fn url(&self) -> String {
        self.server.url()
    }
    /// `<url>/o/test/`, with authentik's trailing slash.
    fn issuer(&self) -> String {
        format!("{}/o/test/", self.url())
    }
    fn route(&self, path: &str, response: Response) {
        self.routes
            .0
            .lock()
            .unwrap()
            .insert(path.to_string(), response);
    }
    /// A discovery document for [`ScriptedIssuer::issuer`], keys at `/o/test/jwks/`.
    fn discovery(&self) -> Value {
        let base = self.url();
        json!({
            "issuer": self.issuer(),
            "authorization_endpoint": format!("{base}/o/authorize/"),
            "token_endpoint": format!("{base}/o/token/"),
            "userinfo_endpoint": format!("{base}/o/userinfo/"),
            "jwks_uri": format!("{base}/o/test/jwks/"),
        })
    }
}

/// A key set of the shape authentik serves for a provider with a signing key (one RS256 RSA
/// key; the modulus is made up, verify only checks the key is complete).
fn rsa_key_set() -> Value {
    json!({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "test-key",
        "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
        "e": "AQAB"}]})
}

/// verify of the scripted issuer, AFFiNE not listening (only the issuer's checks matter).
fn verify_issuer(issuer: &ScriptedIssuer) -> Verify {
    let affine_url = format!("http://127.0.0.1:{}", closed_port());
    verify(
        &[
            "--affine-url",
            &affine_url,
            "--issuer",
            &issuer.issuer(),
            "--client-id",
            "test-client",
        ],
        &[],
    )
}

/// `discovery` failed with all of `words`, and the checks that need its document skipped.
#[track_caller]
fn assert_discovery_fails(v: &Verify, words: &[&str]) {
    v.assert_exit(1);
    let text = v.check_text("discovery");
    assert!(text.starts_with("FAIL"), "{text}");
    for w in words {
        assert!(text.contains(w), "discovery lacks {w:?}: {text}");
    }
    assert_eq!(v.mark_of("issuer"), "SKIP");
    assert_eq!(v.mark_of("jwks"), "SKIP");
}

struct Verify {
    out: Captured,
}

impl Verify {
    fn lines(&self) -> Vec<&str> {
        self.out.stdout.lines().collect()
    }
    /// Every check id, in the order printed.
    fn ids(&self) -> Vec<String> {
        self.marks().into_iter().map(|(id, _)| id).collect()
    }
    /// The mark (PASS, FAIL, WARN, SKIP) of check `id`.
    #[track_caller]
    fn mark_of(&self, id: &str) -> String {
        self.marks()
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("no check {id} in:\n{}", self.out.stdout))
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
/// Every secret of the tests (all hold `-SECRET`) is absent from stdout and stderr, in the
/// human output as in `--json`.
fn verify(args: &[&str], env: &[(&str, &str)]) -> Verify {
    let out = Captured::of(command(&["verify"]).args(args).envs(env.iter().copied()));
    out.assert_no_secrets(&[CLIENT_SECRET, WRONG_TOKEN, ADMIN_PASSWORD, "-SECRET"]);
    Verify { out }
}

/// Which credentials a verify run has in its environment.
#[derive(Clone, Copy)]
struct Creds {
    /// AUTHENTIK_TOKEN: the authentik checks.
    authentik: bool,
    /// AFFINE_ADMIN_EMAIL + AFFINE_ADMIN_PASSWORD: AFFiNE's stored setting.
    affine: bool,
}

const NO_CREDS: Creds = Creds {
    authentik: false,
    affine: false,
};
const TOKEN: Creds = Creds {
    authentik: true,
    affine: false,
};
const ALL_CREDS: Creds = Creds {
    authentik: true,
    affine: true,
};

/// verify for `chain` by authentik URL and slug, with the credentials `creds` names.
fn verify_chain(c: &Chain, creds: Creds, more: &[&str]) -> Verify {
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
    let mut env: Vec<(&str, &str)> = Vec::new();
    if creds.authentik {
        env.push(("AUTHENTIK_TOKEN", token_value.as_str()));
    }
    if creds.affine {
        env.push(("AFFINE_ADMIN_EMAIL", ADMIN_EMAIL));
        env.push(("AFFINE_ADMIN_PASSWORD", ADMIN_PASSWORD));
    }
    let v = verify(&args, &env);
    v.out.assert_no_secrets(&[&token_value]);
    v.out.assert_no_secrets(&refs(
        &c.affine.session_material().into_iter().collect::<Vec<_>>(),
    ));
    v
}

/// Every check verify knows, in the order of the chain (and of its output).
const ALL_CHECKS: [&str; 25] = [
    "discovery",
    "issuer",
    "jwks",
    "affine-version",
    "affine-registered",
    "affine-issuer",
    "affine-client-id",
    "preflight",
    "authorize-endpoint",
    "client-id",
    "redirect-uri",
    "authentik-provider",
    "authentik-version",
    "authentik-redirect-uri",
    "authentik-client-id",
    "authentik-grant-types",
    "authentik-keys",
    "authentik-scopes",
    "authentik-email-verified",
    "client-secret",
    "affine-private-issuer",
    "login-start",
    "login-authentik",
    "login-affine",
    "login-user",
];
/// What runs without any credentials.
const AFFINE_CHECKS: [&str; 9] = [
    "discovery",
    "issuer",
    "jwks",
    "affine-version",
    "affine-registered",
    "preflight",
    "authorize-endpoint",
    "client-id",
    "redirect-uri",
];
/// AFFiNE's stored setting: with an administrator's credentials.
const STORED_CHECKS: [&str; 2] = ["affine-issuer", "affine-client-id"];
const AUTHENTIK_CHECKS: [&str; 8] = [
    "authentik-provider",
    "authentik-version",
    "authentik-redirect-uri",
    "authentik-client-id",
    "authentik-grant-types",
    "authentik-keys",
    "authentik-scopes",
    "authentik-email-verified",
];

/// [`ALL_CHECKS`] without `left_out`, in order.
fn all_checks_but(left_out: &[&str]) -> Vec<String> {
    ALL_CHECKS
        .iter()
        .filter(|id| !left_out.contains(id))
        .map(|id| id.to_string())
        .collect()
}

#[test]
fn a_correct_chain_passes_every_check_and_exits_0() {
    for version in ["0.25.3", "0.26.1"] {
        let c = chain(version, None);
        assert!(c.affine.oidc_registered(), "{version}");

        // Without credentials: AFFiNE's public side of the chain passes, and every other
        // check still prints its line, a SKIP.
        let v = verify_chain(&c, NO_CREDS, &[]);
        v.assert_exit(0);
        assert_eq!(v.ids(), ALL_CHECKS.to_vec(), "{}", v.out.stdout);
        assert_eq!(
            v.ids_marked("PASS"),
            AFFINE_CHECKS.to_vec(),
            "{}",
            v.out.stdout
        );
        let last = v.lines().pop().unwrap().to_string();
        assert_eq!(last, "all checks passed");

        // With an authentik token and AFFiNE's administrator: every check passes but the
        // private-address guard, which AFFiNE before 0.27 does not have, and the login,
        // which needs --login.
        let v = verify_chain(&c, ALL_CREDS, &[]);
        v.assert_exit(0);
        let not_run = [
            "affine-private-issuer",
            "login-start",
            "login-authentik",
            "login-affine",
            "login-user",
        ];
        assert_eq!(
            v.ids_marked("PASS"),
            all_checks_but(&not_run),
            "{}",
            v.out.stdout
        );
        assert_eq!(v.ids_marked("SKIP"), not_run);
        assert!(
            v.ids_marked("WARN").is_empty(),
            "{version}: {}",
            v.out.stdout
        );
    }
}

#[test]
fn discovery_follows_authentiks_301_for_the_doubled_slash_and_says_so() {
    // authentik's issuer ends in '/', so AFFiNE fetches <issuer>//.well-known/...; authentik's
    // front router answers 301 to the cleaned path, which AFFiNE follows, and so must verify.
    let c = chain("0.26.1", None);
    let v = verify_chain(&c, NO_CREDS, &[]);
    v.assert_exit(0);
    let base = c.authentik.url();
    let text = v.check_text("discovery");
    assert!(text.starts_with("PASS"), "{text}");
    assert!(
        text.contains(&format!(
            "followed a redirect as AFFiNE does: {base}/application/o/affine//.well-known/openid-configuration → {base}/application/o/affine/.well-known/openid-configuration"
        )),
        "{text}"
    );
    // The stand-in AFFiNE met the same 301 when it registered OIDC, and followed it.
    let attempts = c.affine.discovery_attempts();
    assert!(attempts
        .iter()
        .any(|a| a.url.contains("affine//.well-known") && a.outcome.is_ok()));

    // Django reached without authentik's router answers the doubled slash with 404: the fix
    // says so and offers the issuer without its trailing slash.
    c.authentik.set_front_router(false);
    let v = verify_chain(&c, NO_CREDS, &[]);
    v.assert_only_failed(&[(
        "discovery",
        &["HTTP 404", "front router", "without its trailing slash"],
    )]);
}

#[test]
fn a_redirect_that_goes_nowhere_fails_discovery_naming_the_cause() {
    let issuer = ScriptedIssuer::start();
    let built = "/o/test//.well-known/openid-configuration";
    let cleaned = "/o/test/.well-known/openid-configuration";
    let base = issuer.url();
    let moved = |to: &str| Response::empty(301).with_header("Location", to);

    // Three redirects, one relative, one absolute: followed, and each hop named.
    issuer.route(built, moved("/r1"));
    issuer.route(
        "/r1",
        Response::empty(302).with_header("Location", &format!("{base}/r2")),
    );
    issuer.route("/r2", Response::empty(308).with_header("Location", cleaned));
    issuer.route(cleaned, Response::json(200, &issuer.discovery()));
    issuer.route("/o/test/jwks/", Response::json(200, &rsa_key_set()));
    let v = verify_issuer(&issuer);
    let text = v.check_text("discovery");
    assert!(text.starts_with("PASS"), "{text}");
    assert!(
        text.contains(&format!(
            "followed 3 redirects as AFFiNE does: {base}{built} → {base}/r1 → {base}/r2 → {base}{cleaned}"
        )),
        "{text}"
    );

    // A fourth: more than AFFiNE follows.
    issuer.route("/r2", moved("/r3"));
    issuer.route("/r3", moved(cleaned));
    let v = verify_issuer(&issuer);
    assert_discovery_fails(
        &v,
        &["more than 3 redirects", "AFFiNE follows at most 3", "/r3"],
    );

    // A loop.
    issuer.route("/r1", moved(built));
    let v = verify_issuer(&issuer);
    assert_discovery_fails(
        &v,
        &[&format!(
            "a redirect loop: {base}{built} → {base}/r1 → {base}{built}"
        )],
    );

    // No Location at all.
    issuer.route(built, Response::empty(301));
    let v = verify_issuer(&issuer);
    assert_discovery_fails(&v, &["HTTP 301 without a Location header", "leads nowhere"]);

    // A Location that answers 404.
    issuer.route(built, moved("/gone"));
    let v = verify_issuer(&issuer);
    assert_discovery_fails(
        &v,
        &[&format!(
            "HTTP 404 at the end of the redirects {base}{built} → {base}/gone"
        )],
    );

    // A document larger than AFFiNE reads (1 MiB).
    let huge = json!({"padding": "x".repeat(1024 * 1024)});
    issuer.route(built, Response::json(200, &huge));
    let v = verify_issuer(&issuer);
    assert_discovery_fails(&v, &["larger than 1 MiB", "more than AFFiNE reads"]);
}

#[test]
fn jwks_passes_with_a_signing_key_and_fails_with_none() {
    let issuer = ScriptedIssuer::start();
    issuer.route(
        "/o/test//.well-known/openid-configuration",
        Response::json(200, &issuer.discovery()),
    );
    let jwks = "/o/test/jwks/";
    let jwks_uri = format!("{}{jwks}", issuer.url());

    // authentik's shape: one RS256 RSA key for signatures.
    issuer.route(jwks, Response::json(200, &rsa_key_set()));
    let v = verify_issuer(&issuer);
    let text = v.check_text("jwks");
    assert!(text.starts_with("PASS"), "{text}");
    assert!(text.contains("1 signing key(s): RSA RS256"), "{text}");

    // A provider without a signing key: authentik serves no keys (an object without the
    // list, or an empty one) and signs HS256 with the client secret.
    for empty in [json!({}), json!({"keys": []})] {
        issuer.route(jwks, Response::json(200, &empty));
        let v = verify_issuer(&issuer);
        assert_eq!(v.mark_of("jwks"), "FAIL");
        let text = v.check_text("jwks");
        for words in [
            &jwks_uri,
            "no signing key",
            "signing_key",
            "HS256",
            "0.25.7",
        ] {
            assert!(text.contains(words), "{empty}: {words:?} missing: {text}");
        }
    }
    // Not a key set at all.
    issuer.route(jwks, Response::json(200, &json!(["not", "a", "key set"])));
    let v = verify_issuer(&issuer);
    assert!(v.check_text("jwks").contains("is not a key set"));

    // Only an encryption key (as with an encryption_key and no signing key).
    let mut enc = rsa_key_set();
    enc["keys"][0]["use"] = json!("enc");
    issuer.route(jwks, Response::json(200, &enc));
    let v = verify_issuer(&issuer);
    assert_eq!(v.mark_of("jwks"), "FAIL");
    assert!(v.check_text("jwks").contains("none for signatures"));

    // Unreachable keys, and keys behind a redirect (followed, and said).
    issuer.route(jwks, Response::html(404, "<h1>Not Found</h1>"));
    let v = verify_issuer(&issuer);
    assert_eq!(v.mark_of("jwks"), "FAIL");
    assert!(
        v.check_text("jwks").contains("HTTP 404"),
        "{}",
        v.check_text("jwks")
    );
    issuer.route(jwks, Response::empty(307).with_header("Location", "/keys"));
    issuer.route("/keys", Response::json(200, &rsa_key_set()));
    let v = verify_issuer(&issuer);
    let text = v.check_text("jwks");
    assert!(text.starts_with("PASS"), "{text}");
    assert!(
        text.contains("followed a redirect as AFFiNE does"),
        "{text}"
    );
}

#[test]
fn a_correct_chain_on_authentik_2024_6_passes_with_its_regex_redirect_uri() {
    // Before 2024.8.5 redirect_uris is a regex string and there is no grant_types setting:
    // the redirect check reads the string form, the grant check says it does not apply.
    let c = chain_on("2024.6.4", "0.25.3", None);
    let v = verify_chain(&c, ALL_CREDS, &[]);
    v.assert_exit(0);
    assert_eq!(
        v.ids_marked("FAIL"),
        Vec::<String>::new(),
        "{}",
        v.out.stdout
    );
    assert_eq!(
        v.ids_marked("SKIP"),
        [
            "authentik-grant-types",
            "affine-private-issuer",
            "login-start",
            "login-authentik",
            "login-affine",
            "login-user"
        ]
    );
    assert!(v.check_text("authentik-redirect-uri").starts_with("PASS"));
    assert!(v
        .ids_marked("PASS")
        .contains(&"authentik-scopes".to_string()));
}

#[test]
fn json_output_is_one_object_with_ok_and_every_check() {
    let c = chain("0.25.3", None);
    let v = verify_chain(&c, ALL_CREDS, &["--json"]);
    v.assert_exit(0);
    let doc: Value = serde_json::from_str(v.out.stdout.trim()).expect("one JSON object");
    assert_eq!(v.out.stdout.trim().lines().count(), 1);
    assert_eq!(doc["ok"], json!(true));
    let checks = doc["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ALL_CHECKS.to_vec());
    assert!(
        checks.iter().all(|c| c["status"] == json!("pass")
            || c["id"] == json!("affine-private-issuer")
            || c["id"].as_str().unwrap().starts_with("login-")),
        "{doc}"
    );

    // A broken link: ok false and the failing check's id, detail and fix.
    configure_affine(&c.affine, &c.issuer(), "some-other-client-id");
    let v = verify_chain(&c, ALL_CREDS, &["--json"]);
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
    assert_eq!(failed[0]["id"], json!("affine-client-id"));
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
    for skipped in ["issuer", "jwks", "authorize-endpoint"] {
        assert_eq!(v.mark_of(skipped), "SKIP", "{}", v.out.stdout);
    }

    // The same mistake by --slug.
    let v = verify_chain(
        &c,
        NO_CREDS,
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
    let v = verify_chain(&c, NO_CREDS, &[]);
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
    let v = verify_chain(&c, NO_CREDS, &[]);
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
    let v = verify_chain(&c, TOKEN, &[]);
    v.assert_only_failed(&[("affine-registered", &["does not list OIDC", "affine_oidc"])]);
    assert!(v.ids_marked("SKIP").contains(&"preflight".to_string()));

    // Configured while the issuer was down: 0.22-0.26 try once, so it stays unregistered
    // after authentik is back, and the fix says to rewrite or restart.
    c.authentik.set_discovery_available(false);
    c.configure();
    c.authentik.set_discovery_available(true);
    assert!(!c.affine.oidc_registered());
    let v = verify_chain(&c, NO_CREDS, &[]);
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
    let v = verify_chain(&c, TOKEN, &["--client-id", "shared-client-id"]);
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
    let v = verify_chain(&c, TOKEN, &[]);
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
    let v = verify_chain(&c, TOKEN, &["--client-id", "copied-the-wrong-id"]);
    v.assert_only_failed(&[(
        "authentik-client-id",
        &["the provider's client_id is", "same client id"],
    )]);
}

#[test]
fn with_admin_credentials_a_wrong_stored_client_id_fails_affine_client_id_alone() {
    // The stored id is judged by affine-client-id; the authorize URL's client-id then only
    // checks that AFFiNE runs on what it stores, so one cause gives one failure.
    let c = chain("0.26.1", None);
    configure_affine(&c.affine, &c.issuer(), "copied-the-wrong-id");
    let v = verify_chain(&c, ALL_CREDS, &[]);
    v.assert_only_failed(&[(
        "affine-client-id",
        &[
            "AFFiNE stores the client id \"copied-the-wrong-id\"",
            &format!("expected {:?}", c.client_id),
            "affine_oidc client_id",
        ],
    )]);
    assert!(v.check_text("client-id").contains("the one it stores"));
}

#[test]
fn affine_storing_another_applications_issuer_fails_affine_issuer_alone() {
    // AFFiNE points at application `team` on the same authentik: its discovery works, the
    // authorize endpoint is authentik's global one and the client id is right, so only the
    // stored issuer tells.
    let c = chain("0.26.1", None);
    apply_blueprint(
        &c.authentik,
        "https://team.example.com",
        json!({"slug": "team"}),
    );
    let team = format!("{}/application/o/team/", c.authentik.url());
    configure_affine(&c.affine, &team, &c.client_id);
    assert!(c.affine.oidc_registered());
    let v = verify_chain(&c, ALL_CREDS, &[]);
    v.assert_only_failed(&[(
        "affine-issuer",
        &[
            &format!("AFFiNE stores the issuer {team}, not {}", c.issuer()),
            "affine_oidc",
            &format!("--issuer {team}"),
        ],
    )]);
}

#[test]
fn a_client_secret_that_differs_fails_client_secret_alone_and_neither_is_shown() {
    let c = chain("0.26.1", None);
    let wrong = "another-client-secret-SECRET-9f";
    c.affine.set_stored_oidc(json!({
        "issuer": c.issuer(),
        "clientId": c.client_id,
        "clientSecret": wrong,
        "args": {},
    }));
    for json_output in [false, true] {
        let more: &[&str] = if json_output { &["--json"] } else { &[] };
        let v = verify_chain(&c, ALL_CREDS, more);
        v.out.assert_no_secrets(&[wrong, CLIENT_SECRET]);
        if json_output {
            v.assert_exit(1);
            let doc: Value = serde_json::from_str(v.out.stdout.trim()).unwrap();
            let failed: Vec<&Value> = doc["checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["status"] == json!("fail"))
                .collect();
            assert_eq!(failed.len(), 1, "{doc}");
            assert_eq!(failed[0]["id"], json!("client-secret"));
            assert!(failed[0]["detail"].as_str().unwrap().contains("differ"));
        } else {
            v.assert_only_failed(&[(
                "client-secret",
                &[
                    "differ",
                    "invalid_client",
                    "affine_oidc client_secret",
                    "authentik_blueprint client_secret",
                    "!Env",
                ],
            )]);
        }
    }

    // The same secret on both ends: it matches, and is still nowhere in the output.
    c.configure();
    let v = verify_chain(&c, ALL_CREDS, &["--json"]);
    v.assert_exit(0);
    assert!(v.out.stdout.contains("match"), "{}", v.out.stdout);
}

#[test]
fn without_credentials_each_check_that_needs_them_says_how_to_enable_it() {
    let c = chain("0.26.1", None);
    let v = verify_chain(&c, NO_CREDS, &[]);
    v.assert_exit(0);
    for id in STORED_CHECKS {
        let text = v.check_text(id);
        assert!(text.starts_with("SKIP"), "{text}");
        for var in [
            "AFFINE_ADMIN_EMAIL",
            "AFFINE_ADMIN_PASSWORD",
            "AFFINE_SESSION_TOKEN",
        ] {
            assert!(text.contains(var), "{var}: {text}");
        }
    }
    for id in AUTHENTIK_CHECKS {
        let text = v.check_text(id);
        assert!(text.starts_with("SKIP"), "{text}");
        assert!(text.contains("AUTHENTIK_TOKEN") && text.contains("--authentik-token-file"));
    }
    let text = v.check_text("client-secret");
    assert!(
        text.starts_with("SKIP") && text.contains("AFFINE_ADMIN_PASSWORD"),
        "{text}"
    );

    // AFFiNE's credentials alone: the client secret still waits for authentik's token.
    let affine_url = c.affine.url();
    let session = c.affine.session_token_for_admin();
    let v = verify(
        &["--affine-url", &affine_url, "--issuer", &c.issuer()],
        &[("AFFINE_SESSION_TOKEN", &session)],
    );
    v.assert_exit(0);
    v.out.assert_no_secrets(&[&session]);
    assert_eq!(v.mark_of("affine-issuer"), "PASS");
    assert_eq!(v.mark_of("affine-client-id"), "PASS");
    let text = v.check_text("client-secret");
    assert!(
        text.starts_with("SKIP") && text.contains("AUTHENTIK_TOKEN"),
        "{text}"
    );

    // A wrong password: affine-issuer says so, the password nowhere.
    let v = verify(
        &["--affine-url", &affine_url, "--issuer", &c.issuer()],
        &[
            ("AFFINE_ADMIN_EMAIL", ADMIN_EMAIL),
            ("AFFINE_ADMIN_PASSWORD", "not-the-password-SECRET"),
        ],
    );
    v.assert_only_failed(&[(
        "affine-issuer",
        &["wrong e-mail or password", "AFFINE_ADMIN_PASSWORD"],
    )]);
    assert_eq!(v.mark_of("affine-client-id"), "SKIP");

    // A password without its e-mail is a usage error naming both variables.
    let v = verify(
        &["--affine-url", &affine_url, "--issuer", &c.issuer()],
        &[("AFFINE_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    v.assert_exit(2);
    assert!(
        v.out.stderr.contains("AFFINE_ADMIN_EMAIL")
            && v.out.stderr.contains("AFFINE_ADMIN_PASSWORD"),
        "{}",
        v.out.stderr
    );
}

#[test]
fn affine_0_20_gets_the_oauth_oidc_variables_message_not_malformed() {
    // 0.17-0.20 mask any field they lack as "Internal Server Error"; verify asks for the
    // version first and names the variables such a server takes OIDC from.
    let authentik = AuthentikStandin::start(AuthentikOptions::new(AUTHENTIK_VERSION));
    let affine = affine_standin("0.20.0", None);
    let url = affine.url();
    let c = Chain::applied(authentik, affine, &url, json!({}));
    let v = verify_chain(&c, ALL_CREDS, &[]);
    v.assert_only_failed(&[(
        "affine-registered",
        &[
            "0.20.0",
            "OAuth plugin is off",
            "OAUTH_OIDC_ISSUER",
            "OAUTH_OIDC_CLIENT_SECRET",
        ],
    )]);
    assert!(!v.out.stdout.contains("malformed"), "{}", v.out.stdout);
    assert_eq!(v.mark_of("affine-version"), "WARN");
    for id in STORED_CHECKS {
        let text = v.check_text(id);
        assert!(
            text.starts_with("SKIP") && text.contains("OAUTH_OIDC_ISSUER"),
            "{text}"
        );
    }
    // No sign-in is spent on a server that has no settings to read.
    assert_eq!(c.affine.sign_in_count(), 0);

    // With the OAuth plugin on and OIDC in its environment, the login path is checked.
    let mut opts = AffineOptions::new("0.20.0");
    opts.oauth_plugin = true;
    let c = Chain {
        affine: AffineStandin::start(opts),
        ..c
    };
    c.configure();
    let v = verify_chain(&c, NO_CREDS, &["--client-id", &c.client_id]);
    v.assert_exit(0);
    for id in ["affine-registered", "preflight", "client-id"] {
        assert_eq!(v.mark_of(id), "PASS", "{}", v.out.stdout);
    }
}

#[test]
fn affine_newer_than_the_tool_knows_is_verified_by_the_newest_rules_with_one_warning() {
    let c = chain("0.28.0", Some(false));
    wait_registered(&c.affine);
    let v = verify_chain(&c, ALL_CREDS, &[]);
    v.assert_exit(0);
    assert_eq!(v.ids_marked("FAIL"), Vec::<String>::new());
    let text = v.check_text("affine-version");
    assert!(text.starts_with("WARN"), "{text}");
    assert!(text.contains("0.28.0") && text.contains("0.27.x"), "{text}");
    assert_eq!(
        v.out.stdout.matches("newer than").count(),
        1,
        "{}",
        v.out.stdout
    );
    // 0.27's rules: the private-address guard is assumed.
    assert_eq!(v.mark_of("affine-private-issuer"), "WARN");

    // A version that is not a version is still refused.
    let odd = ScriptedIssuer::start();
    odd.route(
        "/graphql",
        Response::json(
            200,
            &json!({"data": {"serverConfig": {"version": "latest"}}}),
        ),
    );
    let odd_url = odd.url();
    let v = verify(
        &[
            "--affine-url",
            &odd_url,
            "--issuer",
            &c.issuer(),
            "--client-id",
            "x",
        ],
        &[],
    );
    v.assert_exit(1);
    let text = v.check_text("affine-version");
    assert!(
        text.starts_with("FAIL") && text.contains("\"latest\", which is not X.Y.Z"),
        "{text}"
    );
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
    let v = verify_chain(&c, TOKEN, &["--client-id", &c.client_id]);
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
    assert!(v.check_text("authentik-email-verified").starts_with("SKIP"));
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
    for id in &AUTHENTIK_CHECKS[1..] {
        assert_eq!(v.mark_of(id), "SKIP", "{}", v.out.stdout);
    }

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

    // A file saved by a Windows editor: a byte-order mark and CRLF, neither part of the token
    // (sent along, authentik would refuse it with a 403).
    let bom_file = dir.path().join("token-bom");
    std::fs::write(&bom_file, format!("\u{feff}{}\r\n", c.authentik.token())).unwrap();
    let with_token_file = |path: &std::path::Path| {
        let v = verify(
            &[
                "--affine-url",
                &affine_url,
                "--authentik-url",
                &authentik_url,
                "--authentik-token-file",
                path.to_str().unwrap(),
            ],
            &[],
        );
        v.assert_exit(0);
        v.out.assert_no_secrets(&[&c.authentik.token()]);
    };
    with_token_file(&bom_file);

    // A pipe keeps the token off the disk: a FIFO whose writer starts after verify does,
    // and bash's process substitution (`<(pass show …)`, here a builtin printf of a variable).
    let fifo = dir.path().join("token-fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let (fifo, token) = (fifo.clone(), c.authentik.token());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            std::fs::write(&fifo, format!("{token}\n")).unwrap();
        })
    };
    with_token_file(&fifo);
    writer.join().unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(
            r#""$BIN" verify --affine-url "$AFFINE" --authentik-url "$AK" --authentik-token-file <(printf '%s' "$TOKEN")"#,
        )
        .env("BIN", support::process::bin())
        .env("AFFINE", &affine_url)
        .env("AK", &authentik_url)
        .env("TOKEN", c.authentik.token())
        .env_remove("AUTHENTIK_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains(&c.authentik.token()),
        "the token shown: {said}"
    );

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
    for id in AUTHENTIK_CHECKS {
        let text = v.check_text(id);
        assert!(text.starts_with("SKIP"), "{text}");
        assert!(text.contains("--authentik-url"), "{text}");
    }
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
    let v = verify_chain(&c, TOKEN, &[]);
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
    let v = verify_chain(&c, NO_CREDS, &[]);
    v.assert_only_failed(&[("affine-registered", &["does not list OIDC"])]);
    assert_eq!(v.ids_marked("WARN"), ["affine-private-issuer"]);

    // 0.25 has no such guard: no warning for the same loopback issuer.
    let c = chain("0.25.3", None);
    let v = verify_chain(&c, NO_CREDS, &[]);
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

/// `PATCH`es application `slug`'s provider through authentik's API, as a person in
/// authentik's admin interface would.
fn patch_provider(authentik: &AuthentikStandin, slug: &str, body: Value) {
    let pk = authentik.provider(slug).expect("the provider")["pk"].clone();
    let url = format!("{}/api/v3/providers/oauth2/{pk}/", authentik.url());
    let status = reqwest::blocking::Client::new()
        .patch(url)
        .bearer_auth(authentik.token())
        .json(&body)
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200, "PATCH {body}");
}

#[test]
fn an_encryption_key_or_no_signing_key_fails_authentik_keys_naming_it() {
    let c = chain("0.27.0", Some(false));
    c.configure();
    // 0.27 registers in the background: wait, or a loaded machine races it.
    wait_registered(&c.affine);
    let key = c.authentik.provider("affine").unwrap()["signing_key"].clone();
    assert!(
        key.is_string(),
        "the blueprint's provider has a signing key"
    );
    patch_provider(&c.authentik, "affine", json!({"encryption_key": key}));
    verify_chain(&c, TOKEN, &[]).assert_only_failed(&[(
        "authentik-keys",
        &["encryption key", "JWE", "encryption_key: null"],
    )]);

    patch_provider(
        &c.authentik,
        "affine",
        json!({"encryption_key": null, "signing_key": null}),
    );
    // No key at all: the JWKS is empty too, and both say why.
    verify_chain(&c, TOKEN, &[]).assert_only_failed(&[
        ("jwks", &["signing_key"]),
        ("authentik-keys", &["no signing key", "HS256"]),
    ]);
}

#[test]
fn the_managed_email_mapping_on_2025_10_fails_with_affine_0_25_7_and_warns_before() {
    for (affine_version, fails) in [("0.25.7", true), ("0.27.0", true), ("0.25.3", false)] {
        let authentik = AuthentikStandin::start(AuthentikOptions::new("2026.2.2"));
        let affine = affine_standin(affine_version, Some(false));
        let url = affine.url();
        let c = Chain::applied(
            authentik,
            affine,
            &url,
            json!({"email_verified": "authentik"}),
        );
        c.configure();
        // 0.27 registers in the background: wait, or a loaded machine races it.
        wait_registered(&c.affine);
        let v = verify_chain(&c, TOKEN, &[]);
        let text = v.check_text("authentik-email-verified");
        assert!(text.contains("managed email mapping"), "{text}");
        assert!(text.contains("email_verified: false"), "{text}");
        if fails {
            v.assert_only_failed(&[(
                "authentik-email-verified",
                &[
                    &format!("AFFiNE {affine_version} refuses"),
                    "--email-verified true",
                ],
            )]);
        } else {
            v.assert_exit(0);
            assert!(text.starts_with("WARN"), "{text}");
        }
    }
    // The blueprint's own mapping (the default) says true.
    let authentik = AuthentikStandin::start(AuthentikOptions::new("2026.2.2"));
    let affine = affine_standin("0.27.0", Some(false));
    let url = affine.url();
    let c = Chain::applied(authentik, affine, &url, json!({}));
    c.configure();
    // 0.27 registers in the background: wait, or a loaded machine races it.
    wait_registered(&c.affine);
    let text = verify_chain(&c, TOKEN, &[]).check_text("authentik-email-verified");
    assert!(
        text.starts_with("PASS")
            && text.contains("\"AFFiNE email (affine)\" says email_verified: true"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// verify --login: the login itself, against stand-ins that log in as authentik and AFFiNE do

const TESTER: &str = "affine-tester";
const TESTER_PASSWORD: &str = "tester-password-SECRET-5e1a";
const LOGIN_CHECKS: [&str; 4] = [
    "login-start",
    "login-authentik",
    "login-affine",
    "login-user",
];

/// A chain as the tool sets it up: the blueprint applied by `authentik_blueprint` (with
/// `extra`), AFFiNE configured by `affine_oidc` (which fits the value to AFFiNE's version),
/// and an authentik user to log in as.
fn login_chain(authentik_version: &str, affine_opts: AffineOptions, extra: Value) -> Chain {
    let authentik = AuthentikStandin::start(AuthentikOptions::new(authentik_version));
    authentik.add_user(LoginUser::new(TESTER, TESTER_PASSWORD));
    let affine = AffineStandin::start(affine_opts);
    let url = affine.url();
    let c = Chain::applied(authentik, affine, &url, extra);
    configure_with_module(&c, CLIENT_SECRET);
    c
}

fn affine_opts(version: &str) -> AffineOptions {
    let mut opts = AffineOptions::new(version);
    // Every stand-in listens on loopback, which AFFiNE 0.27's SSRF guard refuses.
    opts.ssrf_guard = Some(false);
    opts
}

/// `affine_oidc` pointing AFFiNE at the chain's issuer with `client_secret`, waiting until
/// AFFiNE lists OIDC.
fn configure_with_module(c: &Chain, client_secret: &str) {
    ModuleCall::new(
        "affine_oidc",
        json!({
            "affine_url": c.affine.url(),
            "admin_email": ADMIN_EMAIL,
            "admin_password": ADMIN_PASSWORD,
            "issuer": c.issuer(),
            "client_id": c.client_id,
            "client_secret": client_secret,
            "wait": true,
            "wait_timeout": 20,
        }),
    )
    .run(&[client_secret, ADMIN_PASSWORD])
    .assert_ok();
}

/// `verify --login TESTER` with the password in the environment (never a flag).
fn verify_login(c: &Chain, creds: Creds, password: &str) -> Verify {
    verify_login_with(c, creds, password, &[])
}

fn verify_login_with(c: &Chain, creds: Creds, password: &str, more: &[&str]) -> Verify {
    let affine_url = c.affine.url();
    let authentik_url = c.authentik.url();
    let token = c.authentik.token();
    let mut env = vec![("AUTHENTIK_LOGIN_PASSWORD", password)];
    if creds.authentik {
        env.push(("AUTHENTIK_TOKEN", token.as_str()));
    }
    if creds.affine {
        env.push(("AFFINE_ADMIN_EMAIL", ADMIN_EMAIL));
        env.push(("AFFINE_ADMIN_PASSWORD", ADMIN_PASSWORD));
    }
    let mut args = vec![
        "--affine-url",
        &affine_url,
        "--authentik-url",
        &authentik_url,
        "--login",
        TESTER,
    ];
    args.extend_from_slice(more);
    let v = verify(&args, &env);
    v.out.assert_no_secrets(&[
        TESTER_PASSWORD,
        password,
        CLIENT_SECRET,
        ADMIN_PASSWORD,
        &token,
    ]);
    v.out.assert_no_secrets(&refs(
        &c.affine.session_material().into_iter().collect::<Vec<_>>(),
    ));
    v
}

#[test]
fn the_tools_own_setup_logs_a_user_in_on_every_supported_pair_of_versions() {
    for authentik_version in ["2024.10.2", "2025.8.3", "2026.2.2", "2026.8.0"] {
        for affine_version in ["0.25.6", "0.26.1", "0.27.0"] {
            let pair = format!("authentik {authentik_version} x AFFiNE {affine_version}");
            let c = login_chain(authentik_version, affine_opts(affine_version), json!({}));
            let v = verify_login(&c, ALL_CREDS, TESTER_PASSWORD);
            for id in LOGIN_CHECKS {
                assert!(
                    v.check_text(id).starts_with("PASS"),
                    "{pair}: {id}\n{}",
                    v.out.stdout
                );
            }
            assert!(v.ids_marked("FAIL").is_empty(), "{pair}: {}", v.out.stdout);
            assert!(
                v.check_text("login-user")
                    .contains("affine-tester@example.com"),
                "{pair}"
            );
            // The first login made the user in AFFiNE, as a person's would.
            assert!(
                c.affine
                    .users()
                    .iter()
                    .any(|u| u.email == "affine-tester@example.com"),
                "{pair}"
            );
        }
    }
}

/// The broken links, each on today's releases (authentik 2026.2, AFFiNE 0.27) and without
/// the authentik token, so that only the login checks can name them: each fails ALONE, at
/// the step where a real login fails, with its own cause and fix.
#[test]
fn each_broken_link_fails_the_login_alone_with_its_own_cause() {
    let today = |extra: Value| login_chain("2026.2.2", affine_opts("0.27.0"), extra);
    let just_login = |v: &Verify, id: &str, words: &[&str]| {
        v.assert_only_failed(&[(id, words)]);
        let after = LOGIN_CHECKS.iter().skip_while(|c| **c != id).skip(1);
        for later in after {
            assert!(
                v.check_text(later).starts_with("SKIP"),
                "{later}: {}",
                v.out.stdout
            );
        }
    };

    // authentik's managed email mapping: email_verified false, which AFFiNE refuses.
    let c = today(json!({"email_verified": "authentik"}));
    just_login(
        &verify_login(&c, NO_CREDS, TESTER_PASSWORD),
        "login-affine",
        &[
            "Email for this account is not verified",
            "--email-verified true",
        ],
    );

    // A client secret that differs between AFFiNE and authentik.
    let c = today(json!({}));
    configure_with_module(&c, "another-secret-SECRET-9b");
    just_login(
        &verify_login(&c, NO_CREDS, TESTER_PASSWORD),
        "login-affine",
        &["invalid_client", "client secret differs"],
    );

    // A wrong password.
    let c = today(json!({}));
    just_login(
        &verify_login(&c, NO_CREDS, "not-the-password-SECRET"),
        "login-authentik",
        &[
            "refused the password of \"affine-tester\"",
            "AUTHENTIK_LOGIN_PASSWORD",
        ],
    );

    // An MFA stage, which a login without a person cannot answer.
    let authentik = AuthentikStandin::start(AuthentikOptions::new("2026.2.2"));
    let mut tester = LoginUser::new(TESTER, TESTER_PASSWORD);
    tester.mfa = true;
    authentik.add_user(tester);
    let affine = AffineStandin::start(affine_opts("0.27.0"));
    let url = affine.url();
    let c = Chain::applied(authentik, affine, &url, json!({}));
    configure_with_module(&c, CLIENT_SECRET);
    just_login(
        &verify_login(&c, NO_CREDS, TESTER_PASSWORD),
        "login-authentik",
        &[
            "ak-stage-authenticator-validate",
            "default-authentication-flow",
        ],
    );

    // AFFiNE creates no accounts at an OIDC login.
    let mut opts = affine_opts("0.27.0");
    opts.allow_signup_for_oauth = false;
    let c = login_chain("2026.2.2", opts, json!({}));
    just_login(
        &verify_login(&c, NO_CREDS, TESTER_PASSWORD),
        "login-affine",
        &["SIGN_UP_FORBIDDEN", "allowSignupForOauth"],
    );

    // A blueprint made for another AFFiNE URL: authentik refuses AFFiNE's redirect URI.
    let authentik = AuthentikStandin::start(AuthentikOptions::new("2026.2.2"));
    authentik.add_user(LoginUser::new(TESTER, TESTER_PASSWORD));
    let affine = AffineStandin::start(affine_opts("0.27.0"));
    let mut c = Chain::applied(
        authentik,
        affine,
        "https://affine.elsewhere.example",
        json!({}),
    );
    // The client id follows the URL the blueprint was made for; AFFiNE sends that one.
    c.client_id = c.authentik.provider("affine").unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    configure_with_module(&c, CLIENT_SECRET);
    just_login(
        &verify_login_with(
            &c,
            NO_CREDS,
            TESTER_PASSWORD,
            &["--client-id", &c.client_id],
        ),
        "login-authentik",
        &["Redirect URI Error", "--affine-url"],
    );
}

#[test]
fn an_encryption_key_or_no_signing_key_fails_the_login_at_affine() {
    // With an encryption key authentik sends a JWE; AFFiNE cannot verify it.
    let c = login_chain("2026.2.2", affine_opts("0.27.0"), json!({}));
    let key = c.authentik.provider("affine").unwrap()["signing_key"].clone();
    patch_provider(&c.authentik, "affine", json!({"encryption_key": key}));
    let v = verify_login(&c, NO_CREDS, TESTER_PASSWORD);
    v.assert_only_failed(&[("login-affine", &["INVALID_AUTH_STATE", "encryption key"])]);

    // Without a signing key: HS256 with the client secret, refused too (and the JWKS is
    // empty, which `jwks` names).
    patch_provider(
        &c.authentik,
        "affine",
        json!({"encryption_key": null, "signing_key": null}),
    );
    let v = verify_login(&c, NO_CREDS, TESTER_PASSWORD);
    v.assert_only_failed(&[
        ("jwks", &["signing_key"]),
        ("login-affine", &["INVALID_AUTH_STATE", "no signing key"]),
    ]);
}

#[test]
fn the_login_password_comes_from_the_environment_or_a_file_never_a_flag() {
    let c = login_chain("2026.8.0", affine_opts("0.26.1"), json!({}));
    // From a file, its final newline not part of it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{TESTER_PASSWORD}\n")).unwrap();
    let affine_url = c.affine.url();
    let authentik_url = c.authentik.url();
    let sessions = c.affine.session_count();
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--authentik-url",
            &authentik_url,
            "--login",
            TESTER,
            "--login-password-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    v.assert_exit(0);
    assert!(
        v.check_text("login-user").starts_with("PASS"),
        "{}",
        v.out.stdout
    );
    v.out.assert_no_secrets(&[TESTER_PASSWORD]);
    // The test user's session was signed out again: none is left behind.
    assert_eq!(c.affine.session_count(), sessions, "{}", v.out.stdout);

    // No password at all: a usage error before anything is asked.
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--authentik-url",
            &authentik_url,
            "--login",
            TESTER,
        ],
        &[],
    );
    v.assert_exit(2);
    assert!(
        v.out.stderr.contains("AUTHENTIK_LOGIN_PASSWORD"),
        "{}",
        v.out.stderr
    );
    // There is no flag that takes the password itself.
    let v = verify(
        &[
            "--affine-url",
            &affine_url,
            "--login",
            TESTER,
            "--login-password",
            TESTER_PASSWORD,
        ],
        &[],
    );
    v.assert_exit(2);
    v.out.assert_no_secrets(&[TESTER_PASSWORD]);
}

#[test]
fn an_authentik_newer_than_known_is_checked_by_the_newest_rules_with_one_warning() {
    let c = chain_on("2026.11.0", "0.26.1", None);
    let v = verify_chain(&c, TOKEN, &[]);
    v.assert_exit(0);
    assert_eq!(
        v.ids_marked("WARN"),
        ["authentik-version"],
        "{}",
        v.out.stdout
    );
    let text = v.check_text("authentik-version");
    assert!(
        text.contains("authentik 2026.11.0 is newer than this tool knows"),
        "{text}"
    );
    assert!(v.check_text("authentik-scopes").starts_with("PASS"));
}
