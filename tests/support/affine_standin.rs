//! A stand-in for a self-hosted AFFiNE server (0.17 to 0.27+), faithful to CONTRACTS.md §1:
//! the GraphQL admin API (`appConfig`, `updateAppConfig`, `validateAppConfig`, `serverConfig`),
//! sign-in with its rate limit and cookies, the OAuth preflight, and when OIDC becomes
//! registered on each version (including the real discovery fetch against the issuer).
//!
//! GraphQL is handled honestly: each version gets its own schema (the subset of AFFiNE's schema
//! the project touches, written here, not copied), every document is parsed, validated and
//! executed by `apollo-compiler`, so a field or an operation type a version lacks fails the way
//! AFFiNE's Apollo server fails it (HTTP 400, `GRAPHQL_BAD_REQUEST`).
//!
//! Modelling choices (where the contract is silent):
//! - A request without `Content-Type` is refused with HTTP 400 `GRAPHQL_BAD_REQUEST`, as Apollo's
//!   CSRF prevention (`requestHeaders: ['content-type']`) does; a simple content type such as
//!   `text/plain` gets Apollo's 400 "POST body missing…". Nothing is executed either way.
//! - 0.22-0.26 make their one discovery attempt before the `updateAppConfig` answer, so a poll
//!   right after the write sees the final state.
//! - The preflight URL's query is encoded like JavaScript's `URLSearchParams` (space = `+`).
//! - The discovery fetch follows redirects as 0.27's does (at most 3, each hop through the
//!   SSRF guard when it is on); every version does so here, since authentik's router answers
//!   the doubled slash AFFiNE builds with a 301.
//! - 0.17-0.20 (no admin API): every GraphQL parse, validation and variable error is masked
//!   as the real 0.17 masked it (HTTP 400, `Internal Server Error`, no `name`), and
//!   `serverConfig.oauthProviders` exists only with [`AffineOptions::oauth_plugin`]. There,
//!   [`AffineStandin::set_stored_oidc`] stands for the `OAUTH_OIDC_*` variables the server
//!   started with: with the plugin on, OIDC registers from them as 0.21 does, without
//!   discovery (the contract is silent on how 0.20 registers).
//!
//! The OIDC login (preflight, `POST /api/oauth/callback`, the session, sign-out) follows what
//! was read from toeverything/AFFiNE (never copied; the facts, in this file's own code):
//! - `packages/backend/server/src/plugins/oauth/controller.ts` and `service.ts`: the state
//!   is a random UUID kept 3 hours (`OAUTH_STATE_TTL_MS`), the `state` query parameter is the
//!   JSON `{"state": id, "provider", "pkce"?: {codeChallenge, codeChallengeMethod}}`, a
//!   callback state longer than 36 characters is parsed as that JSON, one that is not 36 long
//!   is INVALID_OAUTH_CALLBACK_STATE, an unknown or expired one OAUTH_STATE_EXPIRED; the
//!   client nonce given at preflight must come back (INVALID_AUTH_STATE); the newest
//!   `service.ts` (an `AuthChallengeStore`, taken here as 0.27) also refuses a callback
//!   without one. Then the connected account (provider, account id), else SIGN_UP_FORBIDDEN
//!   when `auth.allowSignupForOauth` is off, else the user found BY E-MAIL or created, a
//!   connected account, the session cookies and `{id, redirectUri}`.
//! - `providers/def.ts`: a non-2xx answer of the token or userinfo endpoint is
//!   INVALID_OAUTH_CALLBACK_CODE with the IdP's status and body; a body that is not JSON is
//!   INVALID_OAUTH_RESPONSE "Unable to parse JSON response from <url>".
//! - `providers/oidc.ts`, three stored generations: before 0.25.7 (no PKCE, no nonce, no
//!   id_token; the token answer must hold `expires_in` and `refresh_token`, userinfo `sub`,
//!   `preferred_username`, a valid `email` and `name`; `claim_id` defaults to
//!   `preferred_username`); 0.25.7 (AFFiNE PR #14061: PKCE S256, `nonce` = the state id, the
//!   token answer must hold an `id_token`, verified with jose's `jwtVerify` against the
//!   discovery's `jwks_uri` with issuer = the document's `issuer` and audience = the client
//!   id, then its `nonce`, every failure INVALID_AUTH_STATE; userinfo `sub` must equal the
//!   id_token's; claims from userinfo then the id_token, `claim_id` default `sub`;
//!   `email_verified` false is INVALID_OAUTH_RESPONSE "Email for this account is not
//!   verified"); and the newest, with discovery retries (0.27 here): the configured claims
//!   are looked up in both sources, the e-mail must be a valid address ("Missing valid email
//!   claim in OIDC response. Tried userinfo and ID token claims: ..."), `email_verified` may
//!   be a boolean or "true/false/1/0/yes/no".
//! - `base/error/def.ts`: names, types, messages and the HTTP status of each type; the REST
//!   body is `{status, code, type, name, message, data?}`. `base/nestjs/exception.ts`: a zod
//!   schema failure (e.g. a token answer without `refresh_token` before 0.25.7, issue #12774,
//!   or without `id_token` from 0.25.7) becomes VALIDATION_ERROR "Validation error, errors:
//!   <zod's issues as JSON>"; 0.17-0.20 answered it as an internal error (issue #8752).
//! - `core/auth/controller.ts`: `GET /api/auth/sign-out` ends the session and answers `{}`.
//!
//! The stand-in's fetches of the token, JWKS and userinfo endpoints go through the same client
//! as discovery (redirects, the 0.27 SSRF guard). Approximations: zod's messages are rebuilt
//! for the checks made here (type, required, e-mail), not every zod wording; the id_token's
//! key must be RSA (authentik's are); the newest controller's `exchangeCode` and its
//! redirect-URI allow-list are not modelled.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use apollo_compiler::executable::OperationType;
use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::response::{JsonMap, JsonValue};
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::http_standin::{
    base64url, form_encode, lock, parse_version, random_token, sleep_unless, uuid4, HttpServer,
    Request, Response, Service,
};
pub use super::http_standin::{Fault, Recorded};

/// How a stand-in AFFiNE is set up.
#[derive(Clone, Debug)]
pub struct AffineOptions {
    /// Server version, e.g. "0.21.0", "0.25.3", "0.26.0", "0.26.1", "0.27.0" or "0.20.0".
    pub version: String,
    /// 0.17-0.20 only: the OAuth plugin is on, so `serverConfig.oauthProviders` exists.
    /// (0.21+ always have OAuth built in; this is ignored there.)
    pub oauth_plugin: bool,
    /// The administrator. An empty email means a fresh server with no admin (only `users`, if any),
    /// where `POST /api/setup/create-admin-user` works while no user exists at all.
    pub admin_email: String,
    pub admin_password: String,
    /// Extra non-admin users, `(email, password)`.
    pub users: Vec<(String, String)>,
    /// Add `Secure` to the session cookies, as a server behind https does.
    pub https_secure_cookie: bool,
    /// The private-address guard on discovery fetches; `None` = by version (on from 0.27).
    pub ssrf_guard: Option<bool>,
    /// `auth.allowSignupForOauth` (AFFiNE's default: on). Off, a first OIDC login of someone
    /// without a connected account is SIGN_UP_FORBIDDEN.
    pub allow_signup_for_oauth: bool,
}

impl AffineOptions {
    /// Admin `admin@example.com` / `admin-pass-SECRET`, no extra users, plain cookies.
    pub fn new(version: &str) -> Self {
        AffineOptions {
            version: version.to_string(),
            oauth_plugin: false,
            admin_email: "admin@example.com".into(),
            admin_password: "admin-pass-SECRET".into(),
            users: Vec::new(),
            https_secure_cookie: false,
            ssrf_guard: None,
            allow_signup_for_oauth: true,
        }
    }
}

/// One discovery fetch the stand-in made (what AFFiNE would have fetched).
#[derive(Clone, Debug)]
pub struct DiscoveryAttempt {
    /// The URL fetched: `${issuer}/.well-known/openid-configuration`, concatenated as AFFiNE does.
    pub url: String,
    /// `Ok(())` or why the discovery failed (unreachable, status, bad document, issuer
    /// mismatch, SSRF refusal).
    pub outcome: Result<(), String>,
}

/// A user of the stand-in, as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffineUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub admin: bool,
    /// Created by an OIDC login rather than seeded or set up with a password.
    pub created_by_oidc: bool,
}

/// A row of AFFiNE's connected accounts: which IdP account signs in as which user.
/// (The IdP's tokens AFFiNE stores there are kept out of it.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedAccount {
    /// "OIDC".
    pub provider: String,
    /// The claim `claim_id` names (`sub` by default from 0.25.7, `preferred_username` before).
    pub provider_account_id: String,
    pub user_id: String,
    /// Whether the IdP gave a refresh token with the last login.
    pub has_refresh_token: bool,
}

/// A running stand-in AFFiNE on a loopback port; stops when dropped.
pub struct AffineStandin {
    server: HttpServer,
    inner: Arc<Inner>,
}

impl AffineStandin {
    pub fn start(opts: AffineOptions) -> Self {
        Self::start_on(opts, 0)
    }

    /// Like [`AffineStandin::start`] on a chosen port (0 = any free one).
    pub fn start_on(opts: AffineOptions, port: u16) -> Self {
        let (server, inner) = HttpServer::start(port, |url| {
            Arc::new_cyclic(|me| Inner::new(opts, url, me.clone()))
        });
        AffineStandin { server, inner }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// The session material clients sent: `affine_session` and `affine_csrf_token` cookie
    /// values and bearer tokens, from the request log. None of it may show in a client's
    /// output.
    pub fn session_material(&self) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for r in self.requests() {
            for (name, value) in &r.headers {
                if name.eq_ignore_ascii_case("cookie") {
                    for pair in value.split(';') {
                        if let Some((k, v)) = pair.trim().split_once('=') {
                            if k == "affine_session" || k == "affine_csrf_token" {
                                seen.insert(v.to_string());
                            }
                        }
                    }
                }
                if name.eq_ignore_ascii_case("authorization") {
                    if let Some(t) = value.strip_prefix("Bearer ") {
                        seen.insert(t.trim().to_string());
                    }
                }
            }
        }
        seen
    }

    /// The database override of `oauth` / `providers.oidc`, `None` if never written.
    pub fn stored_oidc(&self) -> Option<Value> {
        lock(&self.inner.state)
            .overrides
            .get(&(OAUTH.to_string(), OIDC_KEY.to_string()))
            .cloned()
    }

