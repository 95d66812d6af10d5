//! AFFiNE's `config.json` (self-host: `~/.affine/self-host/config/config.json`): module,
//! then flat dotted keys: `{"oauth": {"providers.oidc": {...}}}`. Read at server start;
//! a value saved in the admin panel (database) overrides it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::affine::oidc_value::OidcValue;
use crate::atomic_file::{self, WriteOptions, Written};
use crate::error::{Error, Result};

/// What a new file starts with, so editors validate it (the schema AFFiNE publishes).
pub const SCHEMA_URL: &str =
    "https://github.com/toeverything/affine/releases/latest/download/config.schema.json";

pub const RESTART_WARNING: &str =
    "AFFiNE reads config.json at start: restart the server for this change to take effect; \
     a value saved in the admin panel (database) overrides the file";

/// The file as written, edited only where the OIDC value sits: every other byte (numbers
/// such as `12345678901234567890123`, `1.5e3` or `1e400` a float cannot hold, spacing, key
/// order, a byte-order mark) stays exactly as the user wrote it.
pub struct ConfigFile {
    path: PathBuf,
    /// The text after a byte-order mark, if any.
    text: String,
    bom: bool,
    exists: bool,
    /// `oauth."providers.oidc"`, parsed.
    oidc: Option<Value>,
}

const BOM: char = '\u{feff}';

