//! Tests of the stand-in servers themselves: each proves one contract point of CONTRACTS.md
//! §1 (AFFiNE) or §2 (authentik) that the project's tests rely on.

mod support;

use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use support::affine_standin::{AffineOptions, AffineStandin, Fault};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin, ProviderState};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
}

/// POST /graphql as JSON; `bearer` is a session id.
fn gql(url: &str, bearer: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
    let mut req = client()
        .post(format!("{url}/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

const APP_CONFIG: &str = "query { appConfig }";
const UPDATE: &str =
    "mutation updateAppConfig($updates: [UpdateAppConfigInput!]!) { updateAppConfig(updates: $updates) }";
const SERVER_CONFIG: &str =
    "query { serverConfig { version oauthProviders features initialized } }";

fn oidc_update(value: Value) -> Value {
    json!({"updates": [{"module": "oauth", "key": "providers.oidc", "value": value}]})
}

fn oidc_value(issuer: &str) -> Value {
    json!({"clientId": "affine-client", "clientSecret": "s3cret-VALUE", "issuer": issuer, "args": {}})
}

fn write_oidc(affine: &AffineStandin, value: Value) -> (u16, Value) {
    gql(
        &affine.url(),
        Some(&affine.session_token_for_admin()),
        UPDATE,
        oidc_update(value),
    )
}

fn oauth_providers(url: &str) -> Vec<String> {
    let (_, body) = gql(url, None, SERVER_CONFIG, json!({}));
    body["data"]["serverConfig"]["oauthProviders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn sign_in(url: &str, email: &str, password: Option<&str>) -> Response {
    let mut body = json!({ "email": email });
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    client()
        .post(format!("{url}/api/auth/sign-in"))
        .json(&body)
        .send()
        .unwrap()
}

fn set_cookies(resp: &Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn error_name(body: &Value) -> &str {
    body["errors"][0]["extensions"]["name"]
        .as_str()
        .unwrap_or("")
}

/// Polls `f` every 50 ms up to `limit`.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

// ------------------------------------------------------------------------------------------
// AFFiNE: GraphQL admin API
// ------------------------------------------------------------------------------------------

#[test]
fn affine_server_config_is_public_and_reports_the_version() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let (status, body) = gql(&affine.url(), None, SERVER_CONFIG, json!({}));
    assert_eq!(status, 200);
    assert_eq!(body["data"]["serverConfig"]["version"], "0.25.3");
    assert_eq!(body["data"]["serverConfig"]["oauthProviders"], json!([]));
    assert_eq!(body["data"]["serverConfig"]["initialized"], true);
}

#[test]
fn affine_app_config_refuses_anonymous_with_authentication_required() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let (status, body) = gql(&affine.url(), None, APP_CONFIG, json!({}));
    assert_eq!(status, 200);
    assert_eq!(body["data"], Value::Null);
    let ext = &body["errors"][0]["extensions"];
    assert_eq!(ext["name"], "AUTHENTICATION_REQUIRED");
    assert_eq!(ext["status"], 401);
    assert_eq!(ext["code"], "Unauthorized");
    assert_eq!(
        body["errors"][0]["message"],
        "You must sign in first to access this resource."
    );
}

#[test]
fn affine_app_config_refuses_a_non_admin_with_action_forbidden() {
    let mut opts = AffineOptions::new("0.25.3");
    opts.users
        .push(("user@example.com".into(), "user-pass-1".into()));
    let affine = AffineStandin::start(opts);
    let resp = sign_in(&affine.url(), "user@example.com", Some("user-pass-1"));
    assert_eq!(resp.status().as_u16(), 200);
    let session = set_cookies(&resp)
        .iter()
        .find_map(|c| {
            c.strip_prefix("affine_session=")
                .map(|r| r.split(';').next().unwrap().to_string())
        })
        .unwrap();
    let resp = client()
        .post(format!("{}/graphql", affine.url()))
        .header("Cookie", format!("affine_session={session}"))
        .json(&json!({"query": APP_CONFIG}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().unwrap();
    assert_eq!(error_name(&body), "ACTION_FORBIDDEN");
    assert_eq!(body["errors"][0]["extensions"]["status"], 403);
}

#[test]
fn affine_app_config_returns_the_whole_config_with_secrets_nested() {
    let affine = AffineStandin::start(AffineOptions::new("0.26.1"));
    affine.set_stored_oidc(
        json!({"clientId": "id", "clientSecret": "s3cret-VALUE", "issuer": "", "args": {}}),
    );
    let (status, body) = gql(
        &affine.url(),
        Some(&affine.session_token_for_admin()),
        APP_CONFIG,
        json!({}),
    );
    assert_eq!(status, 200, "{body}");
    let config = &body["data"]["appConfig"];
    assert_eq!(
        config["oauth"]["providers"]["oidc"]["clientSecret"],
        "s3cret-VALUE"
    );
    assert!(config["server"]["name"].is_string());
    assert!(config["auth"].is_object());
    assert!(config["oauth"]["providers"]["google"].is_object());
}

#[test]
fn affine_update_replaces_the_stored_value_and_returns_only_the_saved_override() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let first = json!({"clientId": "a", "clientSecret": "b", "issuer": "", "args": {"scope": "openid email"}});
    let (status, body) = write_oidc(&affine, first);
    assert_eq!(status, 200, "{body}");
    let second = json!({"clientId": "c", "clientSecret": "d", "issuer": "", "args": {}});
    let (_, body) = write_oidc(&affine, second.clone());
    assert_eq!(
        body["data"]["updateAppConfig"],
        json!({"oauth": {"providers": {"oidc": second}}})
    );
    // No deep merge: the earlier `args.scope` is gone.
    assert_eq!(affine.stored_oidc(), Some(second));
    assert_eq!(affine.write_count(), 2);
}

#[test]
fn affine_rejects_an_oidc_value_without_args_and_quotes_the_secret() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let (status, body) = write_oidc(
        &affine,
        json!({"clientId": "a", "clientSecret": "s3cret-VALUE", "issuer": "https://idp.example"}),
    );
    assert_eq!(status, 200);
    assert_eq!(error_name(&body), "INVALID_APP_CONFIG");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("Invalid app config for module `oauth` with key `providers.oidc`."));
    assert!(
        message.contains("s3cret-VALUE"),
        "AFFiNE quotes the value: {message}"
    );
    assert_eq!(
        body["errors"][0]["extensions"]["data"]["key"],
        "providers.oidc"
    );
    assert_eq!(affine.write_count(), 0);
    assert_eq!(affine.stored_oidc(), None);
}

#[test]
fn affine_checks_the_issuer_scheme_on_0_22_and_later_but_not_on_0_21() {
    let bad =
        json!({"clientId": "a", "clientSecret": "b", "issuer": "ftp://idp.example", "args": {}});
    let newer = AffineStandin::start(AffineOptions::new("0.22.0"));
    let (_, body) = write_oidc(&newer, bad.clone());
    assert_eq!(error_name(&body), "INVALID_APP_CONFIG");
    let older = AffineStandin::start(AffineOptions::new("0.21.0"));
    let (_, body) = write_oidc(&older, bad.clone());
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(older.stored_oidc(), Some(bad));
}

#[test]
fn affine_types_claim_email_verified_from_0_26() {
    let value = json!({"clientId": "a", "clientSecret": "b", "issuer": "", "args": {"claim_email_verified": true}});
    let v025 = AffineStandin::start(AffineOptions::new("0.25.3"));
    let (_, body) = write_oidc(&v025, value.clone());
    assert!(
        body.get("errors").is_none(),
        "an extra key passes on 0.25: {body}"
    );
    let v026 = AffineStandin::start(AffineOptions::new("0.26.1"));
    let (_, body) = write_oidc(&v026, value);
    assert_eq!(error_name(&body), "INVALID_APP_CONFIG");
}

const VALIDATE_M: &str = "mutation v($updates: [UpdateAppConfigInput!]!) { validateAppConfig(updates: $updates) { module key value valid error } }";
const VALIDATE_Q: &str = "query v($updates: [UpdateAppConfigInput!]!) { validateAppConfig(updates: $updates) { module key value valid error } }";

fn validate_status(affine: &AffineStandin, doc: &str) -> (u16, Value) {
    gql(
        &affine.url(),
        Some(&affine.session_token_for_admin()),
        doc,
        oidc_update(json!({"clientId": "a", "clientSecret": "b", "issuer": "nope", "args": {}})),
    )
}

#[test]
fn affine_validate_app_config_operation_type_follows_the_version() {
    for (version, mutation_ok, query_ok) in [
        ("0.21.0", false, false),
        ("0.25.3", true, false),
        ("0.26.0", true, true),
        ("0.26.1", false, true),
        ("0.27.0", false, true),
    ] {
        let affine = AffineStandin::start(AffineOptions::new(version));
        for (doc, ok) in [(VALIDATE_M, mutation_ok), (VALIDATE_Q, query_ok)] {
            let (status, body) = validate_status(&affine, doc);
            if ok {
                assert_eq!(status, 200, "{version}: {body}");
                let r = &body["data"]["validateAppConfig"][0];
                assert_eq!(r["valid"], false, "{version}");
                assert!(r["error"].as_str().unwrap().contains("Invalid app config"));
            } else {
                assert_eq!(status, 400, "{version} {doc}: {body}");
                assert_eq!(error_name(&body), "GRAPHQL_BAD_REQUEST");
            }
        }
        assert_eq!(affine.write_count(), 0);
    }
}

#[test]
fn affine_0_20_masks_what_it_lacks_and_answers_server_config_version() {
    // As a real 0.17 answers: any field it lacks gives a bare "Internal Server Error",
    // HTTP 400, no `name`; `serverConfig { version }` always works; `oauthProviders`
    // exists only while the OAuth plugin is on.
    let masked = json!({"errors": [{
        "message": "Internal Server Error",
        "extensions": {"code": "Internal Server Error", "status": 500},
    }]});
    for oauth_plugin in [false, true] {
        let mut opts = AffineOptions::new("0.20.0");
        opts.oauth_plugin = oauth_plugin;
        let affine = AffineStandin::start(opts);
        let (status, body) = gql(
            &affine.url(),
            Some(&affine.session_token_for_admin()),
            APP_CONFIG,
            json!({}),
        );
        assert_eq!((status, &body), (400, &masked));
        let (status, body) = gql(
            &affine.url(),
            None,
            "{ serverConfig { version } }",
            json!({}),
        );
        assert_eq!(status, 200);
        assert_eq!(body["data"]["serverConfig"]["version"], "0.20.0");
        let (status, body) = gql(
            &affine.url(),
            None,
            "{ serverConfig { oauthProviders } }",
            json!({}),
        );
        if oauth_plugin {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"]["serverConfig"]["oauthProviders"], json!([]));
        } else {
            assert_eq!((status, &body), (400, &masked));
        }
    }
}

#[test]
fn affine_graphql_without_content_type_is_refused_and_not_executed() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let resp = client()
        .post(format!("{}/graphql", affine.url()))
        .bearer_auth(affine.session_token_for_admin())
        .body(
            serde_json::to_vec(&json!({"query": UPDATE, "variables": oidc_update(oidc_value(""))}))
                .unwrap(),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(affine.write_count(), 0);
}

#[test]
fn affine_rejects_documents_outside_its_schema() {
    let affine = AffineStandin::start(AffineOptions::new("0.26.1"));
    let (status, body) = gql(
        &affine.url(),
        None,
        "query { serverConfig { nope } }",
        json!({}),
    );
    assert_eq!(status, 400);
    assert_eq!(error_name(&body), "GRAPHQL_BAD_REQUEST");
    let (status, _) = gql(&affine.url(), None, "query {", json!({}));
    assert_eq!(status, 400);
}

#[test]
fn affine_current_user_reports_admin_feature() {
    let affine = AffineStandin::start(AffineOptions::new("0.26.1"));
    let (_, body) = gql(
        &affine.url(),
        Some(&affine.session_token_for_admin()),
        "{ currentUser { email features } }",
        json!({}),
    );
    assert_eq!(body["data"]["currentUser"]["email"], "admin@example.com");
    assert!(body["data"]["currentUser"]["features"]
        .as_array()
        .unwrap()
        .contains(&json!("Admin")));
}

#[test]
fn affine_access_tokens_pass_login_but_not_the_admin_guard() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let token = affine.access_token_for_admin();
    let (_, body) = gql(
        &affine.url(),
        Some(&token),
        "{ currentUser { email } }",
        json!({}),
    );
    assert_eq!(body["data"]["currentUser"]["email"], "admin@example.com");
    let (_, body) = gql(&affine.url(), Some(&token), APP_CONFIG, json!({}));
    assert_eq!(error_name(&body), "ACTION_FORBIDDEN");
}

// ------------------------------------------------------------------------------------------
// AFFiNE: sign-in, setup, rate limit
// ------------------------------------------------------------------------------------------

#[test]
fn affine_sign_in_sets_session_cookies_by_version() {
    let old = AffineStandin::start(AffineOptions::new("0.21.0"));
    let resp = sign_in(&old.url(), "admin@example.com", Some("admin-pass-SECRET"));
    assert_eq!(resp.status().as_u16(), 200);
    let cookies = set_cookies(&resp);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("affine_session="))
        .unwrap();
    assert!(session.contains("HttpOnly") && !session.contains("Secure"));
    assert!(cookies.iter().any(|c| c.starts_with("affine_user_id=")));
    assert!(!cookies.iter().any(|c| c.starts_with("affine_csrf_token=")));
    let body: Value = resp.json().unwrap();
    assert_eq!(body["email"], "admin@example.com");
    assert_eq!(old.sign_in_count(), 1);

    let mut opts = AffineOptions::new("0.25.3");
    opts.https_secure_cookie = true;
    let newer = AffineStandin::start(opts);
    let cookies = set_cookies(&sign_in(
        &newer.url(),
        "admin@example.com",
        Some("admin-pass-SECRET"),
    ));
    assert!(cookies.iter().any(|c| c.starts_with("affine_csrf_token=")));
    assert!(cookies
        .iter()
        .find(|c| c.starts_with("affine_session="))
        .unwrap()
        .contains("; Secure"));
}

#[test]
fn affine_session_cookie_authorizes_graphql() {
    let affine = AffineStandin::start(AffineOptions::new("0.26.1"));
    let resp = sign_in(
        &affine.url(),
        "admin@example.com",
        Some("admin-pass-SECRET"),
    );
    let cookie: Vec<String> = set_cookies(&resp)
        .iter()
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect();
    let resp = client()
        .post(format!("{}/graphql", affine.url()))
        .header("Cookie", cookie.join("; "))
        .json(&json!({"query": APP_CONFIG}))
        .send()
        .unwrap();
    let body: Value = resp.json().unwrap();
    assert!(body["data"]["appConfig"]["oauth"].is_object(), "{body}");
}

#[test]
fn affine_wrong_or_unknown_credentials_are_wrong_sign_in_credentials() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    for email in ["admin@example.com", "nobody@example.com"] {
        let resp = sign_in(&affine.url(), email, Some("wrong"));
        assert_eq!(resp.status().as_u16(), 400);
        let body: Value = resp.json().unwrap();
        assert_eq!(body["name"], "WRONG_SIGN_IN_CREDENTIALS");
        assert_eq!(body["status"], 400);
        assert_eq!(
            body["message"],
            format!("Wrong user email or password: {email}")
        );
    }
    assert_eq!(affine.sign_in_count(), 0);
}

#[test]
fn affine_sign_in_without_password_sends_a_magic_link() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    assert_eq!(
        sign_in(&affine.url(), "admin@example.com", None)
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        sign_in(&affine.url(), "admin@example.com", Some(""))
            .status()
            .as_u16(),
        200
    );
    assert_eq!(affine.magic_links_sent(), 2);
    assert_eq!(affine.sign_in_count(), 0);
}