    /// Seeds the database override of `oauth` / `providers.oidc` (as if saved earlier, then
    /// the server restarted: registration follows the version's rules, as after a write).
    pub fn set_stored_oidc(&self, v: Value) {
        lock(&self.inner.state)
            .overrides
            .insert((OAUTH.to_string(), OIDC_KEY.to_string()), v);
        self.inner.reconfigure_oidc();
    }

    /// Successful `updateAppConfig` calls.
    pub fn write_count(&self) -> usize {
        lock(&self.inner.state).write_count
    }

    /// Successful password sign-ins.
    pub fn sign_in_count(&self) -> usize {
        lock(&self.inner.state).sign_in_count
    }

    /// Magic-link e-mails "sent" by sign-ins without a password (must stay 0 for our tool).
    pub fn magic_links_sent(&self) -> usize {
        lock(&self.inner.state).magic_links_sent
    }

    pub fn set_fault(&self, f: Fault) {
        self.server.set_fault(f);
    }

    /// A valid session id of the admin, as a user would copy from the `affine_session` cookie.
    pub fn session_token_for_admin(&self) -> String {
        let mut st = lock(&self.inner.state);
        let admin = st
            .users
            .iter()
            .find(|u| u.admin)
            .map(|u| u.id.clone())
            .expect("the stand-in has an admin");
        let sid = uuid4();
        st.sessions.insert(sid.clone(), admin);
        sid
    }

    /// A personal access token of the admin (0.25+): accepted on `/graphql` but not by the
    /// admin guard (CONTRACTS.md §1, read from code).
    pub fn access_token_for_admin(&self) -> String {
        let mut st = lock(&self.inner.state);
        let admin = st
            .users
            .iter()
            .find(|u| u.admin)
            .map(|u| u.id.clone())
            .expect("the stand-in has an admin");
        let token = format!("ut_{}", random_token(40));
        st.access_tokens.insert(token.clone(), admin);
        token
    }

    /// Whether `serverConfig.oauthProviders` lists OIDC right now.
    pub fn oidc_registered(&self) -> bool {
        lock(&self.inner.state).oidc.is_some()
    }

    /// Every discovery fetch made so far, oldest first.
    pub fn discovery_attempts(&self) -> Vec<DiscoveryAttempt> {
        lock(&self.inner.state).discovery_attempts.clone()
    }

    /// Every user: the seeded ones and those OIDC logins created.
    pub fn users(&self) -> Vec<AffineUser> {
        lock(&self.inner.state)
            .users
            .iter()
            .map(|u| AffineUser {
                id: u.id.clone(),
                email: u.email.clone(),
                name: u.name.clone(),
                admin: u.admin,
                created_by_oidc: u.oidc_created,
            })
            .collect()
    }

    /// The connected accounts (AFFiNE's `connected_accounts` table), oldest first.
    pub fn connected_accounts(&self) -> Vec<ConnectedAccount> {
        lock(&self.inner.state).connected_accounts.clone()
    }

    /// Makes every saved OAuth state expired, as 3 hours after its preflight.
    pub fn expire_oauth_states(&self) {
        let now = Instant::now();
        for s in lock(&self.inner.state).oauth_states.values_mut() {
            s.expires_at = now;
        }
    }

    /// Live sessions (each sign-in or OIDC login makes one; sign-out ends it).
    pub fn session_count(&self) -> usize {
        lock(&self.inner.state).sessions.len()
    }

    /// Blocks until the stand-in is dropped (for the `standins` example).
    pub fn serve_forever(&self) {
        self.server.wait();
    }
}

impl Drop for AffineStandin {
    fn drop(&mut self) {
        // Ends 0.27's background discovery retries.
        self.inner.stop.store(true, Ordering::SeqCst);
    }
}

const OAUTH: &str = "oauth";
const OIDC_KEY: &str = "providers.oidc";
/// "strict" throttler of `/api/auth/*`: 20 requests per minute per client.
const AUTH_LIMIT: u32 = 20;
const AUTH_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
struct User {
    id: String,
    email: String,
    name: String,
    password: String,
    admin: bool,
    /// Created by an OIDC login (AFFiNE's `fulfill` of an unknown e-mail).
    oidc_created: bool,
}

/// What the registered OIDC provider knows: the authorize endpoint once discovery succeeded
/// (`None` on 0.21, which registers without discovery).
#[derive(Clone, Debug)]
struct OidcRegistration {
    authorization_endpoint: Option<String>,
    /// The whole discovery document (token, userinfo and JWKS endpoints, issuer).
    document: Option<Value>,
}

#[derive(Default)]
struct State {
    users: Vec<User>,
    /// session id → user id
    sessions: HashMap<String, String>,
    /// personal access token → user id
    access_tokens: HashMap<String, String>,
    /// The `app_configs` table: (module, flat key) → value.
    overrides: HashMap<(String, String), Value>,
    write_count: usize,
    sign_in_count: usize,
    magic_links_sent: usize,
    /// Bumped on every OIDC config change; a discovery result for an older generation is dropped.
    oidc_generation: u64,
    oidc: Option<OidcRegistration>,
    discovery_attempts: Vec<DiscoveryAttempt>,
    /// Saved OAuth states by id (AFFiNE's cache entries `OAUTH_STATE:<uuid>`).
    oauth_states: HashMap<String, OAuthState>,
    connected_accounts: Vec<ConnectedAccount>,
    /// client address → (window start, hits)
    throttle: HashMap<IpAddr, (Instant, u32)>,
}

struct Inner {
    opts: AffineOptions,
    version: (u32, u32, u32),
    url: String,
    schema: Valid<Schema>,
    state: Mutex<State>,
    stop: AtomicBool,
    http: reqwest::blocking::Client,
    /// Itself, for the background discovery thread of 0.27+.
    me: Weak<Inner>,
}

/// The version-dependent behaviours, in one place.
impl Inner {
    fn at_least(&self, minor: u32, patch: u32) -> bool {
        self.version >= (0, minor, patch)
    }
    fn has_app_config(&self) -> bool {
        self.at_least(21, 0)
    }
    /// 0.17-0.20 mask GraphQL errors and have OAuth only as a plugin.
    fn is_legacy(&self) -> bool {
        !self.has_app_config()
    }
    fn has_oauth(&self) -> bool {
        self.has_app_config() || self.opts.oauth_plugin
    }
    fn validates_oidc(&self) -> bool {
        self.at_least(22, 0)
    }
    fn knows_claim_email_verified(&self) -> bool {
        self.at_least(26, 0)
    }
    fn checks_issuer_equality(&self) -> bool {
        self.at_least(26, 0)
    }
    /// 0.25.7 (AFFiNE PR #14061): PKCE S256 and a `nonce` at preflight; at the callback the
    /// `id_token` verified against the JWKS, userinfo's `sub` equal to it, claims from userinfo
    /// then the id_token, `claim_id` default `sub`, `email_verified: false` refused. Before: none
    /// of it, and the older token/userinfo schemas.
    fn verifies_id_token(&self) -> bool {
        self.at_least(25, 7)
    }
    fn uses_pkce(&self) -> bool {
        self.verifies_id_token()
    }
    /// The newest `oidc.ts` (the one with discovery retries): configured claims searched in
    /// userinfo and id_token alike, the e-mail validated while resolving it, and
    /// `email_verified` accepted as a word ("yes", "0", ...) in userinfo.
    fn resolves_claims_in_both_sources(&self) -> bool {
        self.retries_discovery()
    }
    /// The newest `service.ts` refuses a callback without a client nonce; older controllers
    /// only compare it when the preflight gave one.
    fn requires_client_nonce(&self) -> bool {
        self.at_least(27, 0)
    }
    /// A zod schema failure: VALIDATION_ERROR from 0.21 (seen on 0.22.3, issue #12774);
    /// an internal error before (seen on 0.19, issue #8752).
    fn maps_zod_to_validation_error(&self) -> bool {
        self.at_least(21, 0)
    }
    fn retries_discovery(&self) -> bool {
        self.at_least(27, 0)
    }
    fn ssrf_guard(&self) -> bool {
        opts_ssrf_guard(&self.opts, self.version)
    }
    fn sets_csrf_cookie(&self) -> bool {
        self.at_least(25, 0)
    }
    fn has_access_tokens(&self) -> bool {
        self.at_least(25, 0)
    }
    fn version_string(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }
}

impl Inner {
    fn new(opts: AffineOptions, url: &str, me: Weak<Inner>) -> Self {
        let version = parse_version(&opts.version);
        let oauth = version >= (0, 21, 0) || opts.oauth_plugin;
        let http = discovery_client(opts_ssrf_guard(&opts, version));
        let schema =
            Schema::parse_and_validate(schema_sdl(version, oauth), "affine-standin.graphql")
                .expect("the stand-in's schema is valid");
        let mut users = Vec::new();
        if !opts.admin_email.is_empty() {
            users.push(User {
                id: uuid4(),
                email: opts.admin_email.clone(),
                name: name_of(&opts.admin_email),
                password: opts.admin_password.clone(),
                admin: true,
                oidc_created: false,
            });
        }
        for (email, password) in &opts.users {
            users.push(User {
                id: uuid4(),
                email: email.clone(),
                name: name_of(email),
                password: password.clone(),
                admin: false,
                oidc_created: false,
            });
        }
        Inner {
            opts,
            version,
            url: url.to_string(),
            schema,
            state: Mutex::new(State {
                users,
                ..State::default()
            }),
            stop: AtomicBool::new(false),
            http,
            me,
        }
    }
}

fn name_of(email: &str) -> String {
    email.split('@').next().unwrap_or(email).to_string()
}

/// Whether the private-address guard is on: as set, else from 0.27.
fn opts_ssrf_guard(opts: &AffineOptions, version: (u32, u32, u32)) -> bool {
    opts.ssrf_guard.unwrap_or(version >= (0, 27, 0))
}

/// AFFiNE's discovery fetch: 10 s per request as 0.27 (5 here, loopback), redirects followed
/// up to 3, and with the guard on each redirect target refused before it is fetched, as a
/// guard that checks only the first URL would be no guard.
fn discovery_client(ssrf_guard: bool) -> reqwest::blocking::Client {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_DISCOVERY_REDIRECTS {
            return attempt.error(format!("more than {MAX_DISCOVERY_REDIRECTS} redirects"));
        }
        if ssrf_guard {
            if let Err(why) = ssrf_check(attempt.url().as_str()) {
                return attempt.error(why);
            }
        }
        attempt.follow()
    });
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(policy)
        // The stand-ins live on loopback: never route their traffic through a proxy.
        .no_proxy()
        .build()
        .expect("http client")
}