impl ConfigFile {
    /// A missing file is an empty document. A file that is not a JSON object, or whose
    /// `oauth` or `oauth."providers.oidc"` is not an object, is an error, and is never
    /// touched.
    pub fn load(path: &Path) -> Result<Self> {
        let shown = path.display();
        // Before reading: a FIFO would block the read and a device never end it.
        let (_, meta) = atomic_file::resolve_target(path)?;
        if let Some(meta) = &meta {
            atomic_file::check_read_back_size(path, meta)?;
        }
        if meta.is_none() {
            return Ok(ConfigFile {
                path: path.to_path_buf(),
                text: String::new(),
                bom: false,
                exists: false,
                oidc: None,
            });
        }
        let raw = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Error::failed(format!(
                    "{shown} is not UTF-8 text, so not JSON AFFiNE reads; it was left untouched"
                ))
            } else {
                Error::failed(format!("cannot read {shown}: {e}"))
            }
        })?;
        Self::from_text(path, raw)
    }

    /// The file at `path` as if it held `raw`: the same checks as [`ConfigFile::load`],
    /// without reading. `path` is where [`ConfigFile::save`] writes and what messages name.
    pub fn from_text(path: &Path, raw: String) -> Result<Self> {
        let shown = path.display();
        let (bom, text) = match raw.strip_prefix(BOM) {
            Some(rest) => (true, rest.to_string()),
            None => (false, raw),
        };
        // Syntax only: a number too large for a float (`1e400`) is valid JSON, kept as is.
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| {
            Error::failed(format!(
                "{shown} is not valid JSON ({e}); fix or remove it, it was left untouched"
            ))
        })?;
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            text,
            bom,
            exists: true,
            oidc: None,
        };
        let top = file.top()?;
        if let Some(oauth) = top.member("oauth") {
            let object = |what: &str| {
                Error::failed(format!(
                    "{shown}: {what} is not an object, so AFFiNE would not read it either; fix it, the file was left untouched"
                ))
            };
            let oauth = json::object_at(&file.text, oauth.value.start)
                .ok_or_else(|| object("\"oauth\""))?;
            if let Some(oidc) = oauth.member("providers.oidc") {
                let value: Value = serde_json::from_str(&file.text[oidc.value.clone()])
                    .map_err(|e| Error::failed(format!("{shown}: oauth.\"providers.oidc\" cannot be read ({e}); it was left untouched")))?;
                if !value.is_object() {
                    return Err(object("oauth.\"providers.oidc\""));
                }
                file.oidc = Some(value);
            }
        }
        Ok(file)
    }

    fn top(&self) -> Result<json::Object> {
        let start = self.text.len() - self.text.trim_start().len();
        json::object_at(&self.text, start).ok_or_else(|| {
            Error::failed(format!(
                "{} does not hold a JSON object; it was left untouched",
                self.path.display()
            ))
        })
    }

    /// The stored OIDC value, `None` when the file does not set one.
    pub fn oidc(&self) -> Option<OidcValue> {
        self.oidc.as_ref().map(OidcValue::from_affine)
    }

    /// The stored value has no `args`: AFFiNE 0.22+ refuses it ("Required"), so it differs
    /// from any wanted value however the other fields compare.
    pub fn oidc_lacks_args(&self) -> bool {
        self.oidc.as_ref().is_some_and(|v| v.get("args").is_none())
    }

    /// Sets (`Some`) or removes (`None`) `oauth."providers.oidc"`, leaving every other byte
    /// where it is.
    pub fn set_oidc(&mut self, value: Option<&OidcValue>) -> Result<()> {
        let new_value = value.map(OidcValue::to_affine_revealed);
        if !self.exists && self.text.trim().is_empty() {
            let mut doc = Map::new();
            doc.insert("$schema".into(), Value::String(SCHEMA_URL.into()));
            if let Some(v) = &new_value {
                doc.insert("oauth".into(), serde_json::json!({ "providers.oidc": v }));
            }
            self.text = pretty(&Value::Object(doc), "");
            self.text.push('\n');
            self.oidc = new_value;
            return Ok(());
        }
        let top = self.top()?;
        let text = &self.text;
        let edited = match (top.member("oauth"), &new_value) {
            (None, None) => return Ok(()),
            (None, Some(v)) => {
                let member = serde_json::json!({ "providers.oidc": v });
                json::with_member(text, &top, "oauth", &member)
            }
            (Some(oauth_member), v) => {
                let oauth = json::object_at(text, oauth_member.value.start)
                    .ok_or_else(|| Error::failed("oauth is not an object"))?;
                match (oauth.member("providers.oidc"), v) {
                    (None, None) => return Ok(()),
                    (None, Some(v)) => json::with_member(text, &oauth, "providers.oidc", v),
                    (Some(m), Some(v)) => {
                        let indent = json::indent_of(text, m.start);
                        format!(
                            "{}{}{}",
                            &text[..m.value.start],
                            pretty(v, indent),
                            &text[m.value.end..]
                        )
                    }
                    (Some(_), None) => json::without_member(text, &oauth, "providers.oidc"),
                }
            }
        };
        self.text = edited;
        self.oidc = new_value;
        Ok(())
    }

    /// The text as it will be written (byte-order mark included).
    pub fn contents(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 3);
        if self.bom {
            out.push(BOM);
        }
        out.push_str(&self.text);
        out
    }

    /// Fails as [`ConfigFile::save`] would on a read-only file (unless `force`), so check
    /// mode can say so without writing.
    pub fn check_replaceable(&self, force: bool) -> Result<()> {
        let (target, meta) = atomic_file::resolve_target(&self.path)?;
        atomic_file::check_replaceable(&self.path, &target, meta.as_ref(), force).map(|_| ())
    }

    /// Writes the document atomically, keeping the file's mode and owner; a new file is
    /// 0600, since it holds a client secret. `force` replaces a read-only file too.
    pub fn save(&self, backup: bool, force: bool) -> Result<Written> {
        // An existing file keeps its mode: AFFiNE's container reads it as whichever user
        // the deployment chose, and tightening it could lock AFFiNE out of its own config.
        let mode = (!self.exists).then_some(0o600);
        atomic_file::write(
            &self.path,
            self.contents().as_bytes(),
            WriteOptions {
                mode,
                backup,
                replace_read_only: force,
                secret: false,
            },
        )
    }
}

/// `value` pretty-printed, its lines after the first indented by `indent`, to sit in a
/// file at that depth.
fn pretty(value: &Value, indent: &str) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.replace('\n', &format!("\n{indent}"))
}

/// Just enough of a JSON reader to find where an object's members sit in a text already
/// checked to be valid JSON, and to edit one member without touching the rest.
mod json {
    use std::ops::Range;

    use serde_json::Value;

    pub struct Member {
        pub key: String,
        /// Where the key's opening quote is.
        pub start: usize,
        pub value: Range<usize>,
    }

    pub struct Object {
        /// The `{`.
        pub open: usize,
        /// The `}`.
        pub close: usize,
        pub members: Vec<Member>,
    }

    impl Object {
        /// The last member of that name: the one a JSON reader keeps.
        pub fn member(&self, key: &str) -> Option<&Member> {
            self.members.iter().rev().find(|m| m.key == key)
        }
    }

