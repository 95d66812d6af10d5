//! A stand-in for authentik (2024.6 to 2026.8), faithful to CONTRACTS.md §2: token auth on
//! `/api/v3/*`, blueprint instances (create = dry-run validation, apply), the import endpoint of
//! each version, the objects a blueprint creates, and per-application OIDC discovery.
//!
//! Blueprints go through a small model of authentik's importer: YAML with authentik's custom tags
//! (checked at load time for name, version and node kind), `version: 1`, entries applied in
//! order in one transaction (a dry run on a copy for validation), `!KeyOf` seeing only earlier
//! entries, and per-model serializer checks that mirror Django REST's messages.
//!
//! Scope mappings: a provider's `property_mappings` hold mapping uuids; resolve them to their
//! `managed` keys with `GET /api/v3/propertymappings/provider/scope/?managed=...` (before 2024.8
//! `/api/v3/propertymappings/scope/`), or with [`AuthentikStandin::provider_scopes`].
//!
//! An attribute the version does not know (e.g. `grant_types` before 2026.5) is ignored and
//! not stored, as Django REST's serializers do (a 2026.8 blueprint imports on 2026.2 without
//! its `grant_types`): a generator emitting fields for the wrong version is caught by reading
//! the stored object back, not by a refusal.
//!
//! The OAuth2/OpenID Connect server side logs users in without a browser, as the recordings
//! show (see the section "The OAuth2/OpenID Connect server side" below): users from
//! [`AuthentikStandin::add_user`], authorize, the flow executor with its session cookie, the
//! token endpoint, userinfo, id_tokens and access tokens signed with the provider's key
//! (JWE with an encryption key, HS256 without a signing key) and claims from the provider's
//! scope mappings.
//!
//! Held to recordings of real authentik 2024.10.2 and 2026.2.2 by
//! `tests/authentik_recordings_contract.rs`: what a user's authentik answers, i.e. with the
//! Go front router in front (a `//` path is a 301; [`AuthentikStandin::set_front_router`]).
//! Where behaviour differs between the recorded versions, the release that changed it comes
//! from CONTRACTS.md §2 where it says (queued applies 2025.8, the policy binding's wording
//! 2024.12, the 405 error page 2025.2) and is an assumption otherwise; `Rules` says which.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use serde_yaml::Value as Yaml;
use sha2::{Digest, Sha512};

use super::http_standin::{
    base64url, form_decode, lock, now_rfc3339, parse_query, parse_version, random_token,
    random_u64, uuid4, HttpServer, Request, Response, Service,
};
pub use super::http_standin::{Fault, Recorded};

/// How a stand-in authentik is set up.
#[derive(Clone, Debug)]
pub struct AuthentikOptions {
    /// e.g. "2024.6.4", "2024.10.5", "2025.10.1", "2026.5.0", "2026.8.0".
    pub version: String,
    /// The API token accepted as `Authorization: Bearer <token>`.
    pub token: String,
}

impl AuthentikOptions {
    /// Token `authentik-token-SECRET`.
    pub fn new(version: &str) -> Self {
        AuthentikOptions {
            version: version.to_string(),
            token: "authentik-token-SECRET".into(),
        }
    }
}

/// An OAuth2 provider plus its application, registered directly (without a blueprint) by
/// [`AuthentikStandin::add_provider`], for tests that only need an issuer.
#[derive(Clone, Debug)]
pub struct ProviderState {
    pub name: String,
    pub client_id: String,
    pub client_secret: String,
    /// `(matching_mode, url)`; stored as a newline-joined string on versions before the list form.
    pub redirect_uris: Vec<(String, String)>,
    /// Kept on 2026.5+ only.
    pub grant_types: Vec<String>,
    /// Managed keys of the scope mappings, e.g. `goauthentik.io/providers/oauth2/scope-openid`.
    pub scope_mappings: Vec<String>,
    /// The name of the certificate key pair that signs id_tokens (its public key is in the
    /// JWKS); `None`: no signing key (HS256 with the client secret, an empty JWKS).
    pub signing_key: Option<String>,
    /// The name of the certificate key pair that encrypts tokens (`None`, the default: none).
    /// With one, id_tokens and access tokens are JWEs and the JWKS has a `use: enc` key.
    pub encryption_key: Option<String>,
    /// The slug of the authorization flow: `default-provider-authorization-implicit-consent`
    /// (the default) or `default-provider-authorization-explicit-consent` (a consent stage).
    pub authorization_flow: String,
    /// `hashed_user_id` (the default), `user_id`, `user_uuid`, `user_email`,
    /// `user_username` or `user_upn`.
    pub sub_mode: String,
}

impl ProviderState {
    /// Random client id and secret, no redirect URIs, `[authorization_code, refresh_token]`,
    /// scopes openid, email and profile, signed with the shipped self-signed certificate (what
    /// authentik's provider form preselects).
    pub fn new(name: &str) -> Self {
        ProviderState {
            name: name.to_string(),
            client_id: random_token(40),
            client_secret: random_token(128),
            redirect_uris: Vec::new(),
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scope_mappings: ["openid", "email", "profile"]
                .iter()
                .map(|s| format!("{SCOPE_PREFIX}{s}"))
                .collect(),
            signing_key: Some("authentik Self-signed Certificate".into()),
            encryption_key: None,
            authorization_flow: "default-provider-authorization-implicit-consent".into(),
            sub_mode: "hashed_user_id".into(),
        }
    }
}

/// A running stand-in authentik on a loopback port; stops when dropped.
pub struct AuthentikStandin {
    server: HttpServer,
    inner: Arc<Inner>,
}

impl AuthentikStandin {
    pub fn start(opts: AuthentikOptions) -> Self {
        Self::start_on(opts, 0)
    }

    /// Like [`AuthentikStandin::start`] on a chosen port (0 = any free one).
    pub fn start_on(opts: AuthentikOptions, port: u16) -> Self {
        let (server, inner) = HttpServer::start(port, |url| Arc::new(Inner::new(opts, url)));
        AuthentikStandin { server, inner }
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn token(&self) -> String {
        self.inner.opts.token.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Blueprint instances in API shape.
    pub fn instances(&self) -> Vec<Value> {
        self.inner.run_due_applies();
        let st = lock(&self.inner.state);
        st.instances.iter().map(Instance::to_json).collect()
    }

    /// Blueprints applied successfully (instance apply or import).
    pub fn applied_count(&self) -> usize {
        self.inner.run_due_applies();
        lock(&self.inner.state).applied_count
    }

    /// Creates a group `name`, as if made by hand in authentik's admin interface.
    pub fn add_group(&self, name: &str) {
        let mut g = Map::new();
        g.insert("name".into(), json!(name));
        g.insert("is_superuser".into(), json!(false));
        lock(&self.inner.state).store.insert(GROUP, g);
    }

    /// Creates an OAuth2 provider and an application `slug` using it, as if configured by hand.
    pub fn add_provider(&self, slug: &str, p: ProviderState) {
        self.inner.add_provider(slug, p);
    }

    pub fn set_fault(&self, f: Fault) {
        self.server.set_fault(f);
    }

    /// How applies run. By default as the version does: before answering up to 2025.8
    /// (Celery), queued from 2025.8 (Dramatiq: `POST .../apply/` answers at once with the
    /// instance as it was, and the outcome shows [`QUEUED_APPLY_DELAY`] later, as recorded in
    /// 2026.2.2's `*-get-after-apply-*` sequences). `Some(delay)` queues with that delay on
    /// any version, `None` applies synchronously on any version. A queued apply runs at the
    /// first request (or accessor call) after its time.
    pub fn set_apply_delay(&self, delay: Option<std::time::Duration>) {
        lock(&self.inner.state).apply_delay = delay;
    }

    /// Make discovery documents announce this issuer instead of the real one (`None` = real).
    pub fn set_issuer_override(&self, issuer: Option<String>) {
        lock(&self.inner.state).issuer_override = issuer;
    }

    /// Sets a variable in authentik's environment, as `!Env` sees it (`None` removes it).
    /// Variables not set here are looked up in the test process's environment.
    pub fn set_env(&self, name: &str, value: Option<&str>) {
        let mut env = lock(&self.inner.env);
        match value {
            Some(v) => env.insert(name.to_string(), v.to_string()),
            None => env.remove(name),
        };
    }

    /// `true` (the default): authentik's Go front router is in front, as in every real install,
    /// and a path with `//`, `.` or `..` segments is answered with a 301 to the cleaned path
    /// (what AFFiNE's `<issuer>/.well-known/...` with a trailing-slash issuer meets).
    /// `false`: Django reached directly (e.g. gunicorn behind a plain proxy): such a path is
    /// an HTML 404.
    pub fn set_front_router(&self, in_front: bool) {
        lock(&self.inner.state).front_router = in_front;
    }

    /// `false`: every discovery document answers 503 (the IdP is down behind its proxy).
    pub fn set_discovery_available(&self, available: bool) {
        lock(&self.inner.state).discovery_available = available;
    }

    /// The OAuth2 provider of application `slug`, in API shape.
    pub fn provider(&self, slug: &str) -> Option<Value> {
        self.inner.run_due_applies();
        let st = lock(&self.inner.state);
        let app = st.store.find(APPLICATION, "slug", &json!(slug))?;
        let pk = app.get("provider")?.clone();
        let provider = st.store.find(OAUTH2_PROVIDER, "pk", &pk)?;
        Some(self.inner.provider_json(&st.store, provider))
    }

    /// The application `slug`, in API shape.
    pub fn application(&self, slug: &str) -> Option<Value> {
        self.inner.run_due_applies();
        let st = lock(&self.inner.state);
        let app = st.store.find(APPLICATION, "slug", &json!(slug))?;
        Some(self.inner.application_json(&st.store, app))
    }

    /// Managed keys of the scope mappings of application `slug`'s provider.
    pub fn provider_scopes(&self, slug: &str) -> Vec<String> {
        let Some(p) = self.provider(slug) else {
            return Vec::new();
        };
        let st = lock(&self.inner.state);
        p["property_mappings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pk| st.store.find(SCOPE_MAPPING, "pk", pk))
            .filter_map(|m| m.get("managed").and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// The JWKS document of application `slug`'s provider, as `/application/o/<slug>/jwks/`
    /// serves it.
    pub fn jwks(&self, slug: &str) -> Option<Value> {
        self.inner.jwks(slug)
    }

    /// The private key and `kid` that application `slug`'s provider signs id_tokens with
    /// (its `signing_key`); `None` without one. The key's public half is in [`Self::jwks`].
    pub fn signing_key(&self, slug: &str) -> Option<(String, rsa::RsaPrivateKey)> {
        let provider = self.inner.oidc_application(slug)?;
        let st = lock(&self.inner.state);
        let kp = st.store.find(KEYPAIR, "pk", &provider["signing_key"])?;
        let material = key_material(kp);
        Some((self.inner.kid(&material), material.key.clone()))
    }

    /// Adds a user who can log in through the authentication flow (beside the seeded
    /// `akadmin`, who has no password here); returns its pk. Found at identification by
    /// user name or e-mail.
    pub fn add_user(&self, user: LoginUser) -> i64 {
        let mut st = lock(&self.inner.state);
        let pk = next_user_pk(&st.store);
        let mut u = Map::new();
        u.insert("pk".into(), json!(pk));
        u.insert("username".into(), json!(user.username));
        u.insert("email".into(), json!(user.email));
        u.insert("name".into(), json!(user.name));
        u.insert("password".into(), json!(user.password));
        u.insert("attributes".into(), user.attributes);
        u.insert("mfa".into(), json!(user.mfa));
        u.insert("is_active".into(), json!(user.active));
        u.insert("type".into(), json!("internal"));
        u.insert("uuid".into(), json!(uuid4()));
        st.store.insert(USER, u);
        pk
    }

    /// A user by user name, as the stand-in stores it (`username`, `email`, `name`,
    /// `attributes`, `is_active`, `type`; also the service account a `client_credentials`
    /// grant makes).
    pub fn user(&self, username: &str) -> Option<Value> {
        let st = lock(&self.inner.state);
        let u = st.store.find(USER, "username", &json!(username))?;
        let mut m = u.fields.clone();
        m.remove("password");
        Some(Value::Object(m))
    }

    /// The `sub` application `slug`'s provider gives the user `username` (per its
    /// `sub_mode`), as its id_tokens and userinfo say.
    pub fn subject(&self, slug: &str, username: &str) -> Option<String> {
        self.inner.run_due_applies();
        let st = lock(&self.inner.state);
        let app = st.store.find(APPLICATION, "slug", &json!(slug))?;
        let provider = st.store.find(OAUTH2_PROVIDER, "pk", app.get("provider")?)?;
        let user = st.store.find(USER, "username", &json!(username))?;
        Some(self.inner.subject(provider, user))
    }

    /// Sets fields of application `slug`'s provider as stored, unchecked (what an admin's
    /// edit in authentik's interface does), e.g. `{"access_code_validity": "seconds=1"}`,
    /// `{"signing_key": null}` or `{"encryption_key": <pk of key_pair(..)>}`. Returns
    /// whether the provider exists.
    pub fn set_provider_fields(&self, slug: &str, fields: Value) -> bool {
        self.inner.run_due_applies();
        let mut st = lock(&self.inner.state);
        let Some(pk) = st
            .store
            .find(APPLICATION, "slug", &json!(slug))
            .and_then(|a| a.get("provider").cloned())
        else {
            return false;
        };
        let Some(p) = st
            .store
            .objects
            .iter_mut()
            .find(|o| o.model == OAUTH2_PROVIDER && field_matches(o, "pk", &pk))
        else {
            return false;
        };
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            p.fields.insert(k, v);
        }
        true
    }

    /// The pk of the certificate key pair `name` (the shipped one is
    /// `authentik Self-signed Certificate`).
    pub fn key_pair(&self, name: &str) -> Option<Value> {
        let st = lock(&self.inner.state);
        st.store.find(KEYPAIR, "name", &json!(name)).map(Obj::pk)
    }

    /// Blocks until the stand-in is dropped (for the `standins` example).
    pub fn serve_forever(&self) {
        self.server.wait();
    }
}

/// How long a queued apply takes to show (2026.2.2 measured 0.24 s to 0.7 s); short, because
/// many tests apply blueprints and every one waits this long.
pub const QUEUED_APPLY_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

const OAUTH2_PROVIDER: &str = "authentik_providers_oauth2.oauth2provider";
const APPLICATION: &str = "authentik_core.application";
const POLICY_BINDING: &str = "authentik_policies.policybinding";
const FLOW: &str = "authentik_flows.flow";
const KEYPAIR: &str = "authentik_crypto.certificatekeypair";
const SCOPE_MAPPING: &str = "authentik_providers_oauth2.scopemapping";
const GROUP: &str = "authentik_core.group";
const USER: &str = "authentik_core.user";
const SCOPE_PREFIX: &str = "goauthentik.io/providers/oauth2/scope-";
/// Application slugs authentik reserves (they collide with `/application/o/<endpoint>/`).
const RESERVED_SLUGS: &[&str] = &[
    "authorize",
    "token",
    "device",
    "userinfo",
    "introspect",
    "revoke",
];

type Version = (u32, u32, u32);

/// The version rules of CONTRACTS.md §2, in one place.
#[derive(Clone, Copy)]
struct Rules(Version);

impl Rules {
    fn redirect_uris_list(self) -> bool {
        let v = self.0;
        v >= (2024, 10, 3) || ((2024, 8, 5)..(2024, 10, 0)).contains(&v)
    }
    fn invalidation_flow(self) -> bool {
        self.0 >= (2024, 10, 0)
    }
    fn grant_types(self) -> bool {
        self.0 >= (2026, 5, 0)
    }
    fn redirect_uri_type(self) -> bool {
        self.0 >= (2026, 5, 0)
    }
    fn blueprint_import_path(self) -> &'static str {
        if self.0 >= (2026, 5, 0) {
            "/api/v3/managed/blueprints/import/"
        } else {
            "/api/v3/flows/instances/import/"
        }
    }
    fn scope_mappings_path(self) -> &'static str {
        if self.0 >= (2024, 8, 0) {
            "/api/v3/propertymappings/provider/scope/"
        } else {
            "/api/v3/propertymappings/scope/"
        }
    }
    /// 2024.12 reworded the policy binding's "one of" check (its fields sorted).
    fn policy_binding_new_wording(self) -> bool {
        self.0 >= (2024, 12, 0)
    }
    /// From 2025.2 a failed entry that holds a `!KeyOf` crashes the error logging: the
    /// request gets authentik's error page (405, empty text/html) instead of a 400 with logs.
    fn entry_error_log_crashes(self) -> bool {
        self.0 >= (2025, 2, 0)
    }
    /// Applies run on a task queue (Dramatiq) from 2025.8: the apply call only queues.
    fn queued_applies(self) -> bool {
        self.0 >= (2025, 8, 0)
    }
    /// A detail route's 404 names the model (`No Application matches the given query.`) on
    /// 2026.2.2 where 2024.10.2 says `Not found.`. The release between them that changed it
    /// is not recorded; 2025.4 (Django REST framework 3.16, which keeps Django's Http404
    /// message) is assumed.
    fn not_found_names_model(self) -> bool {
        self.0 >= (2025, 4, 0)
    }
    /// The 2026.x API bodies (providers, applications, lists) carry fields 2024.10 lacks;
    /// the release that added each is not recorded, so one boundary stands for them all.
    fn api_2026_shapes(self) -> bool {
        self.0 >= (2025, 10, 0)
    }
    /// Whether a custom YAML tag exists in this version.
    fn has_tag(self, tag: &str) -> bool {
        match tag {
            "File" => self.0 >= (2025, 8, 0),
            "AtIndex" => self.0 >= (2024, 12, 0),
            "ParseJSON" => self.0 >= (2025, 6, 0),
            "KeyOf" | "Find" | "FindObject" | "Env" | "Context" | "Format" | "If" | "Condition"
            | "Enumerate" | "Index" | "Value" => true,
            _ => false,
        }
    }
}

/// One object of the database: its model label and fields (with `pk`).
#[derive(Clone, Debug)]
struct Obj {
    model: String,
    fields: Map<String, Value>,
}

impl Obj {
    fn get(&self, k: &str) -> Option<&Value> {
        self.fields.get(k)
    }
    fn pk(&self) -> Value {
        self.fields.get("pk").cloned().unwrap_or(Value::Null)
    }
}

/// The database; cloned for a transaction (validation runs on a copy that is thrown away).
#[derive(Clone, Debug, Default)]
struct Store {
    objects: Vec<Obj>,
    next_int_pk: i64,
}

impl Store {
    fn of<'a>(&'a self, model: &str) -> impl Iterator<Item = &'a Obj> + 'a {
        let model = model.to_string();
        self.objects.iter().filter(move |o| o.model == model)
    }
    fn find(&self, model: &str, field: &str, value: &Value) -> Option<&Obj> {
        self.of(model).find(|o| field_matches(o, field, value))
    }
    fn insert(&mut self, model: &str, mut fields: Map<String, Value>) -> Value {
        if !fields.contains_key("pk") {
            let pk = if model == OAUTH2_PROVIDER {
                self.next_int_pk += 1;
                json!(self.next_int_pk)
            } else {
                json!(uuid4())
            };
            fields.insert("pk".into(), pk);
        }
        let pk = fields["pk"].clone();
        self.objects.push(Obj {
            model: model.to_string(),
            fields,
        });
        pk
    }
}

/// Equality as a Django filter would see it (numbers and their text compare equal for pks).
fn field_matches(o: &Obj, field: &str, value: &Value) -> bool {
    let (field, iexact) = match field.strip_suffix("__iexact") {
        Some(f) => (f, true),
        None => (field, false),
    };
    let Some(have) = o.get(field) else {
        return false;
    };
    match (have, value) {
        (Value::String(a), Value::String(b)) if iexact => a.eq_ignore_ascii_case(b),
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
            a.to_string() == *b
        }
        (a, b) => a == b,
    }
}

#[derive(Clone, Debug)]
struct Instance {
    pk: String,
    name: String,
    path: String,
    context: Value,
    last_applied: String,
    last_applied_hash: String,
    status: String,
    enabled: bool,
    managed_models: Vec<String>,
    metadata: Value,
    content: String,
}