/// AFFiNE 0.27's fetch follows at most this many redirects.
const MAX_DISCOVERY_REDIRECTS: usize = 3;

/// The subset of AFFiNE's GraphQL schema the stand-in serves, per version
/// (CONTRACTS.md §1 "Admin settings over the network" and "Public checks"); `oauth`: whether
/// `serverConfig.oauthProviders` exists (always from 0.21, with the OAuth plugin before).
fn schema_sdl(v: (u32, u32, u32), oauth: bool) -> String {
    let mut query = String::from("  serverConfig: ServerConfigType!\n  currentUser: UserType\n");
    let mut mutation = String::from("  sendVerifyEmail(callbackUrl: String!): Boolean!\n");
    if v >= (0, 21, 0) {
        query.push_str("  appConfig: JSONObject!\n");
        mutation.push_str("  updateAppConfig(updates: [UpdateAppConfigInput!]!): JSONObject!\n");
    }
    // validateAppConfig: Mutation in 0.22-0.25, Query and deprecated Mutation in 0.26.0,
    // Query only from 0.26.1, absent in 0.21.
    let validate =
        "validateAppConfig(updates: [UpdateAppConfigInput!]!): [AppConfigValidateResult!]!";
    if v >= (0, 26, 0) {
        query.push_str(&format!("  {validate}\n"));
    }
    if ((0, 22, 0)..(0, 26, 0)).contains(&v) {
        mutation.push_str(&format!("  {validate}\n"));
    }
    if v == (0, 26, 0) {
        mutation.push_str(&format!(
            "  {validate} @deprecated(reason: \"use query validateAppConfig\")\n"
        ));
    }
    format!(
        r#"
scalar JSON
scalar JSONObject
enum OAuthProviderType {{ Apple GitHub Google OIDC }}
enum ServerFeature {{ Captcha Comment Copilot CopilotEmbedding Indexer LocalWorkspace OAuth Payment }}
enum ServerDeploymentType {{ Affine Selfhosted }}
enum FeatureType {{ Admin FreePlan LifetimeProPlan ProPlan QuotaExceededReadonlyWorkspace TeamPlan UnlimitedCopilot UnlimitedWorkspace }}
type ServerConfigType {{
  baseUrl: String!
  features: [ServerFeature!]!
  initialized: Boolean!
  name: String!
{oauth_providers}  type: ServerDeploymentType!
  version: String!
}}
type UserType {{
  id: ID!
  email: String!
  name: String!
  avatarUrl: String
  disabled: Boolean!
  emailVerified: Boolean!
  hasPassword: Boolean
  features: [FeatureType!]!
}}
input UpdateAppConfigInput {{
  key: String!
  module: String!
  value: JSON!
}}
type AppConfigValidateResult {{
  error: String
  key: String!
  module: String!
  valid: Boolean!
  value: JSON!
}}
type Query {{
{query}}}
type Mutation {{
{mutation}}}
"#,
        oauth_providers = if oauth {
            "  oauthProviders: [OAuthProviderType!]!\n"
        } else {
            ""
        },
    )
}

/// Shipped defaults as (module, flat key, value); `appConfig` nests the dotted keys.
fn defaults() -> Vec<(&'static str, &'static str, Value)> {
    let provider = json!({"clientId": "", "clientSecret": "", "args": {}});
    vec![
        ("server", "name", json!("AFFiNE Selfhosted Cloud")),
        ("server", "externalUrl", json!("")),
        ("server", "https", json!(false)),
        ("server", "host", json!("localhost")),
        ("server", "port", json!(3010)),
        ("server", "path", json!("")),
        ("auth", "allowSignup", json!(true)),
        ("auth", "requireEmailDomainVerification", json!(false)),
        ("auth", "requireEmailVerification", json!(true)),
        ("auth", "passwordRequirements", json!({"min": 8, "max": 32})),
        ("auth", "session.ttl", json!(1_296_000)),
        ("auth", "session.ttr", json!(604_800)),
        ("oauth", "providers.google", provider.clone()),
        ("oauth", "providers.github", provider.clone()),
        ("oauth", "providers.apple", provider),
        (
            "oauth",
            "providers.oidc",
            json!({"clientId": "", "clientSecret": "", "issuer": "", "args": {}}),
        ),
        ("mailer", "SMTP.host", json!("")),
        ("mailer", "SMTP.port", json!(465)),
        ("mailer", "SMTP.username", json!("")),
        ("mailer", "SMTP.password", json!("")),
    ]
}

/// Puts `value` at the dotted `key` inside `module` of a nested object.
fn set_nested(root: &mut Map<String, Value>, module: &str, key: &str, value: Value) {
    let mut cur = root
        .entry(module.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let obj = cur.as_object_mut().expect("object");
        if i + 1 == parts.len() {
            obj.insert(part.to_string(), value);
            return;
        }
        cur = obj
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

// ---------------------------------------------------------------------------------------------
// Errors, as AFFiNE's UserFriendlyError renders them (CONTRACTS.md §1 "Errors").
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct AffineError {
    status: u16,
    code: &'static str,
    kind: &'static str,
    name: &'static str,
    message: String,
    data: Option<Box<Value>>,
}

impl AffineError {
    fn new(status: u16, kind: &'static str, name: &'static str, message: String) -> Self {
        AffineError {
            status,
            code: super::http_standin::reason_phrase(status),
            kind,
            name,
            message,
            data: None,
        }
    }
    fn with_data(mut self, data: Value) -> Self {
        self.data = Some(Box::new(data));
        self
    }
    fn authentication_required() -> Self {
        Self::new(
            401,
            "AUTHENTICATION_REQUIRED",
            "AUTHENTICATION_REQUIRED",
            "You must sign in first to access this resource.".into(),
        )
    }
    fn action_forbidden() -> Self {
        Self::new(
            403,
            "ACTION_FORBIDDEN",
            "ACTION_FORBIDDEN",
            "You do not have permission to access this resource.".into(),
        )
    }
    fn invalid_app_config(module: &str, key: &str, hint: String) -> Self {
        Self::new(
            400,
            "INVALID_INPUT",
            "INVALID_APP_CONFIG",
            format!("Invalid app config for module `{module}` with key `{key}`. {hint}."),
        )
        .with_data(json!({"module": module, "key": key, "hint": hint}))
    }
    fn graphql_bad_request(code: &str, message: &str) -> Self {
        Self::new(
            400,
            "BAD_REQUEST",
            "GRAPHQL_BAD_REQUEST",
            format!("GraphQL bad request, code: {code}, {message}"),
        )
        .with_data(json!({"code": code, "message": message}))
    }
    /// The `{status, code, type, name, message, data?}` object used as REST body and as
    /// GraphQL `extensions`.
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("status".into(), json!(self.status));
        m.insert("code".into(), json!(self.code));
        m.insert("type".into(), json!(self.kind));
        m.insert("name".into(), json!(self.name));
        m.insert("message".into(), json!(self.message));
        if let Some(d) = &self.data {
            m.insert("data".into(), (**d).clone());
        }
        Value::Object(m)
    }
    fn rest(&self) -> Response {
        Response::json(self.status, &self.to_json())
    }
}

/// HTTP 400 with one GraphQL error whose extensions say GRAPHQL_BAD_REQUEST (parse, validation,
/// variable and request-shape errors; Apollo's `code` is kept in `data.code`).
fn graphql_400(apollo_code: &str, message: &str, locations: Option<Value>) -> Response {
    let mut err = Map::new();
    err.insert("message".into(), json!(message));
    if let Some(l) = locations {
        err.insert("locations".into(), l);
    }
    err.insert(
        "extensions".into(),
        AffineError::graphql_bad_request(apollo_code, message).to_json(),
    );
    Response::json(400, &json!({"errors": [Value::Object(err)]}))
}

/// apollo-compiler words some validation errors differently from graphql-js (which AFFiNE
/// runs); rewrite the one clients meet most so messages read like AFFiNE's.
fn graphql_js_message(msg: &str) -> String {
    // "type `Query` does not have a field `appConfig`" -> Cannot query field "appConfig" on type "Query".
    if let Some(rest) = msg.strip_prefix("type `") {
        if let Some((ty, rest)) = rest.split_once("` does not have a field `") {
            let field = rest.trim_end_matches('`');
            return format!("Cannot query field \"{field}\" on type \"{ty}\".");
        }
    }
    msg.to_string()
}

// ---------------------------------------------------------------------------------------------
// HTTP routing.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Auth {
    Anonymous,
    Session(User),
    AccessToken(User),
}

impl Service for Inner {
    fn handle(&self, req: &Request) -> Response {
        let path = req.path_only();
        if path.starts_with("/api/auth/") {
            if let Some(resp) = self.throttle(req) {
                return resp;
            }
        }
        match (req.method.as_str(), path) {
            (_, "/graphql") => self.graphql(req),
            ("POST", "/api/auth/sign-in") => self.sign_in(req),
            ("POST", "/api/oauth/preflight") => self.preflight(req),
            ("POST", "/api/oauth/callback") => self.oauth_callback(req),
            ("GET", "/api/auth/sign-out") => self.sign_out(req),
            ("POST", "/api/setup/create-admin-user") => self.create_admin(req),
            (m, p) => AffineError::new(
                404,
                "RESOURCE_NOT_FOUND",
                "NOT_FOUND",
                format!("Cannot {m} {p}"),
            )
            .rest(),
        }
    }

    /// `Fault::RateLimit` hits the same routes as the real throttler: `/api/auth/*`.
    fn throttled(&self, req: &Request, retry_after_secs: u64) -> Option<Response> {
        req.path_only()
            .starts_with("/api/auth/")
            .then(|| too_many_requests(retry_after_secs))
    }
}

fn too_many_requests(retry_after_secs: u64) -> Response {
    AffineError::new(
        429,
        "TOO_MANY_REQUESTS",
        "TOO_MANY_REQUEST",
        "Too many requests.".into(),
    )
    .rest()
    .with_header("Retry-After", &retry_after_secs.to_string())
}

impl Inner {
    /// 20 requests per minute per client on `/api/auth/*`, then 429 with `Retry-After`.
    fn throttle(&self, req: &Request) -> Option<Response> {
        let mut st = lock(&self.state);
        let now = Instant::now();
        let entry = st.throttle.entry(req.remote.ip()).or_insert((now, 0));
        if now.duration_since(entry.0) >= AUTH_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 > AUTH_LIMIT {
            let left = AUTH_WINDOW.saturating_sub(now.duration_since(entry.0));
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Some(too_many_requests(secs.max(1)));
        }
        None
    }

