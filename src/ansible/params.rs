//! Module parameters, checked the way `AnsibleModule` checks them. Ansible does none of
//! this for a binary module: types and coercion (ad hoc `-a k=v` sends strings), defaults,
//! environment fallbacks, choices, unknown and conflicting parameters are ours to check.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::secret::{Redactor, Secret};

/// What Ansible prints instead of a `no_log` parameter's value.
pub const NO_LOG_PLACEHOLDER: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    Int,
    Dict,
    List,
    /// A string; a leading `~/` is expanded like Ansible's `type: path`.
    Path,
    /// Taken as given (Ansible's `type: raw`), for a file `mode`: YAML reads `0640` as
    /// the integer 416, which must stay a number, not become the octal string "416".
    Raw,
}

#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    /// A JSON literal (`"30"`, `"true"`, `"\"present\""`).
    pub default: Option<&'static str>,
    /// Read from this environment variable (on the host the module runs on) when unset.
    pub env: Option<&'static str>,
    pub no_log: bool,
    pub choices: &'static [&'static str],
}

impl Param {
    pub const fn new(name: &'static str, kind: Kind) -> Self {
        Param {
            name,
            kind,
            default: None,
            env: None,
            no_log: false,
            choices: &[],
        }
    }
    pub const fn default(mut self, json: &'static str) -> Self {
        self.default = Some(json);
        self
    }
    pub const fn env(mut self, var: &'static str) -> Self {
        self.env = Some(var);
        self
    }
    pub const fn no_log(mut self) -> Self {
        self.no_log = true;
        self
    }
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Self {
        self.choices = choices;
        self
    }
}