impl Instance {
    fn to_json(&self) -> Value {
        json!({
            "pk": self.pk,
            "name": self.name,
            "path": self.path,
            "context": self.context,
            "last_applied": self.last_applied,
            "last_applied_hash": self.last_applied_hash,
            "status": self.status,
            "enabled": self.enabled,
            "managed_models": self.managed_models,
            "metadata": self.metadata,
            "content": self.content,
        })
    }
}

struct State {
    /// `Some`: applies are queued, as on authentik's task-queue (Dramatiq) versions.
    apply_delay: Option<std::time::Duration>,
    /// Queued applies: instance pk and when the worker gets to it.
    queued_applies: Vec<(String, std::time::Instant)>,
    store: Store,
    instances: Vec<Instance>,
    applied_count: usize,
    issuer_override: Option<String>,
    discovery_available: bool,
    /// `true`: authentik's Go router is in front (what users run); `false`: Django directly.
    front_router: bool,
}

struct Inner {
    opts: AuthentikOptions,
    rules: Rules,
    url: String,
    state: Mutex<State>,
    /// authentik's own environment for `!Env`, consulted before the test process's.
    env: Mutex<HashMap<String, String>>,
    /// Sessions, codes and tokens of the OAuth2 server side (locked after `state`, never
    /// before it).
    login: Mutex<LoginState>,
    /// What authentik's install id is to `User.uid` (the `hashed_user_id` subject).
    install_id: String,
}

impl Inner {
    fn new(opts: AuthentikOptions, url: &str) -> Self {
        let rules = Rules(parse_version(&opts.version));
        Inner {
            opts,
            rules,
            url: url.to_string(),
            env: Mutex::new(HashMap::new()),
            login: Mutex::new(LoginState::default()),
            install_id: uuid4(),
            state: Mutex::new(State {
                store: seed(rules),
                instances: Vec::new(),
                applied_count: 0,
                issuer_override: None,
                discovery_available: true,
                front_router: true,
                apply_delay: rules.queued_applies().then_some(QUEUED_APPLY_DELAY),
                queued_applies: Vec::new(),
            }),
        }
    }

    fn version_string(&self) -> String {
        let (a, b, c) = self.rules.0;
        format!("{a}.{b}.{c}")
    }

    fn add_provider(&self, slug: &str, p: ProviderState) {
        let mut st = lock(&self.state);
        let store = &mut st.store;
        let flow = |store: &Store, slug: &str| {
            store
                .find(FLOW, "slug", &json!(slug))
                .map(Obj::pk)
                .unwrap_or(Value::Null)
        };
        let mappings: Vec<Value> = p
            .scope_mappings
            .iter()
            .filter_map(|m| store.find(SCOPE_MAPPING, "managed", &json!(m)).map(Obj::pk))
            .collect();
        let mut fields = Map::new();
        fields.insert("name".into(), json!(p.name));
        fields.insert(
            "authorization_flow".into(),
            flow(store, &p.authorization_flow),
        );
        fields.insert("sub_mode".into(), json!(p.sub_mode));
        if self.rules.invalidation_flow() {
            fields.insert(
                "invalidation_flow".into(),
                flow(store, "default-provider-invalidation-flow"),
            );
        }
        fields.insert("client_type".into(), json!("confidential"));
        fields.insert("client_id".into(), json!(p.client_id));
        fields.insert("client_secret".into(), json!(p.client_secret));
        fields.insert("property_mappings".into(), Value::Array(mappings));
        let signing_key = p
            .signing_key
            .as_ref()
            .and_then(|name| store.find(KEYPAIR, "name", &json!(name)))
            .map(Obj::pk)
            .unwrap_or(Value::Null);
        fields.insert("signing_key".into(), signing_key);
        let encryption_key = p
            .encryption_key
            .as_ref()
            .and_then(|name| store.find(KEYPAIR, "name", &json!(name)))
            .map(Obj::pk)
            .unwrap_or(Value::Null);
        fields.insert("encryption_key".into(), encryption_key);
        let redirect = if self.rules.redirect_uris_list() {
            Value::Array(
                p.redirect_uris
                    .iter()
                    .map(|(mode, url)| json!({"matching_mode": mode, "url": url}))
                    .collect(),
            )
        } else {
            json!(p
                .redirect_uris
                .iter()
                .map(|(_, u)| u.as_str())
                .collect::<Vec<_>>()
                .join("\n"))
        };
        fields.insert("redirect_uris".into(), redirect);
        if self.rules.grant_types() {
            fields.insert("grant_types".into(), json!(p.grant_types));
        }
        let provider_pk = store.insert(OAUTH2_PROVIDER, fields);
        let mut app = Map::new();
        app.insert("name".into(), json!(p.name));
        app.insert("slug".into(), json!(slug));
        app.insert("provider".into(), provider_pk);
        app.insert("pbm_uuid".into(), json!(uuid4()));
        store.insert(APPLICATION, app);
    }
}

/// The objects a fresh authentik ships (CONTRACTS.md §2 "Defaults shipped").
fn seed(rules: Rules) -> Store {
    let mut s = Store::default();
    let mut flows = vec![
        ("default-authentication-flow", "authentication"),
        (
            "default-provider-authorization-implicit-consent",
            "authorization",
        ),
        (
            "default-provider-authorization-explicit-consent",
            "authorization",
        ),
        ("default-invalidation-flow", "invalidation"),
    ];
    if rules.invalidation_flow() {
        flows.push(("default-provider-invalidation-flow", "invalidation"));
    }
    for (slug, designation) in flows {
        let mut f = Map::new();
        f.insert("slug".into(), json!(slug));
        f.insert("name".into(), json!(slug));
        f.insert("designation".into(), json!(designation));
        s.insert(FLOW, f);
    }
    let mut k = Map::new();
    k.insert("name".into(), json!("authentik Self-signed Certificate"));
    s.insert(KEYPAIR, k);
    // Since 2025.10 the managed email mapping says email_verified: false (CONTRACTS.md §2).
    let verified = if rules.0 >= (2025, 10, 0) {
        "False"
    } else {
        "True"
    };
    let email = format!("return {{\"email\": request.user.email, \"email_verified\": {verified}}}");
    for (scope, description, expression) in [
        ("openid", "", "return {}".to_string()),
        ("email", "Email address", email),
        (
            "profile",
            "General Profile Information",
            "return {\"name\": request.user.name, \"preferred_username\": request.user.username}"
                .to_string(),
        ),
        (
            "offline_access",
            "Access to request new tokens.",
            "return {}".to_string(),
        ),
    ] {
        let mut m = Map::new();
        m.insert("managed".into(), json!(format!("{SCOPE_PREFIX}{scope}")));
        m.insert(
            "name".into(),
            json!(format!("authentik default OAuth Mapping: OpenID '{scope}'")),
        );
        m.insert("scope_name".into(), json!(scope));
        m.insert("description".into(), json!(description));
        m.insert("expression".into(), json!(expression));
        s.insert(SCOPE_MAPPING, m);
    }
    let mut g = Map::new();
    g.insert("name".into(), json!("authentik Admins"));
    g.insert("is_superuser".into(), json!(true));
    s.insert(GROUP, g);
    let mut u = Map::new();
    u.insert("username".into(), json!("akadmin"));
    u.insert("pk".into(), json!(1));
    s.insert(USER, u);
    s
}

// ---------------------------------------------------------------------------------------------
// HTTP routing.
// ---------------------------------------------------------------------------------------------

fn detail(status: u16, msg: &str) -> Response {
    Response::json(status, &json!({"detail": msg}))
}

/// What an uncaught exception in an API request answers: authentik's `handler500` is a
/// template view that allows only GET, so on a POST or PATCH the error page itself answers
/// 405 with an empty body (recorded: 21-/22-blueprints-create-*.json, both versions).
fn server_error_page() -> Response {
    Response::html(405, "").with_header("Allow", "GET, HEAD, OPTIONS")
}

/// authentik's HTML "Not Found" page (Django's 404 outside the API).
fn not_found_page() -> Response {
    Response::html(
        404,
        "<!DOCTYPE html>\n<html><head><title>Not Found</title></head><body><h1>Not Found</h1><a href=\"/\">Go home</a><p>Powered by authentik</p></body></html>",
    )
}

/// authentik's list pagination; 2026 adds the web UI's `autocomplete` schema beside it
/// (`{}` for most lists; its content is not modelled).
fn paginated(rules: Rules, results: Vec<Value>) -> Response {
    let n = results.len();
    let mut body = json!({
            "pagination": {
                "next": 0,
                "previous": 0,
                "count": n,
                "current": 1,
                "total_pages": 1,
                "start_index": if n == 0 { 0 } else { 1 },
                "end_index": n,
            },
            "results": results,
    });
    if rules.api_2026_shapes() {
        body["autocomplete"] = json!({});
    }
    Response::json(200, &body)
}