    fn authenticate(&self, req: &Request) -> Auth {
        let st = lock(&self.state);
        let user = |id: &String| st.users.iter().find(|u| &u.id == id).cloned();
        if let Some(sid) = req.cookie("affine_session") {
            if let Some(u) = st.sessions.get(&sid).and_then(user) {
                return Auth::Session(u);
            }
        }
        if let Some(token) = req
            .header("authorization")
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
        {
            if let Some(u) = st.sessions.get(token).and_then(user) {
                return Auth::Session(u);
            }
            if self.has_access_tokens() {
                if let Some(u) = st.access_tokens.get(token).and_then(user) {
                    return Auth::AccessToken(u);
                }
            }
        }
        Auth::Anonymous
    }

    /// `@Admin()`: anonymous → AUTHENTICATION_REQUIRED; signed in without the `administrator`
    /// feature, or through a personal access token → ACTION_FORBIDDEN.
    fn admin_guard(&self, auth: &Auth) -> Result<(), AffineError> {
        match auth {
            Auth::Anonymous => Err(AffineError::authentication_required()),
            Auth::Session(u) if u.admin => Ok(()),
            _ => Err(AffineError::action_forbidden()),
        }
    }

    fn user_json(u: &User) -> Value {
        json!({
            "id": u.id,
            "email": u.email,
            "name": u.name,
            "avatarUrl": null,
            "disabled": false,
            // A user an OIDC login created has no password.
            "hasPassword": !u.password.is_empty(),
            "emailVerified": true,
        })
    }

    /// Sets the session cookies as AFFiNE does (CONTRACTS.md §1 "Authentication").
    fn session_response(&self, user: &User) -> Response {
        self.with_session_cookies(Response::json(200, &Self::user_json(user)), user)
    }

    /// A new session for `user`, its cookies added to `resp` (sign-in and the OAuth callback
    /// set the same ones).
    fn with_session_cookies(&self, resp: Response, user: &User) -> Response {
        let sid = uuid4();
        lock(&self.state)
            .sessions
            .insert(sid.clone(), user.id.clone());
        let secure = if self.opts.https_secure_cookie {
            "; Secure"
        } else {
            ""
        };
        let mut resp = resp
            .with_header(
                "Set-Cookie",
                &format!("affine_session={sid}; Path=/; HttpOnly; SameSite=Lax{secure}"),
            )
            .with_header(
                "Set-Cookie",
                &format!(
                    "affine_user_id={}; Path=/; HttpOnly; SameSite=Lax{secure}",
                    user.id
                ),
            );
        if self.sets_csrf_cookie() {
            resp = resp.with_header(
                "Set-Cookie",
                &format!(
                    "affine_csrf_token={}; Path=/; SameSite=Lax{secure}",
                    random_token(32)
                ),
            );
        }
        resp
    }

    fn sign_in(&self, req: &Request) -> Response {
        let body = req.json().unwrap_or(Value::Null);
        let email = body.get("email").and_then(Value::as_str).unwrap_or("");
        if !email.contains('@') {
            return AffineError::new(
                400,
                "INVALID_INPUT",
                "INVALID_EMAIL",
                format!("An invalid email provided: {email}"),
            )
            .with_data(json!({"email": email}))
            .rest();
        }
        let password = body.get("password").and_then(Value::as_str).unwrap_or("");
        if password.is_empty() {
            // DANGER in the contract: no password means "send me a magic link".
            lock(&self.state).magic_links_sent += 1;
            return Response::json(200, &json!({"email": email}));
        }
        let user = lock(&self.state)
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned();
        match user {
            Some(u) if u.password == password => {
                lock(&self.state).sign_in_count += 1;
                self.session_response(&u)
            }
            _ => AffineError::new(
                400,
                "BAD_REQUEST",
                "WRONG_SIGN_IN_CREDENTIALS",
                format!("Wrong user email or password: {email}"),
            )
            .with_data(json!({"email": email}))
            .rest(),
        }
    }

