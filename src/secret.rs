//! A value that must never be shown: client secrets, admin passwords, session tokens.
//!
//! `Debug`, `Display` and `Serialize` print a mask, so a secret that slips into a log
//! line, an error or a JSON result cannot leak. Reading the value is one explicit,
//! greppable call: [`Secret::expose`].

use std::fmt;

/// What a secret looks like wherever it is shown.
pub const MASK: &str = "********";

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value. Every call site is a place where the secret leaves this type:
    /// an HTTP body, a file the user asked for, or a comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

/// Replaces every known secret value inside arbitrary text: the last line of defence for
/// text we did not build ourselves (a server's error message quoting our request, a
/// body echoed back). Values shorter than 4 characters are masked only where they stand
/// as a whole quoted JSON string (`"s1x"`, as AFFiNE quotes a rejected value): masking
/// every bare "a" would garble the output.
#[derive(Default, Clone)]
pub struct Redactor {
    values: Vec<String>,
    /// Short values, as JSON string literals with their quotes.
    short_quoted: Vec<String>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, secret: &Secret) {
        self.add_raw(secret.expose());
    }

    /// For secret material that never was a [`Secret`], e.g. a session cookie
    /// value read off a response header.
    pub fn add_raw(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        if value.len() < 4 {
            let quoted = serde_json::Value::String(value.to_string()).to_string();
            if !self.short_quoted.contains(&quoted) {
                self.short_quoted.push(quoted);
            }
            return;
        }
        if !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_string());
            // Longest first, so a secret that contains another is masked whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MASK);
            }
        }
        for quoted in &self.short_quoted {
            if out.contains(quoted.as_str()) {
                out = out.replace(quoted.as_str(), &format!("\"{MASK}\""));
            }
        }
        out
    }

    /// Masks every string (keys included) of a JSON value in place.
    pub fn json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                let whole = Value::String(s.clone()).to_string();
                *s = if self.short_quoted.contains(&whole) {
                    MASK.to_string()
                } else {
                    self.text(s)
                };
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.json(&mut v);
                    map.insert(self.text(&key), v);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn redactor_masks_secrets_inside_nested_json_and_text() {
        let mut r = Redactor::new();
        r.add(&Secret::new("s3cr3t-value"));
        r.add_raw("session-abcdef");
        let mut v = serde_json::json!({"msg": "value {\"clientSecret\":\"s3cr3t-value\"}",
            "list": ["x", "Cookie: affine_session=session-abcdef"], "s3cr3t-value": 1});
        r.json(&mut v);
        let text = v.to_string();
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(!text.contains("session-abcdef"), "{text}");
        assert!(text.contains(MASK));
    }

    #[test]
    fn redactor_masks_tiny_values_only_as_whole_quoted_strings() {
        let mut r = Redactor::new();
        r.add_raw("a");
        r.add_raw("s1x");
        assert_eq!(r.text("banana"), "banana");
        let masked = r.text(r#"Value: {"clientSecret":"s1x","x":"a"} s1x"#);
        assert_eq!(
            masked,
            format!(r#"Value: {{"clientSecret":"{MASK}","x":"{MASK}"}} s1x"#)
        );
    }
}