/// gorilla/mux's `cleanPath`, which authentik's Go front router runs on every request before
/// routing: Go's `path.Clean` (doubled slashes collapsed, `.` and `..` segments resolved,
/// rooted), with a trailing slash put back. A path that changes is answered with a 301 to the
/// cleaned one, never served.
fn clean_path(p: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = format!("/{}", segs.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

impl Service for Inner {
    fn handle(&self, req: &Request) -> Response {
        self.run_due_applies();
        let raw = req.path_only();
        let cleaned = clean_path(raw);
        if cleaned != raw {
            if lock(&self.state).front_router {
                // gorilla/mux answers with the cleaned path, relative, query kept, no body
                // (recorded: 2026.2.2/37-oidc-discovery-double-slash-go-router-mimic.json).
                let location = match req.path.split_once('?') {
                    Some((_, q)) => format!("{cleaned}?{q}"),
                    None => cleaned,
                };
                return Response::empty(301).with_header("Location", &location);
            }
            // Django reached directly matches no URL pattern with an empty segment and shows
            // its HTML 404 page (recorded: 36-oidc-discovery-double-slash-django.json).
            return not_found_page();
        }
        let path = raw.to_string();
        // The OAuth2 endpoints and the flows (the executor sits under /api/v3/ but runs on
        // the session cookie, no token).
        if let Some(resp) = self.oauth_routes(req, &path) {
            return resp;
        }
        if path.starts_with("/api/v3/") {
            if let Err(resp) = self.check_token(req) {
                return resp;
            }
            return self.api(req, &path);
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segs.as_slice()) {
            ("GET", ["application", "o", slug, ".well-known", "openid-configuration"]) => {
                self.discovery(slug)
            }
            ("GET", ["application", "o", slug, "jwks"]) => match self.jwks(slug) {
                Some(doc) => Response::json(200, &doc),
                None => not_found_page(),
            },
            ("GET", ["-", "health", "live" | "ready"]) => Response::empty(200),
            _ => not_found_page(),
        }
    }

    /// `Fault::RateLimit` applies to the API (authentik itself has no such limit; this is a
    /// proxy in front of it).
    fn throttled(&self, req: &Request, retry_after_secs: u64) -> Option<Response> {
        req.path_only().starts_with("/api/v3/").then(|| {
            detail(
                429,
                &format!(
                    "Request was throttled. Expected available in {retry_after_secs} seconds."
                ),
            )
            .with_header("Retry-After", &retry_after_secs.to_string())
        })
    }
}

impl Inner {
    /// A detail route's 404 for `model` (Django's class name), worded as the version does.
    fn not_found(&self, model: &str) -> Response {
        if self.rules.not_found_names_model() {
            detail(404, &format!("No {model} matches the given query."))
        } else {
            detail(404, "Not found.")
        }
    }

    /// `Authorization: Bearer <token>`; authentik answers 403 for a missing or wrong token.
    fn check_token(&self, req: &Request) -> Result<(), Response> {
        let Some(h) = req.header("authorization") else {
            return Err(detail(403, "Authentication credentials were not provided."));
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim);
        match token {
            Some(t) if t == self.opts.token => Ok(()),
            Some(_) => Err(detail(403, "Token invalid/expired")),
            None => Err(detail(403, "Authentication credentials were not provided.")),
        }
    }

    fn api(&self, req: &Request, path: &str) -> Response {
        let method = req.method.as_str();
        let rest = path.trim_start_matches("/api/v3/").trim_end_matches('/');
        let segs: Vec<&str> = rest.split('/').collect();
        if method == "POST"
            && path.trim_end_matches('/')
                == self.rules.blueprint_import_path().trim_end_matches('/')
        {
            return self.import(req);
        }
        match (method, segs.as_slice()) {
            ("GET", ["admin", "version"]) => Response::json(
                200,
                &json!({
                    "version_current": self.version_string(),
                    "version_latest": self.version_string(),
                    "version_latest_valid": true,
                    "build_hash": "",
                    "outdated": false,
                    "outpost_outdated": false,
                }),
            ),
            ("GET", ["managed", "blueprints"]) => self.list_instances(req),
            ("GET", ["managed", "blueprints", "available"]) => Response::json(200, &json!([])),
            ("POST", ["managed", "blueprints"]) => self.create_instance(req),
            ("GET", ["managed", "blueprints", pk]) => {
                let st = lock(&self.state);
                match st.instances.iter().find(|i| i.pk == *pk) {
                    Some(i) => Response::json(200, &i.to_json()),
                    None => self.not_found("BlueprintInstance"),
                }
            }
            ("PATCH" | "PUT", ["managed", "blueprints", pk]) => {
                self.update_instance(req, pk, method == "PATCH")
            }
            ("DELETE", ["managed", "blueprints", pk]) => {
                let mut st = lock(&self.state);
                let before = st.instances.len();
                st.instances.retain(|i| i.pk != *pk);
                if st.instances.len() == before {
                    self.not_found("BlueprintInstance")
                } else {
                    Response::empty(204)
                }
            }
            ("POST", ["managed", "blueprints", pk, "apply"]) => self.apply_instance(pk),
            // Before 2026.5 `import` is read as an instance pk, whose route has no POST
            // (recorded: 29-blueprints-import.json on both versions).
            ("POST", ["managed", "blueprints", _]) => detail(405, "Method \"POST\" not allowed.")
                .with_header("Allow", "GET, PUT, PATCH, DELETE, HEAD, OPTIONS"),
            ("GET", ["providers", "oauth2"]) => {
                self.filtered_list(req, OAUTH2_PROVIDER, &["name", "client_id"], |st, p| {
                    self.provider_json(st, p)
                })
            }
            ("GET", ["providers", "oauth2", pk]) => {
                let st = lock(&self.state);
                match st.store.find(OAUTH2_PROVIDER, "pk", &json!(pk)) {
                    Some(p) => Response::json(200, &self.provider_json(&st.store, p)),
                    None => self.not_found("OAuth2Provider"),
                }
            }
            ("PATCH" | "PUT", ["providers", "oauth2", pk]) => {
                self.update_provider(req, pk, method == "PATCH")
            }
            ("GET", ["core", "applications"]) => {
                self.filtered_list(req, APPLICATION, &["slug", "name"], |st, a| {
                    self.application_json(st, a)
                })
            }
            ("GET", ["core", "applications", slug]) => {
                let st = lock(&self.state);
                match st.store.find(APPLICATION, "slug", &json!(slug)) {
                    Some(a) => Response::json(200, &self.application_json(&st.store, a)),
                    None => self.not_found("Application"),
                }
            }
            ("GET", ["flows", "instances"]) => {
                self.simple_list(req, FLOW, &["slug", "designation"])
            }
            ("GET", ["crypto", "certificatekeypairs"]) => self.simple_list(req, KEYPAIR, &["name"]),
            ("GET", ["core", "groups"]) => {
                self.filtered_list(req, GROUP, &["name"], |_, g| self.group_json(g))
            }
            _ => self.scope_mapping_routes(req, path),
        }
    }

    /// The scope mapping list, detail and create routes, at the version's path.
    fn scope_mapping_routes(&self, req: &Request, path: &str) -> Response {
        let base = self.rules.scope_mappings_path().trim_end_matches('/');
        let Some(rest) = path.strip_prefix(base) else {
            return not_found_page();
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return not_found_page();
        }
        let pk = rest.trim_matches('/');
        match (req.method.as_str(), pk) {
            ("GET", "") => self.simple_list(req, SCOPE_MAPPING, &["managed", "scope_name", "name"]),
            ("POST", "") => self.create_scope_mapping(req),
            ("GET", pk) if !pk.contains('/') => {
                let st = lock(&self.state);
                match st.store.find(SCOPE_MAPPING, "pk", &json!(pk)) {
                    Some(m) => Response::json(200, &scope_mapping_json(m)),
                    None => self.not_found("ScopeMapping"),
                }
            }
            _ => not_found_page(),
        }
    }

    /// `POST` a scope mapping: `name`, `scope_name` and `expression` required (recorded:
    /// 68-scope-mapping-create-custom.json); a mapping made here has no `managed` key.
    fn create_scope_mapping(&self, req: &Request) -> Response {
        let Some(Value::Object(mut body)) = req.json() else {
            return field_errors(vec![(
                "non_field_errors",
                json!(["Invalid data. Expected a dictionary, but got str."]),
            )]);
        };
        trim_char_fields(&mut body);
        let mut errors = Vec::new();
        for key in ["name", "scope_name", "expression"] {
            match body.get(key) {
                None => errors.push((key, json!(["This field is required."]))),
                Some(Value::String(v)) if v.is_empty() => {
                    errors.push((key, json!(["This field may not be blank."])))
                }
                Some(Value::String(_)) => {}
                Some(_) => errors.push((key, json!(["Not a valid string."]))),
            }
        }
        if !errors.is_empty() {
            return field_errors(errors);
        }
        let mut m = Map::new();
        for key in ["name", "scope_name", "expression", "description"] {
            if let Some(v) = body.get(key) {
                m.insert(key.into(), v.clone());
            }
        }
        m.insert("managed".into(), Value::Null);
        let mut st = lock(&self.state);
        let pk = st.store.insert(SCOPE_MAPPING, m);
        let created = st
            .store
            .find(SCOPE_MAPPING, "pk", &pk)
            .expect("just inserted");
        Response::json(201, &scope_mapping_json(created))
    }

    /// `PATCH`/`PUT` an OAuth2 provider: the serializer's checks of a blueprint entry, unknown
    /// fields ignored. A refusal's body is not modelled on a recording: it holds the
    /// serializer errors as a blueprint log renders them, under `non_field_errors`.
    fn update_provider(&self, req: &Request, pk: &str, partial: bool) -> Response {
        let Some(Value::Object(mut body)) = req.json() else {
            return field_errors(vec![(
                "non_field_errors",
                json!(["Invalid data. Expected a dictionary, but got str."]),
            )]);
        };
        let mut st = lock(&self.state);
        let Some(idx) = st
            .store
            .objects
            .iter()
            .position(|o| o.model == OAUTH2_PROVIDER && field_matches(o, "pk", &json!(pk)))
        else {
            return self.not_found("OAuth2Provider");
        };
        body.remove("pk");
        self.drop_unknown_fields(OAUTH2_PROVIDER, &mut body);
        let existing = st.store.objects[idx].clone();
        let checked_as = if partial { Some(&existing) } else { None };
        if let Err(errs) = self.validate_model(OAUTH2_PROVIDER, &body, checked_as, &st.store) {
            return field_errors(vec![("non_field_errors", json!([errs]))]);
        }
        for (k, v) in body {
            st.store.objects[idx].fields.insert(k, v);
        }
        let p = st.store.objects[idx].clone();
        Response::json(200, &self.provider_json(&st.store, &p))
    }

    /// A list of plain objects (flows, key pairs, scope mappings) in API shape.
    fn simple_list(&self, req: &Request, model: &str, filters: &[&str]) -> Response {
        self.filtered_list(req, model, filters, |_, o| {
            if model == SCOPE_MAPPING {
                return scope_mapping_json(o);
            }
            Value::Object(o.fields.clone())
        })
    }

    /// A paginated list of `model`, narrowed by the query parameters named in `filters`
    /// (one given several times matches any of its values, as `?managed=a&managed=b` does);
    /// other parameters are ignored, not refused, as Django REST's filter backend does.
    fn filtered_list(
        &self,
        req: &Request,
        model: &str,
        filters: &[&str],
        render: impl Fn(&Store, &Obj) -> Value,
    ) -> Response {
        let st = lock(&self.state);
        let q = req.query();
        let results = st
            .store
            .of(model)
            .filter(|o| {
                filters.iter().all(|f| {
                    let wanted: Vec<&String> =
                        q.iter().filter(|(k, _)| k == f).map(|(_, v)| v).collect();
                    wanted.is_empty() || wanted.iter().any(|v| o.get(f) == Some(&json!(v)))
                })
            })
            .map(|o| render(&st.store, o))
            .collect::<Vec<Value>>();
        // authentik's list views order by name (scope mappings, groups, providers, ...).
        let mut results = results;
        results.sort_by(|a, b| {
            let name = |v: &Value| v["name"].as_str().unwrap_or("").to_string();
            name(a).cmp(&name(b))
        });
        paginated(self.rules, results)
    }

    /// An OAuth2 provider as its detail and list routes show it: the fields every provider
    /// kind has ([`Inner::provider_base_json`]) and the OAuth2 ones, by version (recorded:
    /// 13-provider-oauth2-get.json).
    fn provider_json(&self, store: &Store, p: &Obj) -> Value {
        let mut m = self.provider_base_json(store, p);
        for (k, default) in provider_defaults(self.rules) {
            m.insert(k.clone(), p.get(&k).cloned().unwrap_or(default));
        }
        Value::Object(m)
    }

    /// What any provider shows, and all an application's `provider_obj` holds (recorded:
    /// 12-application-get.json).
    fn provider_base_json(&self, store: &Store, p: &Obj) -> Map<String, Value> {
        let app = store
            .of(APPLICATION)
            .find(|a| a.get("provider") == Some(&p.pk()));
        let field = |k: &str| p.get(k).cloned().unwrap_or(Value::Null);
        let mut m = Map::new();
        m.insert("pk".into(), p.pk());
        m.insert("name".into(), field("name"));
        m.insert("authentication_flow".into(), field("authentication_flow"));
        m.insert("authorization_flow".into(), field("authorization_flow"));
        if self.rules.invalidation_flow() {
            m.insert("invalidation_flow".into(), field("invalidation_flow"));
        }
        m.insert(
            "property_mappings".into(),
            p.get("property_mappings").cloned().unwrap_or(json!([])),
        );
        m.insert("component".into(), json!("ak-provider-oauth2-form"));
        m.insert(
            "assigned_application_slug".into(),
            app.and_then(|a| a.get("slug").cloned())
                .unwrap_or(Value::Null),
        );
        m.insert(
            "assigned_application_name".into(),
            app.and_then(|a| a.get("name").cloned())
                .unwrap_or(Value::Null),
        );
        if self.rules.api_2026_shapes() {
            m.insert("assigned_backchannel_application_slug".into(), Value::Null);
            m.insert("assigned_backchannel_application_name".into(), Value::Null);
        }
        m.insert("verbose_name".into(), json!("OAuth2/OpenID Provider"));
        m.insert(
            "verbose_name_plural".into(),
            json!("OAuth2/OpenID Providers"),
        );
        m.insert("meta_model_name".into(), json!(OAUTH2_PROVIDER));
        m
    }

    /// A group as `/api/v3/core/groups/` shows it: one parent before 2025.10-ish, a list of
    /// parents (and children, inherited roles) in 2026 (recorded: 18-groups-by-name.json).
    fn group_json(&self, g: &Obj) -> Value {
        let mut m = Map::new();
        m.insert("pk".into(), g.pk());
        m.insert(
            "num_pk".into(),
            g.get("num_pk").cloned().unwrap_or(json!(1000)),
        );
        m.insert("name".into(), g.get("name").cloned().unwrap_or(json!("")));
        m.insert(
            "is_superuser".into(),
            g.get("is_superuser").cloned().unwrap_or(json!(false)),
        );
        if self.rules.api_2026_shapes() {
            m.insert("parents".into(), json!([]));
            m.insert("parents_obj".into(), Value::Null);
        } else {
            m.insert("parent".into(), Value::Null);
            m.insert("parent_name".into(), Value::Null);
        }
        m.insert("users".into(), json!([]));
        m.insert("users_obj".into(), json!([]));
        m.insert(
            "attributes".into(),
            g.get("attributes").cloned().unwrap_or(json!({})),
        );
        m.insert("roles".into(), json!([]));
        m.insert("roles_obj".into(), json!([]));
        if self.rules.api_2026_shapes() {
            m.insert("inherited_roles_obj".into(), Value::Null);
            m.insert("children".into(), json!([]));
            m.insert("children_obj".into(), Value::Null);
        }
        Value::Object(m)
    }

    /// An application as its detail and list routes show it, by version (recorded:
    /// 12-application-get.json).
    fn application_json(&self, store: &Store, a: &Obj) -> Value {
        let provider = a.get("provider").cloned().unwrap_or(Value::Null);
        let provider_obj = store
            .find(OAUTH2_PROVIDER, "pk", &provider)
            .map(|p| Value::Object(self.provider_base_json(store, p)))
            .unwrap_or(Value::Null);
        let g = |k: &str, d: Value| a.get(k).cloned().unwrap_or(d);
        let new = self.rules.api_2026_shapes();
        let mut m = Map::new();
        m.insert("pk".into(), a.pk());
        m.insert("name".into(), g("name", json!("")));
        m.insert("slug".into(), g("slug", json!("")));
        m.insert("provider".into(), provider);
        m.insert("provider_obj".into(), provider_obj);
        m.insert(
            "backchannel_providers".into(),
            g("backchannel_providers", json!([])),
        );
        m.insert("backchannel_providers_obj".into(), json!([]));
        m.insert("launch_url".into(), g("meta_launch_url", Value::Null));
        m.insert("open_in_new_tab".into(), g("open_in_new_tab", json!(false)));
        m.insert("meta_launch_url".into(), g("meta_launch_url", json!("")));
        // An icon not set: null up to 2024.10, "" (with the URL fields beside it) in 2026.
        m.insert(
            "meta_icon".into(),
            g("meta_icon", if new { json!("") } else { Value::Null }),
        );
        if new {
            m.insert("meta_icon_url".into(), Value::Null);
            m.insert("meta_icon_themed_urls".into(), Value::Null);
        }
        m.insert("meta_description".into(), g("meta_description", json!("")));
        m.insert("meta_publisher".into(), g("meta_publisher", json!("")));
        m.insert(
            "policy_engine_mode".into(),
            g("policy_engine_mode", json!("any")),
        );
        m.insert("group".into(), g("group", json!("")));
        Value::Object(m)
    }

    fn oidc_application(&self, slug: &str) -> Option<Value> {
        let st = lock(&self.state);
        let app = st.store.find(APPLICATION, "slug", &json!(slug))?;
        let provider = st.store.find(OAUTH2_PROVIDER, "pk", app.get("provider")?)?;
        Some(self.provider_json(&st.store, provider))
    }

    /// `GET /application/o/<slug>/.well-known/openid-configuration` (issuer_mode per_provider).
    fn discovery(&self, slug: &str) -> Response {
        if !lock(&self.state).discovery_available {
            return Response::html(
                503,
                "<html><body><h1>503 Service Unavailable</h1></body></html>",
            );
        }
        let Some(provider) = self.oidc_application(slug) else {
            return not_found_page();
        };
        let url = &self.url;
        let issuer = lock(&self.state)
            .issuer_override
            .clone()
            .unwrap_or_else(|| {
                if provider["issuer_mode"] == json!("global") {
                    format!("{url}/application/o/")
                } else {
                    format!("{url}/application/o/{slug}/")
                }
            });
        let scopes: Vec<Value> = {
            let st = lock(&self.state);
            provider["property_mappings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|pk| st.store.find(SCOPE_MAPPING, "pk", pk))
                .filter_map(|m| m.get("scope_name").cloned())
                .collect()
        };
        // Without a signing key authentik signs id_tokens HS256 with the client secret.
        let alg = if provider["signing_key"].is_null() {
            "HS256"
        } else {
            "RS256"
        };
        let mut doc = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{url}/application/o/authorize/"),
                "token_endpoint": format!("{url}/application/o/token/"),
                "userinfo_endpoint": format!("{url}/application/o/userinfo/"),
                "end_session_endpoint": format!("{url}/application/o/{slug}/end-session/"),
                "introspection_endpoint": format!("{url}/application/o/introspect/"),
                "revocation_endpoint": format!("{url}/application/o/revoke/"),
                "device_authorization_endpoint": format!("{url}/application/o/device/"),
                "response_types_supported": ["code", "id_token", "id_token token", "code token", "code id_token", "code id_token token"],
                "response_modes_supported": ["query", "fragment", "form_post"],
                "jwks_uri": format!("{url}/application/o/{slug}/jwks/"),
                "grant_types_supported": ["authorization_code", "refresh_token", "implicit", "client_credentials", "password", "urn:ietf:params:oauth:grant-type:device_code"],
                "id_token_signing_alg_values_supported": [alg],
                "subject_types_supported": ["public"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "acr_values_supported": ["goauthentik.io/providers/oauth2/default"],
                "scopes_supported": scopes,
                "request_parameter_supported": false,
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce", "email", "email_verified", "name", "given_name", "preferred_username", "nickname", "groups"],
                "claims_parameter_supported": false,
                "code_challenge_methods_supported": ["plain", "S256"],
        });
        if self.rules.api_2026_shapes() {
            doc["backchannel_logout_supported"] = json!(true);
            doc["backchannel_logout_session_supported"] = json!(true);
        }
        Response::json(200, &doc)
    }
}

/// A certificate key pair's key: a real RSA key with a self-signed certificate for it, made
/// once per process and key pair name (RSA key generation is slow, in a debug build most).
/// 2048 bits where authentik makes 4096: the JWKS shape is the same, the tests faster.
pub struct KeyMaterial {
    pub key: rsa::RsaPrivateKey,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

fn key_material(kp: &Obj) -> Arc<KeyMaterial> {
    use std::sync::OnceLock;
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<KeyMaterial>>>> = OnceLock::new();
    let name = kp
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut cache = lock(CACHE.get_or_init(Default::default));
    cache
        .entry(name.clone())
        .or_insert_with(|| Arc::new(generate_key_material(&name)))
        .clone()
}

fn generate_key_material(name: &str) -> KeyMaterial {
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::EncodePublicKey;
    use std::str::FromStr;
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::Encode;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
    let public_der = key
        .to_public_key()
        .to_public_key_der()
        .expect("public key DER");
    let spki = SubjectPublicKeyInfoOwned::try_from(public_der.as_bytes()).expect("SPKI");
    let cn = name.replace([',', '+', '=', '\\'], " ");
    let subject = Name::from_str(&format!("CN={cn}")).expect("subject name");
    let serial =
        SerialNumber::new(&super::http_standin::random_u64().to_be_bytes()[1..]).expect("serial");
    let validity =
        Validity::from_now(std::time::Duration::from_secs(365 * 24 * 3600)).expect("validity");
    let signer = SigningKey::<sha2::Sha256>::new(key.clone());
    let cert = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)
        .expect("certificate builder")
        .build::<rsa::pkcs1v15::Signature>()
        .expect("self-signed certificate");
    KeyMaterial {
        key,
        cert_der: cert.to_der().expect("certificate DER"),
    }
}

/// Standard base64 with padding (a JWK's `x5c` entries).
fn base64_std(data: &[u8]) -> String {
    let url = base64url(data);
    let mut s: String = url
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while s.len() % 4 != 0 {
        s.push('=');
    }
    s
}

impl Inner {
    /// A key's `kid`: 32 hex digits up to 2024.10, 86 base64url characters (a SHA-512) in
    /// 2026 (recorded: 38-oidc-jwks.json). Derived from the certificate here; authentik's
    /// own derivation is not restated, only its shape.
    fn kid(&self, m: &KeyMaterial) -> String {
        let digest = Sha512::digest(&m.cert_der);
        if self.rules.api_2026_shapes() {
            base64url(&digest)
        } else {
            hex(&digest[..16])
        }
    }

    /// One key of a JWKS: the RSA public key with its certificate, as authentik's
    /// JWKSView shows a signing (`sig`, RS256) or encryption (`enc`, RSA-OAEP-256) key.
    fn jwk(&self, kp: &Obj, usage: &str) -> Value {
        use rsa::traits::PublicKeyParts;
        let m = key_material(kp);
        let public = m.key.to_public_key();
        let mut jwk = Map::new();
        if usage == "sig" {
            jwk.insert("alg".into(), json!("RS256"));
        } else {
            jwk.insert("alg".into(), json!("RSA-OAEP-256"));
            jwk.insert("enc".into(), json!("A256CBC-HS512"));
        }
        jwk.insert("kid".into(), json!(self.kid(&m)));
        jwk.insert("kty".into(), json!("RSA"));
        jwk.insert("use".into(), json!(usage));
        jwk.insert("n".into(), json!(base64url(&public.n().to_bytes_be())));
        jwk.insert("e".into(), json!(base64url(&public.e().to_bytes_be())));
        jwk.insert("x5c".into(), json!([base64_std(&m.cert_der)]));
        jwk.insert(
            "x5t".into(),
            json!(base64url(&sha1::Sha1::digest(&m.cert_der))),
        );
        jwk.insert(
            "x5t#S256".into(),
            json!(base64url(&sha2::Sha256::digest(&m.cert_der))),
        );
        Value::Object(jwk)
    }

    /// `GET /application/o/<slug>/jwks/`: the signing key, then the encryption key, of the
    /// application's provider (recorded: 38-/80-*.json). A provider with neither gets `{}`:
    /// authentik adds the `keys` list only with a first key (not recorded; its JWKSView).
    fn jwks(&self, slug: &str) -> Option<Value> {
        let provider = self.oidc_application(slug)?;
        let st = lock(&self.state);
        let mut keys = Vec::new();
        for (field, usage) in [("signing_key", "sig"), ("encryption_key", "enc")] {
            if let Some(kp) = st.store.find(KEYPAIR, "pk", &provider[field]) {
                keys.push(self.jwk(kp, usage));
            }
        }
        Some(if keys.is_empty() {
            json!({})
        } else {
            json!({ "keys": keys })
        })
    }
}

/// A scope mapping as the API shows it (recorded: 16-scope-mappings-by-managed.json).
fn scope_mapping_json(o: &Obj) -> Value {
    let field = |k: &str, d: Value| o.get(k).cloned().unwrap_or(d);
    json!({
        "pk": o.pk(),
        "managed": field("managed", Value::Null),
        "name": field("name", json!("")),
        "expression": field("expression", json!("")),
        "component": "ak-property-mapping-provider-scope-form",
        "verbose_name": "Scope Mapping",
        "verbose_name_plural": "Scope Mappings",
        "meta_model_name": SCOPE_MAPPING,
        "scope_name": field("scope_name", json!("")),
        "description": field("description", json!("")),
    })
}

/// The OAuth2 fields a provider reports beyond [`Inner::provider_base_json`], with
/// authentik's defaults, by version (recorded: 13-provider-oauth2-get.json of 2024.10.2 and
/// 2026.2.2).
fn provider_defaults(rules: Rules) -> Vec<(String, Value)> {
    let new = rules.api_2026_shapes();
    let mut d = vec![
        ("client_type", json!("confidential")),
        ("client_id", json!("")),
        ("client_secret", json!("")),
        ("access_code_validity", json!("minutes=1")),
        ("access_token_validity", json!("hours=1")),
        ("refresh_token_validity", json!("days=30")),
    ];
    if new {
        d.push(("refresh_token_threshold", json!("seconds=0")));
    }
    d.extend([
        ("include_claims_in_id_token", json!(true)),
        ("signing_key", Value::Null),
        ("encryption_key", Value::Null),
        (
            "redirect_uris",
            if rules.redirect_uris_list() {
                json!([])
            } else {
                json!("")
            },
        ),
    ]);
    if new {
        d.push(("logout_uri", json!("")));
        d.push(("logout_method", json!("backchannel")));
    }
    d.push(("sub_mode", json!("hashed_user_id")));
    d.push(("issuer_mode", json!("per_provider")));
    if new {
        // jwks_sources became the federation lists.
        d.push(("jwt_federation_sources", json!([])));
        d.push(("jwt_federation_providers", json!([])));
    } else {
        d.push(("jwks_sources", json!([])));
    }
    if rules.grant_types() {
        d.push(("grant_types", json!([])));
    }
    d.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

// ---------------------------------------------------------------------------------------------
// Blueprint instances and import.
// ---------------------------------------------------------------------------------------------

/// Django REST's `CharField(trim_whitespace=True)` (the default) runs Python's `str.strip()`
/// on the value before any validation, so a blueprint instance's `name` and `content` are
/// stored, validated and hashed without leading or trailing whitespace: content sent with a
/// final newline comes back without it (recorded: 03-blueprints-create.json, `observed`).
fn trim_char_fields(body: &mut Map<String, Value>) {
    for key in ["name", "content", "path"] {
        if let Some(Value::String(v)) = body.get_mut(key) {
            let trimmed = v.trim();
            if trimmed.len() != v.len() {
                *v = trimmed.to_string();
            }
        }
    }
}

fn field_errors(errors: Vec<(&str, Value)>) -> Response {
    let mut m = Map::new();
    for (k, v) in errors {
        m.insert(k.to_string(), v);
    }
    Response::json(400, &Value::Object(m))
}

impl Inner {
    fn list_instances(&self, req: &Request) -> Response {
        let st = lock(&self.state);
        let q = req.query();
        let mut list: Vec<&Instance> = st
            .instances
            .iter()
            .filter(|i| {
                q.iter().all(|(k, v)| match k.as_str() {
                    "name" => i.name == *v,
                    "path" => i.path == *v,
                    "search" => i.name.contains(v.as_str()) || i.path.contains(v.as_str()),
                    _ => true,
                })
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        paginated(
            self.rules,
            list.into_iter().map(Instance::to_json).collect(),
        )
    }

    /// BlueprintInstanceSerializer: `name` required and unique, `context` a dict, `path` an
    /// available file, `content` a valid blueprint (validated with the EXISTING instance's
    /// context, i.e. `{}` on create), and one of path/content set.
    fn validate_instance(
        &self,
        body: &Map<String, Value>,
        existing: Option<&Instance>,
        partial: bool,
    ) -> Result<(), Response> {
        let st = lock(&self.state);
        let mut errors: Vec<(&str, Value)> = Vec::new();
        match body.get("name") {
            None if !partial => errors.push(("name", json!(["This field is required."]))),
            Some(Value::String(n)) if n.is_empty() => {
                errors.push(("name", json!(["This field may not be blank."])))
            }
            Some(Value::String(n))
                if st
                    .instances
                    .iter()
                    .any(|i| i.name == *n && Some(&i.pk) != existing.map(|e| &e.pk)) =>
            {
                errors.push((
                    "name",
                    json!(["Blueprint Instance with this name already exists."]),
                ));
            }
            Some(Value::String(_)) => {}
            Some(Value::Null) => errors.push(("name", json!(["This field may not be null."]))),
            Some(_) => errors.push(("name", json!(["Not a valid string."]))),
            None => {}
        }
        if let Some(c) = body.get("context") {
            if !c.is_object() {
                errors.push((
                    "context",
                    json!(["Value must be a dictionary, and not have any duplicate keys."]),
                ));
            }
        }
        if let Some(p) = body.get("path").and_then(Value::as_str) {
            if !p.is_empty() && !p.starts_with("oci://") {
                errors.push(("path", json!(["Blueprint file does not exist"])));
            }
        }
        let content = body.get("content");
        let validation_context = existing
            .and_then(|e| e.context.as_object().cloned())
            .unwrap_or_default();
        drop(st);
        match content {
            Some(Value::String(c)) if !c.is_empty() => {
                let mut scratch = lock(&self.state).store.clone();
                if let Err(logs) = self.run_blueprint(c, &validation_context, &mut scratch) {
                    if LogEvent::crashed(&logs) {
                        // An exception in a field validator escapes Django REST whatever the
                        // other fields' errors are.
                        return Err(server_error_page());
                    }
                    // authentik lists the run's events from info up (no debug lines).
                    let mut lines = vec![json!("Failed to validate blueprint")];
                    lines.extend(
                        logs.iter()
                            .filter(|l| l.level != "debug")
                            .map(|l| json!(format!("- {}", l.event))),
                    );
                    errors.push(("content", Value::Array(lines)));
                }
            }
            Some(Value::String(_)) | None => {}
            Some(_) => errors.push(("content", json!(["Not a valid string."]))),
        }
        if errors.is_empty() {
            let path = body
                .get("path")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| existing.map(|e| e.path.clone()))
                .unwrap_or_default();
            let content = content
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| existing.map(|e| e.content.clone()))
                .unwrap_or_default();
            if path.is_empty() && content.is_empty() {
                errors.push((
                    "non_field_errors",
                    json!(["Either path or content must be set."]),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(field_errors(errors))
        }
    }

    fn create_instance(&self, req: &Request) -> Response {
        let Some(Value::Object(mut body)) = req.json() else {
            return field_errors(vec![(
                "non_field_errors",
                json!(["Invalid data. Expected a dictionary, but got str."]),
            )]);
        };
        trim_char_fields(&mut body);
        if let Err(resp) = self.validate_instance(&body, None, false) {
            return resp;
        }
        let instance = Instance {
            pk: uuid4(),
            name: body["name"].as_str().unwrap_or("").to_string(),
            path: body
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            context: body.get("context").cloned().unwrap_or(json!({})),
            last_applied: now_rfc3339(),
            last_applied_hash: String::new(),
            status: "unknown".into(),
            enabled: body.get("enabled").and_then(Value::as_bool).unwrap_or(true),
            managed_models: Vec::new(),
            metadata: json!({}),
            content: body
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        };
        let out = instance.to_json();
        lock(&self.state).instances.push(instance);
        Response::json(201, &out)
    }

    fn update_instance(&self, req: &Request, pk: &str, partial: bool) -> Response {
        let Some(existing) = lock(&self.state)
            .instances
            .iter()
            .find(|i| i.pk == pk)
            .cloned()
        else {
            return self.not_found("BlueprintInstance");
        };
        let Some(Value::Object(mut body)) = req.json() else {
            return field_errors(vec![(
                "non_field_errors",
                json!(["Invalid data. Expected a dictionary, but got str."]),
            )]);
        };
        trim_char_fields(&mut body);
        if let Err(resp) = self.validate_instance(&body, Some(&existing), partial) {
            return resp;
        }
        let mut st = lock(&self.state);
        let Some(i) = st.instances.iter_mut().find(|i| i.pk == pk) else {
            return self.not_found("BlueprintInstance");
        };
        if let Some(n) = body.get("name").and_then(Value::as_str) {
            i.name = n.to_string();
        }
        if let Some(p) = body.get("path").and_then(Value::as_str) {
            i.path = p.to_string();
        }
        if let Some(c) = body.get("context") {
            i.context = c.clone();
        }
        if let Some(e) = body.get("enabled").and_then(Value::as_bool) {
            i.enabled = e;
        }
        if let Some(c) = body.get("content").and_then(Value::as_str) {
            i.content = c.to_string();
        }
        // `last_applied` is an auto_now field: every save moves it, a PATCH too.
        i.last_applied = now_rfc3339();
        Response::json(200, &i.to_json())
    }

    /// The task queue's worker, run lazily: every queued apply whose time has come.
    fn run_due_applies(&self) {
        let due: Vec<String> = {
            let mut st = lock(&self.state);
            let now = std::time::Instant::now();
            let (due, later): (Vec<_>, Vec<_>) =
                st.queued_applies.drain(..).partition(|(_, at)| *at <= now);
            st.queued_applies = later;
            due.into_iter().map(|(pk, _)| pk).collect()
        };
        for pk in due {
            let _ = self.apply_now(&pk);
        }
    }

    fn apply_instance(&self, pk: &str) -> Response {
        let queued = {
            let mut st = lock(&self.state);
            match st.apply_delay {
                Some(delay) => {
                    let instance = st
                        .instances
                        .iter()
                        .find(|i| i.pk == pk)
                        .map(Instance::to_json);
                    if instance.is_some() {
                        let at = std::time::Instant::now() + delay;
                        st.queued_applies.push((pk.to_string(), at));
                    }
                    instance
                }
                None => None,
            }
        };
        match queued {
            Some(instance) => Response::json(200, &instance),
            None => self.apply_now(pk),
        }
    }

    fn apply_now(&self, pk: &str) -> Response {
        let Some(instance) = lock(&self.state)
            .instances
            .iter()
            .find(|i| i.pk == pk)
            .cloned()
        else {
            return self.not_found("BlueprintInstance");
        };
        if !instance.enabled {
            return Response::json(200, &instance.to_json());
        }
        let context = instance.context.as_object().cloned().unwrap_or_default();
        let mut st = lock(&self.state);
        let mut tx = st.store.clone();
        let result = self.run_blueprint(&instance.content, &context, &mut tx);
        let i = st
            .instances
            .iter_mut()
            .find(|i| i.pk == pk)
            .expect("instance exists");
        i.last_applied = now_rfc3339();
        match result {
            Ok(outcome) => {
                i.status = "successful".into();
                i.last_applied_hash = hex(&Sha512::digest(instance.content.as_bytes()));
                i.metadata = outcome.metadata;
                let out = i.to_json();
                st.store = tx;
                st.applied_count += 1;
                Response::json(200, &out)
            }
            Err(_) => {
                i.status = "error".into();
                Response::json(200, &i.to_json())
            }
        }
    }

    /// The import endpoint of the version: multipart field `file`; always HTTP 200
    /// `{success, logs}` once a file is there.
    fn import(&self, req: &Request) -> Response {
        let Some(file) = multipart_file(req) else {
            return Response::json(400, &json!({"logs": [], "success": false}));
        };
        let content = String::from_utf8_lossy(&file).into_owned();
        let mut st = lock(&self.state);
        let mut tx = st.store.clone();
        let (success, logs) = match self.run_blueprint(&content, &Map::new(), &mut tx) {
            Ok(outcome) => {
                st.store = tx;
                st.applied_count += 1;
                (true, outcome.logs)
            }
            Err(logs) if LogEvent::crashed(&logs) => return server_error_page(),
            Err(logs) => (false, logs),
        };
        Response::json(
            200,
            &json!({"success": success, "logs": logs.iter().map(LogEvent::to_json).collect::<Vec<_>>()}),
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The content of the multipart/form-data field `file`.
fn multipart_file(req: &Request) -> Option<Vec<u8>> {
    let ct = req.header("content-type")?;
    if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        return None;
    }
    let boundary = ct
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()?
        .trim_matches('"');
    let delim = format!("--{boundary}");
    let body = &req.body;
    let positions: Vec<usize> = find_all(body, delim.as_bytes());
    for w in positions.windows(2) {
        let part = &body[w[0] + delim.len()..w[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let split = find_all(part, b"\r\n\r\n").first().copied()?;
        let head = String::from_utf8_lossy(&part[..split]).to_ascii_lowercase();
        let is_file = head
            .lines()
            .any(|l| l.starts_with("content-disposition") && l.contains("name=\"file\""));
        if is_file {
            let data = &part[split + 4..];
            let data = data.strip_suffix(b"\r\n").unwrap_or(data);
            return Some(data.to_vec());
        }
    }
    None
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return Vec::new();
    }
    (0..=hay.len() - needle.len())
        .filter(|&i| &hay[i..i + needle.len()] == needle)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The importer.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct LogEvent {
    level: &'static str,
    event: String,
}

/// The level of the one event a run that crashed authentik returns: the request that
/// ran it ends in authentik's error page instead of an answer with logs.
const SERVER_ERROR: &str = "server_error";

impl LogEvent {
    fn new(level: &'static str, event: impl Into<String>) -> Self {
        LogEvent {
            level,
            event: event.into(),
        }
    }
    fn server_error() -> Self {
        LogEvent::new(SERVER_ERROR, "uncaught exception")
    }
    fn crashed(logs: &[LogEvent]) -> bool {
        logs.iter().any(|l| l.level == SERVER_ERROR)
    }
    fn to_json(&self) -> Value {
        json!({
            "timestamp": now_rfc3339(),
            "log_level": self.level,
            "logger": "authentik.blueprints.v1.importer",
            "event": self.event,
            "attributes": {},
        })
    }
}

/// A run that went through. (No `managed_models`: both recorded versions show `[]` there
/// after an API apply.)
struct Applied {
    metadata: Value,
    logs: Vec<LogEvent>,
}

/// Everything a tag may look at while an entry resolves.
struct Resolver<'a> {
    rules: Rules,
    store: &'a Store,
    context: &'a Map<String, Value>,
    env: &'a HashMap<String, String>,
    /// entry `id` → (model, pk, pbm_uuid) of earlier entries' instances
    keys: &'a HashMap<String, (String, Value, Option<Value>)>,
    entry_model: String,
    /// `!Enumerate` contexts, innermost last: (index or key, value)
    enumerate: Vec<(Value, Value)>,
}

impl Inner {
    /// Loads, validates and applies `content` on `store` (the caller decides whether to keep
    /// it). `Err(logs)` when invalid, with authentik's log events.
    fn run_blueprint(
        &self,
        content: &str,
        instance_context: &Map<String, Value>,
        store: &mut Store,
    ) -> Result<Applied, Vec<LogEvent>> {
        let fail = |mut logs: Vec<LogEvent>, e: String| {
            logs.push(LogEvent::new("warning", e));
            logs.push(LogEvent::new("warning", "Blueprint validation failed"));
            logs
        };
        // PyYAML's ParserError escapes authentik's validation uncaught (recorded:
        // 22-blueprints-create-malformed-yaml.json): a server error, not a refusal with logs.
        let doc: Yaml =
            serde_yaml::from_str(content).map_err(|_| vec![LogEvent::server_error()])?;
        check_tags(&doc, self.rules).map_err(|e| vec![LogEvent::new("error", e)])?;
        let empty = serde_yaml::Mapping::new();
        let top = match &doc {
            Yaml::Mapping(top) => top,
            // A document that is a bare scalar ("just a string") is taken as a blueprint
            // without entries: created (201) and applied `successful` on both recorded
            // versions (23-/33-/34-*.json).
            Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) | Yaml::String(_) => &empty,
            _ => {
                return Err(vec![LogEvent::new(
                    "error",
                    "wrong value type for field \"Blueprint\" - should be \"dict\"",
                )])
            }
        };
        let version = top.get("version").map(plain).unwrap_or(json!(1));
        if version != json!(1) {
            return Err(vec![LogEvent::new("warning", "Invalid blueprint version")]);
        }
        let entries = match top.get("entries") {
            None => Vec::new(),
            Some(Yaml::Sequence(s)) => s.clone(),
            Some(_) => {
                return Err(vec![LogEvent::new(
                    "error",
                    "wrong value type for field \"entries\" - should be \"list\"",
                )])
            }
        };
        let mut context = match top.get("context").map(plain) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        context.insert("goauthentik.io/enterprise/licensed".into(), json!(false));
        for (k, v) in instance_context {
            context.insert(k.clone(), v.clone());
        }
        let metadata = match top.get("metadata").map(plain) {
            Some(Value::Object(m)) => json!({
                "name": m.get("name").cloned().unwrap_or(json!("")),
                "labels": m.get("labels").cloned().unwrap_or(json!({})),
            }),
            _ => json!({}),
        };

        let env = lock(&self.env).clone();
        let mut logs = Vec::new();
        let mut keys: HashMap<String, (String, Value, Option<Value>)> = HashMap::new();
        for raw in &entries {
            let Yaml::Mapping(entry) = raw else {
                return Err(fail(logs, "wrong value type for field \"entries\"".into()));
            };
            let Some(model_raw) = entry.get("model") else {
                return Err(fail(logs, "missing value for field \"model\"".into()));
            };
            let mut r = Resolver {
                rules: self.rules,
                store,
                context: &context,
                env: &env,
                keys: &keys,
                entry_model: String::new(),
                enumerate: Vec::new(),
            };
            let model = match r.resolve(model_raw) {
                Ok(Value::String(m)) => m.to_ascii_lowercase(),
                Ok(other) => other.to_string(),
                Err(e) => return Err(fail(logs, format!("Entry invalid: {e}"))),
            };
            r.entry_model = model.clone();
            // Conditions: every one must be truthy, else the entry is skipped.
            if let Some(conds) = entry.get("conditions") {
                let resolved = r
                    .resolve(conds)
                    .map_err(|e| fail(logs.clone(), format!("Entry invalid: {e}")))?;
                let all = match resolved {
                    Value::Array(items) => items.iter().all(truthy),
                    other => truthy(&other),
                };
                if !all {
                    logs.push(LogEvent::new(
                        "debug",
                        "One or more conditions of this entry are not fulfilled, skipping",
                    ));
                    continue;
                }
            }
            if !known_model(&model) {
                let (app, name) = model.split_once('.').unwrap_or((&model, ""));
                logs.push(LogEvent::new(
                    "warning",
                    format!("App or Model does not exist: app={app} model={name}"),
                ));
                logs.push(LogEvent::new("warning", "Blueprint validation failed"));
                return Err(logs);
            }
            let state = match entry.get("state").map(|s| r.resolve(s)) {
                None => "present".to_string(),
                Some(Ok(Value::String(s)))
                    if ["present", "created", "must_created", "absent"].contains(&s.as_str()) =>
                {
                    s
                }
                Some(Ok(other)) => {
                    return Err(fail(
                        logs,
                        format!("Entry invalid: {other} is not a valid BlueprintEntryDesiredState"),
                    ))
                }
                Some(Err(e)) => return Err(fail(logs, format!("Entry invalid: {e}"))),
            };
            let identifiers = match entry.get("identifiers").map(|v| r.resolve(v)) {
                None => Map::new(),
                Some(Ok(Value::Object(m))) => m,
                Some(Ok(_)) => {
                    return Err(fail(
                        logs,
                        "wrong value type for field \"identifiers\"".into(),
                    ))
                }
                Some(Err(e)) => return Err(fail(logs, format!("Entry invalid: {e}"))),
            };
            let attrs = match entry.get("attrs").map(|v| r.resolve(v)) {
                None | Some(Ok(Value::Null)) => Map::new(),
                Some(Ok(Value::Object(m))) => m,
                Some(Ok(_)) => {
                    return Err(fail(logs, "wrong value type for field \"attrs\"".into()))
                }
                Some(Err(e)) => return Err(fail(logs, format!("Entry invalid: {e}"))),
            };
            let id = entry
                .get("id")
                .map(plain)
                .and_then(|v| v.as_str().map(str::to_string));
            drop(r);

            if identifiers.is_empty() {
                return Err(fail(
                    logs,
                    "Entry invalid: No or invalid identifiers".into(),
                ));
            }
            // pk OR (all other identifiers), as authentik's __query_from_identifier.
            let existing_idx = store.objects.iter().position(|o| {
                o.model == model
                    && (identifiers
                        .get("pk")
                        .is_some_and(|pk| field_matches(o, "pk", pk))
                        || {
                            let others: Vec<_> =
                                identifiers.iter().filter(|(k, _)| *k != "pk").collect();
                            !others.is_empty() && others.iter().all(|(k, v)| field_matches(o, k, v))
                        })
            });
            if state == "absent" {
                if let Some(i) = existing_idx {
                    store.objects.remove(i);
                    logs.push(LogEvent::new("debug", "Deleted model"));
                }
                continue;
            }
            if state == "must_created" && existing_idx.is_some() {
                return Err(fail(
                    logs,
                    "Entry invalid: State is set to must_created and object exists already".into(),
                ));
            }
            let mut data = attrs.clone();
            for (k, v) in &identifiers {
                data.insert(k.clone(), v.clone());
            }
            self.drop_unknown_fields(&model, &mut data);
            let existing = existing_idx.map(|i| store.objects[i].clone());
            if let Err(errs) = self.validate_model(&model, &data, existing.as_ref(), store) {
                if self.rules.entry_error_log_crashes() && has_tag(raw, "KeyOf") {
                    // From 2025.2 authentik renders the failed entry into its log, resolving
                    // the entry's `!KeyOf` again, which raises outside the transaction; the
                    // request ends in authentik's error page (recorded:
                    // 2026.2.2/21-blueprints-create-group-missing.json).
                    return Err(vec![LogEvent::server_error()]);
                }
                return Err(fail(
                    logs,
                    format!("Entry invalid: Serializer errors {errs}"),
                ));
            }
            let pk = match (existing_idx, state.as_str()) {
                (Some(i), "created") => {
                    logs.push(LogEvent::new("debug", "Instance exists, skipping"));
                    store.objects[i].pk()
                }
                (Some(i), _) => {
                    for (k, v) in data {
                        store.objects[i].fields.insert(k, v);
                    }
                    logs.push(LogEvent::new("debug", "Updated model"));
                    store.objects[i].pk()
                }
                (None, _) => {
                    let data = self.with_creation_defaults(&model, data);
                    logs.push(LogEvent::new(
                        "debug",
                        "Initialised new serializer instance",
                    ));
                    store.insert(&model, data)
                }
            };
            if let Some(id) = id {
                let pbm = store
                    .find(&model, "pk", &pk)
                    .and_then(|o| o.get("pbm_uuid").cloned());
                keys.insert(id, (model.clone(), pk, pbm));
            }
        }
        Ok(Applied { metadata, logs })
    }

    /// Defaults authentik fills when an object is created.
    fn with_creation_defaults(
        &self,
        model: &str,
        mut data: Map<String, Value>,
    ) -> Map<String, Value> {
        match model {
            OAUTH2_PROVIDER => {
                data.entry("client_id")
                    .or_insert_with(|| json!(random_token(40)));
                data.entry("client_secret")
                    .or_insert_with(|| json!(random_token(128)));
                if self.rules.grant_types() {
                    // A blueprint-created provider without grant_types gets [] (CONTRACTS.md §2).
                    data.entry("grant_types").or_insert_with(|| json!([]));
                }
                if self.rules.redirect_uri_type() {
                    if let Some(Value::Array(items)) = data.get_mut("redirect_uris") {
                        for item in items {
                            if let Value::Object(m) = item {
                                m.entry("redirect_uri_type")
                                    .or_insert_with(|| json!("authorization"));
                            }
                        }
                    }
                }
            }
            APPLICATION => {
                data.entry("pbm_uuid").or_insert_with(|| json!(uuid4()));
            }
            _ => {}
        }
        data
    }
}

/// Models the stand-in knows by name. Apps listed here accept only these models; any other
/// `authentik_*` app accepts any model name (checked leniently, no serializer rules).
const KNOWN_MODELS: &[(&str, &[&str])] = &[
    (
        "authentik_core",
        &[
            "application",
            "group",
            "user",
            "token",
            "propertymapping",
            "source",
            "applicationentitlement",
        ],
    ),
    ("authentik_flows", &["flow", "flowstagebinding"]),
    ("authentik_policies", &["policybinding"]),
    ("authentik_crypto", &["certificatekeypair"]),
    (
        "authentik_providers_oauth2",
        &["oauth2provider", "scopemapping"],
    ),
    ("authentik_rbac", &["role", "initialpermissions"]),
    (
        "authentik_blueprints",
        &["blueprintinstance", "metaapplyblueprint"],
    ),
];

fn known_model(model: &str) -> bool {
    let Some((app, name)) = model.split_once('.') else {
        return false;
    };
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let Some(app_rest) = app.strip_prefix("authentik_") else {
        return false;
    };
    if !ident(app_rest) || !ident(name) {
        return false;
    }
    match KNOWN_MODELS.iter().find(|(a, _)| *a == app) {
        Some((_, models)) => models.contains(&name),
        None => true,
    }
}

/// Whether a YAML tag `!name` appears anywhere in `v`.
fn has_tag(v: &Yaml, name: &str) -> bool {
    match v {
        Yaml::Tagged(t) => {
            t.tag.to_string().trim_start_matches('!') == name || has_tag(&t.value, name)
        }
        Yaml::Sequence(s) => s.iter().any(|i| has_tag(i, name)),
        Yaml::Mapping(m) => m.iter().any(|(k, v)| has_tag(k, name) || has_tag(v, name)),
        _ => false,
    }
}

/// Load-time checks of PyYAML with authentik's constructors: unknown tags (or tags this version
/// lacks) have no constructor, and each constructor expects its node kind.
fn check_tags(v: &Yaml, rules: Rules) -> Result<(), String> {
    match v {
        Yaml::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            if !rules.has_tag(name) {
                return Err(format!(
                    "could not determine a constructor for the tag '{tag}'"
                ));
            }
            let is_seq = matches!(t.value, Yaml::Sequence(_));
            let is_scalar = matches!(
                t.value,
                Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) | Yaml::String(_)
            );
            let ok = match name {
                "KeyOf" | "ParseJSON" | "Index" | "Value" => is_scalar,
                "Env" | "File" | "Context" => is_scalar || is_seq,
                _ => is_seq,
            };
            if !ok {
                let found = match t.value {
                    Yaml::Sequence(_) => "a sequence node",
                    Yaml::Mapping(_) => "a mapping node",
                    _ => "a scalar node",
                };
                return Err(format!("{tag}: cannot construct from {found}"));
            }
            check_tags(&t.value, rules)
        }
        Yaml::Sequence(s) => s.iter().try_for_each(|i| check_tags(i, rules)),
        Yaml::Mapping(m) => m.iter().try_for_each(|(k, v)| {
            check_tags(k, rules)?;
            check_tags(v, rules)
        }),
        _ => Ok(()),
    }
}

/// A YAML value without tags as JSON (tags become null; used for plain fields).
fn plain(v: &Yaml) -> Value {
    match v {
        Yaml::Null | Yaml::Tagged(_) => Value::Null,
        Yaml::Bool(b) => json!(b),
        Yaml::Number(n) => number(n),
        Yaml::String(s) => json!(s),
        Yaml::Sequence(s) => Value::Array(s.iter().map(plain).collect()),
        Yaml::Mapping(m) => {
            Value::Object(m.iter().map(|(k, v)| (key_string(k), plain(v))).collect())
        }
    }
}

fn number(n: &serde_yaml::Number) -> Value {
    if let Some(i) = n.as_i64() {
        json!(i)
    } else if let Some(u) = n.as_u64() {
        json!(u)
    } else {
        json!(n.as_f64().unwrap_or(0.0))
    }
}

fn key_string(k: &Yaml) -> String {
    match plain(k) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Python truthiness.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python `str()` of a value (for `!Format`).
fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        other => py_str(other),
    }
}

/// Python `%` formatting with `%s`, `%d`, `%i`, `%r` and `%%`.
fn py_format(fmt: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut used = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('%') => out.push('%'),
            Some(spec @ ('s' | 'd' | 'i' | 'r')) => {
                let arg = args
                    .get(used)
                    .ok_or_else(|| "not enough arguments for format string".to_string())?;
                used += 1;
                match spec {
                    'r' => out.push_str(&py_repr(arg)),
                    'd' | 'i' => match arg.as_f64() {
                        Some(f) => out.push_str(&format!("{}", f.trunc() as i64)),
                        None => {
                            return Err(format!(
                                "%{spec} format: a real number is required, not {}",
                                py_type(arg)
                            ))
                        }
                    },
                    _ => out.push_str(&py_str(arg)),
                }
            }
            other => {
                return Err(format!(
                    "unsupported format character '{}'",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    if used < args.len() {
        return Err("not all arguments converted during string formatting".into());
    }
    Ok(out)
}

fn py_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

impl Resolver<'_> {
    /// Resolves tags depth-first, lazily where authentik is lazy (`!If` branches, `!Enumerate`
    /// bodies).
    fn resolve(&mut self, v: &Yaml) -> Result<Value, String> {
        match v {
            Yaml::Tagged(t) => {
                let tag = t.tag.to_string();
                self.tag(tag.trim_start_matches('!'), &t.value)
            }
            Yaml::Sequence(s) => s
                .iter()
                .map(|i| self.resolve(i))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Yaml::Mapping(m) => {
                let mut out = Map::new();
                for (k, v) in m {
                    let key = match self.resolve(k)? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(key, self.resolve(v)?);
                }
                Ok(Value::Object(out))
            }
            other => Ok(plain(other)),
        }
    }

    fn seq<'b>(&self, v: &'b Yaml) -> &'b [Yaml] {
        match v {
            Yaml::Sequence(s) => s,
            _ => &[],
        }
    }

    /// Scalar or `[key, default]` (Env, File, Context).
    fn key_and_default(&mut self, v: &Yaml) -> Result<(String, Value), String> {
        match v {
            Yaml::Sequence(s) => {
                let key = s
                    .first()
                    .map(|k| self.resolve(k))
                    .transpose()?
                    .unwrap_or(Value::Null);
                let default = s
                    .get(1)
                    .map(|d| self.resolve(d))
                    .transpose()?
                    .unwrap_or(Value::Null);
                Ok((py_str(&key), default))
            }
            other => Ok((py_str(&plain(other)), Value::Null)),
        }
    }

    fn tag(&mut self, name: &str, v: &Yaml) -> Result<Value, String> {
        match name {
            "KeyOf" => {
                let id = py_str(&plain(v));
                match self.keys.get(&id) {
                    Some((model, pk, pbm)) => {
                        // Policy bindings point at the PolicyBindingModel's pbm_uuid.
                        if self.entry_model == POLICY_BINDING && model == APPLICATION {
                            Ok(pbm.clone().unwrap_or_else(|| pk.clone()))
                        } else {
                            Ok(pk.clone())
                        }
                    }
                    None => Err(format!(
                        "KeyOf: failed to find entry with `id` of `{id}` and a model instance"
                    )),
                }
            }
            "Env" => {
                let (key, default) = self.key_and_default(v)?;
                Ok(self
                    .env
                    .get(&key)
                    .cloned()
                    .or_else(|| std::env::var(&key).ok())
                    .filter(|s| !s.is_empty())
                    .map(Value::String)
                    .unwrap_or(default))
            }
            "File" => {
                let (path, default) = self.key_and_default(v)?;
                Ok(std::fs::read_to_string(&path)
                    .map(|s| Value::String(s.trim().to_string()))
                    .unwrap_or(default))
            }
            "Context" => {
                let (key, default) = self.key_and_default(v)?;
                Ok(self.context.get(&key).cloned().unwrap_or(default))
            }
            "ParseJSON" => {
                let raw = py_str(&plain(v));
                serde_json::from_str(&raw).map_err(|e| e.to_string())
            }
            "Format" => {
                let items = self.seq(v);
                let fmt = items
                    .first()
                    .map(|f| self.resolve(f))
                    .transpose()?
                    .unwrap_or(Value::Null);
                let args = items[1.min(items.len())..]
                    .iter()
                    .map(|a| self.resolve(a))
                    .collect::<Result<Vec<_>, _>>()?;
                py_format(&py_str(&fmt), &args).map(Value::String)
            }
            "Find" | "FindObject" => {
                let items = self.seq(v);
                let model = items
                    .first()
                    .map(|m| self.resolve(m))
                    .transpose()?
                    .unwrap_or(Value::Null);
                let model = py_str(&model).to_ascii_lowercase();
                let known =
                    self.store.objects.iter().any(|o| o.model == model) || known_model(&model);
                if !known {
                    let (app, m) = model.split_once('.').unwrap_or((&model, ""));
                    return Err(format!("App '{app}' doesn't have a '{m}' model."));
                }
                let mut conds = Vec::new();
                for c in &items[1.min(items.len())..] {
                    let pair = self.resolve(c)?;
                    let (k, val) = match &pair {
                        Value::Array(p) if p.len() == 2 => (py_str(&p[0]), p[1].clone()),
                        _ => return Err(format!("Invalid !Find condition: {}", py_str(&pair))),
                    };
                    conds.push((k, val));
                }
                let found = self
                    .store
                    .of(&model)
                    .find(|o| conds.iter().all(|(k, val)| field_matches(o, k, val)));
                Ok(match (name, found) {
                    (_, None) => Value::Null,
                    ("Find", Some(o)) => o.pk(),
                    (_, Some(o)) => Value::Object(o.fields.clone()),
                })
            }
            "Condition" => {
                let items = self.seq(v);
                let mode = items
                    .first()
                    .map(|m| self.resolve(m))
                    .transpose()?
                    .unwrap_or(Value::Null);
                let args: Vec<bool> = items[1.min(items.len())..]
                    .iter()
                    .map(|a| self.resolve(a).map(|x| truthy(&x)))
                    .collect::<Result<_, _>>()?;
                if args.is_empty() {
                    return Err("At least one value is required after mode selection.".into());
                }
                let xor = || args.iter().fold(false, |acc, b| acc ^ b);
                let r = match py_str(&mode).to_ascii_uppercase().as_str() {
                    "AND" => args.iter().all(|b| *b),
                    "NAND" => !args.iter().all(|b| *b),
                    "OR" => args.iter().any(|b| *b),
                    "NOR" => !args.iter().any(|b| *b),
                    "XOR" => xor(),
                    "XNOR" => !xor(),
                    other => return Err(format!("'{other}'")),
                };
                Ok(json!(r))
            }
            "If" => {
                let items = self.seq(v);
                let cond = items
                    .first()
                    .map(|c| self.resolve(c))
                    .transpose()?
                    .unwrap_or(Value::Null);
                if items.len() == 1 {
                    return Ok(json!(truthy(&cond)));
                }
                let branch = if truthy(&cond) {
                    items.get(1)
                } else {
                    items.get(2)
                };
                branch
                    .map(|b| self.resolve(b))
                    .transpose()
                    .map(|o| o.unwrap_or(Value::Null))
            }
            "Enumerate" => {
                let items = self.seq(v);
                if items.len() < 3 {
                    return Err("Enumerate needs [iterable, SEQ|MAP, body]".into());
                }
                let iterable = self.resolve(&items[0])?;
                let mode = py_str(&self.resolve(&items[1])?).to_ascii_uppercase();
                let pairs: Vec<(Value, Value)> = match iterable {
                    Value::Array(a) => a
                        .into_iter()
                        .enumerate()
                        .map(|(i, x)| (json!(i), x))
                        .collect(),
                    Value::Object(o) => o.into_iter().map(|(k, x)| (json!(k), x)).collect(),
                    Value::String(s) => s
                        .chars()
                        .enumerate()
                        .map(|(i, c)| (json!(i), json!(c.to_string())))
                        .collect(),
                    _ => return Err(
                        "Enumerate's iterable must be an iterable such as a sequence or a mapping"
                            .into(),
                    ),
                };
                let mut seq_out = Vec::new();
                let mut map_out = Map::new();
                for pair in pairs {
                    self.enumerate.push(pair);
                    let body = self.resolve(&items[2]);
                    self.enumerate.pop();
                    let body = body?;
                    match mode.as_str() {
                        "SEQ" => seq_out.push(body),
                        "MAP" => match body {
                            Value::Array(kv) if kv.len() == 2 => {
                                map_out.insert(py_str(&kv[0]), kv[1].clone());
                            }
                            Value::Object(o) => map_out.extend(o),
                            other => {
                                return Err(format!(
                                    "Invalid Enumerate item found: {}",
                                    py_str(&other)
                                ))
                            }
                        },
                        other => return Err(format!("'{other}'")),
                    }
                }
                Ok(if mode == "SEQ" {
                    Value::Array(seq_out)
                } else {
                    Value::Object(map_out)
                })
            }
            "Index" | "Value" => {
                let depth = plain(v).as_u64().unwrap_or(0) as usize;
                if self.enumerate.is_empty() {
                    return Err(format!(
                        "{name} tags are only usable inside an Enumerate tag"
                    ));
                }
                let ctx = self
                    .enumerate
                    .len()
                    .checked_sub(depth + 1)
                    .and_then(|i| self.enumerate.get(i))
                    .ok_or_else(|| {
                        format!(
                            "{name} tag: invalid depth: {depth}. Max depth: {}",
                            self.enumerate.len() - 1
                        )
                    })?;
                Ok(if name == "Index" {
                    ctx.0.clone()
                } else {
                    ctx.1.clone()
                })
            }
            "AtIndex" => {
                let items = self.seq(v);
                let obj = items
                    .first()
                    .map(|o| self.resolve(o))
                    .transpose()?
                    .unwrap_or(Value::Null);
                let attr = items
                    .get(1)
                    .map(|a| self.resolve(a))
                    .transpose()?
                    .unwrap_or(Value::Null);
                let default = items.get(2).map(|d| self.resolve(d)).transpose()?;
                let found = match (&obj, &attr) {
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n.as_i64().unwrap_or(0);
                        let idx = if i < 0 { a.len() as i64 + i } else { i };
                        usize::try_from(idx).ok().and_then(|i| a.get(i)).cloned()
                    }
                    (Value::Array(_), other) => {
                        return Err(format!("Invalid index for list: {}", py_str(other)))
                    }
                    (Value::Object(o), k) => o.get(&py_str(k)).cloned(),
                    _ => None,
                };
                match (found, default) {
                    (Some(v), _) => Ok(v),
                    (None, Some(d)) => Ok(d),
                    (None, None) if obj.is_array() => {
                        Err(format!("Index out of range: {}", py_str(&attr)))
                    }
                    (None, None) => Err(format!("Key does not exist: {}", py_str(&attr))),
                }
            }
            other => Err(format!(
                "could not determine a constructor for the tag '!{other}'"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Serializer checks, with Django REST's messages.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// A string that may not be blank.
    NonBlank,
    Bool,
    Int,
    Slug,
    Choice(&'static [&'static str]),
    /// Primary key of an object of that model; `true` = nullable.
    Ref(&'static str, bool),
    /// List of primary keys of objects of that model.
    Refs(&'static str),
    /// "hours=1;minutes=2"
    Duration,
    RedirectUris,
    GrantTypes,
    Any,
}

struct FieldSpec {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn f(name: &'static str, kind: Kind, required: bool) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
    }
}

const SUB_MODES: &[&str] = &[
    "hashed_user_id",
    "user_id",
    "user_uuid",
    "user_username",
    "user_email",
    "user_upn",
];
const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "implicit",
    "hybrid",
    "refresh_token",
    "client_credentials",
    "password",
    "urn:ietf:params:oauth:grant-type:device_code",
];

/// The writable fields of the models checked strictly; other `authentik_*` models pass.
fn model_fields(model: &str, rules: Rules) -> Option<Vec<FieldSpec>> {
    match model {
        OAUTH2_PROVIDER => {
            let mut v = vec![
                f("name", Kind::NonBlank, true),
                f("authentication_flow", Kind::Ref(FLOW, true), false),
                f("authorization_flow", Kind::Ref(FLOW, false), true),
                f("property_mappings", Kind::Refs(SCOPE_MAPPING), false),
                f(
                    "client_type",
                    Kind::Choice(&["confidential", "public"]),
                    false,
                ),
                f("client_id", Kind::NonBlank, false),
                f("client_secret", Kind::Str, false),
                f("access_code_validity", Kind::Duration, false),
                f("access_token_validity", Kind::Duration, false),
                f("refresh_token_validity", Kind::Duration, false),
                f("include_claims_in_id_token", Kind::Bool, false),
                f("signing_key", Kind::Ref(KEYPAIR, true), false),
                f("encryption_key", Kind::Ref(KEYPAIR, true), false),
                f("redirect_uris", Kind::RedirectUris, false),
                f("sub_mode", Kind::Choice(SUB_MODES), false),
                f(
                    "issuer_mode",
                    Kind::Choice(&["global", "per_provider"]),
                    false,
                ),
            ];
            if rules.api_2026_shapes() {
                v.extend([
                    f("refresh_token_threshold", Kind::Duration, false),
                    f("jwt_federation_sources", Kind::Any, false),
                    f("jwt_federation_providers", Kind::Any, false),
                    f("logout_uri", Kind::Str, false),
                    f(
                        "logout_method",
                        Kind::Choice(&["backchannel", "frontchannel"]),
                        false,
                    ),
                ]);
            } else {
                v.push(f("jwks_sources", Kind::Any, false));
            }
            if rules.invalidation_flow() {
                v.push(f("invalidation_flow", Kind::Ref(FLOW, false), true));
            }
            if rules.grant_types() {
                v.push(f("grant_types", Kind::GrantTypes, false));
            }
            Some(v)
        }
        APPLICATION => Some(vec![
            f("name", Kind::NonBlank, true),
            f("slug", Kind::Slug, true),
            f("provider", Kind::Ref(OAUTH2_PROVIDER, true), false),
            f("backchannel_providers", Kind::Any, false),
            f("open_in_new_tab", Kind::Bool, false),
            f("meta_launch_url", Kind::Str, false),
            f("meta_icon", Kind::Any, false),
            f("meta_description", Kind::Str, false),
            f("meta_publisher", Kind::Str, false),
            f("policy_engine_mode", Kind::Choice(&["all", "any"]), false),
            f("group", Kind::Str, false),
        ]),
        POLICY_BINDING => Some(vec![
            f("target", Kind::Any, true),
            f("policy", Kind::Any, false),
            f("group", Kind::Ref(GROUP, true), false),
            f("user", Kind::Any, false),
            f("order", Kind::Int, true),
            f("enabled", Kind::Bool, false),
            f("negate", Kind::Bool, false),
            f("timeout", Kind::Int, false),
            f("failure_result", Kind::Bool, false),
        ]),
        _ => None,
    }
}

/// One DRF error detail.
fn ed(msg: &str, code: &str) -> String {
    format!("ErrorDetail(string={}, code='{code}')", py_quote(msg))
}

fn py_quote(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\'', "\\'"))
    }
}

fn valid_duration(s: &str) -> bool {
    let units = [
        "weeks",
        "days",
        "hours",
        "minutes",
        "seconds",
        "milliseconds",
        "microseconds",
    ];
    !s.is_empty()
        && s.split(';').filter(|p| !p.is_empty()).all(|p| {
            p.split_once('=')
                .is_some_and(|(k, v)| units.contains(&k.trim()) && v.trim().parse::<f64>().is_ok())
        })
}

impl Inner {
    /// Django REST ignores input fields its serializer does not declare (nested ones too):
    /// they are neither refused nor stored.
    fn drop_unknown_fields(&self, model: &str, data: &mut Map<String, Value>) {
        let Some(specs) = model_fields(model, self.rules) else {
            return;
        };
        data.retain(|k, _| k == "pk" || specs.iter().any(|s| s.name == k));
        if model == OAUTH2_PROVIDER && self.rules.redirect_uris_list() {
            if let Some(Value::Array(items)) = data.get_mut("redirect_uris") {
                for item in items.iter_mut() {
                    if let Value::Object(m) = item {
                        m.retain(|k, _| {
                            k == "matching_mode"
                                || k == "url"
                                || (k == "redirect_uri_type" && self.rules.redirect_uri_type())
                        });
                    }
                }
            }
        }
    }

    /// Django REST's field checks for the strict models; `Err` is the rendered error dict.
    fn validate_model(
        &self,
        model: &str,
        data: &Map<String, Value>,
        existing: Option<&Obj>,
        store: &Store,
    ) -> Result<(), String> {
        let Some(specs) = model_fields(model, self.rules) else {
            return Ok(());
        };
        let partial = existing.is_some();
        let mut errors: Vec<(String, Vec<String>)> = Vec::new();
        for spec in &specs {
            let Some(value) = data.get(spec.name) else {
                if spec.required && !partial {
                    errors.push((
                        spec.name.into(),
                        vec![ed("This field is required.", "required")],
                    ));
                }
                continue;
            };
            if let Some(e) = self.check_field(spec, value, store) {
                errors.push((spec.name.into(), e));
            }
        }
        if model == APPLICATION {
            if let Some(Value::String(slug)) = data.get("slug") {
                if RESERVED_SLUGS.contains(&slug.as_str()) {
                    errors.push(("slug".into(), vec![ed("Slug is reserved.", "invalid")]));
                }
            }
        }
        if model == POLICY_BINDING {
            let set = |k: &str| data.get(k).is_some_and(|v| !v.is_null());
            let n = ["policy", "group", "user"]
                .iter()
                .filter(|k| set(k))
                .count();
            if n != 1 {
                errors.push((
                    "non_field_errors".into(),
                    vec![ed(
                        match (n, self.rules.policy_binding_new_wording()) {
                            (0, false) => "One of 'policy', 'group' or 'user' must be set.",
                            (0, true) => "One of 'group', 'policy', 'user' must be set.",
                            (_, false) => "Only one of 'policy', 'group' or 'user' can be set.",
                            (_, true) => "Only one of 'group', 'policy', 'user' can be set.",
                        },
                        "invalid",
                    )],
                ));
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        let rendered: Vec<String> = errors
            .iter()
            .map(|(k, v)| format!("'{k}': [{}]", v.join(", ")))
            .collect();
        Err(format!("{{{}}}", rendered.join(", ")))
    }

    fn check_field(&self, spec: &FieldSpec, value: &Value, store: &Store) -> Option<Vec<String>> {
        let one = |m: &str, c: &str| Some(vec![ed(m, c)]);
        let nullable = matches!(spec.kind, Kind::Ref(_, true) | Kind::Any);
        if value.is_null() {
            return if nullable {
                None
            } else {
                one("This field may not be null.", "null")
            };
        }
        match spec.kind {
            Kind::Str | Kind::NonBlank | Kind::Slug => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(_) | Value::Array(_) | Value::Object(_) => {
                        return one("Not a valid string.", "invalid")
                    }
                    Value::Null => unreachable!(),
                };
                if s.is_empty() && matches!(spec.kind, Kind::NonBlank | Kind::Slug) {
                    return one("This field may not be blank.", "blank");
                }
                if matches!(spec.kind, Kind::Slug)
                    && !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return one(
                        "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens.",
                        "invalid",
                    );
                }
                None
            }
            Kind::Bool => match value {
                Value::Bool(_) => None,
                Value::String(s)
                    if ["true", "false", "1", "0", "yes", "no", "on", "off"]
                        .contains(&s.to_ascii_lowercase().as_str()) =>
                {
                    None
                }
                Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => None,
                _ => one("Must be a valid boolean.", "invalid"),
            },
            Kind::Int => match value {
                Value::Number(n) if n.is_i64() || n.is_u64() => None,
                Value::String(s) if s.trim().parse::<i64>().is_ok() => None,
                _ => one("A valid integer is required.", "invalid"),
            },
            Kind::Choice(choices) => {
                let s = py_str(value);
                if value.is_string() && choices.contains(&s.as_str()) {
                    None
                } else {
                    one(&format!("\"{s}\" is not a valid choice."), "invalid_choice")
                }
            }
            Kind::Ref(model, _) => self.check_ref(model, value, store).map(|e| vec![e]),
            Kind::Refs(model) => {
                let Value::Array(items) = value else {
                    return one(
                        &format!(
                            "Expected a list of items but got type \"{}\".",
                            py_type(value)
                        ),
                        "not_a_list",
                    );
                };
                let errs: Vec<String> = items
                    .iter()
                    .filter_map(|i| {
                        if i.is_null() {
                            Some(ed("This field may not be null.", "null"))
                        } else {
                            self.check_ref(model, i, store)
                        }
                    })
                    .collect();
                (!errs.is_empty()).then_some(errs)
            }
            Kind::Duration => match value.as_str() {
                Some(s) if valid_duration(s) => None,
                _ => one(
                    &format!(
                        "{} is not in the correct format of 'hours=3;minutes=1'.",
                        py_str(value)
                    ),
                    "invalid",
                ),
            },
            Kind::GrantTypes => {
                let Value::Array(items) = value else {
                    return one(
                        &format!(
                            "Expected a list of items but got type \"{}\".",
                            py_type(value)
                        ),
                        "not_a_list",
                    );
                };
                let errs: Vec<String> = items
                    .iter()
                    .filter(|i| !i.as_str().is_some_and(|s| GRANT_TYPES.contains(&s)))
                    .map(|i| {
                        ed(
                            &format!("\"{}\" is not a valid choice.", py_str(i)),
                            "invalid_choice",
                        )
                    })
                    .collect();
                (!errs.is_empty()).then_some(errs)
            }
            Kind::RedirectUris => self.check_redirect_uris(value),
            Kind::Any => None,
        }
    }

    fn check_ref(&self, model: &str, value: &Value, store: &Store) -> Option<String> {
        if value.is_array() || value.is_object() || value.is_boolean() {
            return Some(ed(
                &format!(
                    "Incorrect type. Expected pk value, received {}.",
                    py_type(value)
                ),
                "incorrect_type",
            ));
        }
        if store.find(model, "pk", value).is_some() {
            None
        } else {
            Some(ed(
                &format!("Invalid pk \"{}\" - object does not exist.", py_str(value)),
                "does_not_exist",
            ))
        }
    }

    /// String before 2024.8.5 and in 2024.10.0-2024.10.2; a list of `{matching_mode, url}`
    /// otherwise; `redirect_uri_type` from 2026.5.
    fn check_redirect_uris(&self, value: &Value) -> Option<Vec<String>> {
        if !self.rules.redirect_uris_list() {
            return match value {
                Value::String(_) => None,
                _ => Some(vec![ed("Not a valid string.", "invalid")]),
            };
        }
        let Value::Array(items) = value else {
            return Some(vec![ed(
                &format!(
                    "Expected a list of items but got type \"{}\".",
                    py_type(value)
                ),
                "not_a_list",
            )]);
        };
        let mut out = Vec::new();
        for item in items {
            let Value::Object(m) = item else {
                out.push(format!(
                    "{{'non_field_errors': [{}]}}",
                    ed(
                        &format!(
                            "Invalid data. Expected a dictionary, but got {}.",
                            py_type(item)
                        ),
                        "invalid"
                    )
                ));
                continue;
            };
            let mut errs = Vec::new();
            match m.get("matching_mode") {
                None => errs.push(format!(
                    "'matching_mode': [{}]",
                    ed("This field is required.", "required")
                )),
                Some(Value::String(s)) if s == "strict" || s == "regex" => {}
                Some(other) => errs.push(format!(
                    "'matching_mode': [{}]",
                    ed(
                        &format!("\"{}\" is not a valid choice.", py_str(other)),
                        "invalid_choice"
                    )
                )),
            }
            match m.get("url") {
                None => errs.push(format!(
                    "'url': [{}]",
                    ed("This field is required.", "required")
                )),
                Some(Value::String(s)) if !s.is_empty() => {}
                Some(Value::String(_)) => errs.push(format!(
                    "'url': [{}]",
                    ed("This field may not be blank.", "blank")
                )),
                Some(_) => errs.push(format!("'url': [{}]", ed("Not a valid string.", "invalid"))),
            }
            if let Some(t) = m.get("redirect_uri_type") {
                if self.rules.redirect_uri_type()
                    && !matches!(t.as_str(), Some("authorization" | "logout"))
                {
                    errs.push(format!(
                        "'redirect_uri_type': [{}]",
                        ed(
                            &format!("\"{}\" is not a valid choice.", py_str(t)),
                            "invalid_choice"
                        )
                    ));
                }
            }
            if !errs.is_empty() {
                out.push(format!("{{{}}}", errs.join(", ")));
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

// ---------------------------------------------------------------------------------------------
// The OAuth2/OpenID Connect server side and the browserless login (issue 8; CONTRACTS.md §2
// "Browserless login", recordings 41-87 of 2024.10.2 and 41-85 of 2026.2.2).
//
// Sessions live in memory keyed by the `authentik_session` cookie. The authentication flow
// runs authentik's default stages in order: identification, password, MFA validation (which
// skips itself for a user without MFA, the recorded extra 302) and user login, then
// `xak-flow-redirect` back to the `next` URL. The authorization flows (implicit and explicit
// consent) issue the code. Codes are single use and bound to client, redirect URI, PKCE
// challenge, nonce, scopes, user and session; tokens are kept until the stand-in stops.
//
// Where the two recorded versions differ and the release between them that changed it is
// not recorded (the `/flows/-/default/authentication/` hop, the implicit consent without the
// flow interface, `jti` and `scope` in tokens, `request_id` in errors, the 2026 challenge
// fields), 2025.10 is assumed, the same boundary as `Rules::api_2026_shapes`.
// ---------------------------------------------------------------------------------------------

/// A person who can log in through the stand-in's authentication flow, added with
/// [`AuthentikStandin::add_user`].
#[derive(Clone, Debug)]
pub struct LoginUser {
    pub username: String,
    pub email: String,
    /// The display name (`name`, `given_name` of the profile scope).
    pub name: String,
    pub password: String,
    /// authentik's user attributes, an object (what `request.user.attributes.get(...)` reads
    /// in a scope mapping, e.g. `{"email_verified": true}`).
    pub attributes: Value,
    /// `true`: the user has a TOTP device, so the flow's MFA validation stage asks for it
    /// (`ak-stage-authenticator-validate`), which a browserless login cannot answer.
    pub mfa: bool,
    /// `false`: the account is deactivated; its password is then refused as a wrong one is
    /// (authentik's password stage authenticates through Django's backends, which refuse an
    /// inactive user).
    pub active: bool,
}

impl LoginUser {
    /// An active user without MFA, e-mail `<username>@example.com`, name = username, no
    /// attributes.
    pub fn new(username: &str, password: &str) -> Self {
        LoginUser {
            username: username.to_string(),
            email: format!("{username}@example.com"),
            name: username.to_string(),
            password: password.to_string(),
            attributes: json!({}),
            mfa: false,
            active: true,
        }
    }
}

const SESSION_COOKIE: &str = "authentik_session";
const ACR: &str = "goauthentik.io/providers/oauth2/default";
const AUTHENTICATION_FLOW: &str = "default-authentication-flow";
const EXPLICIT_CONSENT_FLOW: &str = "default-provider-authorization-explicit-consent";

/// Where a login stands in the authentication flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Identification,
    Password,
    MfaValidate,
    UserLogin,
}

/// A flow plan of one session (authentik keeps it in the session too).
#[derive(Clone, Debug)]
struct Plan {
    stage: Stage,
    /// The `next` URL of the flow interface's query.
    next: Option<String>,
    /// The user the identification stage found (`None`: an unknown name, pretended to exist).
    pending_user: Option<Value>,
    /// What the person typed at identification.
    pending_uid: String,
}

/// Where an explicit consent stands in one session's authorization flow.
#[derive(Clone, Debug, Default)]
struct Consent {
    /// The token of the consent challenge last shown (to be POSTed back).
    token: Option<String>,
    given: bool,
}

#[derive(Clone, Debug, Default)]
struct Session {
    /// The logged-in user's pk.
    user: Option<Value>,
    auth_time: u64,
    amr: Vec<String>,
    /// Authentication flow plans by flow slug.
    plans: HashMap<String, Plan>,
    /// Explicit consent by authorization flow slug.
    consents: HashMap<String, Consent>,
}

/// An authorization code (authentik's `AuthorizationCode`).
#[derive(Clone, Debug)]
struct Code {
    provider: Value,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    nonce: Option<String>,
    scope: Vec<String>,
    user: Value,
    auth_time: u64,
    amr: Vec<String>,
    sid: String,
    /// `access_code_validity` after it was issued (an Instant: validities below a second
    /// are honoured, for tests of an expired code).
    expires: std::time::Instant,
}

/// What an access or refresh token was issued for.
#[derive(Clone, Debug)]
struct Grant {
    provider: Value,
    user: Value,
    scope: Vec<String>,
    nonce: Option<String>,
    auth_time: u64,
    amr: Vec<String>,
    sid: Option<String>,
    expires: u64,
}

#[derive(Default)]
struct LoginState {
    sessions: HashMap<String, Session>,
    codes: HashMap<String, Code>,
    access_tokens: HashMap<String, Grant>,
    refresh_tokens: HashMap<String, Grant>,
}

/// The parameters of an authorize request, checked against the provider.
#[derive(Clone, Debug)]
struct AuthorizeParams {
    provider: Value,
    app_name: String,
    app_launch: Value,
    redirect_uri: String,
    scope: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    challenge: Option<(String, String)>,
    /// The provider's authorization flow.
    flow: String,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// authentik's `timedelta_string_validator` format (`hours=1;minutes=2`) in whole seconds.
fn duration_secs(s: &str) -> u64 {
    duration(s).as_secs()
}

/// authentik's `timedelta_string_validator` format (`hours=1;minutes=2`).
fn duration(s: &str) -> std::time::Duration {
    std::time::Duration::from_secs_f64(duration_f64(s).max(0.0))
}

fn duration_f64(s: &str) -> f64 {
    s.split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            let n: f64 = v.trim().parse().unwrap_or(0.0);
            let unit = match k.trim() {
                "weeks" => 604_800.0,
                "days" => 86_400.0,
                "hours" => 3600.0,
                "minutes" => 60.0,
                "seconds" => 1.0,
                "milliseconds" => 0.001,
                "microseconds" => 0.000_001,
                _ => 0.0,
            };
            n * unit
        })
        .sum::<f64>()
}

/// Python's `urllib.parse.quote(s, safe)`: letters, digits, `_.-~` and `safe` stay.
fn url_quote(s: &str, safe: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || safe.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Python's `urlencode` (Django's `QueryDict.urlencode`): `quote_plus` on keys and values.
fn urlencode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                url_quote(k, " ").replace(' ', "+"),
                url_quote(v, " ").replace(' ', "+")
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; HttpOnly; Path=/; SameSite=Lax")
}

/// The initials avatar authentik shows beside a pending user (an SVG data URI).
fn avatar(name: &str) -> String {
    let initials: String = name
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .collect::<String>()
        .to_uppercase();
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"64px\" height=\"64px\" viewBox=\"0 0 64 64\" version=\"1.1\"><rect fill=\"#378c37\" cx=\"32\" cy=\"32\" width=\"64\" height=\"64\" r=\"32\"/><text x=\"50%\" y=\"50%\" fill=\"#fff\" alignment-baseline=\"middle\" dominant-baseline=\"middle\" text-anchor=\"middle\" font-size=\"28\" font-weight=\"400\" dy=\".1em\">{initials}</text></svg>"
    );
    format!("data:image/svg+xml;base64,{}", base64_std(svg.as_bytes()))
}

/// authentik's HTML error page of an authorize request it refuses without redirecting
/// (recorded: 64-66 of 2026.2.2: "Redirect URI Error ...", "Client ID Error ...").
fn authorize_error_page(title: &str, description: &str) -> Response {
    Response::html(
        400,
        &format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"UTF-8\"><title>authentik</title></head><body><div class=\"pf-c-login__main\"><header><h1>{title}</h1></header><div><p>{description}</p><a href=\"/\">Go home</a></div></div><footer>Powered by authentik</footer></body></html>"
        ),
    )
}

fn client_id_error() -> Response {
    authorize_error_page(
        "Client ID Error",
        "The client identifier (client_id) is missing or invalid.",
    )
}

fn redirect_uri_error() -> Response {
    authorize_error_page(
        "Redirect URI Error",
        "The request fails due to a missing, invalid, or mismatching redirection URI (redirect_uri).",
    )
}

/// `url` with `pairs` added to its query.
fn with_query(url: &str, pairs: &[(String, String)]) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{}", urlencode(pairs))
}

/// The error descriptions of authentik's token endpoint (its `TokenError`, RFC 6749 §5.2's
/// wording; recorded: 52-63 of 2026.2.2).
fn token_error_description(error: &str) -> &'static str {
    match error {
        "invalid_client" => "Client authentication failed (e.g., unknown client, no client authentication included, or unsupported authentication method)",
        "invalid_grant" => "The provided authorization grant or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client",
        "unauthorized_client" => "The authenticated client is not authorized to use this authorization grant type",
        "unsupported_grant_type" => "The authorization grant type is not supported by the authorization server",
        "invalid_scope" => "The requested scope is invalid, unknown, or malformed",
        _ => "The request is otherwise malformed",
    }
}

/// A value of a scope mapping expression, as the stand-in's small interpreter reads it.
fn eval_mapping_value(expr: &str, user: &Obj) -> Result<Value, String> {
    let e = expr.trim();
    let attr = |k: &str| user.get(k).cloned().unwrap_or(Value::Null);
    match e {
        "True" => return Ok(json!(true)),
        "False" => return Ok(json!(false)),
        "None" => return Ok(Value::Null),
        "request.user.email" => return Ok(attr("email")),
        "request.user.username" => return Ok(attr("username")),
        "request.user.name" => return Ok(attr("name")),
        _ => {}
    }
    if let Some(s) = string_literal(e) {
        return Ok(json!(s));
    }
    if let Some(inner) = e.strip_prefix("bool(").and_then(|r| r.strip_suffix(')')) {
        return eval_mapping_value(inner, user).map(|v| json!(truthy(&v)));
    }
    if let Some(args) = e
        .strip_prefix("request.user.attributes.get(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let parts = split_top_level(args, ',');
        let key = parts
            .first()
            .and_then(|k| string_literal(k.trim()))
            .ok_or_else(|| format!("attributes.get needs a string key: {e:?}"))?;
        let default = match parts.get(1) {
            Some(d) => eval_mapping_value(d, user)?,
            None => Value::Null,
        };
        return Ok(user
            .get("attributes")
            .and_then(|a| a.get(&key))
            .cloned()
            .unwrap_or(default));
    }
    Err(format!(
        "the stand-in authentik does not interpret the scope mapping value {e:?} (it reads True, False, None, string literals, request.user.email/username/name, request.user.attributes.get(KEY[, DEFAULT]) and bool(...) of those)"
    ))
}

/// A Python string literal's text (`"..."` or `'...'`, no escapes), or `None`.
fn string_literal(s: &str) -> Option<String> {
    let s = s.trim();
    let q = s.chars().next()?;
    if (q == '"' || q == '\'') && s.len() >= 2 && s.ends_with(q) {
        let inner = &s[1..s.len() - 1];
        (!inner.contains(q) && !inner.contains('\\')).then(|| inner.to_string())
    } else {
        None
    }
}

/// `s` split at `sep` outside brackets and string literals.
fn split_top_level(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut cur = String::new();
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                c if c == sep && depth == 0 => {
                    parts.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            },
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
}

/// A scope mapping's expression evaluated for `user`: exactly the forms this project's
/// blueprint and authentik's managed email mapping write, `return {"key": VALUE, ...}` with
/// the values [`eval_mapping_value`] reads. Anything else is an error of the stand-in (its
/// token and userinfo endpoints then answer 500 saying so), never a guess.
fn eval_mapping(expr: &str, user: &Obj) -> Result<Map<String, Value>, String> {
    let body = expr
        .trim()
        .strip_prefix("return")
        .map(str::trim)
        .and_then(|b| b.strip_prefix('{'))
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| {
            format!("the stand-in authentik interprets only `return {{...}}` scope mappings, not {expr:?}")
        })?;
    let mut claims = Map::new();
    for entry in split_top_level(body, ',') {
        if entry.trim().is_empty() {
            continue;
        }
        let kv = split_top_level(&entry, ':');
        let [key, value] = kv.as_slice() else {
            return Err(format!("not a `\"key\": value` entry: {:?}", entry.trim()));
        };
        let key = string_literal(key)
            .ok_or_else(|| format!("a claim name must be a string literal: {:?}", key.trim()))?;
        claims.insert(key, eval_mapping_value(value, user)?);
    }
    Ok(claims)
}