    /// `POST /api/setup/create-admin-user`, only while no user exists.
    fn create_admin(&self, req: &Request) -> Response {
        let body = req.json().unwrap_or(Value::Null);
        let email = body.get("email").and_then(Value::as_str).unwrap_or("");
        let password = body.get("password").and_then(Value::as_str).unwrap_or("");
        let user = {
            let mut st = lock(&self.state);
            if !st.users.is_empty() {
                return AffineError::action_forbidden().rest();
            }
            if !email.contains('@') {
                return AffineError::new(
                    400,
                    "INVALID_INPUT",
                    "INVALID_EMAIL",
                    format!("An invalid email provided: {email}"),
                )
                .rest();
            }
            if password.len() < 8 || password.len() > 32 {
                return AffineError::new(
                    400,
                    "INVALID_INPUT",
                    "INVALID_PASSWORD_LENGTH",
                    "Password must be between 8 and 32 characters".into(),
                )
                .with_data(json!({"min": 8, "max": 32}))
                .rest();
            }
            let user = User {
                id: uuid4(),
                email: email.to_string(),
                name: body
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| name_of(email)),
                password: password.to_string(),
                admin: true,
                oidc_created: false,
            };
            st.users.push(user.clone());
            user
        };
        self.session_response(&user)
    }

    /// `POST /api/oauth/preflight {provider, client_nonce}` → `{url}` of the IdP's authorize
    /// endpoint (CONTRACTS.md §1 "Public checks").
    fn preflight(&self, req: &Request) -> Response {
        let body = req.json().unwrap_or(Value::Null);
        let Some(provider) = body.get("provider").and_then(Value::as_str) else {
            return AffineError::new(
                400,
                "BAD_REQUEST",
                "MISSING_OAUTH_QUERY_PARAMETER",
                "Missing query parameter `provider`.".into(),
            )
            .with_data(json!({"name": "provider"}))
            .rest();
        };
        let unknown = || {
            AffineError::new(
                400,
                "INVALID_INPUT",
                "UNKNOWN_OAUTH_PROVIDER",
                format!("Unknown authentication provider {provider}."),
            )
            .with_data(json!({"name": provider}))
            .rest()
        };
        if provider != "OIDC" {
            return unknown();
        }
        let Some(reg) = lock(&self.state).oidc.clone() else {
            return unknown();
        };
        let config = self.effective_oidc();
        let endpoint = match reg.authorization_endpoint {
            Some(e) => e,
            // 0.21 registered without discovery; the authorize URL needs it now.
            None => match self.discover(config["issuer"].as_str().unwrap_or("")) {
                Ok(doc) => doc["authorization_endpoint"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                Err(_) => {
                    return AffineError::new(
                        500,
                        "INTERNAL_SERVER_ERROR",
                        "INTERNAL_SERVER_ERROR",
                        "An internal error occurred.".into(),
                    )
                    .rest()
                }
            },
        };
        let args = config["args"].as_object().cloned().unwrap_or_default();
        // AFFiNE builds the query as one object: `scope` (its default `openid profile email`,
        // from 0.25.7 with `openid` put in front when missing) and then every non-`claim_*` arg
        // spread after it, so a configured `scope` replaces that value as written (openid is
        // never added to it) while keeping the key's place. Read from `providers/oidc.ts`.
        let scope = match args.get("scope") {
            None => "openid profile email".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        // The saved state: its id is the UUID AFFiNE's cache keys it by, and (0.25.7+) the
        // id_token's expected nonce; the PKCE verifier never leaves the server.
        let id = uuid4();
        let pkce = self.uses_pkce().then(|| {
            let verifier = base64url(random_token(96).as_bytes());
            let challenge = base64url(&Sha256::digest(verifier.as_bytes()));
            (verifier, challenge)
        });
        lock(&self.state).oauth_states.insert(
            id.clone(),
            OAuthState {
                provider: provider.to_string(),
                redirect_uri: body
                    .get("redirect_uri")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                client_nonce: body
                    .get("client_nonce")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                code_verifier: pkce.as_ref().map(|(v, _)| v.clone()),
                expires_at: Instant::now() + OAUTH_STATE_TTL,
            },
        );
        let mut payload = Map::new();
        payload.insert("state".into(), json!(id));
        payload.insert("provider".into(), json!(provider));
        if let Some((_, challenge)) = &pkce {
            payload.insert(
                "pkce".into(),
                json!({"codeChallenge": challenge, "codeChallengeMethod": "S256"}),
            );
        }
        let state = Value::Object(payload).to_string();
        let mut params: Vec<(String, String)> = vec![
            (
                "client_id".into(),
                config["clientId"].as_str().unwrap_or("").into(),
            ),
            (
                "redirect_uri".into(),
                format!("{}/oauth/callback", self.url),
            ),
            ("scope".into(), scope),
            ("response_type".into(), "code".into()),
        ];
        // Other non-`claim_*` args become query parameters of the authorize URL.
        for (k, v) in &args {
            if k == "scope" || k.starts_with("claim_") {
                continue;
            }
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            params.push((k.clone(), v));
        }
        params.push(("state".into(), state));
        if let Some((_, challenge)) = pkce {
            params.push(("nonce".into(), id));
            params.push(("code_challenge".into(), challenge));
            params.push(("code_challenge_method".into(), "S256".into()));
        }
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        Response::json(
            200,
            &json!({"url": format!("{endpoint}{sep}{}", query.join("&"))}),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// App config and OIDC registration.
// ---------------------------------------------------------------------------------------------

impl Inner {
    /// defaults < stored overrides, nested.
    fn effective_config(&self) -> Value {
        let st = lock(&self.state);
        let mut root = Map::new();
        for (module, key, value) in defaults() {
            let v = st
                .overrides
                .get(&(module.to_string(), key.to_string()))
                .cloned()
                .unwrap_or(value);
            set_nested(&mut root, module, key, v);
        }
        Value::Object(root)
    }

    fn effective_oidc(&self) -> Value {
        self.effective_config()["oauth"]["providers"]["oidc"].clone()
    }

    /// Server-side validation of one update; `Err(hint)` when invalid.
    fn validate_update(&self, module: &str, key: &str, value: &Value) -> Result<(), String> {
        if !defaults().iter().any(|(m, k, _)| *m == module && *k == key) {
            return Err(format!("Value: {value}. Error: unknown config key"));
        }
        if module == OAUTH && key == OIDC_KEY && self.validates_oidc() {
            let issues = self.oidc_issues(value);
            if !issues.is_empty() {
                return Err(format!("Value: {value}. Error: {}", issues.join("; ")));
            }
        }
        Ok(())
    }

    /// The checks of 0.22+ on `providers.oidc` (0.21 accepts any object).
    fn oidc_issues(&self, value: &Value) -> Vec<String> {
        let Some(obj) = value.as_object() else {
            return vec![format!("Expected object, received {}", type_name(value))];
        };
        let mut issues = Vec::new();
        match obj.get("issuer") {
            None => issues.push("issuer: Required".to_string()),
            Some(Value::String(s)) => {
                if !(s.is_empty() || s.starts_with("http://") || s.starts_with("https://")) {
                    issues.push("issuer: Invalid".to_string());
                }
            }
            Some(other) => issues.push(format!(
                "issuer: Expected string, received {}",
                type_name(other)
            )),
        }
        match obj.get("args") {
            None => issues.push("args: Required".to_string()),
            Some(Value::Object(args)) => {
                let mut known = vec!["scope", "claim_id", "claim_email", "claim_name"];
                if self.knows_claim_email_verified() {
                    known.push("claim_email_verified");
                }
                for k in known {
                    if let Some(v) = args.get(k) {
                        if !v.is_string() {
                            issues.push(format!(
                                "args.{k}: Expected string, received {}",
                                type_name(v)
                            ));
                        }
                    }
                }
            }
            Some(other) => issues.push(format!(
                "args: Expected object, received {}",
                type_name(other)
            )),
        }
        issues
    }

    /// Re-registers OIDC after its config changed, by the version's rules
    /// (CONTRACTS.md §1 "Public checks").
    fn reconfigure_oidc(&self) {
        let config = self.effective_oidc();
        let s = |k: &str| config[k].as_str().unwrap_or("").to_string();
        let (client_id, client_secret, issuer) = (s("clientId"), s("clientSecret"), s("issuer"));
        let generation = {
            let mut st = lock(&self.state);
            st.oidc_generation += 1;
            st.oidc = None;
            st.oidc_generation
        };
        if !self.has_oauth() || client_id.is_empty() || client_secret.is_empty() {
            return; // an empty config unregisters
        }
        if !self.validates_oidc() {
            // 0.21 (and 0.17-0.20 with the OAuth plugin, from their environment):
            // registered as soon as clientId and clientSecret are set, no discovery.
            lock(&self.state).oidc = Some(OidcRegistration {
                authorization_endpoint: None,
                document: None,
            });
            return;
        }
        if issuer.is_empty() {
            return;
        }
        if self.retries_discovery() {
            // 0.27+: asynchronous, retried with backoff 1 s, 2 s, 4 s … up to 60 s.
            if let Some(me) = self.me.upgrade() {
                spawn_discovery(me, issuer, generation);
            }
            return;
        }
        // 0.22-0.26: one synchronous attempt; a failure stays until the next change.
        let result = self.discover(&issuer);
        let mut st = lock(&self.state);
        if st.oidc_generation == generation {
            st.oidc = result.ok().map(|doc| OidcRegistration {
                authorization_endpoint: doc["authorization_endpoint"].as_str().map(str::to_string),
                document: Some(doc),
            });
        }
    }

    /// One discovery fetch: `${issuer}/.well-known/openid-configuration` (plain concatenation,
    /// so a trailing slash gives `//`), the SSRF guard, the required fields, and (0.26+) the
    /// issuer equality ignoring trailing slashes.
    fn discover(&self, issuer: &str) -> Result<Value, String> {
        let url = format!("{issuer}/.well-known/openid-configuration");
        let outcome = self.fetch_discovery(issuer, &url);
        lock(&self.state).discovery_attempts.push(DiscoveryAttempt {
            url,
            outcome: outcome.as_ref().map(|_| ()).map_err(Clone::clone),
        });
        outcome
    }

    fn fetch_discovery(&self, issuer: &str, url: &str) -> Result<Value, String> {
        if self.ssrf_guard() {
            ssrf_check(url)?;
        }
        let resp = self
            .http
            .get(url)
            .header("Accept", "application/json")
            .send()
            .map_err(|e| format!("Failed to fetch OIDC configuration: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!(
                "Failed to fetch OIDC configuration: {}",
                resp.status()
            ));
        }
        let doc: Value = resp
            .json()
            .map_err(|e| format!("Invalid OIDC configuration: {e}"))?;
        for field in [
            "authorization_endpoint",
            "token_endpoint",
            "userinfo_endpoint",
            "issuer",
            "jwks_uri",
        ] {
            if !doc.get(field).is_some_and(Value::is_string) {
                return Err(format!("Invalid OIDC configuration: missing {field}"));
            }
        }
        if self.checks_issuer_equality() {
            let got = doc["issuer"].as_str().unwrap_or("");
            if got.trim_end_matches('/') != issuer.trim_end_matches('/') {
                return Err(format!(
                    "OIDC issuer mismatch: configured {issuer}, discovered {got}"
                ));
            }
        }
        Ok(doc)
    }
}

/// 0.27+ background registration: retry with backoff until success, a newer config, or drop.
fn spawn_discovery(inner: Arc<Inner>, issuer: String, generation: u64) {
    std::thread::spawn(move || {
        let mut delay = Duration::from_secs(1);
        loop {
            if inner.stop.load(Ordering::SeqCst) || lock(&inner.state).oidc_generation != generation
            {
                return;
            }
            if let Ok(doc) = inner.discover(&issuer) {
                let mut st = lock(&inner.state);
                if st.oidc_generation == generation {
                    st.oidc = Some(OidcRegistration {
                        authorization_endpoint: doc["authorization_endpoint"]
                            .as_str()
                            .map(str::to_string),
                        document: Some(doc),
                    });
                }
                return;
            }
            if sleep_unless(&inner.stop, delay) {
                return;
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    });
}

/// The 0.27 SSRF guard: refuse hosts that resolve to loopback, private, link-local,
/// unspecified or carrier-grade NAT addresses. No connection is made to a refused host.
fn ssrf_check(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("Invalid URL: {e}"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| "Invalid URL: no host".to_string())?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| format!("Failed to resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    for ip in addrs {
        if is_private(ip) {
            return Err(format!(
                "SSRF blocked: {host} resolves to a disallowed address {ip}"
            ));
        }
    }
    Ok(())
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg0 & 0xfe00) == 0xfc00
                || (seg0 & 0xffc0) == 0xfe80
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ---------------------------------------------------------------------------------------------
// GraphQL.
// ---------------------------------------------------------------------------------------------

/// Per-request execution context; resolver errors carry AFFiNE's extensions on the side
/// because apollo-compiler's `FieldError` only has a message.
struct Ctx<'a> {
    inner: &'a Inner,
    auth: Auth,
    errors: RefCell<Vec<AffineError>>,
}

impl Ctx<'_> {
    fn fail(&self, e: AffineError) -> FieldError {
        let message = e.message.clone();
        self.errors.borrow_mut().push(e);
        FieldError { message }
    }
}

struct Root<'a> {
    ctx: &'a Ctx<'a>,
    operation: OperationType,
}

/// An object type resolved from a JSON map (list-typed fields given as arrays).
struct JsonObject {
    type_name: &'static str,
    fields: Map<String, Value>,
}

fn leaf<'a>(v: Value) -> ResolvedValue<'a> {
    match v {
        Value::Array(items) => ResolvedValue::list(items.into_iter().map(leaf)),
        other => ResolvedValue::leaf(JsonValue::from(other)),
    }
}

/// A JSON/JSONObject scalar: passed through whole.
fn scalar<'a>(v: Value) -> ResolvedValue<'a> {
    ResolvedValue::leaf(JsonValue::from(v))
}

impl ObjectValue for JsonObject {
    fn type_name(&self) -> &str {
        self.type_name
    }

    fn resolve_field<'a>(
        &'a self,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        match self.fields.get(info.field_name()) {
            // `value` of AppConfigValidateResult is the JSON scalar, not a list.
            Some(v) if info.field_name() == "value" => Ok(scalar(v.clone())),
            Some(v) => Ok(leaf(v.clone())),
            None => Err(self.unknown_field_error(info)),
        }
    }
}

impl ObjectValue for Root<'_> {
    fn type_name(&self) -> &str {
        match self.operation {
            OperationType::Mutation => "Mutation",
            _ => "Query",
        }
    }

    fn resolve_field<'a>(
        &'a self,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        let ctx = self.ctx;
        let inner = ctx.inner;
        let args = serde_json::to_value(info.arguments()).unwrap_or(Value::Null);
        match info.field_name() {
            "serverConfig" => Ok(ResolvedValue::object(JsonObject {
                type_name: "ServerConfigType",
                fields: inner.server_config(),
            })),
            "currentUser" => Ok(match &ctx.auth {
                Auth::Anonymous => ResolvedValue::null(),
                Auth::Session(u) | Auth::AccessToken(u) => {
                    let mut fields = Inner::user_json(u).as_object().cloned().unwrap_or_default();
                    let features = if u.admin {
                        json!(["Admin", "FreePlan"])
                    } else {
                        json!(["FreePlan"])
                    };
                    fields.insert("features".into(), features);
                    ResolvedValue::object(JsonObject {
                        type_name: "UserType",
                        fields,
                    })
                }
            }),
            "appConfig" => {
                inner.admin_guard(&ctx.auth).map_err(|e| ctx.fail(e))?;
                Ok(scalar(inner.effective_config()))
            }
            "validateAppConfig" => {
                inner.admin_guard(&ctx.auth).map_err(|e| ctx.fail(e))?;
                let results: Vec<ResolvedValue<'a>> = updates_of(&args)
                    .into_iter()
                    .map(|(module, key, value)| {
                        let check = inner.validate_update(&module, &key, &value);
                        let error = match &check {
                            Ok(()) => Value::Null,
                            Err(hint) => {
                                json!(
                                    AffineError::invalid_app_config(&module, &key, hint.clone())
                                        .message
                                )
                            }
                        };
                        let mut fields = Map::new();
                        fields.insert("module".into(), json!(module));
                        fields.insert("key".into(), json!(key));
                        fields.insert("value".into(), value);
                        fields.insert("valid".into(), json!(check.is_ok()));
                        fields.insert("error".into(), error);
                        ResolvedValue::object(JsonObject {
                            type_name: "AppConfigValidateResult",
                            fields,
                        })
                    })
                    .collect();
                Ok(ResolvedValue::list(results))
            }
            "updateAppConfig" => {
                inner.admin_guard(&ctx.auth).map_err(|e| ctx.fail(e))?;
                inner
                    .update_app_config(updates_of(&args))
                    .map(scalar)
                    .map_err(|e| ctx.fail(e))
            }
            "sendVerifyEmail" => match &ctx.auth {
                Auth::Anonymous => Err(ctx.fail(AffineError::authentication_required())),
                _ => Ok(ResolvedValue::leaf(JsonValue::from(true))),
            },
            _ => Err(self.unknown_field_error(info)),
        }
    }
}