    fn skip_ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }

    /// The end (exclusive) of the string whose `"` is at `i`.
    fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }

    /// The end (exclusive) of the value that starts at `i`.
    fn skip_value(b: &[u8], i: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => skip_string(b, i),
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let mut j = skip_ws(b, i + 1);
                if *b.get(j)? == close {
                    return Some(j + 1);
                }
                loop {
                    if open == b'{' {
                        j = skip_string(b, j)?;
                        j = skip_ws(b, j);
                        if *b.get(j)? != b':' {
                            return None;
                        }
                        j = skip_ws(b, j + 1);
                    }
                    j = skip_ws(b, skip_value(b, j)?);
                    match *b.get(j)? {
                        b',' => j = skip_ws(b, j + 1),
                        c if c == close => return Some(j + 1),
                        _ => return None,
                    }
                }
            }
            _ => {
                let mut j = i;
                while j < b.len()
                    && !matches!(b[j], b',' | b'}' | b']')
                    && !b[j].is_ascii_whitespace()
                {
                    j += 1;
                }
                (j > i).then_some(j)
            }
        }
    }

    /// The object whose `{` is at `open`, or `None` when something else is there.
    pub fn object_at(text: &str, open: usize) -> Option<Object> {
        let b = text.as_bytes();
        if *b.get(open)? != b'{' {
            return None;
        }
        let mut members = Vec::new();
        let mut j = skip_ws(b, open + 1);
        if *b.get(j)? == b'}' {
            return Some(Object {
                open,
                close: j,
                members,
            });
        }
        loop {
            let start = j;
            let key_end = skip_string(b, j)?;
            let key: String = serde_json::from_str(text.get(start..key_end)?).ok()?;
            j = skip_ws(b, key_end);
            if *b.get(j)? != b':' {
                return None;
            }
            let value_start = skip_ws(b, j + 1);
            let value_end = skip_value(b, value_start)?;
            members.push(Member {
                key,
                start,
                value: value_start..value_end,
            });
            j = skip_ws(b, value_end);
            match *b.get(j)? {
                b',' => j = skip_ws(b, j + 1),
                b'}' => {
                    return Some(Object {
                        open,
                        close: j,
                        members,
                    })
                }
                _ => return None,
            }
        }
    }

    /// The whitespace that starts the line holding `at`.
    pub fn indent_of(text: &str, at: usize) -> &str {
        let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        let line = &text[line_start..];
        &line[..line.len() - line.trim_start().len()]
    }

    /// `text` with `"key": value` added as the last member of `object`, indented like
    /// its siblings (or two spaces deeper than the object's own line when it has none).
    pub fn with_member(text: &str, object: &Object, key: &str, value: &Value) -> String {
        let key = Value::String(key.to_string()).to_string();
        match object.members.last() {
            Some(last) => {
                let indent = indent_of(text, last.start);
                let same_line = !text[object.open..last.start].contains('\n');
                let sep = if same_line {
                    " ".to_string()
                } else {
                    format!("\n{indent}")
                };
                format!(
                    "{},{sep}{key}: {}{}",
                    &text[..last.value.end],
                    super::pretty(value, indent),
                    &text[last.value.end..]
                )
            }
            None => {
                let outer = indent_of(text, object.open);
                let indent = format!("{outer}  ");
                format!(
                    "{}{{\n{indent}{key}: {}\n{outer}}}{}",
                    &text[..object.open],
                    super::pretty(value, &indent),
                    &text[object.close + 1..]
                )
            }
        }
    }

    /// `text` without the member `key` of `object` (and the comma that joined it).
    pub fn without_member(text: &str, object: &Object, key: &str) -> String {
        let Some(at) = object.members.iter().rposition(|m| m.key == key) else {
            return text.to_string();
        };
        let m = &object.members[at];
        let cut = if at > 0 {
            object.members[at - 1].value.end..m.value.end
        } else if let Some(next) = object.members.get(at + 1) {
            m.start..next.start
        } else {
            object.open + 1..object.close
        };
        format!("{}{}", &text[..cut.start], &text[cut.end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn value() -> OidcValue {
        OidcValue {
            issuer: "https://auth.example.com/application/o/affine/".into(),
            client_id: "id".into(),
            client_secret: Secret::new("secret"),
            args: Map::new(),
        }
    }

    #[test]
    fn keeps_other_keys_and_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"$schema":"x","server":{"name":"n"},"oauth":{"providers.google":{"clientId":"g"}},"zeta":1,"alpha":2}"#).unwrap();
        let mut file = ConfigFile::load(&path).unwrap();
        file.set_oidc(Some(&value())).unwrap();
        file.save(false, false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<&str> = [
            "\"$schema\"",
            "\"server\"",
            "\"oauth\"",
            "\"providers.google\"",
            "\"providers.oidc\"",
            "\"zeta\"",
            "\"alpha\"",
        ]
        .to_vec();
        let positions: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert_eq!(ConfigFile::load(&path).unwrap().oidc().unwrap(), value());
    }

    #[test]
    fn a_new_file_gets_the_schema_and_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut file = ConfigFile::load(&path).unwrap();
        assert!(file.oidc().is_none());
        file.set_oidc(Some(&value())).unwrap();
        file.save(false, false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \"$schema\""), "{text}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn an_oauth_key_that_is_not_an_object_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"oauth": 5}"#).unwrap();
        assert!(ConfigFile::load(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), r#"{"oauth": 5}"#);
    }

    #[test]
    fn invalid_json_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{ not json").unwrap();
        assert!(ConfigFile::load(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ not json");
    }

    fn edit(text: &str, value: Option<&OidcValue>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, text).unwrap();
        let mut file = ConfigFile::load(&path).unwrap();
        file.set_oidc(value).unwrap();
        file.save(false, false).unwrap();
        let out = std::fs::read_to_string(&path).unwrap();
        // What was written reads back as what was set.
        let again = ConfigFile::load(&path).unwrap();
        assert_eq!(again.oidc(), value.cloned(), "{out}");
        out
    }

    #[test]
    fn numbers_a_float_cannot_hold_survive_a_rewrite_byte_for_byte() {
        let before = "{\n  \"big\": 12345678901234567890123,\n  \"exp\": 1.5e3,\n  \"huge\": 1e400,\n  \"oauth\": {\n    \"providers.oidc\": {\"issuer\": \"old\"}\n  },\n  \"tail\": [1.0, -0.0]\n}\n";
        let after = edit(before, Some(&value()));
        for kept in [
            "\"big\": 12345678901234567890123,",
            "\"exp\": 1.5e3,",
            "\"huge\": 1e400,",
            "\"tail\": [1.0, -0.0]\n}\n",
        ] {
            assert!(after.contains(kept), "{kept} lost:\n{after}");
        }
        assert!(!after.contains("\"old\""), "{after}");
    }

    #[test]
    fn the_oidc_value_is_added_removed_and_replaced_in_every_shape_of_file() {
        let compact = edit(r#"{"server":{"name":"n"}}"#, Some(&value()));
        assert!(
            compact.starts_with(r#"{"server":{"name":"n"}, "oauth": {"#),
            "{compact}"
        );
        let empty_oauth = edit("{\n  \"oauth\": {}\n}\n", Some(&value()));
        assert!(empty_oauth.contains("\"providers.oidc\""), "{empty_oauth}");
        let beside = "{\n  \"oauth\": {\n    \"providers.google\": {\"clientId\": \"g\"},\n    \"providers.oidc\": {\"issuer\": \"x\"}\n  }\n}\n";
        let removed = edit(beside, None);
        assert_eq!(
            removed,
            "{\n  \"oauth\": {\n    \"providers.google\": {\"clientId\": \"g\"}\n  }\n}\n"
        );
        let first = "{\"oauth\": {\"providers.oidc\": {}, \"providers.github\": {}}}";
        assert_eq!(edit(first, None), "{\"oauth\": {\"providers.github\": {}}}");
        assert_eq!(
            edit("{\"oauth\": {\"providers.oidc\": {}}}", None),
            "{\"oauth\": {}}"
        );
        assert_eq!(edit("{\"a\": 1}", None), "{\"a\": 1}");
    }

    #[test]
    fn a_byte_order_mark_is_accepted_and_kept() {
        let after = edit("\u{feff}{\"a\": 1}", Some(&value()));
        assert!(after.starts_with("\u{feff}{\"a\": 1,"), "{after:?}");
    }

    #[test]
    fn a_providers_oidc_that_is_not_an_object_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let text = r#"{"oauth": {"providers.oidc": "x"}}"#;
        std::fs::write(&path, text).unwrap();
        let e = ConfigFile::load(&path).err().expect("refused");
        assert!(e.message().contains("providers.oidc"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn a_stored_value_without_args_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"oauth": {"providers.oidc": {"issuer": "i"}}}"#).unwrap();
        assert!(ConfigFile::load(&path).unwrap().oidc_lacks_args());
        std::fs::write(&path, r#"{"oauth": {"providers.oidc": {"args": {}}}}"#).unwrap();
        assert!(!ConfigFile::load(&path).unwrap().oidc_lacks_args());
    }
}
