//! Contract test: the stand-in authentik (`tests/support/authentik_standin.rs`) against what
//! real authentik answered, recorded in `$AFFINE_AUTHENTIK_REFERENCE_DIR/authentik-recordings/
//! <version>/*.json` (one request/response pair per file; see that folder's README). Each
//! version's recordings are replayed in order against a stand-in started in that version's
//! mode, and every answer is compared with the recorded one: status, media type, `Location`,
//! and the body's shape (key sets, recursively, and JSON types) and values, except values that
//! are ids, timestamps, hashes, secrets or otherwise random.
//!
//! The recordings are facts about authentik and stay outside the project: without the
//! variable (or the folder) each test prints that it skipped, on stderr, and passes, so the
//! rest of the suite runs anywhere. The test names say so too.
//!
//! The login recordings (authorize, the flow executor, token, userinfo) are replayed as the
//! recorder drove them: one cookie jar carries the session, the recorded PKCE verifier and
//! state go in as recorded, a `<code>` the recorder got from a login it did not record comes
//! from a fresh (uncompared) login here, and `<access_token>` is the last one issued. Tokens
//! are compared by their decoded header and claims (the recordings' `decoded`). See
//! [`skip_reason`] for what is not replayed.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};
use support::authentik_standin::{
    AuthentikOptions, AuthentikStandin, LoginUser, QUEUED_APPLY_DELAY,
};

use support::reference::ENV;
const RECORDINGS: &str = "authentik-recordings";

/// The value the recorded authentik had for `!Env AFFINE_OIDC_CLIENT_SECRET` (recorded as the
/// placeholder `<env_client_secret>`; a made-up stand-in value here).
const ENV_SECRET: (&str, &str) = ("AFFINE_OIDC_CLIENT_SECRET", "contract-env-client-secret");

/// The group the recorder had created before recording `18-groups-by-name.json`.
const RECORDED_GROUP: &str = "affine-users";

#[test]
fn standin_answers_as_authentik_2024_10_2_recorded_or_says_it_skipped() {
    replay_version("2024.10.2");
}

#[test]
fn standin_answers_as_authentik_2026_2_2_recorded_or_says_it_skipped() {
    replay_version("2026.2.2");
}

/// The folder of one version's recordings, or `None` after saying why the test is skipped.
fn recordings_dir(version: &str) -> Option<PathBuf> {
    let skip = |why: String| {
        eprintln!("authentik_recordings_contract {version}: SKIPPED: {why}");
        None
    };
    let Some(base) = support::reference::reference_dir() else {
        return skip(format!(
            "set {ENV} to the folder holding {RECORDINGS}/ to hold the stand-in to real authentik"
        ));
    };
    let dir = base.join(RECORDINGS).join(version);
    if !dir.is_dir() {
        return skip(format!("{} is not a folder", dir.display()));
    }
    Some(dir)
}

/// Why a recording is not replayed, or `None` to replay it. Every skip names its reason.
/// (None is skipped today: every recorded request can be driven against the stand-in.)
fn skip_reason(_name: &str) -> Option<&'static str> {
    None
}

/// The user the recorder logged in as (its password is `<password>` in the recordings).
const RECORDED_USER: (&str, &str, &str) = ("affine-tester", "tester@example.com", "AFFiNE Tester");
const REPLAY_PASSWORD: &str = "contract-tester-password";
/// The recorder's AFFiNE callback.
const RECORDED_CALLBACK: &str = "https://affine.example.com/oauth/callback";

struct Recording {
    /// `<version>/<file name>`, for messages.
    label: String,
    /// The file's number: its place in the recorded order.
    number: u32,
    /// The file name without its number and extension, e.g. `blueprints-create`.
    name: String,
    doc: Value,
}

fn load(dir: &Path, version: &str) -> Vec<Recording> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let name = file
                .trim_end_matches(".json")
                .split_once('-')
                .map(|(_, n)| n.to_string())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap();
            Recording {
                number: file.split('-').next().unwrap().parse().unwrap_or(0),
                label: format!("{version}/{file}"),
                name,
                doc: serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display())),
            }
        })
        .collect()
}