fn updates_of(args: &Value) -> Vec<(String, String, Value)> {
    args["updates"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|u| {
                    (
                        u["module"].as_str().unwrap_or("").to_string(),
                        u["key"].as_str().unwrap_or("").to_string(),
                        u.get("value").cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Inner {
    fn server_config(&self) -> Map<String, Value> {
        let (initialized, registered) = {
            let st = lock(&self.state);
            (!st.users.is_empty(), st.oidc.is_some())
        };
        let name = self.effective_config()["server"]["name"].clone();
        let mut m = Map::new();
        m.insert("version".into(), json!(self.version_string()));
        m.insert("name".into(), name);
        m.insert("baseUrl".into(), json!(self.url));
        m.insert("type".into(), json!("Selfhosted"));
        m.insert("initialized".into(), json!(initialized));
        m.insert(
            "features".into(),
            if registered {
                json!(["LocalWorkspace", "OAuth"])
            } else {
                json!(["LocalWorkspace"])
            },
        );
        if self.has_oauth() {
            m.insert(
                "oauthProviders".into(),
                if registered {
                    json!(["OIDC"])
                } else {
                    json!([])
                },
            );
        }
        m
    }

    /// Validates every update first (nothing is saved when one is invalid), then REPLACES each
    /// stored value and returns only the saved overrides, nested.
    fn update_app_config(
        &self,
        updates: Vec<(String, String, Value)>,
    ) -> Result<Value, AffineError> {
        for (module, key, value) in &updates {
            if let Err(hint) = self.validate_update(module, key, value) {
                return Err(AffineError::invalid_app_config(module, key, hint));
            }
        }
        let mut saved = Map::new();
        let mut oidc_changed = false;
        {
            let mut st = lock(&self.state);
            for (module, key, value) in updates {
                oidc_changed |= module == OAUTH && key == OIDC_KEY;
                set_nested(&mut saved, &module, &key, value.clone());
                st.overrides.insert((module, key), value);
            }
            st.write_count += 1;
        }
        if oidc_changed {
            self.reconfigure_oidc();
        }
        Ok(Value::Object(saved))
    }
}

impl Inner {
    /// A document the server refuses before running it (parse, validation, operation and
    /// variable errors): HTTP 400 naming GRAPHQL_BAD_REQUEST from 0.21; 0.17-0.20 mask
    /// every such error as a bare "Internal Server Error" (seen on a real 0.17).
    fn graphql_refusal(&self, code: &str, message: &str, locations: Option<Value>) -> Response {
        if self.is_legacy() {
            return Response::json(
                400,
                &json!({"errors": [{
                    "message": "Internal Server Error",
                    "extensions": {"code": "Internal Server Error", "status": 500},
                }]}),
            );
        }
        graphql_400(code, message, locations)
    }

    fn graphql(&self, req: &Request) -> Response {
        // Apollo's CSRF prevention (requestHeaders: ['content-type']) refuses a request without
        // Content-Type; a simple content type then fails body parsing. Both are HTTP 400.
        let Some(media) = req.media_type().filter(|m| !m.is_empty()) else {
            return graphql_400(
                "BAD_REQUEST",
                "This operation has been blocked as a potential Cross-Site Request Forgery (CSRF). Please either specify a 'content-type' header (with a type that is not one of application/x-www-form-urlencoded, multipart/form-data, text/plain) or provide a non-empty value for one of the following headers: content-type\n",
                None,
            );
        };
        if req.method != "POST" || media != "application/json" {
            return graphql_400(
                "BAD_REQUEST",
                "POST body missing, invalid Content-Type, or JSON object has no keys.",
                None,
            );
        }
        let Some(body) = req.json().filter(Value::is_object) else {
            return AffineError::new(
                400,
                "BAD_REQUEST",
                "BAD_REQUEST",
                "Unexpected token in JSON body".into(),
            )
            .rest();
        };
        let Some(query) = body.get("query").and_then(Value::as_str) else {
            return graphql_400(
                "BAD_REQUEST",
                "GraphQL operations must contain a non-empty `query` or a `persistedQuery` extension.",
                None,
            );
        };
        let op_name = body.get("operationName").and_then(Value::as_str);
        let variables = match body.get("variables") {
            None | Some(Value::Null) => JsonMap::new(),
            Some(Value::Object(m)) => match JsonValue::from(Value::Object(m.clone())) {
                JsonValue::Object(o) => o,
                _ => JsonMap::new(),
            },
            Some(_) => {
                return graphql_400(
                    "BAD_REQUEST",
                    "`variables` in a POST body should be provided as an object.",
                    None,
                )
            }
        };
        let doc =
            match ExecutableDocument::parse_and_validate(&self.schema, query, "request.graphql") {
                Ok(doc) => doc,
                Err(with_errors) => {
                    let first = with_errors.errors.iter().next();
                    let (message, locations) = match first {
                        Some(d) => {
                            let json = serde_json::to_value(d.to_json()).unwrap_or(Value::Null);
                            (
                                graphql_js_message(json["message"].as_str().unwrap_or("invalid")),
                                json.get("locations").cloned(),
                            )
                        }
                        None => ("invalid document".to_string(), None),
                    };
                    let code = if message.starts_with("syntax error") {
                        "GRAPHQL_PARSE_FAILED"
                    } else {
                        "GRAPHQL_VALIDATION_FAILED"
                    };
                    return self.graphql_refusal(code, &message, locations);
                }
            };
        let operation = match doc.operations.get(op_name) {
            Ok(op) => op,
            Err(e) => {
                return self.graphql_refusal(
                    "OPERATION_RESOLUTION_FAILURE",
                    &e.message().to_string(),
                    None,
                )
            }
        };
        let ctx = Ctx {
            inner: self,
            auth: self.authenticate(req),
            errors: RefCell::new(Vec::new()),
        };
        let root = Root {
            ctx: &ctx,
            operation: operation.operation_type,
        };
        let result = Execution::new(&self.schema, &doc)
            .operation(operation)
            .raw_variable_values(&variables)
            .execute_sync(&root);
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                return self.graphql_refusal("BAD_USER_INPUT", &e.message().to_string(), None)
            }
        };
        let side = ctx.errors.borrow();
        let errors: Vec<Value> = response
            .errors
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
                // apollo-compiler prefixes resolver errors; AFFiNE shows its own message.
                let message = e
                    .message
                    .strip_prefix("resolver error: ")
                    .unwrap_or(&e.message)
                    .to_string();
                let ext = side
                    .iter()
                    .find(|a| a.message == message)
                    .map(AffineError::to_json)
                    .unwrap_or_else(|| {
                        AffineError::new(
                            500,
                            "INTERNAL_SERVER_ERROR",
                            "INTERNAL_SERVER_ERROR",
                            message.clone(),
                        )
                        .to_json()
                    });
                v["message"] = json!(message);
                v["extensions"] = ext;
                v
            })
            .collect();
        let data = response
            .data
            .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        let mut out = Map::new();
        if !errors.is_empty() {
            out.insert("errors".into(), Value::Array(errors));
        }
        out.insert("data".into(), data);
        Response::json(200, &Value::Object(out))
    }
}

// ---------------------------------------------------------------------------------------------
// OIDC login: the callback, AFFiNE's claim rules, users, sign-out (sources: the module doc).
// ---------------------------------------------------------------------------------------------

/// AFFiNE keeps an OAuth state 3 hours (`OAUTH_STATE_TTL_MS` in `service.ts`).
const OAUTH_STATE_TTL: Duration = Duration::from_secs(3 * 3600);

/// One saved OAuth state (AFFiNE's `OAuthState`).
#[derive(Clone, Debug)]
struct OAuthState {
    provider: String,
    redirect_uri: Option<String>,
    client_nonce: Option<String>,
    /// PKCE verifier (0.25.7+); only the challenge went into the authorize URL.
    code_verifier: Option<String>,
    expires_at: Instant,
}

/// What AFFiNE makes of the IdP's answers once its claim rules ran (`OAuthAccount`).
struct ExternalAccount {
    id: String,
    email: String,
    name: Option<String>,
}

/// AFFiNE's user-friendly errors of the login, as `base/error/def.ts` defines them (type →
/// status: bad_request and invalid_input 400, action_forbidden 403, internal 500).
impl AffineError {
    fn missing_oauth_query_parameter(name: &str) -> Self {
        Self::new(
            400,
            "BAD_REQUEST",
            "MISSING_OAUTH_QUERY_PARAMETER",
            format!("Missing query parameter `{name}`."),
        )
        .with_data(json!({"name": name}))
    }
    fn unknown_oauth_provider(name: &str) -> Self {
        Self::new(
            400,
            "INVALID_INPUT",
            "UNKNOWN_OAUTH_PROVIDER",
            format!("Unknown authentication provider {name}."),
        )
        .with_data(json!({"name": name}))
    }
    fn invalid_oauth_callback_state() -> Self {
        Self::new(
            400,
            "BAD_REQUEST",
            "INVALID_OAUTH_CALLBACK_STATE",
            "Invalid callback state parameter.".into(),
        )
    }
    fn oauth_state_expired() -> Self {
        Self::new(
            400,
            "BAD_REQUEST",
            "OAUTH_STATE_EXPIRED",
            "OAuth state expired, please try again.".into(),
        )
    }
    fn invalid_auth_state() -> Self {
        Self::new(
            400,
            "BAD_REQUEST",
            "INVALID_AUTH_STATE",
            "Invalid auth state. You might start the auth progress from another device.".into(),
        )
    }
    fn invalid_oauth_callback_code(status: u16, body: &str) -> Self {
        Self::new(
            400,
            "BAD_REQUEST",
            "INVALID_OAUTH_CALLBACK_CODE",
            format!(
                "Invalid callback code parameter, provider response status: {status} and body: {body}."
            ),
        )
        .with_data(json!({"status": status, "body": body}))
    }
    fn invalid_oauth_response(reason: &str) -> Self {
        Self::new(
            400,
            "BAD_REQUEST",
            "INVALID_OAUTH_RESPONSE",
            format!("Invalid OAuth response: {reason}."),
        )
        .with_data(json!({"reason": reason}))
    }
    fn sign_up_forbidden() -> Self {
        Self::new(
            403,
            "ACTION_FORBIDDEN",
            "SIGN_UP_FORBIDDEN",
            "You are not allowed to sign up.".into(),
        )
    }
    fn validation_error(errors: &str) -> Self {
        Self::new(
            400,
            "INVALID_INPUT",
            "VALIDATION_ERROR",
            format!("Validation error, errors: {errors}"),
        )
        .with_data(json!({"errors": errors}))
    }
    fn internal() -> Self {
        Self::new(
            500,
            "INTERNAL_SERVER_ERROR",
            "INTERNAL_SERVER_ERROR",
            "An internal error occurred.".into(),
        )
    }
}

