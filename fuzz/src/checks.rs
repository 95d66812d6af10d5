//! What each fuzz target asserts about one input. Shared by the fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and by `tests/fuzz_regressions.rs`, which runs every input
//! kept in `fuzz/regressions/<target>/` through the same function on every `cargo test`.
//!
//! Beyond "never panics": each check states the promise the code makes to its user, so a
//! wrong answer fails as loudly as a crash.

use std::path::Path;
use std::sync::OnceLock;

use affine_authentik::affine::config_file::ConfigFile;
use affine_authentik::affine::oidc_value::OidcValue;
use affine_authentik::ansible::authentik_blueprint::{mask_literal_secrets, UNMASKABLE};
use affine_authentik::ansible::params::{self, Kind, NO_LOG_PLACEHOLDER};
use affine_authentik::ansible::MODULES;
use affine_authentik::authentik::blueprint_instance::as_stored;
use affine_authentik::authentik::references::find_references;
use affine_authentik::blueprint::check::check;
use affine_authentik::blueprint::options::BlueprintOptions;
use affine_authentik::blueprint::BlueprintSpec;
use affine_authentik::secret::{Redactor, Secret, MASK};
use affine_authentik::web_url::{without_userinfo, BaseUrl, MAX_URL_LEN};
use serde_json::{Map, Value};

/// A secret the checks look for in output: long enough not to occur by chance, and not
/// made of the mask's own characters (a secret `****` is "shown" by every mask).
fn findable(secret: &str) -> bool {
    secret.chars().count() >= 4 && !secret.contains('*')
}

fn texts_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|i| texts_in(i, out)),
        Value::Object(m) => m.iter().for_each(|(k, i)| {
            out.push(k.clone());
            texts_in(i, out)
        }),
        _ => {}
    }
}

/// An Ansible args file (the JSON object a task's parameters arrive as), checked against
/// both modules' parameter specs:
/// - an accepted text parameter holds no control character;
/// - an accepted int is the number given;
/// - neither a refusal nor the `invocation` echo shows a `no_log` value, after the
///   redactor the protocol passes all output through.
pub fn module_args(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Ok(raw @ Value::Object(_)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    for module in &MODULES {
        let secrets: Vec<String> = module
            .spec
            .params
            .iter()
            .filter(|p| p.no_log)
            .filter_map(|p| match raw.get(p.name)? {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            })
            .filter(|s| findable(s))
            .collect();
        let mut redactor = Redactor::new();
        let parsed = params::parse(module.spec, &raw, &mut redactor);
        match &parsed {
            Ok(p) => {
                for param in module.spec.params {
                    let Some(value) = p.get(param.name) else {
                        continue;
                    };
                    if matches!(param.kind, Kind::Str | Kind::Path | Kind::List) {
                        let mut texts = Vec::new();
                        texts_in(value, &mut texts);
                        for t in texts {
                            assert!(
                                !t.chars().any(char::is_control),
                                "{}: {} let {t:?} through",
                                module.name,
                                param.name
                            );
                        }
                    }
                    if param.kind == Kind::Int {
                        if let Some(n) = raw.get(param.name).and_then(Value::as_i64) {
                            assert_eq!(p.int(param.name), Some(n), "{}", param.name);
                        }
                    }
                }
            }
            Err(e) => {
                let shown = redactor.text(&e.to_string());
                for s in &secrets {
                    assert!(
                        !shown.contains(s.as_str()),
                        "{}: refusal shows a secret: {shown}",
                        module.name
                    );
                }
            }
        }
        let mut invocation = params::invocation(module.spec, parsed.as_ref().ok(), &raw);
        for p in module.spec.params.iter().filter(|p| p.no_log) {
            let echoed = &invocation["module_args"][p.name];
            assert!(
                echoed.is_null() || echoed == NO_LOG_PLACEHOLDER,
                "{}: invocation echoes {} as {echoed}",
                module.name,
                p.name
            );
        }
        redactor.json(&mut invocation);
        // Its texts, keys included; a JSON `true` is no secret `"true"` shown.
        let mut shown = Vec::new();
        texts_in(&invocation, &mut shown);
        for s in &secrets {
            for text in &shown {
                assert!(
                    !text.contains(s.as_str()),
                    "{}: invocation shows a secret: {text:?}",
                    module.name
                );
            }
        }
    }
}

/// The value every config_json round sets: characters JSON must escape, and non-ASCII.
fn wanted_oidc() -> OidcValue {
    let mut args = Map::new();
    args.insert("scope".into(), Value::String("openid profile email".into()));
    args.insert("claim_id".into(), Value::String("sub\"\\\u{1}é".into()));
    OidcValue {
        issuer: "https://auth.example.com/application/o/affine/".into(),
        client_id: "id-\"quoted\"-\u{2028}".into(),
        client_secret: Secret::new("s3cret\\\"</script>"),
        args,
    }
}

/// The document as a JSON reader sees it, without `oauth."providers.oidc"` (and without an
/// `oauth` left empty by that): what an edit of the OIDC value must leave as it was.
fn without_oidc(mut doc: Value) -> Value {
    if let Some(top) = doc.as_object_mut() {
        let emptied = match top.get_mut("oauth").and_then(Value::as_object_mut) {
            Some(oauth) => {
                oauth.shift_remove("providers.oidc");
                oauth.is_empty()
            }
            None => false,
        };
        if emptied {
            top.shift_remove("oauth");
        }
    }
    doc
}

/// AFFiNE's config.json, as found on disk: when the editor accepts a text, setting the OIDC
/// value (and removing it) gives valid JSON that reads back as what was set, keeps the
/// byte-order mark, and leaves every other value as a JSON reader reads it.
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/affine/config.json");
    if ConfigFile::from_text(path, text.to_string()).is_err() {
        return;
    }
    let before: Option<Value> =
        serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(text)).ok();
    for wanted in [Some(wanted_oidc()), None] {
        let mut file = ConfigFile::from_text(path, text.to_string()).unwrap();
        if file.set_oidc(wanted.as_ref()).is_err() {
            continue;
        }
        let edited = file.contents();
        assert_eq!(
            edited.starts_with('\u{feff}'),
            text.starts_with('\u{feff}'),
            "the byte-order mark was not kept"
        );
        let again = ConfigFile::from_text(path, edited.clone())
            .unwrap_or_else(|e| panic!("the edited file is refused: {e}\n{edited}"));
        assert_eq!(again.oidc(), wanted, "read back differs:\n{edited}");
        if let Some(before) = &before {
            let after: Value = serde_json::from_str(edited.trim_start_matches('\u{feff}'))
                .unwrap_or_else(|e| panic!("the edited file is not JSON: {e}\n{edited}"));
            assert_eq!(
                without_oidc(after),
                without_oidc(before.clone()),
                "values other than the OIDC one changed:\n{text}\n→\n{edited}"
            );
        }
    }
}