/// A real JWE in compact form (RFC 7516) of `plaintext` for `key`: RSA-OAEP-256 wraps a
/// random content key, A256CBC-HS512 (RFC 7518 §5.2.5) encrypts, all from RustCrypto crates.
fn jwe(plaintext: &[u8], key: &rsa::RsaPublicKey, kid: &str) -> String {
    use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    use hmac::Mac;
    use rand::RngCore;
    let header = json!({"alg": "RSA-OAEP-256", "enc": "A256CBC-HS512", "kid": kid, "typ": "JWE"});
    let header_b64 = base64url(header.to_string().as_bytes());
    let mut rng = rand::thread_rng();
    let mut cek = [0u8; 64];
    rng.fill_bytes(&mut cek);
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    let (mac_key, enc_key) = cek.split_at(32);
    let encrypted_key = key
        .encrypt(&mut rng, rsa::Oaep::new::<sha2::Sha256>(), &cek)
        .expect("RSA-OAEP-256 key wrap");
    let ciphertext = cbc::Encryptor::<aes::Aes256>::new(enc_key.into(), (&iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let aad = header_b64.as_bytes();
    let mut mac = hmac::Hmac::<Sha512>::new_from_slice(mac_key).expect("HMAC key");
    mac.update(aad);
    mac.update(&iv);
    mac.update(&ciphertext);
    mac.update(&((aad.len() as u64) * 8).to_be_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "{header_b64}.{}.{}.{}.{}",
        base64url(&encrypted_key),
        base64url(&iv),
        base64url(&ciphertext),
        base64url(&tag[..32])
    )
}

impl Rules {
    /// 2024.10 sends an unauthenticated authorize request to `/flows/-/default/authentication/`
    /// (which redirects to the flow interface with only `next`); 2026.2 straight to the flow
    /// interface with the authorize parameters and `next`.
    fn authorize_to_flow_interface(self) -> bool {
        self.api_2026_shapes()
    }
    /// 2026.2 answers an authenticated authorize request of an implicit-consent provider
    /// with the callback at once; 2024.10 sends the browser to the flow interface first.
    fn implicit_consent_inline(self) -> bool {
        self.api_2026_shapes()
    }
    /// `jti` in both tokens, `scope` in the access token and the token answer (2026.2).
    fn token_jti_and_scope(self) -> bool {
        self.api_2026_shapes()
    }
    /// `request_id` in the token endpoint's error bodies (2026.2).
    fn token_error_request_id(self) -> bool {
        self.api_2026_shapes()
    }
}

impl Inner {
    /// The routes of the OAuth2 provider and the flows, or `None` for other paths.
    fn oauth_routes(&self, req: &Request, path: &str) -> Option<Response> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        Some(match (req.method.as_str(), segs.as_slice()) {
            ("GET", ["application", "o", "authorize"]) => self.authorize(req),
            ("POST", ["application", "o", "token"]) => self.token(req),
            ("GET" | "POST", ["application", "o", "userinfo"]) => self.userinfo(req),
            ("GET" | "POST", ["api", "v3", "flows", "executor", slug]) => self.executor(req, slug),
            ("GET", ["flows", "-", "default", "authentication"]) => {
                // 2024.10's hop to the brand's authentication flow (recorded:
                // 42-login-follow-redirect.json), `next` kept.
                let next = req.query_value("next").unwrap_or_default();
                Response::html(302, "").with_header(
                    "Location",
                    &format!(
                        "/if/flow/{AUTHENTICATION_FLOW}/?{}",
                        urlencode(&[("next".into(), next)])
                    ),
                )
            }
            ("GET", ["if", "flow", slug]) => Response::html(
                200,
                &format!("<!DOCTYPE html><html><head><title>authentik</title></head><body><ak-flow-executor flowSlug=\"{slug}\"></ak-flow-executor></body></html>"),
            ),
            _ => return None,
        })
    }

    fn with_session_cookie(&self, resp: Response, session: &str) -> Response {
        resp.with_header("Set-Cookie", &set_cookie(SESSION_COOKIE, session))
    }

    /// The session the request's cookie names, made when it has none (or an unknown one).
    fn session_id(&self, req: &Request) -> String {
        let mut login = lock(&self.login);
        if let Some(id) = req.cookie(SESSION_COOKIE) {
            if login.sessions.contains_key(&id) {
                return id;
            }
        }
        let id = random_token(32);
        login.sessions.insert(id.clone(), Session::default());
        id
    }

    fn session_user(&self, session: &str) -> Option<Value> {
        lock(&self.login)
            .sessions
            .get(session)
            .and_then(|s| s.user.clone())
    }

    /// Checks an authorize request as authentik's `OAuthAuthorizationParams` does: the
    /// client first, then the redirect URI (both refused with an HTML page), then what is
    /// refused by redirecting to the callback with an OAuth error.
    fn check_authorize(
        &self,
        store: &mut Store,
        q: &[(String, String)],
    ) -> Result<AuthorizeParams, Response> {
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let client_id = get("client_id").unwrap_or_default();
        let Some(idx) = store.objects.iter().position(|o| {
            o.model == OAUTH2_PROVIDER && o.get("client_id") == Some(&json!(client_id))
        }) else {
            return Err(client_id_error());
        };
        let redirect_uri = get("redirect_uri").unwrap_or_default();
        let provider = store.objects[idx].clone();
        if !self.redirect_allowed(&provider, &redirect_uri) {
            let empty = match provider.get("redirect_uris") {
                Some(Value::Array(a)) => a.is_empty(),
                Some(Value::String(s)) => s.trim().is_empty(),
                _ => true,
            };
            if !empty || redirect_uri.is_empty() {
                return Err(redirect_uri_error());
            }
            // authentik saves the first redirect URI used as the provider's only allowed
            // one when it has none (its documented behaviour for an empty list).
            let saved = if self.rules.redirect_uris_list() {
                json!([{"matching_mode": "strict", "url": redirect_uri}])
            } else {
                json!(regex::escape(&redirect_uri))
            };
            store.objects[idx]
                .fields
                .insert("redirect_uris".into(), saved);
        }
        let provider = store.objects[idx].clone();
        let state = get("state");
        let oauth_error = |error: &str, description: &str| {
            let mut pairs = vec![
                ("error".to_string(), error.to_string()),
                ("error_description".to_string(), description.to_string()),
            ];
            if let Some(s) = &state {
                pairs.push(("state".into(), s.clone()));
            }
            Response::html(302, "").with_header("Location", &with_query(&redirect_uri, &pairs))
        };
        if get("response_type").as_deref() != Some("code") {
            return Err(oauth_error(
                "unsupported_response_type",
                "The authorization server does not support obtaining an authorization code using this method.",
            ));
        }
        // 2026.5+: a provider whose grant_types lack authorization_code. authentik's
        // `check_grant` raises `AuthorizeError("invalid_request")` (read in authentik's
        // source, goauthentik/authentik `providers/oauth2/views/authorize.py`; not recorded):
        // the OAuth error redirect to the callback.
        if self.rules.grant_types() {
            let grants = provider.get("grant_types").cloned().unwrap_or(json!([]));
            if !grants
                .as_array()
                .is_some_and(|g| g.contains(&json!("authorization_code")))
            {
                return Err(oauth_error(
                    "invalid_request",
                    "The request is otherwise malformed",
                ));
            }
        }
        let challenge = match (get("code_challenge"), get("code_challenge_method")) {
            (Some(c), m) => {
                let m = m.unwrap_or_else(|| "plain".into());
                if m != "S256" && m != "plain" {
                    return Err(oauth_error(
                        "invalid_request",
                        "The request is otherwise malformed",
                    ));
                }
                Some((c, m))
            }
            (None, _) => None,
        };
        // The requested scopes the provider has mappings for (authentik drops the others).
        let provider_scopes = self.provider_scope_names(store, &provider);
        let scope: Vec<String> = get("scope")
            .unwrap_or_default()
            .split_whitespace()
            .filter(|s| provider_scopes.iter().any(|p| p == s))
            .fold(Vec::new(), |mut acc, s| {
                if !acc.iter().any(|a| a == s) {
                    acc.push(s.to_string());
                }
                acc
            });
        let app = store
            .of(APPLICATION)
            .find(|a| a.get("provider") == Some(&provider.pk()));
        let flow = store
            .find(
                FLOW,
                "pk",
                provider.get("authorization_flow").unwrap_or(&Value::Null),
            )
            .and_then(|f| f.get("slug").and_then(Value::as_str))
            .unwrap_or("default-provider-authorization-implicit-consent")
            .to_string();
        Ok(AuthorizeParams {
            provider: provider.pk(),
            app_name: app
                .and_then(|a| a.get("name").and_then(Value::as_str))
                .unwrap_or("")
                .to_string(),
            app_launch: app
                .and_then(|a| a.get("meta_launch_url").cloned())
                .unwrap_or(Value::Null),
            redirect_uri,
            scope,
            state,
            nonce: get("nonce"),
            challenge,
            flow,
        })
    }

    /// The provider's redirect URIs against `uri`: strict = equal, regex = a full match;
    /// before the list form, each line of the string is a regex (CONTRACTS.md §2).
    fn redirect_allowed(&self, provider: &Obj, uri: &str) -> bool {
        let full_match = |pattern: &str| {
            regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(uri))
        };
        match provider.get("redirect_uris") {
            Some(Value::Array(list)) => list.iter().any(|r| {
                let url = r["url"].as_str().unwrap_or("");
                match r["matching_mode"].as_str() {
                    Some("regex") => full_match(url),
                    _ => url == uri,
                }
            }),
            Some(Value::String(s)) => s
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .any(full_match),
            _ => false,
        }
    }

    fn provider_scope_names(&self, store: &Store, provider: &Obj) -> Vec<String> {
        self.provider_mappings(store, provider)
            .iter()
            .filter_map(|m| m.get("scope_name").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    fn provider_mappings<'a>(&self, store: &'a Store, provider: &Obj) -> Vec<&'a Obj> {
        provider
            .get("property_mappings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|pk| store.find(SCOPE_MAPPING, "pk", pk))
            .collect()
    }

    /// `GET /application/o/authorize/` (recorded: 41, 48/49, 64-66).
    fn authorize(&self, req: &Request) -> Response {
        let had_session = req
            .cookie(SESSION_COOKIE)
            .is_some_and(|s| lock(&self.login).sessions.contains_key(&s));
        let session = self.session_id(req);
        let params = {
            let mut st = lock(&self.state);
            self.check_authorize(&mut st.store, &req.query())
        };
        let params = match params {
            Ok(p) => p,
            // The error pages: 2024.10.2 sends the session cookie with the redirect URI one
            // when the request had a session, 2026.2.2 never, and neither with the client
            // id one (recorded: 66-68 of 2024.10.2, 64-66 of 2026.2.2).
            Err(resp) if resp.status == 400 => {
                let redirect_page =
                    String::from_utf8_lossy(&resp.body).contains("Redirect URI Error");
                return if had_session && redirect_page && !self.rules.api_2026_shapes() {
                    self.with_session_cookie(resp, &session)
                } else {
                    resp
                };
            }
            Err(resp) => return self.with_session_cookie(resp, &session),
        };
        let Some(_user) = self.session_user(&session) else {
            // Not logged in: to the authentication flow with the authorize URL as `next`.
            let original = req.path.clone();
            let location = if self.rules.authorize_to_flow_interface() {
                let mut pairs = req.query();
                pairs.push(("next".into(), original));
                format!("/if/flow/{AUTHENTICATION_FLOW}/?{}", urlencode(&pairs))
            } else {
                format!(
                    "/flows/-/default/authentication/?next={}",
                    url_quote(&original, "/")
                )
            };
            return self.with_session_cookie(
                Response::html(302, "").with_header("Location", &location),
                &session,
            );
        };
        if params.flow != EXPLICIT_CONSENT_FLOW && self.rules.implicit_consent_inline() {
            let location = self.issue_code(&session, &params);
            return self.with_session_cookie(
                Response::html(302, "").with_header("Location", &location),
                &session,
            );
        }
        let location = format!("/if/flow/{}/?{}", params.flow, urlencode(&req.query()));
        self.with_session_cookie(
            Response::html(302, "").with_header("Location", &location),
            &session,
        )
    }

    /// A new code for the session's user; the callback URL that carries it.
    fn issue_code(&self, session: &str, p: &AuthorizeParams) -> String {
        let validity = {
            let st = lock(&self.state);
            st.store
                .find(OAUTH2_PROVIDER, "pk", &p.provider)
                .and_then(|o| o.get("access_code_validity").and_then(Value::as_str))
                .map(duration)
                .unwrap_or(std::time::Duration::from_secs(60))
        };
        let mut login = lock(&self.login);
        let s = login.sessions.get(session).cloned().unwrap_or_default();
        let code = random_token(40);
        login.codes.insert(
            code.clone(),
            Code {
                provider: p.provider.clone(),
                redirect_uri: p.redirect_uri.clone(),
                challenge: p.challenge.clone(),
                nonce: p.nonce.clone(),
                scope: p.scope.clone(),
                user: s.user.clone().unwrap_or(Value::Null),
                auth_time: s.auth_time,
                amr: s.amr.clone(),
                sid: hex(&sha2::Sha256::digest(session.as_bytes())),
                expires: std::time::Instant::now() + validity,
            },
        );
        let mut pairs = vec![("code".to_string(), code)];
        if let Some(state) = &p.state {
            pairs.push(("state".into(), state.clone()));
        }
        with_query(&p.redirect_uri, &pairs)
    }

    fn flow_info(&self, slug: &str, next: Option<&str>, app_name: &str) -> Value {
        let title = if slug == AUTHENTICATION_FLOW {
            "Welcome to authentik!".to_string()
        } else {
            format!("Redirecting to {app_name}")
        };
        let mut info = Map::new();
        info.insert("title".into(), json!(title));
        info.insert(
            "background".into(),
            json!("/static/dist/assets/images/flow_background.jpg"),
        );
        if self.rules.api_2026_shapes() {
            info.insert("background_themed_urls".into(), Value::Null);
            let cancel = match next {
                Some(n) => format!(
                    "/flows/-/cancel/?{}",
                    urlencode(&[("next".into(), n.into())])
                ),
                None => "/flows/-/cancel/".into(),
            };
            info.insert("cancel_url".into(), json!(cancel));
        } else {
            info.insert("cancel_url".into(), json!("/flows/-/cancel/"));
        }
        info.insert("layout".into(), json!("stacked"));
        Value::Object(info)
    }

    fn user_obj(&self, pk: &Value) -> Option<Obj> {
        lock(&self.state).store.find(USER, "pk", pk).cloned()
    }

    /// `GET`/`POST /api/v3/flows/executor/<slug>/?query=...`: the flow's current challenge,
    /// or the answer to it (recorded: 42-47 and 50 of 2024.10.2).
    fn executor(&self, req: &Request, slug: &str) -> Response {
        let session = self.session_id(req);
        let flow = lock(&self.state)
            .store
            .find(FLOW, "slug", &json!(slug))
            .cloned();
        let resp = match flow {
            None => self.not_found("Flow"),
            Some(f) => {
                let query = parse_query(&req.query_value("query").unwrap_or_default());
                let resp = if f.get("designation") == Some(&json!("authorization")) {
                    self.authorization_flow(req, slug, &session, &query)
                } else {
                    self.authentication_flow(req, slug, &session, &query)
                };
                let resp =
                    if resp.status == 302 && resp.headers.iter().all(|(k, _)| k != "Location") {
                        // A stage done: the browser GETs the executor again (same URL).
                        resp.with_header("Location", &req.path)
                    } else {
                        resp
                    };
                resp.with_header("Allow", "GET, POST, HEAD, OPTIONS")
            }
        };
        self.with_session_cookie(resp, &session)
    }

    fn challenge(
        &self,
        component: &str,
        slug: &str,
        next: Option<&str>,
        app: &str,
    ) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("flow_info".into(), self.flow_info(slug, next, app));
        m.insert("component".into(), json!(component));
        m
    }

    fn stage_done() -> Response {
        Response::html(302, "")
    }

    fn authentication_flow(
        &self,
        req: &Request,
        slug: &str,
        session: &str,
        query: &[(String, String)],
    ) -> Response {
        let next = query
            .iter()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.clone());
        // The application the login is for (the identification stage shows its name).
        let app = next
            .as_deref()
            .filter(|n| n.starts_with("/application/o/authorize/"))
            .and_then(|n| {
                let q = parse_query(n.split_once('?').map(|(_, q)| q).unwrap_or(""));
                let mut st = lock(&self.state);
                self.check_authorize(&mut st.store, &q).ok()
            });
        let app_name = app.as_ref().map(|a| a.app_name.clone()).unwrap_or_default();
        let plan = {
            let mut login = lock(&self.login);
            let s = login.sessions.entry(session.to_string()).or_default();
            s.plans
                .entry(slug.to_string())
                .or_insert_with(|| Plan {
                    stage: Stage::Identification,
                    next: next.clone(),
                    pending_user: None,
                    pending_uid: String::new(),
                })
                .clone()
        };
        let save = |plan: Plan| {
            let mut login = lock(&self.login);
            if let Some(s) = login.sessions.get_mut(session) {
                s.plans.insert(slug.to_string(), plan);
            }
        };
        let pending = plan.pending_user.as_ref().and_then(|pk| self.user_obj(pk));
        let pending_name = pending
            .as_ref()
            .and_then(|u| {
                u.get("username")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| plan.pending_uid.clone());
        let pending_display = pending
            .as_ref()
            .and_then(|u| u.get("name").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| pending_name.clone());
        let answer = if req.method == "POST" {
            req.json()
        } else {
            None
        };
        let next_ref = plan.next.as_deref();
        match plan.stage {
            Stage::Identification => {
                if let Some(body) = answer {
                    let uid = body["uid_field"].as_str().unwrap_or("").trim().to_string();
                    if !uid.is_empty() {
                        // user_fields [email, username]; an unknown name goes on as if it
                        // existed (pretend_user_exists, authentik's default) and fails at
                        // the password.
                        let user = {
                            let st = lock(&self.state);
                            let found = st
                                .store
                                .of(USER)
                                .find(|u| {
                                    u.get("username") == Some(&json!(uid))
                                        || u.get("email").and_then(Value::as_str).is_some_and(|e| {
                                            !e.is_empty() && e.eq_ignore_ascii_case(&uid)
                                        })
                                })
                                .map(Obj::pk);
                            found
                        };
                        save(Plan {
                            stage: Stage::Password,
                            pending_user: user,
                            pending_uid: uid,
                            ..plan
                        });
                        return Self::stage_done();
                    }
                }
                let mut c = self.challenge("ak-stage-identification", slug, next_ref, &app_name);
                if req.method == "POST" {
                    c.insert(
                        "response_errors".into(),
                        json!({"uid_field": [{"string": "This field is required.", "code": "required"}]}),
                    );
                }
                let new = self.rules.api_2026_shapes();
                c.insert("user_fields".into(), json!(["email", "username"]));
                if new {
                    c.insert("pending_user_identifier".into(), Value::Null);
                }
                c.insert("password_fields".into(), json!(false));
                c.insert("allow_show_password".into(), json!(false));
                if let Some(a) = &app {
                    c.insert("application_pre".into(), json!(a.app_name));
                    if new {
                        c.insert("application_pre_launch".into(), a.app_launch.clone());
                    }
                }
                c.insert("flow_designation".into(), json!("authentication"));
                c.insert("captcha_stage".into(), Value::Null);
                c.insert("primary_action".into(), json!("Log in"));
                c.insert("sources".into(), json!([]));
                c.insert("show_source_labels".into(), json!(false));
                if new {
                    c.insert("enable_remember_me".into(), json!(false));
                    c.insert("passkey_challenge".into(), Value::Null);
                }
                Response::json(200, &Value::Object(c))
            }
            Stage::Password => {
                let mut errors = None;
                if let Some(body) = answer {
                    let given = body["password"].as_str().unwrap_or("");
                    let ok = pending.as_ref().is_some_and(|u| {
                        u.get("is_active") != Some(&json!(false))
                            && u.get("password").and_then(Value::as_str) == Some(given)
                            && !given.is_empty()
                    });
                    if ok {
                        save(Plan {
                            stage: Stage::MfaValidate,
                            ..plan
                        });
                        return Self::stage_done();
                    }
                    // authentik's password stage: `Invalid password` for a wrong password,
                    // an unknown (pretended) user and an inactive one alike.
                    errors = Some(
                        json!({"password": [{"string": "Invalid password", "code": "invalid"}]}),
                    );
                }
                let mut c = self.challenge("ak-stage-password", slug, next_ref, &app_name);
                if let Some(e) = errors {
                    c.insert("response_errors".into(), e);
                }
                c.insert("pending_user".into(), json!(pending_name));
                c.insert(
                    "pending_user_avatar".into(),
                    json!(avatar(&pending_display)),
                );
                c.insert("allow_show_password".into(), json!(false));
                Response::json(200, &Value::Object(c))
            }
            Stage::MfaValidate => {
                let has_mfa = pending
                    .as_ref()
                    .is_some_and(|u| u.get("mfa") == Some(&json!(true)));
                if !has_mfa {
                    // Not configured for this user: the stage skips itself (the recorded
                    // extra 302 after the password).
                    save(Plan {
                        stage: Stage::UserLogin,
                        ..plan
                    });
                    return Self::stage_done();
                }
                // The stand-in holds no TOTP secret: every code is refused, so a login
                // of an MFA user stops at this stage (what verify --login must name).
                let mut c =
                    self.challenge("ak-stage-authenticator-validate", slug, next_ref, &app_name);
                if answer.is_some() {
                    c.insert(
                        "response_errors".into(),
                        json!({"code": [{"string": "Invalid Token", "code": "invalid"}]}),
                    );
                }
                c.insert("pending_user".into(), json!(pending_name));
                c.insert(
                    "pending_user_avatar".into(),
                    json!(avatar(&pending_display)),
                );
                c.insert(
                    "device_challenges".into(),
                    json!([{"device_class": "totp", "device_uid": "1", "challenge": {}, "last_used": null}]),
                );
                c.insert("configuration_stages".into(), json!([]));
                Response::json(200, &Value::Object(c))
            }
            Stage::UserLogin => {
                // The user login stage: the session is now the user's; the plan is done.
                {
                    let mut login = lock(&self.login);
                    if let Some(s) = login.sessions.get_mut(session) {
                        s.user = plan.pending_user.clone();
                        s.auth_time = now_secs();
                        s.amr = vec!["pwd".into()];
                        s.plans.remove(slug);
                    }
                }
                let to = plan.next.clone().unwrap_or_else(|| "/".into());
                let mut resp =
                    Response::json(200, &json!({"component": "xak-flow-redirect", "to": to}));
                if self.rules.api_2026_shapes() {
                    resp = resp.with_header(
                        "Set-Cookie",
                        &format!(
                            "authentik_device={}; Max-Age=2592000; Path=/; SameSite=Lax",
                            random_token(32)
                        ),
                    );
                }
                resp.with_header(
                    "Set-Cookie",
                    &format!(
                        "authentik_csrf={}; Max-Age=31449600; Path=/; SameSite=Lax",
                        random_token(32)
                    ),
                )
            }
        }
    }

    /// The provider's authorization flow (implicit or explicit consent) at the executor:
    /// the callback with a fresh code, after consent when the flow asks for it.
    fn authorization_flow(
        &self,
        req: &Request,
        slug: &str,
        session: &str,
        query: &[(String, String)],
    ) -> Response {
        let params = {
            let mut st = lock(&self.state);
            self.check_authorize(&mut st.store, query)
        };
        let user = self.session_user(session);
        let (Ok(params), Some(user)) = (params, user) else {
            // authentik's answer for a flow whose policies (authenticated user, valid
            // request) do not pass.
            let mut c = self.challenge("ak-stage-access-denied", slug, None, "");
            c.insert(
                "error_message".into(),
                json!("Flow does not apply to current user."),
            );
            return Response::json(200, &Value::Object(c));
        };
        let redirect = |location: String| {
            Response::json(
                200,
                &json!({"component": "xak-flow-redirect", "to": location}),
            )
        };
        if slug != EXPLICIT_CONSENT_FLOW {
            return redirect(self.issue_code(session, &params));
        }
        let consent = {
            let mut login = lock(&self.login);
            let s = login.sessions.entry(session.to_string()).or_default();
            s.consents.entry(slug.to_string()).or_default().clone()
        };
        let set_consent = |c: Option<Consent>| {
            if let Some(s) = lock(&self.login).sessions.get_mut(session) {
                match c {
                    Some(c) => s.consents.insert(slug.to_string(), c),
                    None => s.consents.remove(slug),
                };
            }
        };
        if consent.given {
            // Consent is asked again on the next login (the stand-in keeps no consent
            // objects, as a consent stage in "always require" mode does not).
            set_consent(None);
            return redirect(self.issue_code(session, &params));
        }
        let mut errors = None;
        if req.method == "POST" {
            let token = req
                .json()
                .and_then(|b| b["token"].as_str().map(str::to_string));
            if token.is_some() && token == consent.token {
                set_consent(Some(Consent {
                    token: None,
                    given: true,
                }));
                return Self::stage_done();
            }
            errors = Some(
                json!({"token": [{"string": "Invalid consent token, re-showing prompt", "code": "invalid"}]}),
            );
        }
        let token = random_token(32);
        set_consent(Some(Consent {
            token: Some(token.clone()),
            given: false,
        }));
        let u = self.user_obj(&user);
        let username = u
            .as_ref()
            .and_then(|u| u.get("username").and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        let permissions: Vec<Value> = {
            let st = lock(&self.state);
            let provider = st.store.find(OAUTH2_PROVIDER, "pk", &params.provider);
            provider
                .map(|p| self.provider_mappings(&st.store, p))
                .unwrap_or_default()
                .into_iter()
                .filter(|m| {
                    m.get("scope_name")
                        .and_then(Value::as_str)
                        .is_some_and(|s| params.scope.iter().any(|x| x == s))
                })
                .filter(|m| {
                    m.get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.is_empty())
                })
                .map(|m| json!({"name": m.get("description"), "id": m.get("scope_name")}))
                .collect()
        };
        let mut c = self.challenge("ak-stage-consent", slug, None, &params.app_name);
        if let Some(e) = errors {
            c.insert("response_errors".into(), e);
        }
        c.insert("pending_user".into(), json!(username));
        c.insert("pending_user_avatar".into(), json!(avatar(&username)));
        // authentik's consent header for an OAuth2 login.
        c.insert(
            "header_text".into(),
            json!(format!("You're about to sign into {}.", params.app_name)),
        );
        c.insert("permissions".into(), json!(permissions));
        c.insert("additional_permissions".into(), json!([]));
        c.insert("token".into(), json!(token));
        Response::json(200, &Value::Object(c))
    }

    fn token_error(&self, error: &str) -> Response {
        let mut body = json!({"error": error, "error_description": token_error_description(error)});
        if self.rules.token_error_request_id() {
            body["request_id"] =
                json!(hex(&random_u64().to_be_bytes()) + &hex(&random_u64().to_be_bytes()));
        }
        Response::json(400, &body)
    }

    /// `POST /application/o/token/` (recorded: 49-63 of 2026.2.2): client authentication
    /// by `client_secret_post` or `client_secret_basic`, then the grant.
    fn token(&self, req: &Request) -> Response {
        use base64::Engine;
        let form = parse_query(&req.body_str());
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let (mut client_id, mut secret) = (field("client_id"), field("client_secret"));
        if let Some(basic) = req.header("authorization").and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        }) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((id, s)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                client_id = Some(form_decode(id));
                secret = Some(form_decode(s));
            }
        }
        let grant_type = field("grant_type").unwrap_or_default();
        let provider = {
            let st = lock(&self.state);
            let found = st
                .store
                .of(OAUTH2_PROVIDER)
                .find(|p| client_id.is_some() && p.get("client_id") == Some(&json!(client_id)))
                .cloned();
            found
        };
        let Some(provider) = provider else {
            return self.token_error("invalid_client");
        };
        let secret_ok = provider.get("client_type") == Some(&json!("public"))
            || provider.get("client_secret").and_then(Value::as_str) == secret.as_deref();
        if self.rules.grant_types() {
            let allowed = provider
                .get("grant_types")
                .and_then(Value::as_array)
                .is_some_and(|g| g.contains(&json!(grant_type)));
            // A grant the 2026.5+ provider does not list: `invalid_grant`, before the client
            // is authenticated (authentik's `TokenParams`, read in its source; not recorded).
            if !allowed {
                return self.token_error("invalid_grant");
            }
        }
        match grant_type.as_str() {
            "authorization_code" => {
                if !secret_ok {
                    return self.token_error("invalid_client");
                }
                let redirect_uri = field("redirect_uri").unwrap_or_default();
                if !self.redirect_allowed(&provider, &redirect_uri) {
                    // Recorded: a redirect_uri the provider does not allow is
                    // `invalid_client` (54-token-wrong-redirect-uri.json).
                    return self.token_error("invalid_client");
                }
                let raw = field("code").unwrap_or_default();
                let code = lock(&self.login).codes.get(&raw).cloned();
                let Some(code) = code else {
                    return self.token_error("invalid_grant");
                };
                if code.provider != provider.pk()
                    || code.expires <= std::time::Instant::now()
                    || code.redirect_uri != redirect_uri
                {
                    return self.token_error("invalid_grant");
                }
                if let Some((challenge, method)) = &code.challenge {
                    let Some(verifier) = field("code_verifier") else {
                        return self.token_error("invalid_grant");
                    };
                    let computed = if method == "S256" {
                        base64url(&sha2::Sha256::digest(verifier.as_bytes()))
                    } else {
                        verifier
                    };
                    if &computed != challenge {
                        return self.token_error("invalid_grant");
                    }
                }
                // Redeemed: a code works once (recorded: 56-token-reused-code.json).
                lock(&self.login).codes.remove(&raw);
                let grant = Grant {
                    provider: code.provider,
                    user: code.user,
                    scope: code.scope,
                    nonce: code.nonce,
                    auth_time: code.auth_time,
                    amr: code.amr,
                    sid: Some(code.sid),
                    expires: 0,
                };
                self.issue_tokens(&provider, grant)
            }
            "refresh_token" => {
                if !secret_ok {
                    return self.token_error("invalid_client");
                }
                let raw = field("refresh_token").unwrap_or_default();
                let grant = lock(&self.login).refresh_tokens.remove(&raw);
                match grant {
                    Some(g) if g.provider == provider.pk() && g.expires >= now_secs() => {
                        self.issue_tokens(&provider, g)
                    }
                    _ => self.token_error("invalid_grant"),
                }
            }
            "client_credentials" => {
                // Recorded: a wrong secret here is `invalid_grant`, not `invalid_client`
                // (62-token-client-credentials-wrong-secret.json).
                if !secret_ok {
                    return self.token_error("invalid_grant");
                }
                let user = self.service_account(&provider);
                let scopes = {
                    let st = lock(&self.state);
                    self.provider_scope_names(&st.store, &provider)
                };
                let scope = field("scope")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter(|s| scopes.iter().any(|p| p == s))
                    .map(str::to_string)
                    .collect();
                let grant = Grant {
                    provider: provider.pk(),
                    user,
                    scope,
                    nonce: None,
                    auth_time: now_secs(),
                    amr: Vec::new(),
                    sid: None,
                    expires: 0,
                };
                self.issue_tokens(&provider, grant)
            }
            _ => self.token_error("unsupported_grant_type"),
        }
    }

    /// The service account authentik makes on a first `client_credentials` grant:
    /// `ak-<provider name>-client_credentials` (CONTRACTS.md §2).
    fn service_account(&self, provider: &Obj) -> Value {
        let name = format!(
            "ak-{}-client_credentials",
            provider.get("name").and_then(Value::as_str).unwrap_or("")
        );
        let mut st = lock(&self.state);
        if let Some(u) = st.store.find(USER, "username", &json!(name)) {
            return u.pk();
        }
        let mut u = Map::new();
        u.insert("pk".into(), json!(next_user_pk(&st.store)));
        u.insert("username".into(), json!(name));
        u.insert("name".into(), json!(name));
        u.insert("email".into(), json!(""));
        u.insert("type".into(), json!("internal_service_account"));
        u.insert("uuid".into(), json!(uuid4()));
        u.insert("is_active".into(), json!(true));
        u.insert(
            "attributes".into(),
            json!({"goauthentik.io/user/generated": true}),
        );
        st.store.insert(USER, u)
    }

    /// The `sub` of `user` for `provider`, per its `sub_mode`.
    fn subject(&self, provider: &Obj, user: &Obj) -> String {
        let s = |k: &str| {
            user.get(k)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_default()
        };
        // authentik's `User.uid`: a SHA-256 over the user's id and the install's id.
        let uid = hex(&sha2::Sha256::digest(
            format!("{}-{}", user.pk(), self.install_id).as_bytes(),
        ));
        match provider.get("sub_mode").and_then(Value::as_str) {
            Some("user_id") => s("pk"),
            Some("user_uuid") => s("uuid"),
            Some("user_email") => s("email"),
            Some("user_username") => s("username"),
            Some("user_upn") => user
                .get("attributes")
                .and_then(|a| a.get("upn"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or(uid),
            _ => uid,
        }
    }

    /// The claims of the provider's scope mappings for `scopes`, in authentik's order (its
    /// mappings sorted by scope name). Managed mappings are known by their `managed` key;
    /// the email one, and any custom one, by their expression ([`eval_mapping`]).
    fn scope_claims(
        &self,
        store: &Store,
        provider: &Obj,
        user: &Obj,
        scopes: &[String],
    ) -> Result<Map<String, Value>, String> {
        let mut mappings: Vec<&Obj> = self
            .provider_mappings(store, provider)
            .into_iter()
            .filter(|m| {
                m.get("scope_name")
                    .and_then(Value::as_str)
                    .is_some_and(|s| scopes.iter().any(|x| x == s))
            })
            .collect();
        mappings.sort_by_key(|m| {
            m.get("scope_name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        let mut claims = Map::new();
        for m in mappings {
            let managed = m
                .get("managed")
                .and_then(Value::as_str)
                .and_then(|k| k.strip_prefix(SCOPE_PREFIX));
            let name = user.get("name").cloned().unwrap_or(json!(""));
            let username = user.get("username").cloned().unwrap_or(json!(""));
            match managed {
                Some("openid" | "offline_access") => {}
                Some("profile") => {
                    claims.insert("name".into(), name.clone());
                    claims.insert("given_name".into(), name);
                    claims.insert("preferred_username".into(), username.clone());
                    claims.insert("nickname".into(), username);
                    claims.insert("groups".into(), json!([]));
                }
                _ => {
                    let expr = m.get("expression").and_then(Value::as_str).unwrap_or("");
                    claims.extend(eval_mapping(expr, user)?);
                }
            }
        }
        Ok(claims)
    }

    /// The issuer the provider's tokens name: as discovery announces it.
    fn issuer_of(&self, st: &State, provider: &Obj) -> String {
        if let Some(i) = &st.issuer_override {
            return i.clone();
        }
        let slug = st
            .store
            .of(APPLICATION)
            .find(|a| a.get("provider") == Some(&provider.pk()))
            .and_then(|a| a.get("slug").and_then(Value::as_str))
            .unwrap_or("");
        if provider.get("issuer_mode") == Some(&json!("global")) {
            format!("{}/application/o/", self.url)
        } else {
            format!("{}/application/o/{slug}/", self.url)
        }
    }

    /// A JWT of `claims` as the provider encodes it: RS256 with its signing key (the JWKS
    /// `kid` in the header), HS256 with the client secret without one; then a JWE for its
    /// encryption key when it has one.
    fn encode_token(&self, store: &Store, provider: &Obj, claims: &Value) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let signing = store
            .find(
                KEYPAIR,
                "pk",
                provider.get("signing_key").unwrap_or(&Value::Null),
            )
            .map(key_material);
        let jws = match &signing {
            Some(m) => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                let mut header = Header::new(Algorithm::RS256);
                header.kid = Some(self.kid(m));
                let der = m.key.to_pkcs1_der().expect("PKCS#1 DER");
                jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes()))
                    .expect("RS256 signature")
            }
            None => {
                let secret = provider
                    .get("client_secret")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    claims,
                    &EncodingKey::from_secret(secret.as_bytes()),
                )
                .expect("HS256 signature")
            }
        };
        match store.find(
            KEYPAIR,
            "pk",
            provider.get("encryption_key").unwrap_or(&Value::Null),
        ) {
            Some(kp) => {
                let m = key_material(kp);
                jwe(jws.as_bytes(), &m.key.to_public_key(), &self.kid(&m))
            }
            None => jws,
        }
    }

    /// The token answer for `grant` (recorded: 49-token-authorization-code.json): a JWT
    /// access token and id_token, `refresh_token` with offline_access.
    fn issue_tokens(&self, provider: &Obj, mut grant: Grant) -> Response {
        let st = lock(&self.state);
        let Some(user) = st.store.find(USER, "pk", &grant.user).cloned() else {
            drop(st);
            return self.token_error("invalid_grant");
        };
        let claims = match self.scope_claims(&st.store, provider, &user, &grant.scope) {
            Ok(c) => c,
            Err(e) => return Response::text(500, &e),
        };
        let now = now_secs();
        let validity = provider
            .get("access_token_validity")
            .and_then(Value::as_str)
            .map(duration_secs)
            .unwrap_or(3600);
        let client_id = provider.get("client_id").cloned().unwrap_or(json!(""));
        let mut id = Map::new();
        id.insert("iss".into(), json!(self.issuer_of(&st, provider)));
        id.insert("sub".into(), json!(self.subject(provider, &user)));
        id.insert("aud".into(), client_id.clone());
        id.insert("exp".into(), json!(now + validity));
        id.insert("iat".into(), json!(now));
        id.insert("auth_time".into(), json!(grant.auth_time));
        id.insert("acr".into(), json!(ACR));
        if !grant.amr.is_empty() {
            id.insert("amr".into(), json!(grant.amr));
        }
        if let Some(n) = &grant.nonce {
            id.insert("nonce".into(), json!(n));
        }
        if let Some(sid) = &grant.sid {
            id.insert("sid".into(), json!(sid));
        }
        if self.rules.token_jti_and_scope() {
            id.insert("jti".into(), json!(random_token(32)));
        }
        if provider.get("include_claims_in_id_token") != Some(&json!(false)) {
            id.extend(claims);
        }
        let scope = grant.scope.join(" ");
        let mut access = id.clone();
        access.insert("azp".into(), client_id);
        access.insert("uid".into(), json!(random_token(40)));
        if self.rules.token_jti_and_scope() {
            access.insert("scope".into(), json!(scope));
        }
        let access_token = self.encode_token(&st.store, provider, &Value::Object(access));
        let id_token = self.encode_token(&st.store, provider, &Value::Object(id));
        let refresh_validity = provider
            .get("refresh_token_validity")
            .and_then(Value::as_str)
            .map(duration_secs)
            .unwrap_or(30 * 86_400);
        drop(st);
        let mut body = Map::new();
        body.insert("access_token".into(), json!(access_token));
        body.insert("token_type".into(), json!("Bearer"));
        if self.rules.token_jti_and_scope() {
            body.insert("scope".into(), json!(scope));
        }
        body.insert("expires_in".into(), json!(validity));
        body.insert("id_token".into(), json!(id_token));
        let mut login = lock(&self.login);
        if grant.scope.iter().any(|s| s == "offline_access") {
            let refresh = random_token(128);
            body.insert("refresh_token".into(), json!(refresh));
            let mut g = grant.clone();
            g.expires = now + refresh_validity;
            login.refresh_tokens.insert(refresh, g);
        }
        grant.expires = now + validity;
        login.access_tokens.insert(access_token, grant);
        Response::json(200, &Value::Object(body))
    }

    /// `GET /application/o/userinfo/` with `Authorization: Bearer <access token>` (recorded:
    /// 50-/51-userinfo*.json): `sub`, the scope claims, the nonce of the login.
    fn userinfo(&self, req: &Request) -> Response {
        let token = req
            .header("authorization")
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_string())
            .or_else(|| req.query_value("access_token"));
        let grant = token
            .and_then(|t| lock(&self.login).access_tokens.get(&t).cloned())
            .filter(|g| g.expires >= now_secs());
        let st = lock(&self.state);
        let found = grant.and_then(|g| {
            let provider = st.store.find(OAUTH2_PROVIDER, "pk", &g.provider)?;
            let user = st.store.find(USER, "pk", &g.user)?;
            Some((g.clone(), provider, user))
        });
        let Some((grant, provider, user)) = found else {
            return Response::html(401, "").with_header(
                "WWW-Authenticate",
                "error=\"invalid_token\", error_description=\"The access token provided is expired, revoked, malformed, or invalid for other reasons\"",
            );
        };
        let mut body = Map::new();
        body.insert("sub".into(), json!(self.subject(provider, user)));
        match self.scope_claims(&st.store, provider, user, &grant.scope) {
            Ok(c) => body.extend(c),
            Err(e) => return Response::text(500, &e),
        }
        if let Some(n) = grant.nonce {
            body.insert("nonce".into(), json!(n));
        }
        Response::json(200, &Value::Object(body))
    }
}

/// The next integer pk of a user (akadmin is 1).
fn next_user_pk(store: &Store) -> i64 {
    store
        .of(USER)
        .filter_map(|u| u.get("pk").and_then(Value::as_i64))
        .max()
        .unwrap_or(0)
        + 1
}