/// The zod field types AFFiNE's token and userinfo schemas use.
#[derive(Clone, Copy)]
enum Zod {
    Str,
    /// `z.string().email()`
    Email,
    Num,
    /// `z.number().positive()`
    PositiveNum,
    Bool,
    /// `z.union([z.boolean(), z.enum(['true','false','1','0','yes','no'])])`
    BoolOrWord,
}

/// Checks an object against `(field, type, required)` like zod's `object().passthrough()`;
/// `Err` holds zod's issue list as `ZodError.message` prints it (JSON, two-space indent).
fn zod_check(v: &Value, fields: &[(&str, Zod, bool)]) -> Result<(), String> {
    let mut issues: Vec<Value> = Vec::new();
    let Some(obj) = v.as_object() else {
        issues.push(json!({"code": "invalid_type", "expected": "object", "received": type_name(v), "path": [], "message": format!("Expected object, received {}", type_name(v))}));
        return Err(serde_json::to_string_pretty(&issues).unwrap_or_default());
    };
    for &(name, kind, required) in fields {
        let expected = match kind {
            Zod::Str | Zod::Email => "string",
            Zod::Num | Zod::PositiveNum => "number",
            Zod::Bool => "boolean",
            Zod::BoolOrWord => "union",
        };
        match obj.get(name) {
            None if required => issues.push(json!({"code": "invalid_type", "expected": expected, "received": "undefined", "path": [name], "message": "Required"})),
            None => {}
            Some(value) => {
                let ok_type = match kind {
                    Zod::Str | Zod::Email => value.is_string(),
                    Zod::Num | Zod::PositiveNum => value.is_number(),
                    Zod::Bool => value.is_boolean(),
                    Zod::BoolOrWord => {
                        value.is_boolean()
                            || value.as_str().is_some_and(|s| {
                                ["true", "false", "1", "0", "yes", "no"].contains(&s)
                            })
                    }
                };
                if !ok_type {
                    if matches!(kind, Zod::BoolOrWord) {
                        issues.push(json!({"code": "invalid_union", "path": [name], "message": "Invalid input"}));
                    } else {
                        issues.push(json!({"code": "invalid_type", "expected": expected, "received": type_name(value), "path": [name], "message": format!("Expected {expected}, received {}", type_name(value))}));
                    }
                } else if matches!(kind, Zod::Email) && !is_zod_email(value.as_str().unwrap_or("")) {
                    issues.push(json!({"validation": "email", "code": "invalid_string", "message": "Invalid email", "path": [name]}));
                } else if matches!(kind, Zod::PositiveNum) && value.as_f64().unwrap_or(0.0) <= 0.0 {
                    issues.push(json!({"code": "too_small", "minimum": 0, "type": "number", "inclusive": false, "exact": false, "message": "Number must be greater than 0", "path": [name]}));
                }
            }
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(serde_json::to_string_pretty(&issues).unwrap_or_default())
    }
}

/// zod 3's e-mail rule: a local part of letters, digits and `_'+-.` (not starting with a dot,
/// no `..`, not ending in `'` or `.`), `@`, dot-separated labels starting with a letter or
/// digit, and a top-level label of at least two letters (`admin@localhost` fails).
fn is_zod_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && !local.starts_with('.')
        && !s.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_'+-.".contains(c))
        && local
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "_+-".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let Some((tld, rest)) = labels.split_last() else {
        return false;
    };
    let domain_ok = !rest.is_empty()
        && rest.iter().all(|l| {
            l.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && tld.len() >= 2
        && tld.chars().all(|c| c.is_ascii_alphabetic());
    local_ok && domain_ok
}

/// JavaScript's truthiness of a JSON value (`!value` in AFFiNE's checks).
fn js_truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(_) => true,
    }
}