fn default_spec() -> &'static BlueprintSpec {
    static SPEC: OnceLock<BlueprintSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        BlueprintSpec::from_options(&BlueprintOptions::new("https://affine.example.com"))
            .expect("the default options make a spec")
            .0
    })
}

/// Every literal `client_secret` text of a YAML document, at any depth.
fn literal_secrets(doc: &serde_yaml::Value, out: &mut Vec<String>) {
    use serde_yaml::Value as Y;
    match doc {
        Y::Mapping(map) => {
            for (k, v) in map {
                if let (Some("client_secret"), Y::String(s)) = (k.as_str(), v) {
                    out.push(s.clone());
                }
                literal_secrets(v, out);
            }
        }
        Y::Sequence(items) => items.iter().for_each(|i| literal_secrets(i, out)),
        Y::Tagged(t) => literal_secrets(&t.value, out),
        _ => {}
    }
}

/// A blueprint text, as a user's template renders it or as a file already in place holds
/// it (authentik's tags included): the read-back check, the `!Find` lookups and authentik's
/// stored form never panic, and the diff's masking never shows a literal secret.
pub fn blueprint_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = check(text, default_spec());
    for reference in find_references(text) {
        assert!(!reference.model.is_empty(), "{reference:?}");
    }
    let stored = as_stored(text);
    assert_eq!(
        as_stored(stored),
        stored,
        "storing twice changes the content"
    );

    let masked = mask_literal_secrets(text);
    let mut secrets = Vec::new();
    if let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        literal_secrets(&doc, &mut secrets);
    }
    for s in secrets.iter().map(|s| s.trim()).filter(|s| findable(s)) {
        if masked == UNMASKABLE || format!("client_secret: {MASK}").contains(s) {
            continue;
        }
        assert!(
            !masked.contains(s),
            "the diff shows secret {s:?}:\n{masked}"
        );
    }
}

/// Marks the fuzzer's password so no message can contain it by chance.
const PASSWORD_MARK: &str = "QX7";

/// URLs as users give them: the rules never panic; an accepted base URL is clean and every
/// URL built from it parses; no message and no masked form shows the password of a
/// `user:password@` part, whatever characters the password holds.
pub fn url_rules(data: &[u8]) {
    let whole = String::from_utf8_lossy(data);
    if let Ok(url) = BaseUrl::parse("--affine-url", &whole) {
        let base = url.as_str();
        assert!(!base.chars().any(char::is_control), "{base:?}");
        assert!(!base.ends_with('/'), "{base:?}");
        for built in [
            url.oauth_callback(),
            url.authentik_issuer("affine"),
            url.join("x"),
        ] {
            // Parses again, unless the path added makes it longer than any base may be.
            if let Err(e) = BaseUrl::parse("built", &built) {
                assert!(
                    built.len() > MAX_URL_LEN,
                    "{built:?} from {base:?}: {}",
                    e.0
                );
            }
        }
    }

    // user 0xFF password 0xFF rest → https://user:PASSWORD@rest
    let mut parts = data.splitn(3, |b| *b == 0xff);
    let (Some(user), Some(password), Some(rest)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let user = String::from_utf8_lossy(user);
    let rest = String::from_utf8_lossy(rest);
    let password = format!("{PASSWORD_MARK}{}", String::from_utf8_lossy(password));
    if user.contains(PASSWORD_MARK) || rest.contains(PASSWORD_MARK) {
        return;
    }
    for scheme in ["https://", "http://", "HTTPS://", ""] {
        let input = format!("{scheme}{user}:{password}@{rest}");
        let masked = without_userinfo(&input);
        assert!(!masked.contains(PASSWORD_MARK), "{input:?} → {masked:?}");
        match BaseUrl::parse("--affine-url", &input) {
            Ok(url) => assert!(!url.as_str().contains(PASSWORD_MARK), "{input:?} accepted"),
            Err(e) => assert!(!e.0.contains(PASSWORD_MARK), "{input:?} → {}", e.0),
        }
    }
}