fn replay_version(version: &str) {
    let Some(dir) = recordings_dir(version) else {
        return;
    };
    let recordings = load(&dir, version);
    assert!(
        recordings.len() >= 40,
        "{}: expected the recorded pairs, found {}",
        dir.display(),
        recordings.len()
    );
    let started = Instant::now();
    let mut replay = Replay::new(version);
    let mut skipped: Vec<(String, &str)> = Vec::new();
    let mut replayed = 0;
    for rec in &recordings {
        if let Some(why) = skip_reason(&rec.name) {
            skipped.push((rec.label.clone(), why));
            continue;
        }
        replay.one(rec);
        replayed += 1;
    }
    eprintln!(
        "authentik_recordings_contract {version}: replayed {replayed} recordings in {:.1} s, skipped {}:",
        started.elapsed().as_secs_f64(),
        skipped.len()
    );
    for (label, why) in &skipped {
        eprintln!("  skipped {label}: {why}");
    }
    assert!(
        replay.failures.is_empty(),
        "the stand-in differs from real authentik {version} in {} place(s):\n{}",
        replay.failures.len(),
        replay.failures.join("\n")
    );
}

/// One replay: the stand-in, and what the recordings' placeholders stand for in it.
struct Replay {
    ak: AuthentikStandin,
    http: Client,
    failures: Vec<String>,
    /// Blueprint instance name → the stand-in's pk (kept after a delete, for the GET after).
    instances: HashMap<String, String>,
    /// The instance the last `<blueprint-pk>` meant: the recordings reuse that placeholder
    /// for whichever instance the request is about.
    last_instance: Option<String>,
    /// A recorded value (a provider's integer pk, a `<mapping-…>` placeholder) → the
    /// stand-in's.
    values: HashMap<String, String>,
    /// The instance as it was before the last apply, and when that apply was sent, for the
    /// polls after it.
    before_apply: Option<Value>,
    apply_sent: Instant,
    /// The request of `blueprints-create`, to set up the second session.
    first_create: Option<Value>,
    second_session: bool,
    /// The browser's cookies for the stand-in (name, value), as the recorder's session had.
    cookies: Vec<(String, String)>,
    /// The first recorded authorize request, for the logins the recorder did not record.
    authorize_path: Option<String>,
    /// The last access token the stand-in issued (`<access_token>` in a userinfo request).
    access_token: Option<String>,
}

/// Recordings after this number were made in a second session, after the login ones:
/// the recorder had created and applied the tool's blueprint again (30 deleted the
/// instance), so those files find it in place.
const SECOND_SESSION_AFTER: u32 = 40;

impl Replay {
    fn new(version: &str) -> Self {
        let ak = AuthentikStandin::start(AuthentikOptions::new(version));
        ak.set_env(ENV_SECRET.0, Some(ENV_SECRET.1));
        ak.add_group(RECORDED_GROUP);
        let (username, email, name) = RECORDED_USER;
        let mut user = LoginUser::new(username, REPLAY_PASSWORD);
        user.email = email.into();
        user.name = name.into();
        ak.add_user(user);
        let http = Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Replay {
            ak,
            http,
            failures: Vec::new(),
            instances: HashMap::new(),
            last_instance: None,
            values: HashMap::new(),
            before_apply: None,
            apply_sent: Instant::now(),
            first_create: None,
            second_session: false,
            cookies: Vec::new(),
            authorize_path: None,
            access_token: None,
        }
    }