pub struct Spec {
    pub module: &'static str,
    pub params: &'static [Param],
    /// At most one of each group may be given (explicitly, not by environment).
    pub mutually_exclusive: &'static [&'static [&'static str]],
}

/// Ansible's own switches from the `_ansible_*` keys.
#[derive(Debug, Clone, Default)]
pub struct Internal {
    pub check_mode: bool,
    pub diff: bool,
}

/// Checked parameters: each key of the spec, coerced, or absent when unset.
#[derive(Debug, Clone)]
pub struct Params {
    values: Map<String, Value>,
    explicit: BTreeSet<String>,
    pub internal: Internal,
    /// Said to the user in the task's `warnings` (the protocol adds them to any result).
    pub warnings: Vec<String>,
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).filter(|v| !v.is_null())
    }
    pub fn str(&self, name: &str) -> Option<String> {
        self.get(name).and_then(Value::as_str).map(str::to_string)
    }
    pub fn bool(&self, name: &str) -> bool {
        self.get(name).and_then(Value::as_bool).unwrap_or(false)
    }
    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(Value::as_i64)
    }
    pub fn dict(&self, name: &str) -> Option<Map<String, Value>> {
        self.get(name).and_then(Value::as_object).cloned()
    }
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.get(name).and_then(Value::as_array).map(|a| {
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect()
        })
    }
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.str(name).map(Secret::new)
    }
    /// Given in the task (not defaulted, not from the environment).
    pub fn given(&self, name: &str) -> bool {
        self.explicit.contains(name)
    }
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Checks `raw` (the args file) against `spec`. Every `no_log` value seen, valid or not,
/// goes to `redactor` first, so no error below can echo it.
pub fn parse(spec: &Spec, raw: &Value, redactor: &mut Redactor) -> Result<Params> {
    let empty = Map::new();
    let raw = raw.as_object().unwrap_or(&empty);
    let mut internal = Internal::default();
    let mut unknown = Vec::new();
    for (key, value) in raw {
        match key.as_str() {
            "_ansible_check_mode" => internal.check_mode = to_bool(value).unwrap_or(false),
            "_ansible_diff" => internal.diff = to_bool(value).unwrap_or(false),
            k if k.starts_with("_ansible_") => {}
            k if spec.params.iter().any(|p| p.name == k) => {}
            k => unknown.push(k.to_string()),
        }
    }
    for p in spec.params.iter().filter(|p| p.no_log) {
        // Whatever its type: a YAML `client_secret: 12345678` arrives as a number and is
        // sent as the string "12345678", which a server may quote back.
        match raw.get(p.name) {
            Some(Value::String(s)) => add_secret(redactor, s),
            Some(Value::Null) | None => {}
            Some(other) => add_secret(redactor, &other.to_string()),
        }
        if let Some(s) = p.env.and_then(|e| std::env::var(e).ok()) {
            add_secret(redactor, &s);
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        let mut supported: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
        supported.sort();
        return Err(Error::usage(format!(
            "Unsupported parameters for ({}) module: {}. Supported parameters include: {}.",
            spec.module,
            unknown.join(", "),
            supported.join(", ")
        )));
    }

    let mut values = Map::new();
    let mut explicit = BTreeSet::new();
    let mut warnings = Vec::new();
    for p in spec.params {
        let given = raw.get(p.name).filter(|v| !v.is_null());
        if given.is_some() {
            explicit.insert(p.name.to_string());
        }
        let from_env = || {
            p.env
                .and_then(|e| std::env::var(e).ok())
                .filter(|s| !s.is_empty())
                .map(Value::String)
        };
        let from_default = || {
            p.default
                .map(|d| serde_json::from_str(d).expect("spec defaults are JSON literals"))
        };
        let Some(value) = given.cloned().or_else(from_env).or_else(from_default) else {
            continue;
        };
        let coerced = coerce(p, &value)?;
        if !p.choices.is_empty() {
            let s = coerced.as_str().unwrap_or_default();
            if !p.choices.contains(&s) {
                return Err(Error::usage(format!(
                    "value of {} must be one of: {}, got: {}",
                    p.name,
                    p.choices.join(", "),
                    s
                )));
            }
        }
        if p.no_log && p.kind == Kind::Str && given.is_some_and(Value::is_number) {
            warnings.push(yaml_number_secret_warning(p.name));
        }
        values.insert(p.name.to_string(), coerced);
    }

    for group in spec.mutually_exclusive {
        let present: Vec<&str> = group
            .iter()
            .copied()
            .filter(|n| explicit.contains(*n))
            .collect();
        if present.len() > 1 {
            return Err(Error::usage(format!(
                "parameters are mutually exclusive: {}",
                present.join("|")
            )));
        }
    }
    Ok(Params {
        values,
        explicit,
        internal,
        warnings,
    })
}

/// A secret that reached us as a YAML integer: the text it is sent as may not be what was
/// written, and being a secret, nobody sees the difference until the login fails. YAML 1.1
/// (PyYAML, so Ansible) reads `0123` as 83, `0x1F` as 31, `1_000` as 1000 and `1:20` as 80.
/// A warning, not a refusal: `12345678` does arrive intact, and Ansible itself converts.
fn yaml_number_secret_warning(name: &str) -> String {
    format!(
        "{name} was given as a YAML number, not text, and is sent as that number's digits; \
         YAML reads 0123 as 83, 0x1F as 31 and 1:20 as 80, so if the secret was written so, \
         it is not the one sent: quote it ({name}: \"0123\")"
    )
}

/// A secret as given and as it appears inside JSON text (`"` → `\"`, `\` → `\\`): a server's
/// error message that quotes our request body holds the encoded form.
fn add_secret(redactor: &mut Redactor, value: &str) {
    redactor.add_raw(value);
    let encoded = Value::String(value.to_string()).to_string();
    redactor.add_raw(&encoded[1..encoded.len() - 1]);
}

/// `module_args` for the result's `invocation`: the checked values, `no_log` ones replaced.
pub fn invocation(spec: &Spec, params: Option<&Params>, raw: &Value) -> Value {
    let mut args = Map::new();
    for p in spec.params {
        let value = match params {
            Some(ps) => ps.values.get(p.name).cloned().unwrap_or(Value::Null),
            None => raw.get(p.name).cloned().unwrap_or(Value::Null),
        };
        let shown = match value {
            Value::Null => Value::Null,
            _ if p.no_log => Value::String(NO_LOG_PLACEHOLDER.into()),
            // A URL's `user:password@` is a credential whatever parameter carries it
            // (`affine_url: https://bob:pw@…` is refused, but the invocation still echoes it).
            // A megabyte pasted by mistake is refused; echoing it back would make the
            // result a megabyte too.
            Value::String(s) if s.len() > MAX_TEXT_LEN => {
                Value::String(format!("({} bytes, not shown)", s.len()))
            }
            Value::String(s) if s.contains("://") && s.contains('@') => {
                Value::String(crate::web_url::without_userinfo(&s))
            }
            other => other,
        };
        args.insert(p.name.to_string(), shown);
    }
    serde_json::json!({ "module_args": args })
}

fn type_error(p: &Param, value: &Value, want: &str) -> Error {
    let shown = if p.no_log {
        NO_LOG_PLACEHOLDER.to_string()
    } else {
        value.to_string()
    };
    Error::usage(format!(
        "argument '{}' is of type {} and we were unable to convert to {want}: {shown}",
        p.name,
        json_type(value)
    ))
}

/// 2^53: every whole number up to it is exact in a float.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

fn out_of_range(p: &Param, value: &Value) -> Error {
    let shown = if p.no_log {
        NO_LOG_PLACEHOLDER.to_string()
    } else {
        value.to_string()
    };
    Error::usage(format!(
        "argument '{}' is out of range: {shown} is too large a number",
        p.name
    ))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Ansible's boolean words (`BOOLEANS_TRUE` / `BOOLEANS_FALSE`).
fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => {
            let x = n.as_f64()?;
            if x == 1.0 {
                Some(true)
            } else if x == 0.0 {
                Some(false)
            } else {
                None
            }
        }
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "1" | "true" | "t" => Some(true),
            "n" | "no" | "off" | "0" | "false" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn coerce(p: &Param, v: &Value) -> Result<Value> {
    let value = coerce_kind(p, v)?;
    // Text inside a dict or a list is text too: the same rules as a string parameter.
    match &value {
        Value::Object(map) => {
            for (k, item) in map {
                check_text(&format!("argument '{}'", p.name), k)?;
                if k.trim().is_empty() {
                    return Err(Error::usage(format!(
                        "argument '{}' has an empty key; give KEY=VALUE",
                        p.name
                    )));
                }
                match item {
                    Value::String(text) => check_text(&format!("argument '{}'", p.name), text)?,
                    Value::Number(n) if n.is_f64() => return Err(float_for_text(p, item)),
                    _ => {}
                }
            }
        }
        Value::Array(items) if p.kind == Kind::List => {
            for item in items {
                match item {
                    Value::String(text) => check_text(&format!("argument '{}'", p.name), text)?,
                    Value::Number(n) if n.is_f64() => return Err(float_for_text(p, item)),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(value)
}

/// The longest text any parameter takes: URLs, paths, names, secrets. authentik's and
/// AFFiNE's own limits are lower where they have one (a host name 253, a slug 50); this
/// keeps a megabyte pasted by mistake out of every message and request.
pub const MAX_TEXT_LEN: usize = 4096;

/// No control character (NUL, newline, escape…) in any text: none belongs in a URL, a
/// name, a path or a secret, and a NUL or newline cut short or split what reaches the
/// server. The message gives the position, never the value. `what` names the input as the
/// caller's user knows it (`argument 'slug'`, `--slug`, `AUTHENTIK_TOKEN`).
pub fn check_text(what: &str, s: &str) -> Result<()> {
    if s.len() > MAX_TEXT_LEN {
        return Err(Error::usage(format!(
            "{what} is {} bytes long, more than the {MAX_TEXT_LEN} any value here may be; check what was given",
            s.len()
        )));
    }
    if let Some((at, c)) = s.char_indices().find(|(_, c)| c.is_control()) {
        return Err(Error::usage(format!(
            "{what} holds a control character ({}) at byte {at}; give the value without it",
            control_name(c)
        )));
    }
    if let Some((at, c)) = s.char_indices().find(|(_, c)| is_invisible_trap(*c)) {
        return Err(Error::usage(format!(
            "{what} holds an invisible character (U+{:04X}) at byte {at}, which shows nowhere but \
             changes the value (or the direction text is shown in); give the value without it",
            c as u32
        )));
    }
    Ok(())
}

/// Characters no URL, name, path or secret here needs, that do not show where they are:
/// line and paragraph separators (a line break to YAML and JavaScript, not to the eye), the
/// bidirectional overrides and isolates (text shown in another order than it is read:
/// "Trojan Source"), left-to-right/right-to-left marks and the byte-order mark. The zero
/// width joiner stays: emoji sequences in a display name use it.
fn is_invisible_trap(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            | '\u{200E}' | '\u{200F}' | '\u{FEFF}'
    )
}

fn control_name(c: char) -> String {
    match c {
        '\0' => "NUL".to_string(),
        '\n' => "newline".to_string(),
        '\r' => "carriage return".to_string(),
        '\t' => "tab".to_string(),
        c => format!("U+{:04X}", c as u32),
    }
}

fn float_for_text(p: &Param, value: &Value) -> Error {
    let shown = if p.no_log {
        NO_LOG_PLACEHOLDER.to_string()
    } else {
        value.to_string()
    };
    Error::usage(format!(
        "argument '{name}' is a YAML number ({shown}), not text: YAML reads 2025.10 as 2025.1 and 1.50 as 1.5, \
         so the value may have lost digits; quote it, e.g. {name}: \"2025.10\"",
        name = p.name
    ))
}

fn coerce_kind(p: &Param, v: &Value) -> Result<Value> {
    Ok(match p.kind {
        Kind::Str | Kind::Path => {
            let s = match v {
                Value::String(s) => s.clone(),
                // YAML's `2025.10` is the float 2025.1 before it reaches us, `1.50` is 1.5:
                // a float as text would be a value the user did not write.
                Value::Number(n) if n.is_f64() => return Err(float_for_text(p, v)),
                Value::Number(n) => n.to_string(),
                _ => return Err(type_error(p, v, "str")),
            };
            check_text(&format!("argument '{}'", p.name), &s)?;
            if p.kind == Kind::Path {
                Value::String(expand_home(&s))
            } else {
                Value::String(s)
            }
        }
        Kind::Raw => v.clone(),
        Kind::Bool => Value::Bool(to_bool(v).ok_or_else(|| type_error(p, v, "bool"))?),
        Kind::Int => match v {
            Value::Number(n) if n.is_i64() => v.clone(),
            Value::Number(n) if n.is_u64() => return Err(out_of_range(p, v)),
            // A whole float (`30.0`, `1e20`) is a number only where a float still holds it
            // exactly; `1e20 as i64` would saturate to a number nobody gave.
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() <= MAX_EXACT_FLOAT_INT => {
                    Value::from(f as i64)
                }
                Some(f) if f.fract() == 0.0 || !f.is_finite() => return Err(out_of_range(p, v)),
                _ => return Err(type_error(p, v, "int")),
            },
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
                    ) =>
                {
                    return Err(out_of_range(p, v))
                }
                Err(_) => return Err(type_error(p, v, "int")),
            },
            _ => return Err(type_error(p, v, "int")),
        },
        Kind::Dict => match v {
            Value::Object(_) => v.clone(),
            Value::String(s) if s.trim().starts_with('{') => {
                serde_json::from_str::<Map<String, Value>>(s)
                    .map(Value::Object)
                    .map_err(|_| type_error(p, v, "dict"))?
            }
            Value::String(s) => {
                let mut map = Map::new();
                for field in split_kv_fields(s) {
                    let (k, val) = field
                        .split_once('=')
                        .filter(|(k, _)| !k.trim().is_empty())
                        .ok_or_else(|| type_error(p, v, "dict"))?;
                    map.insert(k.trim().to_string(), Value::String(val.to_string()));
                }
                Value::Object(map)
            }
            _ => return Err(type_error(p, v, "dict")),
        },
        Kind::List => match v {
            Value::Array(_) => v.clone(),
            Value::String(s) => Value::Array(
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(|x| Value::String(x.into()))
                    .collect(),
            ),
            Value::Number(_) => Value::Array(vec![Value::String(v.to_string())]),
            _ => return Err(type_error(p, v, "list")),
        },
    })
}

/// `k=v, k2='a b'` → [`k=v`, `k2=a b`]: fields end at a comma or a space outside quotes,
/// quotes are dropped and a backslash escapes the next character, as Ansible's
/// `check_type_dict` reads ad hoc `-a` dicts.
fn split_kv_fields(s: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => field.extend(chars.next()),
            (q, None) if q == '\'' || q == '"' => quote = Some(q),
            (q, Some(open)) if q == open => quote = None,
            (',' | ' ', None) => {
                if !field.is_empty() {
                    fields.push(std::mem::take(&mut field));
                }
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() {
        fields.push(field);
    }
    fields
}

fn expand_home(s: &str) -> String {
    match (s.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: Spec = Spec {
        module: "demo",
        params: &[
            Param::new("url", Kind::Str),
            Param::new("wait", Kind::Bool).default("false"),
            Param::new("timeout", Kind::Int).default("30"),
            Param::new("args", Kind::Dict),
            Param::new("password", Kind::Str).no_log(),
            Param::new("token", Kind::Str).no_log(),
            Param::new("state", Kind::Str)
                .default("\"present\"")
                .choices(&["present", "absent"]),
        ],
        mutually_exclusive: &[&["password", "token"]],
    };

    #[test]
    fn ad_hoc_strings_are_coerced_like_ansible() {
        let mut r = Redactor::new();
        let p = parse(
            &SPEC,
            &json!({"wait": "yes", "timeout": "12", "args": "scope=openid,claim_name=name"}),
            &mut r,
        )
        .unwrap();
        assert!(p.bool("wait"));
        assert_eq!(p.int("timeout"), Some(12));
        assert_eq!(p.dict("args").unwrap()["claim_name"], "name");
        assert_eq!(p.str("state").as_deref(), Some("present"));
    }

    #[test]
    fn ad_hoc_dicts_keep_quoted_values_whole() {
        let mut r = Redactor::new();
        let raw = json!({"args": "scope='openid profile email', claim_name=\"full name\" x=a\\,b"});
        let p = parse(&SPEC, &raw, &mut r).unwrap();
        let args = p.dict("args").unwrap();
        assert_eq!(args["scope"], "openid profile email");
        assert_eq!(args["claim_name"], "full name");
        assert_eq!(args["x"], "a,b");
    }

    #[test]
    fn unknown_parameters_are_named_and_internal_keys_ignored() {
        let mut r = Redactor::new();
        let e = parse(
            &SPEC,
            &json!({"urll": "x", "_ansible_check_mode": true, "_ansible_new_thing": 1}),
            &mut r,
        )
        .unwrap_err();
        assert!(
            e.message()
                .contains("Unsupported parameters for (demo) module: urll"),
            "{e}"
        );
    }

    #[test]
    fn bad_types_choices_and_conflicts_fail_without_echoing_secrets() {
        let mut r = Redactor::new();
        assert!(parse(&SPEC, &json!({"timeout": "soon"}), &mut r).is_err());
        assert!(parse(&SPEC, &json!({"wait": "maybe"}), &mut r).is_err());
        assert!(parse(&SPEC, &json!({"state": "gone"}), &mut r).is_err());
        let e = parse(
            &SPEC,
            &json!({"password": "pw-secret-1", "token": "tok-secret-2"}),
            &mut r,
        )
        .unwrap_err();
        assert!(e.message().contains("mutually exclusive"));
        let e = parse(&SPEC, &json!({"password": ["pw-in-a-list"]}), &mut r).unwrap_err();
        assert!(!e.message().contains("pw-in-a-list"), "{e}");
    }

    #[test]
    fn invocation_hides_no_log_values() {
        let mut r = Redactor::new();
        let raw = json!({"password": "pw-secret-1", "url": "u"});
        let p = parse(&SPEC, &raw, &mut r).unwrap();
        let inv = invocation(&SPEC, Some(&p), &raw).to_string();
        assert!(!inv.contains("pw-secret-1"));
        assert!(inv.contains(NO_LOG_PLACEHOLDER));
        assert_eq!(r.text("x pw-secret-1 y"), "x ******** y");
    }
}