#[test]
fn affine_create_admin_user_works_only_while_no_user_exists() {
    let mut opts = AffineOptions::new("0.25.3");
    opts.admin_email = String::new();
    let affine = AffineStandin::start(opts);
    let (_, body) = gql(&affine.url(), None, SERVER_CONFIG, json!({}));
    assert_eq!(body["data"]["serverConfig"]["initialized"], false);
    let create = |email: &str| {
        client()
            .post(format!("{}/api/setup/create-admin-user", affine.url()))
            .json(&json!({"email": email, "password": "first-admin-pw"}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(create("first@example.com"), 200);
    assert_eq!(create("second@example.com"), 403);
    assert_eq!(
        sign_in(&affine.url(), "first@example.com", Some("first-admin-pw"))
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn affine_auth_routes_allow_twenty_requests_a_minute() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    for _ in 0..20 {
        assert_eq!(
            sign_in(&affine.url(), "admin@example.com", Some("wrong"))
                .status()
                .as_u16(),
            400
        );
    }
    let resp = sign_in(
        &affine.url(),
        "admin@example.com",
        Some("admin-pass-SECRET"),
    );
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = resp.json().unwrap();
    assert_eq!(body["name"], "TOO_MANY_REQUEST");
    assert_eq!(affine.sign_in_count(), 0);
    // GraphQL is not throttled.
    assert_eq!(gql(&affine.url(), None, SERVER_CONFIG, json!({})).0, 200);
}

#[test]
fn affine_rate_limit_fault_hits_the_next_auth_requests_only() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    affine.set_fault(Fault::RateLimit {
        retry_after_secs: 7,
        times: 2,
    });
    assert_eq!(gql(&affine.url(), None, SERVER_CONFIG, json!({})).0, 200);
    for _ in 0..2 {
        let resp = sign_in(
            &affine.url(),
            "admin@example.com",
            Some("admin-pass-SECRET"),
        );
        assert_eq!(resp.status().as_u16(), 429);
        assert_eq!(resp.headers()["retry-after"], "7");
    }
    let resp = sign_in(
        &affine.url(),
        "admin@example.com",
        Some("admin-pass-SECRET"),
    );
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(affine.sign_in_count(), 1);
}

#[test]
fn affine_unknown_paths_answer_json_404() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let resp = client()
        .get(format!("{}/api/nothing", affine.url()))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["status"], 404);
}

// ------------------------------------------------------------------------------------------
// AFFiNE: faults and recording
// ------------------------------------------------------------------------------------------

#[test]
fn faults_apply_to_later_requests_which_are_still_recorded() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let url = affine.url();

    affine.set_fault(Fault::Status(502));
    let resp = client()
        .post(format!("{url}/graphql"))
        .json(&json!({"query": SERVER_CONFIG}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    affine.set_fault(Fault::NonJson);
    let resp = client()
        .post(format!("{url}/graphql"))
        .json(&json!({"query": SERVER_CONFIG}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.json::<Value>().is_err());

    affine.set_fault(Fault::DropConnection);
    let err = client()
        .post(format!("{url}/graphql"))
        .json(&json!({"query": SERVER_CONFIG}))
        .send();
    assert!(err.is_err(), "the connection is closed without an answer");

    affine.set_fault(Fault::Delay(Duration::from_millis(300)));
    let start = Instant::now();
    assert_eq!(gql(&url, None, SERVER_CONFIG, json!({})).0, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));

    affine.set_fault(Fault::None);
    assert_eq!(gql(&url, None, SERVER_CONFIG, json!({})).0, 200);
    let recorded = affine.requests();
    assert_eq!(recorded.len(), 5);
    assert!(recorded
        .iter()
        .all(|r| r.method == "POST" && r.path == "/graphql"));
    assert!(recorded[0].json().unwrap()["query"]
        .as_str()
        .unwrap()
        .contains("serverConfig"));
    assert_eq!(recorded[0].header("content-type"), Some("application/json"));
}

#[test]
fn a_dropped_standin_stops_listening() {
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let url = affine.url();
    assert_eq!(gql(&url, None, SERVER_CONFIG, json!({})).0, 200);
    drop(affine);
    assert!(client()
        .post(format!("{url}/graphql"))
        .json(&json!({}))
        .send()
        .is_err());
}

// ------------------------------------------------------------------------------------------
// AFFiNE: OIDC registration and preflight (with the authentik stand-in as issuer)
// ------------------------------------------------------------------------------------------

fn authentik_with_provider(version: &str) -> AuthentikStandin {
    let ak = AuthentikStandin::start(AuthentikOptions::new(version));
    ak.add_provider("affine", ProviderState::new("AFFiNE"));
    ak
}

fn issuer_of(ak: &AuthentikStandin) -> String {
    format!("{}/application/o/affine/", ak.url())
}

#[test]
fn affine_0_21_registers_oidc_on_client_credentials_alone() {
    let affine = AffineStandin::start(AffineOptions::new("0.21.0"));
    write_oidc(
        &affine,
        json!({"clientId": "a", "clientSecret": "b", "issuer": "http://unreachable.invalid", "args": {}}),
    );
    assert_eq!(oauth_providers(&affine.url()), vec!["OIDC"]);
    assert!(affine.discovery_attempts().is_empty());
    write_oidc(
        &affine,
        json!({"clientId": "", "clientSecret": "", "issuer": "", "args": {}}),
    );
    assert!(!affine.oidc_registered(), "an empty config unregisters");
}

#[test]
fn affine_0_25_discovers_once_with_a_double_slash_for_a_trailing_slash_issuer() {
    let ak = authentik_with_provider("2026.8.0");
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    let (_, body) = write_oidc(&affine, oidc_value(&issuer_of(&ak)));
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(oauth_providers(&affine.url()), vec!["OIDC"]);
    let fetched: Vec<String> = ak.requests().iter().map(|r| r.path.clone()).collect();
    // authentik's front router answers the doubled slash with a 301, which AFFiNE follows.
    assert_eq!(
        fetched,
        vec![
            "/application/o/affine//.well-known/openid-configuration",
            "/application/o/affine/.well-known/openid-configuration"
        ]
    );
}

#[test]
fn affine_0_25_stays_unregistered_after_a_failed_discovery_until_the_next_write() {
    let ak = authentik_with_provider("2026.8.0");
    ak.set_discovery_available(false);
    let affine = AffineStandin::start(AffineOptions::new("0.25.3"));
    write_oidc(&affine, oidc_value(&issuer_of(&ak)));
    assert!(!affine.oidc_registered());
    ak.set_discovery_available(true);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!affine.oidc_registered(), "no retry on 0.22-0.26");
    write_oidc(&affine, oidc_value(&issuer_of(&ak)));
    assert!(affine.oidc_registered());
    assert_eq!(affine.discovery_attempts().len(), 2);
}

#[test]
fn affine_checks_issuer_equality_from_0_26() {
    let ak = authentik_with_provider("2026.8.0");
    ak.set_issuer_override(Some("https://other.example/application/o/affine/".into()));
    let v025 = AffineStandin::start(AffineOptions::new("0.25.3"));
    write_oidc(&v025, oidc_value(&issuer_of(&ak)));
    assert!(v025.oidc_registered(), "0.25 does not compare issuers");
    let v026 = AffineStandin::start(AffineOptions::new("0.26.1"));
    write_oidc(&v026, oidc_value(&issuer_of(&ak)));
    assert!(!v026.oidc_registered());
    assert!(v026.discovery_attempts()[0]
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("mismatch"));
    // Trailing slashes do not count.
    ak.set_issuer_override(None);
    write_oidc(&v026, oidc_value(issuer_of(&ak).trim_end_matches('/')));
    assert!(v026.oidc_registered());
}

#[test]
fn affine_0_27_refuses_a_loopback_issuer_by_default() {
    let ak = authentik_with_provider("2026.8.0");
    let affine = AffineStandin::start(AffineOptions::new("0.27.0"));
    write_oidc(&affine, oidc_value(&issuer_of(&ak)));
    assert!(eventually(Duration::from_secs(3), || !affine
        .discovery_attempts()
        .is_empty()));
    let attempt = &affine.discovery_attempts()[0];
    assert!(
        attempt.outcome.as_ref().unwrap_err().contains("SSRF"),
        "{attempt:?}"
    );
    assert!(!affine.oidc_registered());
    assert!(
        ak.requests().is_empty(),
        "a refused host is never contacted"
    );
}

#[test]
fn affine_0_27_registers_asynchronously_and_retries_with_backoff() {
    let ak = authentik_with_provider("2026.8.0");
    ak.set_discovery_available(false);
    let mut opts = AffineOptions::new("0.27.0");
    opts.ssrf_guard = Some(false);
    let affine = AffineStandin::start(opts);
    write_oidc(&affine, oidc_value(&issuer_of(&ak)));
    assert!(eventually(Duration::from_secs(3), || !affine
        .discovery_attempts()
        .is_empty()));
    assert!(!affine.oidc_registered());
    ak.set_discovery_available(true);
    // The next attempt comes about 1 s after the first.
    assert!(eventually(Duration::from_secs(5), || affine.oidc_registered()));
    assert!(affine.discovery_attempts().len() >= 2);
}

#[test]
fn affine_preflight_builds_the_authorize_url_from_discovery() {
    let ak = authentik_with_provider("2026.8.0");
    let affine = AffineStandin::start(AffineOptions::new("0.26.1"));
    let preflight = || {
        client()
            .post(format!("{}/api/oauth/preflight", affine.url()))
            .json(&json!({"provider": "OIDC", "client_nonce": "n"}))
            .send()
            .unwrap()
    };
    let resp = preflight();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<Value>().unwrap()["name"],
        "UNKNOWN_OAUTH_PROVIDER"
    );

    write_oidc(&affine, oidc_value(&issuer_of(&ak)));
    let resp = preflight();
    assert_eq!(resp.status().as_u16(), 200);
    let url = reqwest::Url::parse(resp.json::<Value>().unwrap()["url"].as_str().unwrap()).unwrap();
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{}/application/o/authorize/", ak.url())
    );
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], "affine-client");
    assert_eq!(
        q["redirect_uri"],
        format!("{}/oauth/callback", affine.url())
    );
    assert_eq!(q["scope"], "openid profile email");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(url
        .query()
        .unwrap()
        .contains("redirect_uri=http%3A%2F%2F127.0.0.1"));

    let resp = client()
        .post(format!("{}/api/oauth/preflight", affine.url()))
        .json(&json!({"client_nonce": "n"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<Value>().unwrap()["name"],
        "MISSING_OAUTH_QUERY_PARAMETER"
    );
}

// ------------------------------------------------------------------------------------------
// authentik
// ------------------------------------------------------------------------------------------

/// A blueprint for an OAuth2 provider + application `affine`, shaped by the given choices.
struct Bp {
    redirect_list: bool,
    invalidation: bool,
    grant_types: bool,
}

impl Bp {
    /// The right shape for a version.
    fn for_version(v: &str) -> Bp {
        let (y, m, p) = {
            let n: Vec<u32> = v.split('.').map(|x| x.parse().unwrap()).collect();
            (n[0], n[1], n[2])
        };
        let v = (y, m, p);
        Bp {
            redirect_list: v >= (2024, 10, 3) || ((2024, 8, 5)..(2024, 10, 0)).contains(&v),
            invalidation: v >= (2024, 10, 0),
            grant_types: v >= (2026, 5, 0),
        }
    }

    fn yaml(&self) -> String {
        let redirect = if self.redirect_list {
            "\n        - matching_mode: strict\n          url: https://affine.example/oauth/callback".to_string()
        } else {
            " https://affine.example/oauth/callback".to_string()
        };
        let invalidation = if self.invalidation {
            "\n      invalidation_flow: !Find [authentik_flows.flow, [slug, default-provider-invalidation-flow]]"
        } else {
            ""
        };
        let grants = if self.grant_types {
            "\n      grant_types: [authorization_code, refresh_token]"
        } else {
            ""
        };
        format!(
            r#"version: 1
metadata:
  name: affine-sso
  labels:
    blueprints.goauthentik.io/description: AFFiNE single sign-on
entries:
  - model: authentik_providers_oauth2.oauth2provider
    id: provider
    identifiers:
      name: AFFiNE
    attrs:
      authorization_flow: !Find [authentik_flows.flow, [slug, default-provider-authorization-implicit-consent]]{invalidation}
      client_type: confidential
      client_id: affine-client
      client_secret: s3cret-VALUE
      redirect_uris:{redirect}
      signing_key: !Find [authentik_crypto.certificatekeypair, [name, authentik Self-signed Certificate]]
      access_token_validity: hours=1;minutes=30
      property_mappings:
        - !Find [authentik_providers_oauth2.scopemapping, [managed, goauthentik.io/providers/oauth2/scope-openid]]
        - !Find [authentik_providers_oauth2.scopemapping, [managed, goauthentik.io/providers/oauth2/scope-email]]
        - !Find [authentik_providers_oauth2.scopemapping, [managed, goauthentik.io/providers/oauth2/scope-profile]]{grants}
  - model: authentik_core.application
    id: app
    identifiers:
      slug: affine
    attrs:
      name: AFFiNE
      provider: !KeyOf provider
  - model: authentik_policies.policybinding
    identifiers:
      target: !KeyOf app
      group: !Find [authentik_core.group, [name, authentik Admins]]
    attrs:
      order: 0
"#
        )
    }
}

fn api(
    ak: &AuthentikStandin,
) -> impl Fn(reqwest::Method, &str) -> reqwest::blocking::RequestBuilder + '_ {
    move |method, path| {
        client()
            .request(method, format!("{}{path}", ak.url()))
            .bearer_auth(ak.token())
    }
}