    /// Brings the stand-in to the state the second session's recordings start from: the
    /// tool's blueprint created and applied again, as the recorder did (not compared: no
    /// recording holds these requests). Also learns the pks the second session's
    /// placeholders stand for: `<mapping-openid>` and its siblings, `<keypair-self-signed>`.
    fn start_second_session(&mut self) {
        self.second_session = true;
        let create = self
            .first_create
            .clone()
            .expect("blueprints-create was replayed before the second session");
        let created = self.send("POST", "/api/v3/managed/blueprints/", &create);
        assert_eq!(
            created.status, 201,
            "second session setup: {}",
            created.text
        );
        let instance = created.json();
        let pk = instance["pk"].as_str().unwrap().to_string();
        self.instances
            .insert(instance["name"].as_str().unwrap().to_string(), pk.clone());
        let path = format!("/api/v3/managed/blueprints/{pk}/");
        let auth = json!({"headers": {"Authorization": "Bearer <token>"}, "body": null});
        self.send("POST", &format!("{path}apply/"), &auth);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.instance_now(&path)["status"] != "successful" {
            assert!(
                Instant::now() < deadline,
                "second session setup: never applied"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mappings = self
            .send("GET", "/api/v3/propertymappings/provider/scope/", &auth)
            .json();
        for m in mappings["results"].as_array().into_iter().flatten() {
            if let Some(scope) = m["managed"]
                .as_str()
                .and_then(|k| k.strip_prefix("goauthentik.io/providers/oauth2/scope-"))
            {
                self.values.insert(
                    format!("<mapping-{scope}>"),
                    m["pk"].as_str().unwrap().to_string(),
                );
            }
        }
        let keypairs = self
            .send(
                "GET",
                "/api/v3/crypto/certificatekeypairs/?name=authentik+Self-signed+Certificate",
                &auth,
            )
            .json();
        let keypair = keypairs["results"][0]["pk"].as_str().unwrap().to_string();
        self.values.insert("<keypair-self-signed>".into(), keypair);
    }

    /// The recorded request body with the placeholders the stand-in knows replaced.
    fn request_body(&self, body: &Value) -> Value {
        match body {
            Value::String(s) => match self.values.get(s) {
                Some(ours) => json!(ours),
                None => body.clone(),
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|i| self.request_body(i)).collect())
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.request_body(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn fail(
        &mut self,
        rec: &Recording,
        what: &str,
        recorded: &dyn std::fmt::Display,
        actual: &dyn std::fmt::Display,
    ) {
        self.failures.push(format!(
            "{}: {what}: recorded {recorded}, stand-in {actual}",
            rec.label
        ));
    }

    /// Replays one recording and compares the answer.
    fn one(&mut self, rec: &Recording) {
        let request = &rec.doc["request"];
        let recorded = &rec.doc["response"];
        let method = request["method"].as_str().unwrap().to_string();
        if rec.number > SECOND_SESSION_AFTER && !self.second_session {
            self.start_second_session();
        }
        if rec.name == "blueprints-create" {
            self.first_create = Some(request.clone());
        }
        if rec.name == "login-authorize-unauthenticated" {
            self.authorize_path = request["path"].as_str().map(str::to_string);
        }
        self.prepare_code(rec);
        let request = &json!({
            "headers": request["headers"],
            "body": self.request_body(&request["body"]),
        });
        let path = self.request_path(rec);
        // The Django-only recordings went to gunicorn directly; everything else is what a
        // user's authentik (Go router in front) answers.
        self.ak.set_front_router(!rec.name.ends_with("-django"));
        if path.ends_with("/apply/") {
            self.before_apply = Some(self.instance_now(&path.replace("apply/", "")));
            self.apply_sent = Instant::now();
        }
        let actual = if rec.doc.get("sequence").is_some() {
            self.poll_like(rec, &path)
        } else {
            self.send(&method, &path, request)
        };
        self.ak.set_front_router(true);
        self.learn(rec, &path, &actual);
        self.compare_response(rec, recorded, &actual);
    }

    /// The recorded path with its placeholders replaced by the stand-in's values.
    fn request_path(&mut self, rec: &Recording) -> String {
        let mut path = rec.doc["request"]["path"].as_str().unwrap().to_string();
        if path.contains("<blueprint-pk>") {
            let named = rec.doc["response"]["body"]["name"]
                .as_str()
                .map(str::to_string)
                .or_else(|| self.last_instance.clone())
                .unwrap_or_else(|| panic!("{}: which instance is <blueprint-pk>?", rec.label));
            let pk = self.instances.get(&named).cloned().unwrap_or_else(|| {
                panic!("{}: no instance {named:?} was created before", rec.label)
            });
            self.last_instance = Some(named);
            path = path.replace("<blueprint-pk>", &pk);
        }
        for (placeholder, ours) in &self.values {
            if placeholder.starts_with('<') {
                path = path.replace(placeholder.as_str(), ours);
            }
        }
        if let Some(rest) = path.strip_prefix("/api/v3/providers/oauth2/") {
            let pk = rest.trim_end_matches('/');
            if let Some(ours) = self.values.get(pk) {
                path = format!("/api/v3/providers/oauth2/{ours}/");
            }
        }
        path
    }

    fn send(&self, method: &str, path: &str, request: &Value) -> Answer {
        let url = format!("{}{path}", self.ak.url());
        let mut req = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(auth) = request["headers"]["Authorization"].as_str() {
            let access = self.access_token.clone().unwrap_or_default();
            req = req.header(
                "Authorization",
                auth.replace("<token>", &self.ak.token())
                    .replace("<access_token>", &access),
            );
        }
        // The recorder's browser sent its cookies: send the jar's (the recorded values are
        // placeholders).
        if request["headers"]["Cookie"].is_string() && !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header("Cookie", jar.join("; "));
        }
        let form = request["headers"]["Content-Type"]
            .as_str()
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form {
            let pairs: Vec<(String, String)> = request["body"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            req = req.form(&pairs);
        } else if !request["body"].is_null() {
            req = req.json(&request["body"]);
        }
        Answer::of(req.send().unwrap())
    }

    /// Keeps what a response sets in the browser's cookie jar.
    fn keep_cookies(&mut self, actual: &Answer) {
        for (k, v) in &actual.headers {
            if !k.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            if let Some((name, rest)) = v.split_once('=') {
                let value = rest.split(';').next().unwrap_or("").to_string();
                self.cookies.retain(|(n, _)| n != name);
                self.cookies.push((name.to_string(), value));
            }
        }
    }

    /// A token request's `<code…>` placeholder: the code a replayed login got, or one from
    /// a fresh login when the recorder logged in again without recording it (the file's
    /// `why` says "after a fresh login", or the placeholder is new). `<client_secret>` is
    /// the provider's secret as the stand-in holds it now.
    fn prepare_code(&mut self, rec: &Recording) {
        let body = &rec.doc["request"]["body"];
        if let Some(secret) = self
            .ak
            .provider("affine")
            .and_then(|p| p["client_secret"].as_str().map(str::to_string))
        {
            self.values.insert("<client_secret>".into(), secret);
        }
        self.values
            .insert("<password>".into(), REPLAY_PASSWORD.into());
        let Some(code) = body["code"].as_str().filter(|c| c.starts_with("<code")) else {
            return;
        };
        let fresh = rec.doc["why"]
            .as_str()
            .is_some_and(|w| w.contains("after a fresh login"));
        if fresh || !self.values.contains_key(code) {
            let ours = self.fresh_login(rec);
            self.values.insert(code.to_string(), ours);
        }
    }

    /// A whole login in a browser of its own, not compared (the recorder's unrecorded
    /// ones): the first recorded authorize URL, identification, password, the redirects.
    fn fresh_login(&self, rec: &Recording) -> String {
        let start = self
            .authorize_path
            .clone()
            .unwrap_or_else(|| panic!("{}: no authorize request was replayed before", rec.label));
        let mut jar: Vec<(String, String)> = Vec::new();
        let mut url = start;
        let mut executor: Option<String> = None;
        let mut answer: Option<Value> = None;
        for _ in 0..30 {
            let full = format!("{}{url}", self.ak.url());
            let mut req = match answer.take() {
                Some(body) => self
                    .http
                    .post(format!("{}{}", self.ak.url(), executor.as_deref().unwrap()))
                    .json(&body),
                None => self.http.get(full),
            };
            if !jar.is_empty() {
                let cookies: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
                req = req.header("Cookie", cookies.join("; "));
            }
            let resp = Answer::of(req.send().unwrap());
            for (k, v) in &resp.headers {
                if let (true, Some((name, rest))) =
                    (k.eq_ignore_ascii_case("set-cookie"), v.split_once('='))
                {
                    jar.retain(|(n, _)| n != name);
                    jar.push((
                        name.to_string(),
                        rest.split(';').next().unwrap_or("").to_string(),
                    ));
                }
            }
            let next = if resp.status == 302 {
                resp.header("location").unwrap_or_default()
            } else {
                let challenge = resp.json();
                match challenge["component"].as_str().unwrap_or("") {
                    "ak-stage-identification" => {
                        answer = Some(
                            json!({"component": "ak-stage-identification", "uid_field": RECORDED_USER.0}),
                        );
                        continue;
                    }
                    "ak-stage-password" if challenge.get("response_errors").is_none() => {
                        answer = Some(
                            json!({"component": "ak-stage-password", "password": REPLAY_PASSWORD}),
                        );
                        continue;
                    }
                    "xak-flow-redirect" => challenge["to"].as_str().unwrap_or("").to_string(),
                    _ => panic!("{}: the fresh login stopped at {}", rec.label, resp.text),
                }
            };
            if next.starts_with(RECORDED_CALLBACK) {
                return query_value(&next, "code")
                    .unwrap_or_else(|| panic!("{}: a callback without a code: {next}", rec.label));
            }
            url = if next.starts_with("/if/flow/") {
                let e = executor_of(&next);
                executor = Some(e.clone());
                e
            } else {
                next
            };
        }
        panic!("{}: the fresh login did not reach the callback", rec.label);
    }

    /// The instance at `path` (`/api/v3/managed/blueprints/<pk>/`) as the API shows it now.
    fn instance_now(&self, path: &str) -> Value {
        let auth = json!({"headers": {"Authorization": "Bearer <token>"}, "body": null});
        self.send("GET", path, &auth).json()
    }

    /// A `*-get-after-apply-*` recording: the recorder read the instance every 0.1 s after
    /// the apply until `last_applied`/the hash moved and kept each distinct state in
    /// `sequence`. One state: the apply had already happened when it answered (Celery,
    /// before 2025.8). More: the first reads still showed the instance as it was (queued,
    /// Dramatiq). The stand-in must show the same: its first read unmoved iff the
    /// recording's was, and a moved state within the time real authentik took (and some).
    fn poll_like(&mut self, rec: &Recording, path: &str) -> Answer {
        let sequence = rec.doc["sequence"].as_array().unwrap();
        let before = self
            .before_apply
            .clone()
            .unwrap_or_else(|| panic!("{}: no apply was replayed before", rec.label));
        let moved = |a: &Answer| {
            let b = a.json();
            b["last_applied"] != before["last_applied"]
                || b["last_applied_hash"] != before["last_applied_hash"]
        };
        let request = &rec.doc["request"];
        let first = self.send("GET", path, request);
        let recorded_queued = sequence.len() > 1;
        // On a loaded machine the first read may come after the queued apply ran: that
        // read cannot tell queued from synchronous, so it proves nothing either way.
        let too_late = recorded_queued && self.apply_sent.elapsed() >= QUEUED_APPLY_DELAY;
        if moved(&first) == recorded_queued && !too_late {
            self.fail(
                rec,
                "the first read after the apply",
                &if recorded_queued {
                    "not applied yet (queued)"
                } else {
                    "already applied (synchronous)"
                },
                &if moved(&first) {
                    "already applied"
                } else {
                    "not applied yet"
                },
            );
        }
        let last_after = sequence.last().unwrap()["after_s"].as_f64().unwrap_or(0.0);
        let deadline = Instant::now() + Duration::from_secs_f64(last_after + 2.0);
        let mut answer = first;
        while !moved(&answer) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            answer = self.send("GET", path, request);
        }
        if !moved(&answer) {
            self.fail(
                rec,
                "the instance after polling",
                &format!("applied within {last_after} s"),
                &"never applied",
            );
        }
        answer
    }

    /// Remembers what the stand-in called the things the recordings name by placeholder.
    fn learn(&mut self, rec: &Recording, path: &str, actual: &Answer) {
        self.keep_cookies(actual);
        let ours = actual.json();
        let recorded = &rec.doc["response"]["body"];
        // The code of a callback (a Location, or a xak-flow-redirect's `to`).
        let recorded_to = rec.doc["response"]["headers"]["Location"]
            .as_str()
            .or(recorded["to"].as_str());
        let our_to = actual
            .header("location")
            .or(ours["to"].as_str().map(str::to_string));
        if let (Some(r), Some(o)) = (recorded_to, our_to) {
            if let (Some(placeholder), Some(code)) =
                (query_value(r, "code"), query_value(&o, "code"))
            {
                self.values.insert(placeholder, code);
            }
        }
        if let Some(token) = ours["access_token"].as_str() {
            self.access_token = Some(token.to_string());
        }
        if path.starts_with("/api/v3/managed/blueprints/") {
            if let (Some(name), Some(pk)) = (ours["name"].as_str(), ours["pk"].as_str()) {
                self.instances.insert(name.to_string(), pk.to_string());
            }
        }
        // A placeholder pk the next requests use (`<mapping-custom-api>`).
        if let (Some(r), Some(o)) = (recorded["pk"].as_str(), ours["pk"].as_str()) {
            if r.starts_with("<mapping-") {
                self.values.insert(r.to_string(), o.to_string());
            }
        }
        // The provider's integer pk, as the application shows it.
        if let (Some(r), Some(o)) = (recorded.get("provider"), ours.get("provider")) {
            if r.is_number() && o.is_number() {
                self.values.insert(r.to_string(), o.to_string());
            }
        }
    }

    fn compare_response(&mut self, rec: &Recording, recorded: &Value, actual: &Answer) {
        let status = recorded["status"].as_u64().unwrap() as u16;
        if status != actual.status {
            self.fail(rec, "status", &status, &actual.status);
        }
        let headers = &recorded["headers"];
        let header = |name: &str| {
            headers
                .as_object()
                .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
        };
        let recorded_type = header("content-type").map(|t| media_type(&t));
        let actual_type = actual.header("content-type").map(|t| media_type(&t));
        if recorded_type != actual_type {
            self.fail(
                rec,
                "Content-Type",
                &format!("{recorded_type:?}"),
                &format!("{actual_type:?}"),
            );
        }
        if let Some(location) = header("location") {
            let ours = actual.header("location").unwrap_or_default();
            if let Some(diff) = compare_url(&location, &ours) {
                self.fail(rec, "Location", &location, &format!("{ours:?} ({diff})"));
            }
        }
        if let Some(www) = header("www-authenticate") {
            let ours = actual.header("www-authenticate");
            if ours.as_deref() != Some(www.as_str()) {
                self.fail(rec, "WWW-Authenticate", &www, &format!("{ours:?}"));
            }
        }
        // The cookies set (names: their values are placeholders).
        let mut recorded_cookies: Vec<String> = headers["Set-Cookie"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        let mut our_cookies: Vec<String> = actual
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split_once('=').map(|(n, _)| n.to_string()))
            .collect();
        recorded_cookies.sort();
        our_cookies.sort();
        if recorded_cookies != our_cookies {
            self.fail(
                rec,
                "Set-Cookie",
                &format!("{recorded_cookies:?}"),
                &format!("{our_cookies:?}"),
            );
        }
        // The 405 error page and the router's redirect: the Allow header is what tells them
        // apart from a route that exists.
        if status == 405 {
            if let Some(allow) = header("allow") {
                let ours = actual.header("allow");
                if ours.as_deref() != Some(allow.as_str()) {
                    self.fail(rec, "Allow", &allow, &format!("{ours:?}"));
                }
            }
        }
        let body = &recorded["body"];
        match body {
            Value::String(text) => {
                // An HTML page or an empty body.
                if text.is_empty() != actual.text.is_empty() {
                    self.fail(
                        rec,
                        "body",
                        &format!("{} bytes", text.len()),
                        &format!("{} bytes", actual.text.len()),
                    );
                }
                let visible = rec.doc["response_body_text"].as_str().unwrap_or("");
                if visible.contains("Not Found") && !actual.text.contains("Not Found") {
                    self.fail(rec, "page text", &visible, &actual.text);
                }
                // An error page's title and sentence ("Redirect URI Error The request ...").
                if let Some((title, sentence)) = visible.split_once(" The ") {
                    let sentence =
                        format!("The {}", sentence.split(" Go home").next().unwrap_or(""));
                    if !actual.text.contains(title) || !actual.text.contains(&sentence) {
                        self.fail(rec, "page text", &visible, &actual.text);
                    }
                }
            }
            Value::Null => {
                if !actual.text.is_empty() {
                    self.fail(rec, "body", &"none", &actual.text);
                }
            }
            _ => match serde_json::from_str::<Value>(&actual.text) {
                Ok(ours) => {
                    let mut diffs = Vec::new();
                    compare("body", None, &normalise_recorded(body), &ours, &mut diffs);
                    compare_decoded(&rec.doc["decoded"], &ours, &mut diffs);
                    for d in diffs {
                        self.failures.push(format!("{}: {d}", rec.label));
                    }
                }
                Err(_) => self.fail(rec, "body", &"JSON", &format!("{:?}", actual.text)),
            },
        }
    }
}

/// What the stand-in answered.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    text: String,
}

impl Answer {
    fn of(resp: reqwest::blocking::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Answer {
            status,
            headers,
            text: resp.text().unwrap_or_default(),
        }
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The recorded body without what the recorder's environment added: the 2024.10 (Celery)
/// validation logs interleave "Task published" / "Created Event" lines from authentik's
/// event and task machinery, not from the importer.
fn normalise_recorded(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(Value::Array(lines)) = body.get_mut("content") {
        lines.retain(|l| !matches!(l.as_str(), Some("- Task published" | "- Created Event")));
    }
    body
}

/// Keys whose values are ids, timestamps, digests, secrets, key material or answers of
/// authentik's update check: their JSON type is compared, their value not.
const VOLATILE: &[&str] = &[
    "pk",
    "num_pk",
    "provider",
    "pbm_uuid",
    "last_applied",
    "timestamp",
    "client_secret",
    "kid",
    "n",
    "x5c",
    "x5t",
    "x5t#S256",
    "version_latest",
    "version_latest_valid",
    "build_hash",
    // A token's subject (a hash over the user's id and the install), its times, and the
    // initials avatar (an image) of a flow challenge.
    "sub",
    "exp",
    "iat",
    "auth_time",
    "pending_user_avatar",
];

/// Keys whose value is compared by type only, without looking inside: scope mappings'
/// Python expressions (authentik's own code, not restated in the stand-in) and the list
/// views' autocomplete schema for the web UI's search.
const OPAQUE: &[&str] = &["expression", "autocomplete"];

/// A recorded placeholder such as `<uuid-3>` or `<client_secret>`: any value of that type.
fn is_placeholder(s: &str) -> bool {
    s.len() > 2
        && s.starts_with('<')
        && s.ends_with('>')
        && !s[1..s.len() - 1].contains(['<', '>', ' '])
}

/// `http://127.0.0.1:PORT/rest` → `<origin>/rest`: the recorder's and the stand-in's ports
/// differ.
fn without_origin(s: &str) -> String {
    match s.strip_prefix("http://127.0.0.1:") {
        Some(rest) => {
            let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
            format!("<origin>{path}")
        }
        None => s.to_string(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s
    }
}

/// Compares a recorded JSON value with the stand-in's at `at` (a dotted path); `key` is the
/// object key the values sit under.
fn compare(at: &str, key: Option<&str>, recorded: &Value, ours: &Value, diffs: &mut Vec<String>) {
    if type_name(recorded) != type_name(ours) {
        diffs.push(format!(
            "{at}: recorded {} {}, stand-in {} {}",
            type_name(recorded),
            short(recorded),
            type_name(ours),
            short(ours)
        ));
        return;
    }
    let key = key.unwrap_or("");
    if OPAQUE.contains(&key) {
        return;
    }
    match (recorded, ours) {
        (Value::Object(r), Value::Object(o)) => {
            for (k, rv) in r {
                match o.get(k) {
                    Some(ov) => compare(&format!("{at}.{k}"), Some(k), rv, ov, diffs),
                    None => diffs.push(format!(
                        "{at}.{k}: recorded {} {}, stand-in has no such key",
                        type_name(rv),
                        short(rv)
                    )),
                }
            }
            for (k, ov) in o {
                if !r.contains_key(k) {
                    diffs.push(format!(
                        "{at}.{k}: not in the recording, stand-in has {}",
                        short(ov)
                    ));
                }
            }
        }
        (Value::Array(r), Value::Array(o)) => {
            if r.len() != o.len() {
                diffs.push(format!(
                    "{at}: recorded {} item(s) {}, stand-in {} item(s) {}",
                    r.len(),
                    short(recorded),
                    o.len(),
                    short(ours)
                ));
                return;
            }
            for (i, (rv, ov)) in r.iter().zip(o).enumerate() {
                compare(&format!("{at}[{i}]"), Some(key), rv, ov, diffs);
            }
        }
        _ if VOLATILE.contains(&key) => {}
        (Value::String(r), Value::String(o)) => {
            if key == "last_applied_hash" {
                // A digest: only whether there is one (after a successful apply) matters.
                if r.is_empty() != o.is_empty() {
                    diffs.push(format!("{at}: recorded {r:?}, stand-in {o:?}"));
                }
            } else if key == "scope" {
                // authentik joins a Python set: the order of the words is not its meaning.
                let words = |s: &str| {
                    let mut w: Vec<String> = s.split_whitespace().map(str::to_string).collect();
                    w.sort();
                    w
                };
                if words(r) != words(o) {
                    diffs.push(format!("{at}: recorded {r:?}, stand-in {o:?}"));
                }
            } else if !is_placeholder(r) && r.contains('<') && r.contains('?') {
                // A URL holding a placeholder (a callback with `code=<code>`).
                if let Some(d) = compare_url(r, o) {
                    diffs.push(format!("{at}: recorded {r:?}, stand-in {o:?} ({d})"));
                }
            } else if !is_placeholder(r) && without_origin(r) != without_origin(o) {
                diffs.push(format!(
                    "{at}: recorded {}, stand-in {}",
                    short(recorded),
                    short(ours)
                ));
            }
        }
        _ => {
            if recorded != ours {
                diffs.push(format!("{at}: recorded {recorded}, stand-in {ours}"));
            }
        }
    }
}

/// A URL's query value by key (decoded).
fn query_value(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    url_query(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn url_query(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// The executor URL of a flow interface page (`/if/flow/<slug>/?<query>`), as its page's
/// script calls it.
fn executor_of(page: &str) -> String {
    let (path, query) = page.split_once('?').unwrap_or((page, ""));
    let slug = path.trim_matches('/').split('/').nth(2).unwrap_or("");
    let mut url = reqwest::Url::parse(&format!("http://x/api/v3/flows/executor/{slug}/")).unwrap();
    url.query_pairs_mut().append_pair("query", query);
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

/// A recorded URL against the stand-in's: the same path (origins aside), the same query keys
/// in order, and the same decoded values except placeholders (`<code>`). `None` when alike.
fn compare_url(recorded: &str, ours: &str) -> Option<String> {
    let (rp, rq) = recorded.split_once('?').unwrap_or((recorded, ""));
    let (op, oq) = ours.split_once('?').unwrap_or((ours, ""));
    if without_origin(rp) != without_origin(op) {
        return Some(format!("path {rp:?} vs {op:?}"));
    }
    let (r, o) = (url_query(rq), url_query(oq));
    let keys = |q: &[(String, String)]| q.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    if keys(&r) != keys(&o) {
        return Some(format!("query keys {:?} vs {:?}", keys(&r), keys(&o)));
    }
    for ((k, rv), (_, ov)) in r.iter().zip(&o) {
        if !rv.contains('<') && rv != ov {
            return Some(format!("{k}: {rv:?} vs {ov:?}"));
        }
    }
    None
}

fn b64url_json(part: &str) -> Value {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// The recording's `decoded` tokens against the stand-in's: the number of parts, the header,
/// and a JWS's claims (keys and values, by the rules of [`compare`]).
fn compare_decoded(decoded: &Value, ours: &Value, diffs: &mut Vec<String>) {
    for (name, recorded) in decoded.as_object().into_iter().flatten() {
        let Some(token) = ours[name].as_str() else {
            diffs.push(format!(
                "decoded.{name}: the stand-in's answer has no {name}"
            ));
            continue;
        };
        let parts: Vec<&str> = token.split('.').collect();
        if recorded["parts"].as_u64() != Some(parts.len() as u64) {
            diffs.push(format!(
                "decoded.{name}: recorded {} parts, stand-in {}",
                recorded["parts"],
                parts.len()
            ));
            continue;
        }
        let at = format!("decoded.{name}.header");
        compare(
            &at,
            None,
            &recorded["header"],
            &b64url_json(parts[0]),
            diffs,
        );
        if let (Some(payload), 3) = (recorded.get("payload"), parts.len()) {
            let at = format!("decoded.{name}.payload");
            compare(&at, None, payload, &b64url_json(parts[1]), diffs);
        }
    }
}