/// AFFiNE's `extractString`: a non-empty string, else nothing.
fn extract_string(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// AFFiNE's `extractBoolean`: a boolean, or one of the words, case-insensitively.
fn extract_boolean(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

impl Inner {
    fn oauth_callback(&self, req: &Request) -> Response {
        match self.try_oauth_callback(req) {
            Ok(resp) => resp,
            Err(e) => e.rest(),
        }
    }

    /// `POST /api/oauth/callback {code, state, client_nonce}`, step by step as AFFiNE's
    /// controller and OIDC provider do it, each failure with AFFiNE's own error.
    fn try_oauth_callback(&self, req: &Request) -> Result<Response, AffineError> {
        let body = req.json().unwrap_or(Value::Null);
        let field = |k: &str| extract_string(body.get(k));
        let code =
            field("code").ok_or_else(|| AffineError::missing_oauth_query_parameter("code"))?;
        let mut state_id =
            field("state").ok_or_else(|| AffineError::missing_oauth_query_parameter("state"))?;
        let client_nonce = field("client_nonce");
        // The browser hands back the whole JSON `state` of the authorize URL.
        if state_id.chars().count() > 36 {
            if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&state_id) {
                if let Some(Value::String(id)) = m.get("state") {
                    state_id = id.clone();
                }
            }
        }
        if state_id.chars().count() != 36 {
            return Err(AffineError::invalid_oauth_callback_state());
        }
        let state = lock(&self.state)
            .oauth_states
            .get(&state_id)
            .filter(|s| Instant::now() < s.expires_at)
            .cloned()
            .ok_or_else(AffineError::oauth_state_expired)?;
        let saved_nonce = state.client_nonce.clone().filter(|n| !n.is_empty());
        if !self.requires_client_nonce() {
            if let Some(saved) = &saved_nonce {
                if client_nonce.as_ref() != Some(saved) {
                    return Err(AffineError::invalid_auth_state());
                }
            }
        }
        let registration = lock(&self.state)
            .oidc
            .clone()
            .filter(|_| state.provider == "OIDC")
            .ok_or_else(|| AffineError::unknown_oauth_provider(&state.provider))?;
        if self.requires_client_nonce()
            && (client_nonce.is_none() || saved_nonce.is_none() || client_nonce != saved_nonce)
        {
            return Err(AffineError::invalid_auth_state());
        }
        let doc = match registration.document {
            Some(doc) => doc,
            // 0.21 registered without discovery; the login needs the endpoints now.
            None => self
                .discover(self.effective_oidc()["issuer"].as_str().unwrap_or(""))
                .map_err(|_| AffineError::internal())?,
        };
        let config = self.effective_oidc();
        let client_id = config["clientId"].as_str().unwrap_or("").to_string();
        let args = config["args"].as_object().cloned().unwrap_or_default();

        // 1. The code for tokens.
        if self.uses_pkce() && state.code_verifier.is_none() {
            return Err(AffineError::invalid_auth_state());
        }
        let mut form = vec![
            ("code", code),
            ("client_id", client_id.clone()),
            (
                "client_secret",
                config["clientSecret"].as_str().unwrap_or("").to_string(),
            ),
            ("redirect_uri", format!("{}/oauth/callback", self.url)),
            ("grant_type", "authorization_code".to_string()),
        ];
        if let Some(v) = &state.code_verifier {
            form.push(("code_verifier", v.clone()));
        }
        let form: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let token_endpoint = doc["token_endpoint"].as_str().unwrap_or("");
        let tokens = self.idp_fetch(token_endpoint, Some(form.join("&")), None)?;
        let token_schema: &[(&str, Zod, bool)] = if self.verifies_id_token() {
            &[
                ("access_token", Zod::Str, true),
                ("expires_in", Zod::PositiveNum, false),
                ("refresh_token", Zod::Str, false),
                ("scope", Zod::Str, false),
                ("token_type", Zod::Str, true),
                ("id_token", Zod::Str, true),
            ]
        } else {
            // Before 0.25.7 a refresh token was required: authentik sends one only for the
            // offline_access scope (AFFiNE issues #8752, #12774).
            &[
                ("access_token", Zod::Str, true),
                ("expires_in", Zod::Num, true),
                ("refresh_token", Zod::Str, true),
                ("scope", Zod::Str, false),
                ("token_type", Zod::Str, true),
            ]
        };
        zod_check(&tokens, token_schema).map_err(|e| self.zod_error(&e))?;
        let access_token = tokens["access_token"].as_str().unwrap_or("").to_string();
        let has_refresh_token = tokens["refresh_token"].is_string();

        // 2.-4. The account, by the version's rules.
        let account = if self.verifies_id_token() {
            let id_token = tokens["id_token"].as_str().unwrap_or("");
            let claims = self
                .verify_id_token(id_token, &doc, &client_id, &state_id)
                .map_err(|_| AffineError::invalid_auth_state())?;
            let userinfo_endpoint = doc["userinfo_endpoint"].as_str().unwrap_or("");
            let user = self.idp_fetch(userinfo_endpoint, None, Some(&access_token))?;
            self.account_from_claims(&user, &claims, &args)?
        } else {
            let userinfo_endpoint = doc["userinfo_endpoint"].as_str().unwrap_or("");
            let user = self.idp_fetch(userinfo_endpoint, None, Some(&access_token))?;
            self.account_before_0_25_7(&user, &args)?
        };

        // 5. The connected account, or a user found or created by e-mail.
        let user = self.user_for_oidc_account(&account, has_refresh_token)?;
        let mut out = Map::new();
        out.insert("id".into(), json!(user.id));
        if let Some(r) = &state.redirect_uri {
            out.insert("redirectUri".into(), json!(r));
        }
        Ok(self.with_session_cookies(Response::json(200, &Value::Object(out)), &user))
    }

    fn zod_error(&self, issues: &str) -> AffineError {
        if self.maps_zod_to_validation_error() {
            AffineError::validation_error(issues)
        } else {
            AffineError::internal()
        }
    }

    /// A fetch of the IdP's token (form POST) or userinfo (Bearer GET) endpoint as
    /// `providers/def.ts`'s `fetchJson` does it: a non-2xx answer is
    /// INVALID_OAUTH_CALLBACK_CODE, an empty body `{}`, a body that is not JSON
    /// INVALID_OAUTH_RESPONSE (before 0.25.7 an internal error). A refused or unreachable host
    /// is an uncaught fetch error: an internal error.
    fn idp_fetch(
        &self,
        url: &str,
        form: Option<String>,
        bearer: Option<&str>,
    ) -> Result<Value, AffineError> {
        if self.ssrf_guard() && ssrf_check(url).is_err() {
            return Err(AffineError::internal());
        }
        let mut request = match &form {
            Some(body) => self
                .http
                .post(url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.clone()),
            None => self.http.get(url),
        };
        request = request.header("Accept", "application/json");
        if let Some(token) = bearer {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let resp = request.send().map_err(|_| AffineError::internal())?;
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(AffineError::invalid_oauth_callback_code(status, &text));
        }
        if text.is_empty() && self.verifies_id_token() {
            return Ok(json!({}));
        }
        serde_json::from_str(&text).map_err(|_| {
            if self.verifies_id_token() {
                AffineError::invalid_oauth_response(&format!(
                    "Unable to parse JSON response from {url}"
                ))
            } else {
                AffineError::internal()
            }
        })
    }

    /// jose's `jwtVerify` against the discovery's `jwks_uri` (issuer = the document's
    /// `issuer`, audience = the client id, `exp`/`nbf` when present, no clock tolerance), then
    /// the `nonce` AFFiNE sent (its state id). Every failure is one reason: AFFiNE turns them
    /// all into INVALID_AUTH_STATE.
    fn verify_id_token(
        &self,
        token: &str,
        doc: &Value,
        client_id: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, String> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        // A JWE has five parts; jose's compact JWS reader refuses anything but three.
        if token.split('.').count() != 3 {
            return Err("JWSInvalid: Invalid Compact JWS".into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("JWSInvalid: {e}"))?;
        let jwks_uri = doc["jwks_uri"].as_str().unwrap_or("");
        if self.ssrf_guard() {
            ssrf_check(jwks_uri)?;
        }
        let jwks: Value = self
            .http
            .get(jwks_uri)
            .header("Accept", "application/json")
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .map_err(|e| format!("JWKS fetch failed: {e}"))?;
        let rsa = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        );
        // An HS256 token (a provider without a signing key) finds no key in an RSA JWKS.
        let alg_name = format!("{:?}", header.alg);
        let candidates: Vec<&Value> = jwks["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter(|k| rsa && k["kty"] == "RSA")
                    .filter(|k| k.get("use").is_none_or(|u| u == "sig"))
                    .filter(|k| {
                        header
                            .kid
                            .as_ref()
                            .is_none_or(|kid| k["kid"] == kid.as_str())
                    })
                    .filter(|k| k.get("alg").is_none_or(|a| a == alg_name.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let mut why =
            "JWKSNoMatchingKey: no applicable key found in the JSON Web Key Set".to_string();
        for key in candidates {
            let (Some(n), Some(e)) = (key["n"].as_str(), key["e"].as_str()) else {
                continue;
            };
            let Ok(decoding) = DecodingKey::from_rsa_components(n, e) else {
                continue;
            };
            let mut validation = Validation::new(header.alg);
            validation.leeway = 0;
            validation.validate_nbf = true;
            // jose checks `exp`/`nbf` only when present, but with the issuer and audience
            // options set a token without `iss` or `aud` fails.
            validation.required_spec_claims =
                ["iss", "aud"].into_iter().map(String::from).collect();
            validation.set_issuer(&[doc["issuer"].as_str().unwrap_or("")]);
            validation.set_audience(&[client_id]);
            match jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation) {
                Ok(data) => {
                    if data.claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
                        return Err("nonce mismatch".into());
                    }
                    return Ok(data.claims);
                }
                Err(e) => why = e.to_string(),
            }
        }
        Err(why)
    }

    /// 0.25.7+: userinfo's schema, its `sub` against the id_token's, then the claims
    /// (userinfo first, then the id_token) with `args.claim_*` and AFFiNE's defaults.
    fn account_from_claims(
        &self,
        user: &Value,
        id_claims: &Map<String, Value>,
        args: &Map<String, Value>,
    ) -> Result<ExternalAccount, AffineError> {
        let newest = self.resolves_claims_in_both_sources();
        let schema: &[(&str, Zod, bool)] = if newest {
            &[
                ("sub", Zod::Str, true),
                ("preferred_username", Zod::Str, false),
                ("email", Zod::Str, false),
                ("name", Zod::Str, false),
                ("email_verified", Zod::BoolOrWord, false),
            ]
        } else {
            &[
                ("sub", Zod::Str, true),
                ("preferred_username", Zod::Str, false),
                ("email", Zod::Email, true),
                ("name", Zod::Str, false),
                ("email_verified", Zod::Bool, false),
            ]
        };
        zod_check(user, schema).map_err(|e| self.zod_error(&e))?;
        let user_sub = extract_string(user.get("sub"));
        let id_sub = id_claims.get("sub");
        if user_sub.is_none() || !js_truthy(id_sub) {
            return Err(AffineError::invalid_oauth_response(
                "Missing subject claim in OIDC response",
            ));
        }
        if id_sub != user.get("sub") {
            return Err(AffineError::invalid_oauth_response(
                "Subject mismatch between ID token and userinfo response",
            ));
        }
        let claim = |key: &str, default: &str| {
            args.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        let (id_claim, email_claim, name_claim, verified_claim) = (
            claim("claim_id", "sub"),
            claim("claim_email", "email"),
            claim("claim_name", "name"),
            claim("claim_email_verified", "email_verified"),
        );
        let sources = [
            user.as_object().cloned().unwrap_or_default(),
            id_claims.clone(),
        ];
        let (id, email, verified, name) = if newest {
            // The configured claim (or the default) in userinfo, then in the id_token.
            let find_str = |c: &str| sources.iter().find_map(|s| extract_string(s.get(c)));
            let email = sources
                .iter()
                .find_map(|s| extract_string(s.get(&email_claim)).filter(|e| is_zod_email(e)));
            let verified = sources
                .iter()
                .find_map(|s| extract_boolean(s.get(&verified_claim)));
            (find_str(&id_claim), email, verified, find_str(&name_claim))
        } else {
            // The configured claim in userinfo, else the id_token's standard claim.
            let id = extract_string(user.get(&id_claim)).or_else(|| {
                id_claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let email = extract_string(user.get(&email_claim))
                .or_else(|| extract_string(id_claims.get("email")));
            let verified = extract_boolean(user.get(&verified_claim))
                .or_else(|| extract_boolean(id_claims.get("email_verified")));
            let name = extract_string(user.get(&name_claim))
                .or_else(|| extract_string(id_claims.get("name")));
            (id, email, verified, name)
        };
        let Some(id) = id else {
            return Err(AffineError::invalid_oauth_response(
                "Missing required claim for user identifier",
            ));
        };
        let Some(email) = email else {
            return Err(AffineError::invalid_oauth_response(&if newest {
                format!("Missing valid email claim in OIDC response. Tried userinfo and ID token claims: \"{email_claim}\"")
            } else {
                "Missing required claim for email".to_string()
            }));
        };
        if verified == Some(false) {
            return Err(AffineError::invalid_oauth_response(
                "Email for this account is not verified",
            ));
        }
        Ok(ExternalAccount { id, email, name })
    }

    /// Before 0.25.7: userinfo alone, which must hold `sub`, `preferred_username`, a valid
    /// `email` and `name`; id = `claim_id` (default `preferred_username`), e-mail =
    /// `claim_email`; `email_verified` is not looked at.
    fn account_before_0_25_7(
        &self,
        user: &Value,
        args: &Map<String, Value>,
    ) -> Result<ExternalAccount, AffineError> {
        zod_check(
            user,
            &[
                ("sub", Zod::Str, true),
                ("preferred_username", Zod::Str, true),
                ("email", Zod::Email, true),
                ("name", Zod::Str, true),
            ],
        )
        .map_err(|e| self.zod_error(&e))?;
        let claim = |key: &str, default: &str| {
            args.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        let as_text = |v: Option<&Value>| {
            v.filter(|v| js_truthy(Some(v))).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let id = as_text(user.get(claim("claim_id", "preferred_username")));
        let email = as_text(user.get(claim("claim_email", "email")));
        let missing: Vec<&str> = [("id", id.is_none()), ("email", email.is_none())]
            .iter()
            .filter(|(_, m)| *m)
            .map(|(k, _)| *k)
            .collect();
        if !missing.is_empty() {
            return Err(AffineError::invalid_oauth_response(&format!(
                "Missing required claims: {}",
                missing.join(", ")
            )));
        }
        Ok(ExternalAccount {
            id: id.unwrap_or_default(),
            email: email.unwrap_or_default(),
            // Not passed on to the new user before 0.25.7.
            name: None,
        })
    }

    /// AFFiNE's `getOrCreateUserFromOauth`: the connected account for (OIDC, account id), or,
    /// when `auth.allowSignupForOauth` allows it, the user with that e-mail (an existing
    /// account is taken over) or a new one, and a connected account for it.
    fn user_for_oidc_account(
        &self,
        account: &ExternalAccount,
        has_refresh_token: bool,
    ) -> Result<User, AffineError> {
        let mut st = lock(&self.state);
        if let Some(ca) = st
            .connected_accounts
            .iter_mut()
            .find(|c| c.provider == "OIDC" && c.provider_account_id == account.id)
        {
            ca.has_refresh_token = has_refresh_token;
            let user_id = ca.user_id.clone();
            return st
                .users
                .iter()
                .find(|u| u.id == user_id)
                .cloned()
                .ok_or_else(AffineError::internal);
        }
        if !self.opts.allow_signup_for_oauth {
            return Err(AffineError::sign_up_forbidden());
        }
        let existing = st
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(&account.email))
            .cloned();
        let user = match existing {
            Some(u) => u,
            None => {
                let u = User {
                    id: uuid4(),
                    email: account.email.clone(),
                    name: account
                        .name
                        .clone()
                        .unwrap_or_else(|| name_of(&account.email)),
                    password: String::new(),
                    admin: false,
                    oidc_created: true,
                };
                st.users.push(u.clone());
                u
            }
        };
        st.connected_accounts.push(ConnectedAccount {
            provider: "OIDC".into(),
            provider_account_id: account.id.clone(),
            user_id: user.id.clone(),
            has_refresh_token,
        });
        Ok(user)
    }

    /// `GET /api/auth/sign-out`: ends the caller's session (cookie or Bearer) and answers
    /// `{}`, with or without one.
    fn sign_out(&self, req: &Request) -> Response {
        let sid = req.cookie("affine_session").or_else(|| {
            req.header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string())
        });
        let ended = sid.is_some_and(|sid| lock(&self.state).sessions.remove(&sid).is_some());
        let resp = Response::json(200, &json!({}));
        if !ended {
            return resp;
        }
        resp.with_header(
            "Set-Cookie",
            "affine_session=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
        )
        .with_header(
            "Set-Cookie",
            "affine_user_id=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
        )
    }
}