fn create_instance(ak: &AuthentikStandin, content: &str) -> (u16, Value) {
    let resp = api(ak)(reqwest::Method::POST, "/api/v3/managed/blueprints/")
        .json(&json!({"name": "affine-sso", "content": content, "context": {}, "enabled": true}))
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

/// POSTs the apply of instance `pk`, then reads the instance until the apply shows in it
/// (`last_applied` moves), as a client of a queued (2025.8+) authentik must. Returns the
/// apply's own answer and the instance after the apply.
fn apply_and_wait(ak: &AuthentikStandin, pk: &str) -> (Value, Value) {
    let path = format!("/api/v3/managed/blueprints/{pk}/");
    let get = || -> Value {
        api(ak)(reqwest::Method::GET, &path)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let before = get();
    let answer: Value = api(ak)(reqwest::Method::POST, &format!("{path}apply/"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    if answer["last_applied"] != before["last_applied"] {
        return (answer.clone(), answer);
    }
    let mut now = answer.clone();
    let moved = eventually(Duration::from_secs(5), || {
        now = get();
        now["last_applied"] != before["last_applied"]
    });
    assert!(moved, "the apply never showed: {now}");
    (answer, now)
}

/// The validation log lines of a refused blueprint, joined.
fn refusal(body: &Value) -> String {
    let lines = body["content"].as_array().expect("content errors");
    assert_eq!(lines[0], "Failed to validate blueprint");
    lines
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn authentik_api_needs_the_token() {
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.8.0"));
    let url = format!("{}/api/v3/managed/blueprints/", ak.url());
    let resp = client().get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.json::<Value>().unwrap()["detail"],
        "Authentication credentials were not provided."
    );
    let resp = client().get(&url).bearer_auth("wrong").send().unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        resp.json::<Value>().unwrap()["detail"],
        "Token invalid/expired"
    );
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth(ak.token())
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn authentik_blueprint_instance_create_list_apply_and_discovery() {
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.8.0"));
    let (status, created) = create_instance(&ak, &Bp::for_version("2026.8.0").yaml());
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "unknown");
    assert!(ak.provider("affine").is_none(), "validation is a dry run");

    let listed: Value = api(&ak)(
        reqwest::Method::GET,
        "/api/v3/managed/blueprints/?name=affine-sso",
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(listed["pagination"]["count"], 1);
    let pk = listed["results"][0]["pk"].as_str().unwrap().to_string();
    let empty: Value = api(&ak)(
        reqwest::Method::GET,
        "/api/v3/managed/blueprints/?name=other",
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(empty["pagination"]["count"], 0);

    let (answer, applied) = apply_and_wait(&ak, &pk);
    assert_eq!(answer["status"], "unknown", "2025.8+ only queues the apply");
    assert_eq!(applied["status"], "successful");
    assert_eq!(applied["metadata"]["name"], "affine-sso");
    assert_eq!(ak.applied_count(), 1);

    let provider = ak.provider("affine").unwrap();
    assert_eq!(provider["client_id"], "affine-client");
    assert_eq!(
        provider["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        provider["redirect_uris"][0]["url"],
        "https://affine.example/oauth/callback"
    );
    assert_eq!(provider["redirect_uris"][0]["matching_mode"], "strict");
    let mut scopes = ak.provider_scopes("affine");
    scopes.sort();
    assert_eq!(scopes.len(), 3);
    assert!(scopes[0].ends_with("scope-email"));
    let app: Value = api(&ak)(reqwest::Method::GET, "/api/v3/core/applications/affine/")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(app["provider"], provider["pk"]);
    let by_client_id: Value = api(&ak)(
        reqwest::Method::GET,
        &format!(
            "/api/v3/providers/oauth2/?client_id={}",
            provider["client_id"].as_str().unwrap()
        ),
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(by_client_id["results"][0]["pk"], provider["pk"]);
    assert_eq!(by_client_id["pagination"]["count"], 1);
    let managed = provider["property_mappings"][0].clone();
    let mappings: Value = api(&ak)(
        reqwest::Method::GET,
        "/api/v3/propertymappings/provider/scope/?managed=goauthentik.io/providers/oauth2/scope-openid",
    )
    .send()
    .unwrap()
    .json()
    .unwrap();
    assert_eq!(mappings["results"][0]["pk"], managed);

    let doc: Value = client()
        .get(format!(
            "{}/application/o/affine/.well-known/openid-configuration",
            ak.url()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(doc["issuer"], format!("{}/application/o/affine/", ak.url()));
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{}/application/o/authorize/", ak.url())
    );
    assert_eq!(
        doc["jwks_uri"],
        format!("{}/application/o/affine/jwks/", ak.url())
    );
    let missing = client()
        .get(format!(
            "{}/application/o/nope/.well-known/openid-configuration",
            ak.url()
        ))
        .send()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

/// A client that shows a redirect instead of following it.
fn no_redirects() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[test]
fn authentik_front_router_redirects_a_doubled_slash_and_django_alone_answers_404() {
    let ak = authentik_with_provider("2026.2.2");
    let doubled = format!(
        "{}/application/o/affine//.well-known/openid-configuration",
        ak.url()
    );
    // The Go router in front (the default): 301 to the cleaned path, relative, no body.
    let resp = no_redirects().get(&doubled).send().unwrap();
    assert_eq!(resp.status().as_u16(), 301);
    assert_eq!(
        resp.headers()["location"],
        "/application/o/affine/.well-known/openid-configuration"
    );
    // Anywhere in the path, before the token is looked at; the query string is kept.
    // (`.`/`..` segments cannot be tested over HTTP here: the URL parser resolves them first.)
    let resp = no_redirects()
        .get(format!(
            "{}/api//v3/core//applications/?slug=affine",
            ak.url()
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 301);
    assert_eq!(
        resp.headers()["location"],
        "/api/v3/core/applications/?slug=affine"
    );
    // Following it lands on the document.
    let doc: Value = client().get(&doubled).send().unwrap().json().unwrap();
    assert_eq!(doc["issuer"], format!("{}/application/o/affine/", ak.url()));

    // Django reached directly: its HTML 404 page.
    ak.set_front_router(false);
    let resp = no_redirects().get(&doubled).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

#[test]
fn authentik_redirect_uris_shape_follows_the_version() {
    for version in [
        "2024.6.4",
        "2024.8.5",
        "2024.10.1",
        "2024.10.3",
        "2025.10.1",
    ] {
        let right = Bp::for_version(version);
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let (status, body) = create_instance(&ak, &right.yaml());
        assert_eq!(status, 201, "{version}: {body}");
        let wrong = Bp {
            redirect_list: !right.redirect_list,
            ..right
        };
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let (status, body) = create_instance(&ak, &wrong.yaml());
        assert_eq!(status, 400, "{version}");
        let log = refusal(&body);
        assert!(log.contains("redirect_uris"), "{version}: {log}");
        assert!(log.contains("- Entry invalid: Serializer errors"), "{log}");
    }
}

#[test]
fn authentik_invalidation_flow_is_required_from_2024_10_and_ignored_before() {
    let ak = AuthentikStandin::start(AuthentikOptions::new("2024.10.5"));
    let bp = Bp {
        invalidation: false,
        ..Bp::for_version("2024.10.5")
    };
    let (status, body) = create_instance(&ak, &bp.yaml());
    assert_eq!(status, 400);
    assert!(refusal(&body)
        .contains("'invalidation_flow': [ErrorDetail(string='This field is required.'"));

    // Unknown to 2024.6: ignored and not stored, as Django REST does with any unknown field.
    let ak = AuthentikStandin::start(AuthentikOptions::new("2024.6.4"));
    let bp = Bp {
        invalidation: true,
        ..Bp::for_version("2024.6.4")
    };
    let (status, created) = create_instance(&ak, &bp.yaml());
    assert_eq!(status, 201, "{created}");
    let (_, applied) = apply_and_wait(&ak, created["pk"].as_str().unwrap());
    assert_eq!(applied["status"], "successful");
    let provider = ak.provider("affine").unwrap();
    assert!(provider.get("invalidation_flow").is_none(), "{provider}");
}

#[test]
fn authentik_grant_types_exist_from_2026_5_are_ignored_before_and_default_to_empty() {
    // Real authentik 2026.2 imports a 2026.8 blueprint with grant_types, without them.
    let ak = AuthentikStandin::start(AuthentikOptions::new("2025.10.1"));
    let bp = Bp {
        grant_types: true,
        ..Bp::for_version("2025.10.1")
    };
    let (status, created) = create_instance(&ak, &bp.yaml());
    assert_eq!(status, 201, "{created}");
    let (_, applied) = apply_and_wait(&ak, created["pk"].as_str().unwrap());
    assert_eq!(applied["status"], "successful");
    let provider = ak.provider("affine").unwrap();
    assert!(provider.get("grant_types").is_none(), "{provider}");

    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.5.0"));
    let bp = Bp {
        grant_types: false,
        ..Bp::for_version("2026.5.0")
    };
    let (status, created) = create_instance(&ak, &bp.yaml());
    assert_eq!(status, 201);
    apply_and_wait(&ak, created["pk"].as_str().unwrap());
    assert_eq!(ak.provider("affine").unwrap()["grant_types"], json!([]));
}

#[test]
fn authentik_tags_are_checked_for_version_and_node_kind() {
    let base = Bp::for_version("2025.6.0").yaml();
    let with_file = base.replace(
        "client_secret: s3cret-VALUE",
        "client_secret: !File [/nonexistent, fallback]",
    );
    let ak = AuthentikStandin::start(AuthentikOptions::new("2025.6.0"));
    let (status, body) = create_instance(&ak, &with_file);
    assert_eq!(status, 400);
    assert!(refusal(&body).contains("could not determine a constructor for the tag '!File'"));
    let ak = AuthentikStandin::start(AuthentikOptions::new("2025.8.0"));
    assert_eq!(
        create_instance(
            &ak,
            &Bp::for_version("2025.8.0").yaml().replace(
                "client_secret: s3cret-VALUE",
                "client_secret: !File [/nonexistent, fallback]"
            )
        )
        .0,
        201
    );

    let scalar_find = base.replace(
        "signing_key: !Find [authentik_crypto.certificatekeypair, [name, authentik Self-signed Certificate]]",
        "signing_key: !Find authentik_crypto.certificatekeypair",
    );
    let ak = AuthentikStandin::start(AuthentikOptions::new("2025.6.0"));
    let (status, body) = create_instance(&ak, &scalar_find);
    assert_eq!(status, 400);
    assert!(refusal(&body).contains("!Find"));

    let (status, body) = create_instance(&ak, &base.replace("!KeyOf provider", "!KeyOf later"));
    assert_eq!(status, 400);
    assert!(refusal(&body).contains("KeyOf: failed to find entry with `id` of `later`"));
}

#[test]
fn authentik_a_missing_scope_mapping_fails_validation() {
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.8.0"));
    let bp = Bp::for_version("2026.8.0")
        .yaml()
        .replace("scope-profile", "scope-nope");
    let (status, body) = create_instance(&ak, &bp);
    assert_eq!(status, 400);
    assert!(refusal(&body).contains("This field may not be null."));
}

#[test]
fn authentik_refuses_wrong_blueprint_version_and_unknown_models() {
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.8.0"));
    let bp = Bp::for_version("2026.8.0").yaml();
    let (status, body) = create_instance(&ak, &bp.replacen("version: 1", "version: 2", 1));
    assert_eq!(status, 400);
    assert!(refusal(&body).contains("Invalid blueprint version"));
    let (status, body) = create_instance(
        &ak,
        &bp.replace("authentik_core.application", "authentik_core.nothing_here_"),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = create_instance(
        &ak,
        &bp.replace(
            "model: authentik_core.application",
            "model: core.application",
        ),
    );
    assert_eq!(status, 400);
}

#[test]
fn authentik_instance_patch_and_delete() {
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.8.0"));
    let (_, created) = create_instance(&ak, &Bp::for_version("2026.8.0").yaml());
    let pk = created["pk"].as_str().unwrap();
    let path = format!("/api/v3/managed/blueprints/{pk}/");
    let resp = api(&ak)(reqwest::Method::PATCH, &path)
        .json(&json!({"content": "version: 1\nentries:\n  - model: authentik_core.application\n    identifiers: {slug: token}\n    attrs: {name: x}\n"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "a reserved slug is refused");
    let resp = api(&ak)(reqwest::Method::PATCH, &path)
        .json(&json!({"enabled": false}))
        .send()
        .unwrap();
    assert_eq!(resp.json::<Value>().unwrap()["enabled"], false);
    assert_eq!(
        api(&ak)(reqwest::Method::DELETE, &path)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert!(ak.instances().is_empty());
    assert_eq!(
        api(&ak)(reqwest::Method::GET, &path)
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}

fn import(ak: &AuthentikStandin, path: &str, content: &str) -> (u16, Value) {
    // reqwest's multipart feature is off in this project: build the form by hand.
    let boundary = "standin-test-boundary-7MA4YWxkTrZu0gW";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"affine.yaml\"\r\nContent-Type: application/yaml\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    let resp = api(ak)(reqwest::Method::POST, path)
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn authentik_import_endpoint_moves_in_2026_5_and_answers_200_with_success() {
    const NEW: &str = "/api/v3/managed/blueprints/import/";
    const OLD: &str = "/api/v3/flows/instances/import/";
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.5.0"));
    assert_eq!(import(&ak, OLD, &Bp::for_version("2026.5.0").yaml()).0, 404);
    let (status, body) = import(&ak, NEW, &Bp::for_version("2026.5.0").yaml());
    assert_eq!(status, 200);
    assert_eq!(body["success"], true, "{body}");
    assert!(ak.provider("affine").is_some());

    // Before 2026.5 `import` is read as an instance pk: that route has no POST.
    let ak = AuthentikStandin::start(AuthentikOptions::new("2025.10.1"));
    let (status, body) = import(&ak, NEW, &Bp::for_version("2025.10.1").yaml());
    assert_eq!(status, 405);
    assert_eq!(body["detail"], "Method \"POST\" not allowed.");
    let (status, body) = import(&ak, OLD, &Bp::for_version("2025.10.1").yaml());
    assert_eq!(status, 200);
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(ak.applied_count(), 1);
    // A refused blueprint is still HTTP 200; `success` says it.
    let (status, body) = import(
        &ak,
        OLD,
        &Bp::for_version("2025.10.1")
            .yaml()
            .replace("scope-profile", "scope-nope"),
    );
    assert_eq!(status, 200);
    assert_eq!(body["success"], false);
    assert!(body["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["event"].as_str().unwrap().contains("property_mappings")));
    assert_eq!(ak.applied_count(), 1);
}

#[test]
fn authentik_discovery_knobs_change_the_issuer_or_take_it_down() {
    let ak = authentik_with_provider("2024.6.4");
    let url = format!(
        "{}/application/o/affine/.well-known/openid-configuration",
        ak.url()
    );
    ak.set_issuer_override(Some("https://elsewhere.example/".into()));
    let doc: Value = client().get(&url).send().unwrap().json().unwrap();
    assert_eq!(doc["issuer"], "https://elsewhere.example/");
    ak.set_discovery_available(false);
    assert_eq!(client().get(&url).send().unwrap().status().as_u16(), 503);
    // Registered directly: the string form of redirect_uris on this version.
    assert!(ak.provider("affine").unwrap()["redirect_uris"].is_string());
}

#[test]
fn authentik_tags_resolve_like_authentik_and_instance_context_wins_on_apply() {
    let content = r#"version: 1
context:
  app_name: From blueprint
entries:
  - model: authentik_core.application
    identifiers:
      slug: !Format ["%s-%d", affine, 2]
    attrs:
      name: !Context app_name
      meta_description: !If [!Condition [AND, true, !Context app_name], "yes", "no"]
      meta_publisher: !Env [AK_STANDIN_SURELY_UNSET_VARIABLE, fallback]
      meta_launch_url: !AtIndex [[a, b, c], 1]
      backchannel_providers: !Enumerate [[x, y], SEQ, !Index 0]
      meta_icon: !ParseJSON '{"k": 1}'
"#;
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.8.0"));
    let resp = api(&ak)(reqwest::Method::POST, "/api/v3/managed/blueprints/")
        .json(
            &json!({"name": "tags", "content": content, "context": {"app_name": "From instance"}}),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let pk = resp.json::<Value>().unwrap()["pk"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, applied) = apply_and_wait(&ak, &pk);
    assert_eq!(applied["status"], "successful");
    let app = ak.application("affine-2").expect("slug from !Format");
    assert_eq!(app["name"], "From instance");
    assert_eq!(app["meta_description"], "yes");
    assert_eq!(app["meta_publisher"], "fallback");
    assert_eq!(app["meta_launch_url"], "b");
    assert_eq!(app["backchannel_providers"], json!([0, 1]));
    assert_eq!(app["meta_icon"], json!({"k": 1}));

    // !AtIndex arrived in 2024.12.
    let ak = AuthentikStandin::start(AuthentikOptions::new("2024.10.5"));
    let (status, body) = create_instance(&ak, content);
    assert_eq!(status, 400);
    assert!(refusal(&body).contains("'!AtIndex'"));
}

#[test]
fn authentik_validates_content_with_the_existing_instance_context_only() {
    // On create, authentik validates with an empty context (the instance does not exist yet),
    // so a `!Context` without default resolves to null there.
    let content = "version: 1\nentries:\n  - model: authentik_core.application\n    identifiers:\n      slug: affine\n    attrs:\n      name: !Context app_name\n";
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.8.0"));
    let resp = api(&ak)(reqwest::Method::POST, "/api/v3/managed/blueprints/")
        .json(&json!({"name": "ctx", "content": content, "context": {"app_name": "AFFiNE"}}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().unwrap();
    assert!(refusal(&body).contains("'name': [ErrorDetail(string='This field may not be null.'"));
}

#[test]
fn authentik_stores_content_trimmed_and_moves_last_applied_on_every_save() {
    // Synchronous applies (before 2025.8): every answer is final.
    let ak = AuthentikStandin::start(AuthentikOptions::new("2024.10.2"));
    let content = format!("\n{}\n\n", Bp::for_version("2024.10.2").yaml().trim());
    let resp = api(&ak)(reqwest::Method::POST, "/api/v3/managed/blueprints/")
        .json(&json!({"name": " affine-sso\n", "content": content}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().unwrap();
    // Django REST's CharField strips both ends before validating and storing.
    assert_eq!(created["content"], content.trim());
    assert_eq!(created["name"], "affine-sso");
    assert_eq!(created["status"], "unknown");
    assert_eq!(created["last_applied_hash"], "");
    let pk = created["pk"].as_str().unwrap();

    let (answer, applied) = apply_and_wait(&ak, pk);
    assert_eq!(answer, applied, "2024.10 applies before answering");
    assert_eq!(applied["status"], "successful");
    let digest: String = Sha512::digest(content.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(applied["last_applied_hash"], digest);
    assert_ne!(applied["last_applied"], created["last_applied"]);

    // A PATCH is a save: last_applied moves, the hash stays until the next apply.
    let patched: Value = api(&ak)(
        reqwest::Method::PATCH,
        &format!("/api/v3/managed/blueprints/{pk}/"),
    )
    .json(&json!({"content": format!("{content}# changed\n")}))
    .send()
    .unwrap()
    .json()
    .unwrap();
    assert_ne!(patched["last_applied"], applied["last_applied"]);
    assert_eq!(patched["last_applied_hash"], digest);
    assert!(patched["content"].as_str().unwrap().ends_with("# changed"));
}

#[test]
fn authentik_applies_before_answering_until_2025_8_and_queues_from_it() {
    for (version, queued) in [("2025.6.0", false), ("2025.8.0", true), ("2026.2.2", true)] {
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let (_, created) = create_instance(&ak, &Bp::for_version(version).yaml());
        let started = Instant::now();
        let (answer, applied) = apply_and_wait(&ak, created["pk"].as_str().unwrap());
        assert_eq!(applied["status"], "successful", "{version}");
        if queued {
            // The instance as it was; the outcome shows a few hundred ms later.
            assert_eq!(answer["status"], "unknown", "{version}");
            assert_eq!(answer["last_applied"], created["last_applied"], "{version}");
            assert!(started.elapsed() >= Duration::from_millis(200), "{version}");
        } else {
            assert_eq!(answer, applied, "{version}");
        }
    }
    // set_apply_delay still overrides the version's way.
    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.2.2"));
    ak.set_apply_delay(None);
    let (_, created) = create_instance(&ak, &Bp::for_version("2026.2.2").yaml());
    let (answer, _) = apply_and_wait(&ak, created["pk"].as_str().unwrap());
    assert_eq!(answer["status"], "successful");
}

#[test]
fn authentik_a_binding_whose_group_is_missing_is_refused_as_each_version_does() {
    let missing = |v: &str| {
        Bp::for_version(v)
            .yaml()
            .replace("[name, authentik Admins]", "[name, no-such-group]")
    };
    for (version, wording) in [
        (
            "2024.10.2",
            "One of 'policy', 'group' or 'user' must be set.",
        ),
        ("2024.12.3", "One of 'group', 'policy', 'user' must be set."),
    ] {
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let (status, body) = create_instance(&ak, &missing(version));
        assert_eq!(status, 400, "{version}");
        assert!(refusal(&body).contains(wording), "{version}: {body}");
    }
    // From 2025.2 logging the failed entry (it holds a !KeyOf) crashes authentik: its error
    // page answers the POST with 405 and an empty text/html body.
    for version in ["2025.2.0", "2026.2.2"] {
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let resp = api(&ak)(reqwest::Method::POST, "/api/v3/managed/blueprints/")
            .json(&json!({"name": "affine-sso", "content": missing(version)}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{version}");
        assert_eq!(resp.headers()["allow"], "GET, HEAD, OPTIONS");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(resp.text().unwrap(), "");
        assert!(ak.instances().is_empty());
    }
}

#[test]
fn authentik_malformed_yaml_is_a_server_error_and_a_bare_string_a_blueprint() {
    for version in ["2024.10.2", "2026.2.2"] {
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let resp = api(&ak)(reqwest::Method::POST, "/api/v3/managed/blueprints/")
            .json(
                &json!({"name": "bad", "content": "version: 1\nentries:\n  - model: [unclosed\n"}),
            )
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{version}");
        assert_eq!(resp.headers()["allow"], "GET, HEAD, OPTIONS");
        assert_eq!(resp.text().unwrap(), "");

        let resp = api(&ak)(reqwest::Method::POST, "/api/v3/managed/blueprints/")
            .json(&json!({"name": "str", "content": "just a string\n"}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{version}");
        let created: Value = resp.json().unwrap();
        assert_eq!(created["content"], "just a string");
        let (_, applied) = apply_and_wait(&ak, created["pk"].as_str().unwrap());
        assert_eq!(applied["status"], "successful", "{version}");
        assert_eq!(applied["metadata"], json!({}));
    }
}

#[test]
fn authentik_words_duplicates_and_detail_404s_as_the_version_does() {
    for (version, app, instance, provider) in [
        ("2024.10.2", "Not found.", "Not found.", "Not found."),
        (
            "2026.2.2",
            "No Application matches the given query.",
            "No BlueprintInstance matches the given query.",
            "No OAuth2Provider matches the given query.",
        ),
    ] {
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let bp = Bp::for_version(version).yaml();
        assert_eq!(create_instance(&ak, &bp).0, 201);
        let (status, body) = create_instance(&ak, &bp);
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"name": ["Blueprint Instance with this name already exists."]})
        );
        for (path, wanted) in [
            ("/api/v3/core/applications/nope/", app),
            ("/api/v3/managed/blueprints/nope/", instance),
            ("/api/v3/providers/oauth2/999999/", provider),
        ] {
            let resp = api(&ak)(reqwest::Method::GET, path).send().unwrap();
            assert_eq!(resp.status().as_u16(), 404, "{version} {path}");
            assert_eq!(resp.json::<Value>().unwrap()["detail"], wanted, "{version}");
        }
        // A route authentik does not have is Django's HTML 404.
        let resp = api(&ak)(reqwest::Method::GET, "/api/v3/propertymappings/scope/")
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
    }
}

#[test]
fn authentik_env_tags_read_authentiks_own_environment() {
    let ak = AuthentikStandin::start(AuthentikOptions::new("2024.10.2"));
    let bp = Bp::for_version("2024.10.2")
        .yaml()
        .replace("s3cret-VALUE", "!Env AK_STANDIN_TEST_SECRET");
    let (status, body) = create_instance(&ak, &bp);
    assert_eq!(status, 400);
    assert!(refusal(&body).contains(
        "- Entry invalid: Serializer errors {'client_secret': [ErrorDetail(string='This field may not be null.', code='null')]}"
    ));
    ak.set_env("AK_STANDIN_TEST_SECRET", Some("from-authentik-env"));
    let (status, created) = create_instance(&ak, &bp);
    assert_eq!(status, 201, "{created}");
    apply_and_wait(&ak, created["pk"].as_str().unwrap());
    assert_eq!(
        ak.provider("affine").unwrap()["client_secret"],
        "from-authentik-env"
    );
}

#[test]
fn authentik_jwks_serves_the_real_public_half_of_the_signing_key() {
    use rsa::pkcs1v15::{SigningKey, VerifyingKey};
    use rsa::signature::{SignatureEncoding, Signer, Verifier};
    use rsa::traits::PublicKeyParts;

    let ak = AuthentikStandin::start(AuthentikOptions::new("2026.2.2"));
    let (_, created) = create_instance(&ak, &Bp::for_version("2026.2.2").yaml());
    apply_and_wait(&ak, created["pk"].as_str().unwrap());
    let jwks: Value = client()
        .get(format!("{}/application/o/affine/jwks/", ak.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let keys = jwks["keys"].as_array().expect("a keys list");
    assert_eq!(keys.len(), 1, "{jwks}");
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["e"], "AQAB");

    // The served n/e are the public half of the key the provider signs with: a signature
    // made with signing_key() verifies with a key rebuilt from the JWK alone.
    let (kid, private) = ak.signing_key("affine").expect("a signing key");
    assert_eq!(jwk["kid"], kid);
    let decode = |s: &Value| {
        let s = s.as_str().unwrap();
        let mut bits = 0u32;
        let mut acc = 0u32;
        let mut out = Vec::new();
        for c in s.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => panic!("not base64url: {s}"),
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        rsa::BigUint::from_bytes_be(&out)
    };
    let public = rsa::RsaPublicKey::new(decode(&jwk["n"]), decode(&jwk["e"])).unwrap();
    assert_eq!(public.n(), private.to_public_key().n());
    let signature = SigningKey::<sha2::Sha256>::new(private).sign(b"header.payload");
    VerifyingKey::<sha2::Sha256>::new(public)
        .verify(
            b"header.payload",
            &rsa::pkcs1v15::Signature::try_from(signature.to_bytes().as_ref()).unwrap(),
        )
        .expect("the JWKS key verifies what the signing key signed");
    assert!(jwk["x5c"][0].as_str().unwrap().starts_with("MII"), "{jwk}");

    // A provider without a signing key: no keys, and discovery announces HS256.
    let bare = AuthentikStandin::start(AuthentikOptions::new("2026.2.2"));
    let mut unsigned = ProviderState::new("AFFiNE");
    unsigned.signing_key = None;
    bare.add_provider("affine", unsigned);
    let discovery: Value = client()
        .get(format!(
            "{}/application/o/affine/.well-known/openid-configuration",
            bare.url()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["HS256"])
    );
    let doc: Value = client()
        .get(format!("{}/application/o/affine/jwks/", bare.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(doc, json!({}));
    assert!(bare.signing_key("affine").is_none());
    // Registered by hand with the defaults: signed with the shipped certificate.
    let signed = authentik_with_provider("2024.10.2");
    let doc = signed.jwks("affine").unwrap();
    assert_eq!(doc["keys"][0]["use"], "sig");
    assert_eq!(
        doc["keys"][0]["kid"].as_str().unwrap().len(),
        32,
        "2024.10's kid shape"
    );
}

// ------------------------------------------------------------------------------------------
// authentik: the OAuth2 server side and the browserless login (issue 8). In a module of its
// own so its helpers' names stay apart from the AFFiNE stand-in's tests.
// ------------------------------------------------------------------------------------------

mod authentik_login {
    use super::support::authentik_standin::{
        AuthentikOptions, AuthentikStandin, LoginUser, ProviderState,
    };
    use reqwest::blocking::Client;
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};
    use std::time::Duration;

    const CALLBACK: &str = "https://affine.example.com/oauth/callback";
    const VERIFIER: &str = "standin-pkce-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
    const PASSWORD: &str = "tester-password";

    fn http() -> Client {
        Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn b64url(data: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    fn unb64url(s: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    }

    /// An authentik of `version` with application `affine` (callback allowed strictly) and
    /// the user `tester`.
    fn idp(
        version: &str,
        tweak: impl FnOnce(&mut ProviderState),
    ) -> (AuthentikStandin, ProviderState) {
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        let mut p = ProviderState::new("AFFiNE");
        p.redirect_uris = vec![("strict".into(), CALLBACK.into())];
        tweak(&mut p);
        ak.add_provider("affine", p.clone());
        let mut user = LoginUser::new("tester", PASSWORD);
        user.email = "tester@example.com".into();
        user.name = "AFFiNE Tester".into();
        ak.add_user(user);
        (ak, p)
    }

    fn authorize_url(ak: &AuthentikStandin, client_id: &str, redirect_uri: &str) -> String {
        authorize_url_scoped(ak, client_id, redirect_uri, "openid profile email")
    }

    fn authorize_url_scoped(
        ak: &AuthentikStandin,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
    ) -> String {
        let challenge = b64url(&Sha256::digest(VERIFIER.as_bytes()));
        let mut url =
            reqwest::Url::parse(&format!("{}/application/o/authorize/", ak.url())).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", scope)
            .append_pair("state", "the-state")
            .append_pair("nonce", "the-nonce")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        url.to_string()
    }

    /// A browser without a browser: a cookie jar, each hop by hand.
    struct Browser {
        http: Client,
        base: String,
        cookies: Vec<(String, String)>,
        /// Every (method, path, status) on the way, for assertions on the route.
        hops: Vec<(String, String, u16)>,
    }

    struct Hop {
        status: u16,
        location: Option<String>,
        body: Value,
        text: String,
    }

    impl Browser {
        fn new(ak: &AuthentikStandin) -> Self {
            Browser {
                http: http(),
                base: ak.url(),
                cookies: Vec::new(),
                hops: Vec::new(),
            }
        }

        fn send(&mut self, method: &str, url: &str, body: Option<Value>) -> Hop {
            let url = if url.starts_with('/') {
                format!("{}{url}", self.base)
            } else {
                url.to_string()
            };
            let mut req = if method == "POST" {
                self.http.post(&url).json(&body.unwrap_or(Value::Null))
            } else {
                self.http.get(&url)
            };
            if !self.cookies.is_empty() {
                let jar: Vec<String> = self
                    .cookies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                req = req.header("Cookie", jar.join("; "));
            }
            let resp = req.send().unwrap();
            for v in resp.headers().get_all("set-cookie") {
                let (name, rest) = v.to_str().unwrap().split_once('=').unwrap();
                let value = rest.split(';').next().unwrap().to_string();
                self.cookies.retain(|(n, _)| n != name);
                self.cookies.push((name.to_string(), value));
            }
            let status = resp.status().as_u16();
            let location = resp
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_string());
            let path = url
                .trim_start_matches(&self.base)
                .split('?')
                .next()
                .unwrap()
                .to_string();
            self.hops.push((method.to_string(), path, status));
            let text = resp.text().unwrap();
            Hop {
                status,
                location,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
            }
        }

        fn has_cookie(&self, name: &str) -> bool {
            self.cookies.iter().any(|(n, _)| n == name)
        }
    }

    /// The executor URL of a flow interface page `/if/flow/<slug>/?<query>`.
    fn executor_of(page: &str) -> String {
        let (path, query) = page.split_once('?').unwrap_or((page, ""));
        let slug = path.trim_matches('/').split('/').nth(2).unwrap();
        let mut url =
            reqwest::Url::parse(&format!("http://x/api/v3/flows/executor/{slug}/")).unwrap();
        url.query_pairs_mut().append_pair("query", query);
        format!("{}?{}", url.path(), url.query().unwrap())
    }

    /// Follows redirects and answers identification and password like the recorder did,
    /// until the browser is sent to the callback (returned) or a challenge this walk does
    /// not answer comes (returned as the error).
    fn walk(b: &mut Browser, start: &str, username: &str, password: &str) -> Result<String, Value> {
        let mut next = start.to_string();
        let mut executor: Option<String> = None;
        let mut answer: Option<Value> = None;
        for _ in 0..30 {
            let hop = match answer.take() {
                Some(body) => b.send("POST", executor.as_deref().unwrap(), Some(body)),
                None => b.send("GET", &next, None),
            };
            if hop.status == 302 {
                let loc = hop.location.unwrap();
                if loc.starts_with(CALLBACK) {
                    return Ok(loc);
                }
                if loc.starts_with("/if/flow/") {
                    let e = executor_of(&loc);
                    executor = Some(e.clone());
                    next = e;
                } else {
                    next = loc;
                }
                continue;
            }
            assert_eq!(hop.status, 200, "{next}: {}", hop.text);
            match hop.body["component"].as_str().unwrap_or("") {
                "ak-stage-identification" => {
                    answer =
                        Some(json!({"component": "ak-stage-identification", "uid_field": username}))
                }
                "ak-stage-password" if hop.body.get("response_errors").is_none() => {
                    answer = Some(json!({"component": "ak-stage-password", "password": password}))
                }
                "xak-flow-redirect" => {
                    let to = hop.body["to"].as_str().unwrap().to_string();
                    if to.starts_with(CALLBACK) {
                        return Ok(to);
                    }
                    next = to;
                }
                _ => return Err(hop.body),
            }
        }
        panic!("no callback after 30 requests: {:?}", b.hops);
    }

    fn code_of(callback: &str) -> String {
        let url = reqwest::Url::parse(callback).unwrap();
        let q: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(
            q.contains(&("state".into(), "the-state".into())),
            "{callback}"
        );
        q.into_iter().find(|(k, _)| k == "code").unwrap().1
    }

    fn exchange(
        ak: &AuthentikStandin,
        p: &ProviderState,
        code: &str,
        verifier: &str,
    ) -> (u16, Value) {
        let resp = http()
            .post(format!("{}/application/o/token/", ak.url()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", CALLBACK),
                ("client_id", &p.client_id),
                ("client_secret", &p.client_secret),
                ("code_verifier", verifier),
            ])
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json().unwrap())
    }

    fn login_code(ak: &AuthentikStandin, p: &ProviderState) -> String {
        let mut b = Browser::new(ak);
        code_of(
            &walk(
                &mut b,
                &authorize_url(ak, &p.client_id, CALLBACK),
                "tester",
                PASSWORD,
            )
            .unwrap(),
        )
    }

    /// The id_token verified against the JWKS (RS256, issuer, audience) by jsonwebtoken.
    fn verified_claims(ak: &AuthentikStandin, p: &ProviderState, token: &str) -> Value {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
        let header = decode_header(token).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let jwks = ak.jwks("affine").unwrap();
        let key = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| {
                k["use"] == "sig" && Some(k["kid"].as_str().unwrap()) == header.kid.as_deref()
            })
            .expect("the header's kid is the JWKS signing key's");
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[&p.client_id]);
        v.set_issuer(&[format!("{}/application/o/affine/", ak.url())]);
        let key = DecodingKey::from_rsa_components(
            key["n"].as_str().unwrap(),
            key["e"].as_str().unwrap(),
        )
        .unwrap();
        decode::<Value>(token, &key, &v).unwrap().claims
    }

    fn userinfo(ak: &AuthentikStandin, token: &str) -> (u16, Value, Option<String>) {
        let resp = http()
            .get(format!("{}/application/o/userinfo/", ak.url()))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let www = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        (status, resp.json().unwrap_or(Value::Null), www)
    }

    #[test]
    fn a_login_walks_each_versions_recorded_route_to_a_signed_id_token() {
        for (version, verified, hops) in [("2024.10.2", true, 10), ("2026.2.2", false, 8)] {
            let (ak, p) = idp(version, |_| {});
            let mut b = Browser::new(&ak);
            let callback = walk(
                &mut b,
                &authorize_url(&ak, &p.client_id, CALLBACK),
                "tester",
                PASSWORD,
            )
            .unwrap();
            assert!(b.has_cookie("authentik_session"), "{version}");
            // The recorded route: 2024.10 via /flows/-/default/authentication/ and the
            // implicit consent flow's executor; 2026.2 straight to the callback.
            assert_eq!(b.hops.len(), hops, "{version}: {:?}", b.hops);
            let via_default = b
                .hops
                .iter()
                .any(|(_, p, _)| p == "/flows/-/default/authentication/");
            assert_eq!(
                via_default,
                version.starts_with("2024"),
                "{version}: {:?}",
                b.hops
            );
            let code = code_of(&callback);
            let (status, tokens) = exchange(&ak, &p, &code, VERIFIER);
            assert_eq!(status, 200, "{version}: {tokens}");
            assert_eq!(tokens["token_type"], "Bearer");
            assert_eq!(tokens["expires_in"], 3600);
            assert!(
                tokens.get("refresh_token").is_none(),
                "no offline_access asked"
            );
            assert_eq!(
                tokens.get("scope").is_some(),
                version.starts_with("2026"),
                "{version}"
            );
            let claims = verified_claims(&ak, &p, tokens["id_token"].as_str().unwrap());
            assert_eq!(claims["nonce"], "the-nonce");
            assert_eq!(claims["email"], "tester@example.com");
            // The managed email mapping: true before 2025.10, false since.
            assert_eq!(claims["email_verified"], json!(verified), "{version}");
            assert_eq!(claims["preferred_username"], "tester");
            assert_eq!(claims["amr"], json!(["pwd"]));
            let sub = ak.subject("affine", "tester").unwrap();
            assert_eq!(claims["sub"], sub);
            assert_eq!(sub.len(), 64, "a hex SHA-256: {sub}");
            // The access token is a JWT of the same key, with azp.
            let access = verified_claims(&ak, &p, tokens["access_token"].as_str().unwrap());
            assert_eq!(access["azp"], json!(p.client_id));
            let (status, info, _) = userinfo(&ak, tokens["access_token"].as_str().unwrap());
            assert_eq!(status, 200);
            assert_eq!(info["sub"], claims["sub"]);
            assert_eq!(info["email_verified"], json!(verified));
            assert_eq!(info["nonce"], "the-nonce");
            // A code works once.
            let (status, again) = exchange(&ak, &p, &code, VERIFIER);
            assert_eq!(
                (status, again["error"].as_str()),
                (400, Some("invalid_grant"))
            );
        }
    }

    #[test]
    fn the_token_endpoint_refuses_as_recorded_and_a_wrong_secret_keeps_the_code() {
        let (ak, p) = idp("2026.2.2", |_| {});
        let code = login_code(&ak, &p);
        let token = |pairs: &[(&str, &str)], basic: Option<(&str, &str)>| {
            let mut req = http()
                .post(format!("{}/application/o/token/", ak.url()))
                .form(pairs);
            if let Some((id, secret)) = basic {
                req = req.basic_auth(id, Some(secret));
            }
            let resp = req.send().unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().unwrap();
            (
                status,
                body["error"].as_str().unwrap_or("").to_string(),
                body,
            )
        };
        let base = |code: &str, secret: &str| {
            vec![
                ("grant_type", "authorization_code".to_string()),
                ("code", code.to_string()),
                ("redirect_uri", CALLBACK.to_string()),
                ("client_id", p.client_id.clone()),
                ("client_secret", secret.to_string()),
                ("code_verifier", VERIFIER.to_string()),
            ]
        };
        let as_refs = |v: &[(&'static str, String)]| {
            v.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
        };
        let send = |v: Vec<(&'static str, String)>| {
            let pairs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token(&pairs, None)
        };
        let (s, e, body) = send(base(&code, "wrong-secret"));
        assert_eq!((s, e.as_str()), (400, "invalid_client"));
        assert!(
            body["request_id"].is_string(),
            "2026's error bodies carry request_id"
        );
        let mut wrong_redirect = base(&code, &p.client_secret);
        wrong_redirect[2].1 = "https://affine.example.com/other/callback".into();
        assert_eq!(send(wrong_redirect).1, "invalid_client");
        let mut no_verifier = base(&code, &p.client_secret);
        no_verifier.pop();
        assert_eq!(send(no_verifier).1, "invalid_grant");
        let mut wrong_verifier = base(&code, &p.client_secret);
        wrong_verifier[5].1 = "wrong-verifier-0123456789abcdefghijklmnopqrstuvwxyz0123".into();
        assert_eq!(send(wrong_verifier).1, "invalid_grant");
        assert_eq!(
            send(base("not-a-real-code", &p.client_secret)).1,
            "invalid_grant"
        );
        assert_eq!(
            send(base("not-a-real-code", "wrong-secret")).1,
            "invalid_client"
        );
        // None of those burnt the code.
        let (s, _, body) = send(base(&code, &p.client_secret));
        assert_eq!(s, 200, "{body}");
        // client_secret_basic.
        let basic_pairs = as_refs(&base("not-a-real-code", "")[..3]);
        let pairs: Vec<(&str, &str)> = basic_pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            token(&pairs, Some((&p.client_id, "wrong-secret"))).1,
            "invalid_client"
        );
        assert_eq!(
            token(&pairs, Some((&p.client_id, &p.client_secret))).1,
            "invalid_grant"
        );
        // client_credentials: wrong secret invalid_grant; right secret a token and a
        // service account; an unknown client invalid_client.
        let cc = |id: &str, secret: &str| {
            token(
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", id),
                    ("client_secret", secret),
                    ("scope", "openid"),
                ],
                None,
            )
        };
        assert_eq!(cc(&p.client_id, "wrong-secret").1, "invalid_grant");
        assert!(ak.user("ak-AFFiNE-client_credentials").is_none());
        let (s, _, body) = cc(&p.client_id, &p.client_secret);
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["scope"], "openid");
        let account = ak
            .user("ak-AFFiNE-client_credentials")
            .expect("the service account");
        assert_eq!(account["type"], "internal_service_account");
        assert_eq!(cc("no-such-client", "x").1, "invalid_client");
        // Userinfo with a made-up token: 401, empty, WWW-Authenticate.
        let (status, body, www) = userinfo(&ak, "not-an-access-token");
        assert_eq!((status, body), (401, Value::Null));
        assert!(www.unwrap().starts_with("error=\"invalid_token\""));
    }

    #[test]
    fn authorize_refuses_unknown_clients_and_redirect_uris_with_a_page() {
        for version in ["2024.10.2", "2026.2.2"] {
            let (ak, p) = idp(version, |_| {});
            let mut b = Browser::new(&ak);
            let page = b.send("GET", &authorize_url(&ak, "no-such-client", CALLBACK), None);
            assert_eq!(page.status, 400);
            assert!(page.text.contains("Client ID Error"), "{}", page.text);
            let evil = "https://evil.example.com/oauth/callback";
            let page = b.send("GET", &authorize_url(&ak, &p.client_id, evil), None);
            assert_eq!(page.status, 400);
            assert!(page.text.contains("Redirect URI Error"), "{}", page.text);
            // Also with a session.
            walk(
                &mut b,
                &authorize_url(&ak, &p.client_id, CALLBACK),
                "tester",
                PASSWORD,
            )
            .unwrap();
            let page = b.send("GET", &authorize_url(&ak, &p.client_id, evil), None);
            assert!(page.text.contains("Redirect URI Error"), "{version}");
        }
    }

    #[test]
    fn redirect_uris_match_strictly_by_regex_and_as_the_old_string_of_regexes() {
        let (ak, p) = idp("2026.2.2", |p| {
            p.redirect_uris = vec![("regex".into(), r"https://affine\.example\.com/.*".into())];
        });
        let mut b = Browser::new(&ak);
        let other = "https://affine.example.com/oauth/callback2";
        let hop = b.send("GET", &authorize_url(&ak, &p.client_id, other), None);
        assert_eq!(hop.status, 302, "the regex matches");
        let hop = b.send(
            "GET",
            &authorize_url(&ak, &p.client_id, "https://affine.example.com.evil/x"),
            None,
        );
        assert_eq!(hop.status, 400, "a regex must match the whole URI");
        // 2024.6: a newline-separated string of regexes.
        let (old, p) = idp("2024.6.4", |p| {
            p.redirect_uris = vec![
                ("regex".into(), r"https://other\.example\.com/cb".into()),
                (
                    "regex".into(),
                    r"https://affine\.example\.com/oauth/callback".into(),
                ),
            ];
        });
        assert!(old.provider("affine").unwrap()["redirect_uris"].is_string());
        let mut b = Browser::new(&old);
        let cb = walk(
            &mut b,
            &authorize_url(&old, &p.client_id, CALLBACK),
            "tester",
            PASSWORD,
        );
        assert!(cb.is_ok(), "{cb:?}");
        let hop = b.send(
            "GET",
            &authorize_url(
                &old,
                &p.client_id,
                "https://affine.example.com/oauth/callbackx",
            ),
            None,
        );
        assert_eq!(hop.status, 400);
        // No redirect URIs: the first one used is saved (strict) and then the only one.
        let (ak, p) = idp("2026.2.2", |p| p.redirect_uris.clear());
        let mut b = Browser::new(&ak);
        walk(
            &mut b,
            &authorize_url(&ak, &p.client_id, CALLBACK),
            "tester",
            PASSWORD,
        )
        .unwrap();
        assert_eq!(
            ak.provider("affine").unwrap()["redirect_uris"],
            json!([{"matching_mode": "strict", "url": CALLBACK}])
        );
        let hop = b.send("GET", &authorize_url(&ak, &p.client_id, other), None);
        assert_eq!(hop.status, 400);
    }

    #[test]
    fn a_wrong_password_an_unknown_user_and_an_inactive_one_fail_at_the_password() {
        let (ak, p) = idp("2026.2.2", |_| {});
        let mut off = LoginUser::new("gone", "gone-password");
        off.active = false;
        ak.add_user(off);
        for (user, password) in [
            ("tester", "wrong"),
            ("nobody", "x"),
            ("gone", "gone-password"),
        ] {
            let mut b = Browser::new(&ak);
            let err = walk(
                &mut b,
                &authorize_url(&ak, &p.client_id, CALLBACK),
                user,
                password,
            )
            .unwrap_err();
            assert_eq!(err["component"], "ak-stage-password", "{user}");
            assert_eq!(
                err["response_errors"],
                json!({"password": [{"string": "Invalid password", "code": "invalid"}]}),
                "{user}"
            );
        }
        // By e-mail too.
        let mut b = Browser::new(&ak);
        assert!(walk(
            &mut b,
            &authorize_url(&ak, &p.client_id, CALLBACK),
            "tester@example.com",
            PASSWORD
        )
        .is_ok());
    }

    #[test]
    fn an_mfa_user_meets_the_authenticator_validation_stage() {
        let (ak, p) = idp("2026.2.2", |_| {});
        let mut u = LoginUser::new("secure", "secure-password");
        u.mfa = true;
        ak.add_user(u);
        let mut b = Browser::new(&ak);
        let err = walk(
            &mut b,
            &authorize_url(&ak, &p.client_id, CALLBACK),
            "secure",
            "secure-password",
        )
        .unwrap_err();
        assert_eq!(err["component"], "ak-stage-authenticator-validate");
        assert_eq!(err["device_challenges"][0]["device_class"], "totp");
    }

    #[test]
    fn explicit_consent_asks_with_a_token_to_post_back() {
        for version in ["2024.10.2", "2026.2.2"] {
            let (ak, p) = idp(version, |p| {
                p.authorization_flow = "default-provider-authorization-explicit-consent".into()
            });
            let mut b = Browser::new(&ak);
            let consent = walk(
                &mut b,
                &authorize_url(&ak, &p.client_id, CALLBACK),
                "tester",
                PASSWORD,
            )
            .unwrap_err();
            assert_eq!(consent["component"], "ak-stage-consent", "{version}");
            let token = consent["token"].as_str().unwrap().to_string();
            let executor = b
                .hops
                .iter()
                .rev()
                .find(|(_, path, _)| path.contains("explicit-consent"))
                .unwrap()
                .1
                .clone();
            assert!(executor.starts_with("/api/v3/flows/executor/"));
            // Answer it on the executor URL the walk last used (with its query).
            let page = format!(
                "/if/flow/default-provider-authorization-explicit-consent/?{}",
                reqwest::Url::parse(&authorize_url(&ak, &p.client_id, CALLBACK))
                    .unwrap()
                    .query()
                    .unwrap()
            );
            let url = executor_of(&page);
            let wrong = b.send(
                "POST",
                &url,
                Some(json!({"component": "ak-stage-consent", "token": "forged"})),
            );
            assert!(
                wrong.body["response_errors"]["token"].is_array(),
                "{}",
                wrong.text
            );
            let token = wrong.body["token"].as_str().unwrap_or(&token).to_string();
            let ok = b.send(
                "POST",
                &url,
                Some(json!({"component": "ak-stage-consent", "token": token})),
            );
            assert_eq!(ok.status, 302, "{}", ok.text);
            let done = b.send("GET", &url, None);
            assert_eq!(done.body["component"], "xak-flow-redirect", "{}", done.text);
            let code = code_of(done.body["to"].as_str().unwrap());
            assert_eq!(exchange(&ak, &p, &code, VERIFIER).0, 200);
        }
    }

    #[test]
    fn an_encryption_key_makes_both_tokens_jwes_and_no_signing_key_hs256() {
        let (ak, p) = idp("2026.2.2", |p| {
            p.encryption_key = Some("authentik Self-signed Certificate".into())
        });
        let code = login_code(&ak, &p);
        let (_, tokens) = exchange(&ak, &p, &code, VERIFIER);
        for name in ["id_token", "access_token"] {
            let t = tokens[name].as_str().unwrap();
            let parts: Vec<&str> = t.split('.').collect();
            assert_eq!(parts.len(), 5, "{name} is a JWE");
            let header: Value = serde_json::from_slice(&unb64url(parts[0])).unwrap();
            assert_eq!(header["alg"], "RSA-OAEP-256");
            assert_eq!(header["enc"], "A256CBC-HS512");
            assert_eq!(header["typ"], "JWE");
        }
        // It is a real one: the content key unwraps with the private key.
        let (_, key) = ak.signing_key("affine").unwrap();
        let parts: Vec<&str> = tokens["id_token"].as_str().unwrap().split('.').collect();
        let cek = key
            .decrypt(rsa::Oaep::new::<Sha256>(), &unb64url(parts[1]))
            .unwrap();
        assert_eq!(cek.len(), 64);
        assert!(ak.jwks("affine").unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["use"] == "enc"));
        let (status, info, _) = userinfo(&ak, tokens["access_token"].as_str().unwrap());
        assert_eq!(
            (status, info["email"].as_str()),
            (200, Some("tester@example.com"))
        );

        let (ak, p) = idp("2026.2.2", |p| p.signing_key = None);
        let code = login_code(&ak, &p);
        let (_, tokens) = exchange(&ak, &p, &code, VERIFIER);
        use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[&p.client_id]);
        let claims = decode::<Value>(
            tokens["id_token"].as_str().unwrap(),
            &DecodingKey::from_secret(p.client_secret.as_bytes()),
            &v,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["nonce"], "the-nonce");
    }

    #[test]
    fn email_verified_follows_the_providers_email_mapping() {
        let (ak, p) = idp("2026.2.2", |_| {});
        let mut u = LoginUser::new("checked", "checked-password");
        u.attributes = json!({"email_verified": true});
        ak.add_user(u);
        // The blueprint's mapping forms: True, and the user's attribute.
        let auth = format!("Bearer {}", ak.token());
        let mut pks = Vec::new();
        for (name, value) in [
            ("always", "True"),
            (
                "attribute",
                "bool(request.user.attributes.get(\"email_verified\", False))",
            ),
        ] {
            let created: Value = http()
                .post(format!("{}/api/v3/propertymappings/provider/scope/", ak.url()))
                .header("Authorization", &auth)
                .json(&json!({
                    "name": name,
                    "scope_name": "email",
                    "expression": format!("return {{\n    \"email\": request.user.email,\n    \"email_verified\": {value},\n}}\n"),
                }))
                .send()
                .unwrap()
                .json()
                .unwrap();
            pks.push(created["pk"].clone());
        }
        let provider = ak.provider("affine").unwrap();
        // ProviderState::new's mappings: openid, email, profile (managed).
        let managed: Vec<Value> = provider["property_mappings"].as_array().unwrap().clone();
        assert_eq!(managed.len(), 3);
        // The user without the attribute gets false from the attribute mapping.
        for (user, password, expected) in [
            ("tester", PASSWORD, [true, false]),
            ("checked", "checked-password", [true, true]),
        ] {
            for (pk, expected) in pks.iter().zip(expected) {
                // openid, profile and the custom email mapping in place of the managed one.
                let mappings = json!([managed[0], managed[2], pk]);
                assert!(ak.set_provider_fields("affine", json!({"property_mappings": mappings})));
                let mut b = Browser::new(&ak);
                let code = code_of(
                    &walk(
                        &mut b,
                        &authorize_url(&ak, &p.client_id, CALLBACK),
                        user,
                        password,
                    )
                    .unwrap(),
                );
                let (_, tokens) = exchange(&ak, &p, &code, VERIFIER);
                let claims = verified_claims(&ak, &p, tokens["id_token"].as_str().unwrap());
                assert_eq!(claims["email_verified"], json!(expected), "{user} {pk}");
                let (_, info, _) = userinfo(&ak, tokens["access_token"].as_str().unwrap());
                assert_eq!(info["email_verified"], json!(expected), "{user} {pk}");
            }
        }
    }

    #[test]
    fn a_2026_8_provider_without_the_code_grant_is_refused_at_authorize() {
        let (ak, p) = idp("2026.8.0", |p| p.grant_types = vec!["refresh_token".into()]);
        let mut b = Browser::new(&ak);
        let hop = b.send("GET", &authorize_url(&ak, &p.client_id, CALLBACK), None);
        assert_eq!(hop.status, 302);
        let location = hop.location.unwrap();
        // authentik's check_grant: AuthorizeError("invalid_request"), to the callback.
        assert!(
            location.starts_with(&format!("{CALLBACK}?error=invalid_request")),
            "{location}"
        );
        assert!(location.ends_with("&state=the-state"), "{location}");
        // The token endpoint refuses a grant the provider does not list.
        let (status, body) = form_token(
            &ak,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &p.client_id),
                ("client_secret", &p.client_secret),
            ],
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }

    fn form_token(ak: &AuthentikStandin, pairs: &[(&str, &str)]) -> (u16, Value) {
        let resp = http()
            .post(format!("{}/application/o/token/", ak.url()))
            .form(pairs)
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json().unwrap())
    }

    #[test]
    fn codes_expire_and_belong_to_their_client() {
        let (ak, p) = idp("2026.2.2", |_| {});
        let mut other = ProviderState::new("Other");
        other.redirect_uris = vec![("strict".into(), CALLBACK.into())];
        ak.add_provider("other", other.clone());
        let code = login_code(&ak, &p);
        // Another client's secret and id with this client's code.
        let (status, body) = form_token(
            &ak,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CALLBACK),
                ("client_id", &other.client_id),
                ("client_secret", &other.client_secret),
                ("code_verifier", VERIFIER),
            ],
        );
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(
            exchange(&ak, &p, &code, VERIFIER).0,
            200,
            "still the right client's"
        );
        // access_code_validity: a code past it is invalid_grant.
        assert!(
            ak.set_provider_fields("affine", json!({"access_code_validity": "milliseconds=50"}))
        );
        let code = login_code(&ak, &p);
        std::thread::sleep(Duration::from_millis(80));
        let (status, body) = exchange(&ak, &p, &code, VERIFIER);
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }

    #[test]
    fn offline_access_brings_a_refresh_token_that_works_once() {
        let (ak, p) = idp("2026.2.2", |p| {
            p.scope_mappings
                .push("goauthentik.io/providers/oauth2/scope-offline_access".into())
        });
        let mut b = Browser::new(&ak);
        let url = authorize_url_scoped(&ak, &p.client_id, CALLBACK, "openid email offline_access");
        let code = code_of(&walk(&mut b, &url, "tester", PASSWORD).unwrap());
        let (status, tokens) = exchange(&ak, &p, &code, VERIFIER);
        assert_eq!(status, 200, "{tokens}");
        let refresh = tokens["refresh_token"]
            .as_str()
            .expect("a refresh token")
            .to_string();
        let claims = verified_claims(&ak, &p, tokens["id_token"].as_str().unwrap());
        assert!(
            claims.get("preferred_username").is_none(),
            "no profile scope asked"
        );
        let refresh_with = |token: &str| {
            form_token(
                &ak,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token),
                    ("client_id", &p.client_id),
                    ("client_secret", &p.client_secret),
                ],
            )
        };
        let (status, again) = refresh_with(&refresh);
        assert_eq!(status, 200, "{again}");
        assert_eq!(
            verified_claims(&ak, &p, again["id_token"].as_str().unwrap())["sub"],
            claims["sub"]
        );
        assert_eq!(
            refresh_with(&refresh).1["error"],
            "invalid_grant",
            "rotated"
        );
    }

    #[test]
    fn sub_follows_the_providers_sub_mode() {
        let (ak, p) = idp("2026.2.2", |p| p.sub_mode = "user_email".into());
        let code = login_code(&ak, &p);
        let (_, tokens) = exchange(&ak, &p, &code, VERIFIER);
        let claims = verified_claims(&ak, &p, tokens["id_token"].as_str().unwrap());
        assert_eq!(claims["sub"], "tester@example.com");
        assert_eq!(
            ak.subject("affine", "tester").unwrap(),
            "tester@example.com"
        );
    }

    /// The project's own browserless login (what `verify --login` runs) against the
    /// stand-in: the callback for both recorded routes and consent, and its failures named.
    #[test]
    fn the_projects_browser_login_reaches_the_callback_and_names_what_stops_it() {
        use affine_authentik::authentik::browser_login::BrowserLogin;
        use affine_authentik::secret::Secret;
        let client = http();
        for (version, flow) in [
            (
                "2024.10.2",
                "default-provider-authorization-implicit-consent",
            ),
            (
                "2026.2.2",
                "default-provider-authorization-implicit-consent",
            ),
            (
                "2026.2.2",
                "default-provider-authorization-explicit-consent",
            ),
        ] {
            let (ak, p) = idp(version, |p| p.authorization_flow = flow.into());
            let password = Secret::new(PASSWORD);
            let callback = BrowserLogin::new(&client, CALLBACK, "tester", &password)
                .run(&authorize_url(&ak, &p.client_id, CALLBACK))
                .unwrap_or_else(|f| panic!("{version} {flow}: {f:?}"));
            assert_eq!(callback.state, "the-state");
            assert_eq!(exchange(&ak, &p, callback.code.expose(), VERIFIER).0, 200);
        }
        let (ak, p) = idp("2026.2.2", |_| {});
        let wrong = Secret::new("wrong");
        let failure = BrowserLogin::new(&client, CALLBACK, "tester", &wrong)
            .run(&authorize_url(&ak, &p.client_id, CALLBACK))
            .err()
            .expect("a wrong password fails");
        assert!(failure.detail.contains("Invalid password"), "{failure:?}");
        let mut u = LoginUser::new("secure", "secure-password");
        u.mfa = true;
        ak.add_user(u);
        let password = Secret::new("secure-password");
        let failure = BrowserLogin::new(&client, CALLBACK, "secure", &password)
            .run(&authorize_url(&ak, &p.client_id, CALLBACK))
            .err()
            .expect("MFA stops it");
        assert!(
            failure.detail.contains("ak-stage-authenticator-validate"),
            "{failure:?}"
        );
        let failure = BrowserLogin::new(&client, CALLBACK, "tester", &password)
            .run(&authorize_url(
                &ak,
                &p.client_id,
                "https://evil.example.com/cb",
            ))
            .err()
            .expect("a refused redirect URI");
        assert!(failure.detail.contains("Redirect URI Error"), "{failure:?}");
    }

    #[test]
    fn a_scope_mapping_the_stand_in_cannot_read_is_its_error_not_a_guess() {
        let (ak, p) = idp("2026.2.2", |_| {});
        let created: Value = http()
            .post(format!(
                "{}/api/v3/propertymappings/provider/scope/",
                ak.url()
            ))
            .header("Authorization", format!("Bearer {}", ak.token()))
            .json(&json!({
                "name": "lowered",
                "scope_name": "email",
                "expression": "return {\"email\": request.user.email.lower()}",
            }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let managed = ak.provider("affine").unwrap()["property_mappings"].clone();
        let mappings = json!([managed[0], managed[2], created["pk"]]);
        assert!(ak.set_provider_fields("affine", json!({ "property_mappings": mappings })));
        let code = login_code(&ak, &p);
        let resp = http()
            .post(format!("{}/application/o/token/", ak.url()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", CALLBACK),
                ("client_id", p.client_id.as_str()),
                ("client_secret", p.client_secret.as_str()),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 500);
        let text = resp.text().unwrap();
        assert!(text.contains("request.user.email.lower()"), "{text}");
    }
}

// ==========================================================================================
// AFFiNE: the OIDC login (preflight → callback → session), against a small in-test IdP
// (its own RSA key, real RS256 signatures). Kept in its own module so the authentik tests
// added above stay apart.
// ==========================================================================================

mod affine_login {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    use rsa::RsaPrivateKey;
    use serde_json::Map;
    use sha2::Sha256;
    use support::http_standin::{
        base64url, parse_query, HttpServer, Request as IdpRequest, Response as IdpResponse, Service,
    };

    const CLIENT_ID: &str = "affine-client";
    const CLIENT_SECRET: &str = "s3cret-VALUE";
    const ACCESS_TOKEN: &str = "at-SECRET-1";

    /// The IdP's signing key and a second key AFFiNE does not know (made once per run).
    fn keys() -> &'static (RsaPrivateKey, RsaPrivateKey) {
        static KEYS: OnceLock<(RsaPrivateKey, RsaPrivateKey)> = OnceLock::new();
        KEYS.get_or_init(|| {
            let mut rng = rand::thread_rng();
            (
                RsaPrivateKey::new(&mut rng, 2048).unwrap(),
                RsaPrivateKey::new(&mut rng, 2048).unwrap(),
            )
        })
    }

    /// How the IdP signs its id_token.
    #[derive(Clone, Copy, PartialEq)]
    enum Sig {
        /// RS256 with the key its JWKS publishes.
        Rs256,
        /// RS256 with a key the JWKS does not hold (same `kid`).
        OtherKey,
        /// HS256 with the client secret (authentik without a signing key).
        Hs256,
        /// A five-part JWE (authentik with an encryption key).
        Jwe,
    }

    #[derive(Clone)]
    struct IdpConfig {
        client_secret: String,
        sig: Sig,
        /// The nonce the id_token carries; `None` = the one AFFiNE sent (set by `expect`).
        nonce: Option<String>,
        expected_nonce: String,
        /// Claims put into (or, as null, taken out of) the id_token.
        id_claims: Map<String, Value>,
        userinfo: Value,
        refresh_token: bool,
        id_token: bool,
    }

    struct MiniIdp {
        base: String,
        cfg: Mutex<IdpConfig>,
        /// Token request forms, as received.
        forms: Mutex<Vec<HashMap<String, String>>>,
    }

    impl MiniIdp {
        fn id_token(&self, cfg: &IdpConfig) -> String {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut claims = json!({
                "iss": self.base, "aud": CLIENT_ID, "sub": "sub-1", "iat": now, "exp": now + 300,
                "nonce": cfg.nonce.clone().unwrap_or_else(|| cfg.expected_nonce.clone()),
                "email": "oidc.user@example.com", "email_verified": true, "name": "OIDC User",
            });
            for (k, v) in &cfg.id_claims {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(k);
                } else {
                    claims[k] = v.clone();
                }
            }
            let (main, other) = keys();
            let rsa_key =
                |k: &RsaPrivateKey| EncodingKey::from_rsa_der(k.to_pkcs1_der().unwrap().as_bytes());
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("k1".into());
            match cfg.sig {
                Sig::Rs256 => jsonwebtoken::encode(&header, &claims, &rsa_key(main)).unwrap(),
                Sig::OtherKey => jsonwebtoken::encode(&header, &claims, &rsa_key(other)).unwrap(),
                Sig::Hs256 => jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &claims,
                    &EncodingKey::from_secret(cfg.client_secret.as_bytes()),
                )
                .unwrap(),
                Sig::Jwe => {
                    let head = json!({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512", "typ": "JWE", "kid": "k1"});
                    let part = |s: &str| base64url(s.as_bytes());
                    format!(
                        "{}.{}.{}.{}.{}",
                        part(&head.to_string()),
                        part("encrypted-key"),
                        part("iv"),
                        part("ciphertext"),
                        part("tag")
                    )
                }
            }
        }
    }

    impl Service for MiniIdp {
        fn handle(&self, req: &IdpRequest) -> IdpResponse {
            let cfg = self.cfg.lock().unwrap().clone();
            match (req.method.as_str(), req.path_only()) {
                ("GET", "/.well-known/openid-configuration") => IdpResponse::json(
                    200,
                    &json!({
                        "issuer": self.base,
                        "authorization_endpoint": format!("{}/authorize", self.base),
                        "token_endpoint": format!("{}/token", self.base),
                        "userinfo_endpoint": format!("{}/userinfo", self.base),
                        "jwks_uri": format!("{}/jwks", self.base),
                    }),
                ),
                ("GET", "/jwks") => {
                    let public = keys().0.to_public_key();
                    IdpResponse::json(
                        200,
                        &json!({"keys": [{
                            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
                            "n": base64url(&public.n().to_bytes_be()),
                            "e": base64url(&public.e().to_bytes_be()),
                        }]}),
                    )
                }
                ("POST", "/token") => {
                    let form: HashMap<String, String> =
                        parse_query(&req.body_str()).into_iter().collect();
                    self.forms.lock().unwrap().push(form.clone());
                    if form.get("client_secret") != Some(&cfg.client_secret) {
                        return IdpResponse::json(
                            400,
                            &json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
                        );
                    }
                    let mut body = json!({"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300});
                    if cfg.refresh_token {
                        body["refresh_token"] = json!("rt-SECRET-1");
                    }
                    if cfg.id_token {
                        body["id_token"] = json!(self.id_token(&cfg));
                    }
                    IdpResponse::json(200, &body)
                }
                ("GET", "/userinfo") => {
                    if req.header("authorization") != Some(&format!("Bearer {ACCESS_TOKEN}")) {
                        return IdpResponse::empty(401)
                            .with_header("WWW-Authenticate", "error=\"invalid_token\"");
                    }
                    IdpResponse::json(200, &cfg.userinfo)
                }
                _ => IdpResponse::text(404, "not found"),
            }
        }
    }

    struct Idp {
        _server: HttpServer,
        idp: Arc<MiniIdp>,
    }

    impl Idp {
        fn start() -> Idp {
            let (server, idp) = HttpServer::start(0, |url| {
                Arc::new(MiniIdp {
                    base: url.to_string(),
                    cfg: Mutex::new(IdpConfig {
                        client_secret: CLIENT_SECRET.into(),
                        sig: Sig::Rs256,
                        nonce: None,
                        expected_nonce: String::new(),
                        id_claims: Map::new(),
                        userinfo: json!({
                            "sub": "sub-1", "email": "oidc.user@example.com", "email_verified": true,
                            "name": "OIDC User", "preferred_username": "oidc.user",
                        }),
                        refresh_token: false,
                        id_token: true,
                    }),
                    forms: Mutex::new(Vec::new()),
                })
            });
            Idp {
                _server: server,
                idp,
            }
        }
        fn url(&self) -> String {
            self.idp.base.clone()
        }
        fn set(&self, f: impl FnOnce(&mut IdpConfig)) {
            f(&mut self.idp.cfg.lock().unwrap());
        }
        fn forms(&self) -> Vec<HashMap<String, String>> {
            self.idp.forms.lock().unwrap().clone()
        }
    }

    /// A stand-in AFFiNE of `version` with OIDC registered against `idp` (loopback, so the
    /// 0.27 private-address guard is off).
    fn affine_for(
        version: &str,
        idp: &Idp,
        tweak: impl FnOnce(&mut AffineOptions),
    ) -> AffineStandin {
        let mut opts = AffineOptions::new(version);
        opts.ssrf_guard = Some(false);
        tweak(&mut opts);
        let affine = AffineStandin::start(opts);
        let (status, body) = write_oidc(&affine, oidc_value(&idp.url()));
        assert_eq!(status, 200, "{body}");
        assert!(
            eventually(Duration::from_secs(5), || affine.oidc_registered()),
            "{:?}",
            affine.discovery_attempts()
        );
        affine
    }

    /// The preflight's authorize URL query, with the client nonce `n` (or none).
    fn preflight(affine: &AffineStandin, client_nonce: Option<&str>) -> HashMap<String, String> {
        let mut body = json!({"provider": "OIDC"});
        if let Some(n) = client_nonce {
            body["client_nonce"] = json!(n);
        }
        let resp = client()
            .post(format!("{}/api/oauth/preflight", affine.url()))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let url =
            reqwest::Url::parse(resp.json::<Value>().unwrap()["url"].as_str().unwrap()).unwrap();
        url.query_pairs().into_owned().collect()
    }

    fn callback(affine: &AffineStandin, body: Value) -> (u16, Value, Vec<String>) {
        let resp = client()
            .post(format!("{}/api/oauth/callback", affine.url()))
            .json(&body)
            .send()
            .unwrap();
        let cookies = set_cookies(&resp);
        (resp.status().as_u16(), resp.json().unwrap(), cookies)
    }

    /// A whole login as AFFiNE's web page does it: preflight, (the IdP's redirect back with a
    /// code,) then the callback with the JSON `state` and the same client nonce.
    fn login(affine: &AffineStandin, idp: &Idp) -> (u16, Value, Vec<String>) {
        let q = preflight(affine, Some("client-nonce-1"));
        let state: Value = serde_json::from_str(&q["state"]).unwrap();
        idp.set(|c| c.expected_nonce = state["state"].as_str().unwrap().to_string());
        callback(
            affine,
            json!({"code": "code-1", "state": q["state"], "client_nonce": "client-nonce-1"}),
        )
    }

    fn session_of(cookies: &[String]) -> String {
        cookies
            .iter()
            .find_map(|c| c.strip_prefix("affine_session="))
            .and_then(|c| c.split(';').next())
            .expect("an affine_session cookie")
            .to_string()
    }

    fn current_user(affine: &AffineStandin, cookie: Option<&str>) -> Value {
        let mut req = client()
            .post(format!("{}/graphql", affine.url()))
            .json(&json!({"query": "query { currentUser { id email name } }"}));
        if let Some(sid) = cookie {
            req = req.header("Cookie", format!("affine_session={sid}"));
        }
        req.send().unwrap().json::<Value>().unwrap()["data"]["currentUser"].clone()
    }

    /// Asserts AFFiNE's REST error: status, name and message.
    fn assert_error(got: &(u16, Value, Vec<String>), status: u16, name: &str, message: &str) {
        let (s, body, cookies) = got;
        assert_eq!(
            (*s, body["name"].as_str().unwrap_or("")),
            (status, name),
            "{body}"
        );
        assert_eq!(body["status"], json!(status), "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(message),
            "{body}"
        );
        assert!(cookies.is_empty(), "no session on a refused login");
    }

    /// One way to break the IdP's answer.
    type IdpFault = Box<dyn Fn(&mut IdpConfig)>;

    const INVALID_AUTH_STATE: &str =
        "Invalid auth state. You might start the auth progress from another device.";

    #[test]
    fn affine_0_25_7_login_creates_the_user_and_a_session_that_currentuser_and_sign_out_see() {
        let idp = Idp::start();
        let affine = affine_for("0.25.7", &idp, |_| {});
        let q = preflight(&affine, Some("client-nonce-1"));
        let state: Value = serde_json::from_str(&q["state"]).unwrap();
        let state_id = state["state"].as_str().unwrap();
        assert_eq!(state_id.len(), 36);
        assert_eq!(q["nonce"], state_id, "AFFiNE's nonce is its state id");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            state["pkce"]["codeChallenge"].as_str(),
            Some(q["code_challenge"].as_str())
        );
        assert_eq!(q["scope"], "openid profile email");
        assert!(!q.contains_key("code_verifier"));

        idp.set(|c| c.expected_nonce = state_id.to_string());
        let (status, body, cookies) = callback(
            &affine,
            json!({"code": "code-1", "state": q["state"], "client_nonce": "client-nonce-1"}),
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.get("redirectUri").is_none(), "{body}");

        // The token request AFFiNE made, its PKCE verifier matching the challenge it sent.
        let form = &idp.forms()[0];
        assert_eq!(form["grant_type"], "authorization_code");
        assert_eq!(form["code"], "code-1");
        assert_eq!(
            (form["client_id"].as_str(), form["client_secret"].as_str()),
            (CLIENT_ID, CLIENT_SECRET)
        );
        assert_eq!(
            form["redirect_uri"],
            format!("{}/oauth/callback", affine.url())
        );
        assert_eq!(
            base64url(&Sha256::digest(form["code_verifier"].as_bytes())),
            q["code_challenge"]
        );

        let users = affine.users();
        let user = users
            .iter()
            .find(|u| u.email == "oidc.user@example.com")
            .unwrap();
        assert!(user.created_by_oidc && !user.admin);
        assert_eq!(user.name, "OIDC User");
        assert_eq!(body["id"], json!(user.id));
        let accounts = affine.connected_accounts();
        assert_eq!(accounts.len(), 1);
        assert_eq!(
            (
                accounts[0].provider.as_str(),
                accounts[0].provider_account_id.as_str()
            ),
            ("OIDC", "sub-1")
        );
        assert_eq!(accounts[0].user_id, user.id);

        let sid = session_of(&cookies);
        assert!(cookies
            .iter()
            .any(|c| c.starts_with(&format!("affine_user_id={}", user.id))));
        let me = current_user(&affine, Some(&sid));
        assert_eq!(
            me,
            json!({"id": user.id, "email": "oidc.user@example.com", "name": "OIDC User"})
        );
        let (_, bearer_me) = gql(
            &affine.url(),
            Some(&sid),
            "query { currentUser { email } }",
            json!({}),
        );
        assert_eq!(
            bearer_me["data"]["currentUser"]["email"],
            "oidc.user@example.com"
        );

        // A second login finds the connected account: no new user, no new account.
        let (status, again, _) = login(&affine, &idp);
        assert_eq!((status, &again["id"]), (200, &json!(user.id)));
        assert_eq!(affine.users().len(), users.len());
        assert_eq!(affine.connected_accounts().len(), 1);

        let out = client()
            .get(format!("{}/api/auth/sign-out", affine.url()))
            .header("Cookie", format!("affine_session={sid}"))
            .send()
            .unwrap();
        assert_eq!(out.status().as_u16(), 200);
        assert!(set_cookies(&out)
            .iter()
            .any(|c| c.starts_with("affine_session=;")));
        assert_eq!(current_user(&affine, Some(&sid)), Value::Null);
    }

    #[test]
    fn affine_preflight_passes_args_through_and_a_configured_scope_as_written() {
        let idp = Idp::start();
        let affine = affine_for("0.27.0", &idp, |_| {});
        let mut value = oidc_value(&idp.url());
        value["args"] =
            json!({"scope": "email profile", "prompt": "login", "claim_id": "preferred_username"});
        write_oidc(&affine, value);
        assert!(eventually(Duration::from_secs(5), || affine.oidc_registered()));
        let q = preflight(&affine, Some("n"));
        // The args' `scope` overrides AFFiNE's normalised one (openid is not added).
        assert_eq!(q["scope"], "email profile");
        assert_eq!(q["prompt"], "login");
        assert!(!q.contains_key("claim_id"), "{q:?}");
    }

    #[test]
    fn affine_login_keeps_the_preflight_redirect_uri() {
        let idp = Idp::start();
        let affine = affine_for("0.26.1", &idp, |_| {});
        let resp = client()
            .post(format!("{}/api/oauth/preflight", affine.url()))
            .json(&json!({"provider": "OIDC", "client_nonce": "n", "redirect_uri": "/workspace/x"}))
            .send()
            .unwrap();
        let url =
            reqwest::Url::parse(resp.json::<Value>().unwrap()["url"].as_str().unwrap()).unwrap();
        let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
        idp.set(|c| c.expected_nonce = q["nonce"].clone());
        let (status, body, _) = callback(
            &affine,
            json!({"code": "c", "state": q["state"], "client_nonce": "n"}),
        );
        assert_eq!(
            (status, &body["redirectUri"]),
            (200, &json!("/workspace/x")),
            "{body}"
        );
    }

    #[test]
    fn affine_callback_refuses_a_bad_state_or_client_nonce_with_affines_errors() {
        let idp = Idp::start();
        let affine = affine_for("0.26.1", &idp, |_| {});
        let q = preflight(&affine, Some("client-nonce-1"));
        let ok_state = q["state"].clone();
        assert_error(
            &callback(
                &affine,
                json!({"state": ok_state, "client_nonce": "client-nonce-1"}),
            ),
            400,
            "MISSING_OAUTH_QUERY_PARAMETER",
            "Missing query parameter `code`.",
        );
        assert_error(
            &callback(
                &affine,
                json!({"code": "c", "client_nonce": "client-nonce-1"}),
            ),
            400,
            "MISSING_OAUTH_QUERY_PARAMETER",
            "Missing query parameter `state`.",
        );
        assert_error(
            &callback(
                &affine,
                json!({"code": "c", "state": "not-a-state", "client_nonce": "client-nonce-1"}),
            ),
            400,
            "INVALID_OAUTH_CALLBACK_STATE",
            "Invalid callback state parameter.",
        );
        let unknown = json!({"state": "00000000-0000-4000-8000-000000000000", "provider": "OIDC"})
            .to_string();
        assert_error(
            &callback(
                &affine,
                json!({"code": "c", "state": unknown, "client_nonce": "client-nonce-1"}),
            ),
            400,
            "OAUTH_STATE_EXPIRED",
            "OAuth state expired, please try again.",
        );
        // The client nonce of another device (or none) is refused before any token request.
        assert_error(
            &callback(
                &affine,
                json!({"code": "c", "state": ok_state, "client_nonce": "other"}),
            ),
            400,
            "INVALID_AUTH_STATE",
            INVALID_AUTH_STATE,
        );
        assert_error(
            &callback(&affine, json!({"code": "c", "state": ok_state})),
            400,
            "INVALID_AUTH_STATE",
            INVALID_AUTH_STATE,
        );
        assert!(idp.forms().is_empty());
        // Three hours later the same state has expired.
        affine.expire_oauth_states();
        assert_error(
            &callback(
                &affine,
                json!({"code": "c", "state": ok_state, "client_nonce": "client-nonce-1"}),
            ),
            400,
            "OAUTH_STATE_EXPIRED",
            "OAuth state expired",
        );
    }

    #[test]
    fn affine_0_27_requires_a_client_nonce_where_0_26_compares_only_a_given_one() {
        let idp = Idp::start();
        for (version, ok) in [("0.26.1", true), ("0.27.0", false)] {
            let affine = affine_for(version, &idp, |_| {});
            let q = preflight(&affine, None);
            idp.set(|c| c.expected_nonce = q["nonce"].clone());
            let got = callback(&affine, json!({"code": "c", "state": q["state"]}));
            if ok {
                assert_eq!(got.0, 200, "{version}: {}", got.1);
            } else {
                assert_error(&got, 400, "INVALID_AUTH_STATE", INVALID_AUTH_STATE);
            }
        }
    }

    #[test]
    fn affine_a_wrong_client_secret_fails_at_the_token_exchange() {
        let idp = Idp::start();
        let affine = affine_for("0.27.0", &idp, |_| {});
        idp.set(|c| c.client_secret = "the-secret-authentik-has".into());
        let got = login(&affine, &idp);
        assert_error(
            &got,
            400,
            "INVALID_OAUTH_CALLBACK_CODE",
            "Invalid callback code parameter, provider response status: 400 and body: {\"error\":\"invalid_client\"",
        );
        assert_eq!(got.1["data"]["status"], 400);
        assert!(affine.connected_accounts().is_empty());
    }

    #[test]
    fn affine_0_25_7_refuses_every_id_token_it_cannot_verify_with_invalid_auth_state() {
        let idp = Idp::start();
        let affine = affine_for("0.25.7", &idp, |_| {});
        let faults: Vec<(&str, IdpFault)> = vec![
            ("JWE (an encryption key)", Box::new(|c| c.sig = Sig::Jwe)),
            ("HS256 (no signing key)", Box::new(|c| c.sig = Sig::Hs256)),
            ("a key not in the JWKS", Box::new(|c| c.sig = Sig::OtherKey)),
            (
                "another audience",
                Box::new(|c| {
                    c.id_claims.insert("aud".into(), json!("someone-else"));
                }),
            ),
            (
                "another issuer",
                Box::new(|c| {
                    c.id_claims
                        .insert("iss".into(), json!("https://other.example.com/"));
                }),
            ),
            (
                "no audience",
                Box::new(|c| {
                    c.id_claims.insert("aud".into(), Value::Null);
                }),
            ),
            (
                "no issuer",
                Box::new(|c| {
                    c.id_claims.insert("iss".into(), Value::Null);
                }),
            ),
            (
                "another nonce",
                Box::new(|c| c.nonce = Some("replayed".into())),
            ),
            (
                "no nonce",
                Box::new(|c| {
                    c.id_claims.insert("nonce".into(), Value::Null);
                }),
            ),
            (
                "expired",
                Box::new(|c| {
                    c.id_claims.insert("exp".into(), json!(1_000_000_000u64));
                }),
            ),
        ];
        for (why, fault) in faults {
            idp.set(|c| {
                c.sig = Sig::Rs256;
                c.nonce = None;
                c.id_claims.clear();
                fault(c);
            });
            let got = login(&affine, &idp);
            assert_eq!(got.1["name"], "INVALID_AUTH_STATE", "{why}: {}", got.1);
            assert_error(&got, 400, "INVALID_AUTH_STATE", INVALID_AUTH_STATE);
        }
        assert!(affine.connected_accounts().is_empty());
        // The same IdP, its id_token fixed, logs in: the faults above were the only cause.
        idp.set(|c| {
            c.sig = Sig::Rs256;
            c.nonce = None;
            c.id_claims.clear();
        });
        assert_eq!(login(&affine, &idp).0, 200);
    }

    #[test]
    fn affine_before_0_25_7_reads_userinfo_only_and_needs_a_refresh_token() {
        let idp = Idp::start();
        let affine = affine_for("0.25.6", &idp, |_| {});
        let q = preflight(&affine, Some("n"));
        assert!(
            !q.contains_key("nonce") && !q.contains_key("code_challenge"),
            "{q:?}"
        );
        // An encrypted id_token and an unverified e-mail do not matter before 0.25.7 ...
        idp.set(|c| {
            c.sig = Sig::Jwe;
            c.userinfo["email_verified"] = json!(false);
        });
        // ... but a token answer without refresh_token fails zod (authentik without the
        // offline_access scope; AFFiNE issue #12774).
        let got = login(&affine, &idp);
        assert_error(&got, 400, "VALIDATION_ERROR", "Validation error, errors: [");
        assert!(
            got.1["message"]
                .as_str()
                .unwrap()
                .contains("\"refresh_token\""),
            "{}",
            got.1
        );
        assert!(!idp.forms()[0].contains_key("code_verifier"));
        idp.set(|c| c.refresh_token = true);
        let (status, body, _) = login(&affine, &idp);
        assert_eq!(status, 200, "{body}");
        // claim_id defaulted to preferred_username then.
        assert_eq!(
            affine.connected_accounts()[0].provider_account_id,
            "oidc.user"
        );
        assert!(affine.connected_accounts()[0].has_refresh_token);
    }

    #[test]
    fn affine_0_21_discovers_at_login_and_keys_accounts_by_preferred_username() {
        // 0.21 registers OIDC without discovery; preflight and callback fetch it then.
        let idp = Idp::start();
        let affine = affine_for("0.21.0", &idp, |_| {});
        idp.set(|c| c.refresh_token = true);
        let (status, body, cookies) = login(&affine, &idp);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            affine.connected_accounts()[0].provider_account_id,
            "oidc.user"
        );
        assert_eq!(
            current_user(&affine, Some(&session_of(&cookies)))["email"],
            "oidc.user@example.com"
        );
        // Its userinfo schema wants every one of sub, preferred_username, email and name.
        idp.set(|c| {
            c.userinfo
                .as_object_mut()
                .unwrap()
                .remove("preferred_username");
        });
        assert_error(
            &login(&affine, &idp),
            400,
            "VALIDATION_ERROR",
            "\"preferred_username\"",
        );
    }

    #[test]
    fn affine_0_25_7_refuses_an_unverified_email_which_0_25_6_accepts() {
        for (version, refused) in [("0.25.6", false), ("0.25.7", true), ("0.27.0", true)] {
            let idp = Idp::start();
            let affine = affine_for(version, &idp, |_| {});
            idp.set(|c| {
                c.refresh_token = true;
                c.userinfo["email_verified"] = json!(false);
                c.id_claims.insert("email_verified".into(), json!(false));
            });
            let got = login(&affine, &idp);
            if refused {
                assert_error(
                    &got,
                    400,
                    "INVALID_OAUTH_RESPONSE",
                    "Invalid OAuth response: Email for this account is not verified.",
                );
                assert!(
                    affine.users().iter().all(|u| !u.created_by_oidc),
                    "{version}"
                );
            } else {
                assert_eq!(got.0, 200, "{version}: {}", got.1);
            }
        }
    }

    #[test]
    fn affine_0_27_reads_email_verified_words_and_claim_email_verified() {
        let idp = Idp::start();
        let affine = affine_for("0.27.0", &idp, |_| {});
        idp.set(|c| {
            c.userinfo["email_verified"] = json!("no");
        });
        assert_error(
            &login(&affine, &idp),
            400,
            "INVALID_OAUTH_RESPONSE",
            "not verified",
        );
        // A site whose own claim says yes (args.claim_email_verified).
        let mut value = oidc_value(&idp.url());
        value["args"] = json!({"claim_email_verified": "mail_ok"});
        write_oidc(&affine, value);
        assert!(eventually(Duration::from_secs(5), || affine.oidc_registered()));
        idp.set(|c| c.userinfo["mail_ok"] = json!("yes"));
        let got = login(&affine, &idp);
        assert_eq!(got.0, 200, "{}", got.1);
    }

    #[test]
    fn affine_userinfo_sub_must_match_the_id_token() {
        let idp = Idp::start();
        let affine = affine_for("0.26.1", &idp, |_| {});
        idp.set(|c| c.userinfo["sub"] = json!("someone-else"));
        assert_error(
            &login(&affine, &idp),
            400,
            "INVALID_OAUTH_RESPONSE",
            "Invalid OAuth response: Subject mismatch between ID token and userinfo response.",
        );
    }

    #[test]
    fn affine_the_email_must_be_a_valid_address() {
        // 0.27 resolves the claim and names it; 0.26's userinfo schema refuses it outright.
        let idp = Idp::start();
        let affine = affine_for("0.27.0", &idp, |_| {});
        idp.set(|c| {
            c.userinfo["email"] = json!("admin@localhost");
            c.id_claims.insert("email".into(), json!("admin@localhost"));
        });
        assert_error(
            &login(&affine, &idp),
            400,
            "INVALID_OAUTH_RESPONSE",
            "Missing valid email claim in OIDC response. Tried userinfo and ID token claims: \"email\"",
        );
        let idp = Idp::start();
        let affine = affine_for("0.26.1", &idp, |_| {});
        idp.set(|c| c.userinfo["email"] = json!("admin@localhost"));
        let got = login(&affine, &idp);
        assert_error(&got, 400, "VALIDATION_ERROR", "Invalid email");
    }

    #[test]
    fn affine_sign_up_for_oauth_off_refuses_a_first_login() {
        let idp = Idp::start();
        let affine = affine_for("0.26.1", &idp, |o| o.allow_signup_for_oauth = false);
        assert_error(
            &login(&affine, &idp),
            403,
            "SIGN_UP_FORBIDDEN",
            "You are not allowed to sign up.",
        );
        assert!(affine.users().iter().all(|u| !u.created_by_oidc));
    }

    #[test]
    fn affine_an_existing_user_with_the_email_is_taken_over_by_the_oidc_login() {
        let idp = Idp::start();
        let affine = affine_for("0.27.0", &idp, |o| {
            o.users = vec![("Alice@Example.com".into(), "alice-pass-SECRET".into())];
        });
        let alice = affine
            .users()
            .into_iter()
            .find(|u| u.email == "Alice@Example.com")
            .unwrap();
        idp.set(|c| {
            c.userinfo["email"] = json!("alice@example.com");
            c.id_claims
                .insert("email".into(), json!("alice@example.com"));
        });
        let (status, body, cookies) = login(&affine, &idp);
        assert_eq!((status, &body["id"]), (200, &json!(alice.id)), "{body}");
        assert_eq!(affine.users().len(), 2, "no new user");
        assert_eq!(affine.connected_accounts()[0].user_id, alice.id);
        assert_eq!(
            current_user(&affine, Some(&session_of(&cookies)))["email"],
            "Alice@Example.com"
        );
    }

    #[test]
    fn affine_a_token_answer_without_id_token_fails_zod_from_0_25_7() {
        let idp = Idp::start();
        let affine = affine_for("0.25.7", &idp, |_| {});
        idp.set(|c| c.id_token = false);
        let got = login(&affine, &idp);
        assert_error(&got, 400, "VALIDATION_ERROR", "\"id_token\"");
    }

    // --------------------------------------------------------------------------------------
    // The whole login against the stand-in authentik (its authorize endpoint, flow executor,
    // token endpoint, JWKS and userinfo), walked by the project's own browserless login.
    // --------------------------------------------------------------------------------------

    use affine_authentik::authentik::browser_login::BrowserLogin;
    use affine_authentik::secret::Secret;
    use support::authentik_standin::LoginUser;

    const ALICE_PASSWORD: &str = "alice-pass-SECRET";

    /// authentik `ak_version` with application `affine` (its provider tweaked) and user
    /// alice, and AFFiNE `affine_version` configured with that provider.
    fn pair(
        ak_version: &str,
        affine_version: &str,
        provider: impl FnOnce(&mut ProviderState),
        args: Value,
        affine_opts: impl FnOnce(&mut AffineOptions),
    ) -> (AuthentikStandin, AffineStandin) {
        let ak = AuthentikStandin::start(AuthentikOptions::new(ak_version));
        let mut opts = AffineOptions::new(affine_version);
        opts.ssrf_guard = Some(false);
        affine_opts(&mut opts);
        let affine = AffineStandin::start(opts);
        let mut p = ProviderState::new("affine");
        p.redirect_uris = vec![("strict".into(), format!("{}/oauth/callback", affine.url()))];
        provider(&mut p);
        ak.add_provider("affine", p.clone());
        ak.add_user(LoginUser::new("alice", ALICE_PASSWORD));
        let (status, body) = write_oidc(
            &affine,
            json!({"clientId": p.client_id, "clientSecret": p.client_secret, "issuer": issuer_of(&ak), "args": args}),
        );
        assert_eq!(status, 200, "{body}");
        assert!(
            eventually(Duration::from_secs(5), || affine.oidc_registered()),
            "{:?}",
            affine.discovery_attempts()
        );
        (ak, affine)
    }

    /// AFFiNE's preflight, authentik walked as alice, then AFFiNE's callback.
    fn full_login(affine: &AffineStandin) -> (u16, Value, Vec<String>) {
        let resp = client()
            .post(format!("{}/api/oauth/preflight", affine.url()))
            .json(&json!({"provider": "OIDC", "client_nonce": "verify-nonce"}))
            .send()
            .unwrap();
        let url = resp.json::<Value>().unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string();
        let browser = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let callback_url = format!("{}/oauth/callback", affine.url());
        let password = Secret::new(ALICE_PASSWORD);
        let back = BrowserLogin::new(&browser, &callback_url, "alice", &password)
            .run(&url)
            .unwrap_or_else(|f| panic!("authentik refused the walk: {f:?}"));
        callback(
            affine,
            json!({"code": back.code.expose(), "state": back.state, "client_nonce": "verify-nonce"}),
        )
    }

    #[test]
    fn affine_0_27_logs_in_through_authentik_2024_10_and_currentuser_is_the_authentik_user() {
        let (ak, affine) = pair("2024.10.5", "0.27.0", |_| {}, json!({}), |_| {});
        let (status, body, cookies) = full_login(&affine);
        assert_eq!(status, 200, "{body}");
        let sid = session_of(&cookies);
        let me = current_user(&affine, Some(&sid));
        assert_eq!(me["email"], "alice@example.com", "{me}");
        let sub = ak.subject("affine", "alice").unwrap();
        let accounts = affine.connected_accounts();
        assert_eq!(accounts.len(), 1);
        assert_eq!(
            accounts[0].provider_account_id, sub,
            "claim_id defaults to sub"
        );
        let out = client()
            .get(format!("{}/api/auth/sign-out", affine.url()))
            .header("Cookie", format!("affine_session={sid}"))
            .send()
            .unwrap();
        assert_eq!(out.status().as_u16(), 200);
        assert_eq!(current_user(&affine, Some(&sid)), Value::Null);
    }

    #[test]
    fn affine_0_25_7_refuses_authentik_2026_2s_managed_email_mapping() {
        let (_ak, affine) = pair("2026.2.2", "0.25.7", |_| {}, json!({}), |_| {});
        assert_error(
            &full_login(&affine),
            400,
            "INVALID_OAUTH_RESPONSE",
            "Invalid OAuth response: Email for this account is not verified.",
        );
    }

    #[test]
    fn affine_0_25_6_accepts_an_unverified_email_but_needs_authentiks_offline_access() {
        let (_ak, affine) = pair("2026.2.2", "0.25.6", |_| {}, json!({}), |_| {});
        let got = full_login(&affine);
        assert_error(&got, 400, "VALIDATION_ERROR", "\"refresh_token\"");
        let (_ak, affine) = pair(
            "2026.2.2",
            "0.25.6",
            |p| {
                p.scope_mappings
                    .push("goauthentik.io/providers/oauth2/scope-offline_access".into())
            },
            json!({"scope": "openid profile email offline_access"}),
            |_| {},
        );
        let (status, body, _) = full_login(&affine);
        assert_eq!(status, 200, "{body}");
    }

    #[test]
    fn affine_0_27_refuses_authentiks_encrypted_and_hs256_id_tokens() {
        let (ak, affine) = pair("2024.10.5", "0.27.0", |_| {}, json!({}), |_| {});
        let key = ak.key_pair("authentik Self-signed Certificate").unwrap();
        assert!(ak.set_provider_fields("affine", json!({"encryption_key": key})));
        assert_error(
            &full_login(&affine),
            400,
            "INVALID_AUTH_STATE",
            INVALID_AUTH_STATE,
        );
        let (_ak, affine) = pair(
            "2024.10.5",
            "0.27.0",
            |p| p.signing_key = None,
            json!({}),
            |_| {},
        );
        assert_error(
            &full_login(&affine),
            400,
            "INVALID_AUTH_STATE",
            INVALID_AUTH_STATE,
        );
    }

    #[test]
    fn affine_a_client_secret_authentik_does_not_know_fails_with_invalid_client() {
        let (ak, affine) = pair("2026.2.2", "0.26.1", |_| {}, json!({}), |_| {});
        let mut value = affine.stored_oidc().unwrap();
        value["clientSecret"] = json!("not-the-secret");
        write_oidc(&affine, value);
        assert!(eventually(Duration::from_secs(5), || affine.oidc_registered()));
        let got = full_login(&affine);
        assert_error(&got, 400, "INVALID_OAUTH_CALLBACK_CODE", "invalid_client");
        drop(ak);
    }

    #[test]
    fn affine_sign_up_for_oauth_off_refuses_authentiks_user() {
        let (_ak, affine) = pair(
            "2024.10.5",
            "0.26.1",
            |_| {},
            json!({}),
            |o| o.allow_signup_for_oauth = false,
        );
        assert_error(
            &full_login(&affine),
            403,
            "SIGN_UP_FORBIDDEN",
            "You are not allowed to sign up.",
        );
    }

    /// Puts a custom `email` scope mapping returning `email_verified: True` on provider
    /// `affine` in place of the managed one (authentik's documented remedy, made through its
    /// API as an admin would).
    fn use_verified_email_mapping(ak: &AuthentikStandin) {
        let api =
            |path: &str| format!("{}/api/v3/propertymappings/provider/scope/{path}", ak.url());
        let created: Value = client()
            .post(api(""))
            .bearer_auth(ak.token())
            .json(&json!({
                "name": "AFFiNE email (verified)",
                "scope_name": "email",
                "expression": "return {\"email\": request.user.email, \"email_verified\": True}",
            }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let managed: Value = client()
            .get(api("?managed=goauthentik.io/providers/oauth2/scope-email"))
            .bearer_auth(ak.token())
            .send()
            .unwrap()
            .json()
            .unwrap();
        let managed_pk = managed["results"][0]["pk"].clone();
        let mut mappings: Vec<Value> = ak.provider("affine").unwrap()["property_mappings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pk| **pk != managed_pk)
            .cloned()
            .collect();
        assert!(!created["pk"].is_null(), "{created}");
        mappings.push(created["pk"].clone());
        assert!(ak.set_provider_fields("affine", json!({"property_mappings": mappings})));
    }

    #[test]
    fn affine_0_25_7_to_0_27_log_in_through_authentik_2026_2_with_a_verified_email_mapping() {
        for version in ["0.25.7", "0.26.1", "0.27.0"] {
            let (ak, affine) = pair("2026.2.2", version, |_| {}, json!({}), |_| {});
            use_verified_email_mapping(&ak);
            let (status, body, cookies) = full_login(&affine);
            assert_eq!(status, 200, "{version}: {body}");
            let me = current_user(&affine, Some(&session_of(&cookies)));
            assert_eq!(me["email"], "alice@example.com", "{version}: {me}");
            assert!(affine
                .users()
                .iter()
                .any(|u| u.created_by_oidc && u.email == "alice@example.com"));
        }
    }
}
