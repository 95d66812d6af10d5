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

/// The file, parsed, with every key and its order kept.
pub struct ConfigFile {
    path: PathBuf,
    document: Map<String, Value>,
    exists: bool,
}

impl ConfigFile {
    /// A missing file is an empty document. A file that is not a JSON object is an error,
    /// and is never touched.
    pub fn load(path: &Path) -> Result<Self> {
        // Before reading: a FIFO would block the read and a device never end it.
        if atomic_file::resolve_target(path)?.1.is_none() {
            return Ok(ConfigFile {
                path: path.to_path_buf(),
                document: Map::new(),
                exists: false,
            });
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    Error::failed(format!(
                        "{} is not valid JSON ({e}); fix or remove it, it was left untouched",
                        path.display()
                    ))
                })?;
                let Value::Object(document) = value else {
                    return Err(Error::failed(format!(
                        "{} does not hold a JSON object; it was left untouched",
                        path.display()
                    )));
                };
                if document.get("oauth").is_some_and(|o| !o.is_object()) {
                    return Err(Error::failed(format!(
                        "{}: \"oauth\" is not an object, so AFFiNE would not read it either; fix it, the file was left untouched",
                        path.display()
                    )));
                }
                Ok(ConfigFile {
                    path: path.to_path_buf(),
                    document,
                    exists: true,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile {
                path: path.to_path_buf(),
                document: Map::new(),
                exists: false,
            }),
            Err(e) => Err(Error::failed(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// The stored OIDC value, `None` when the file does not set one.
    pub fn oidc(&self) -> Option<OidcValue> {
        self.document
            .get("oauth")
            .and_then(|o| o.get("providers.oidc"))
            .map(OidcValue::from_affine)
    }

    /// Sets (`Some`) or removes (`None`) `oauth."providers.oidc"`, leaving every other key
    /// where it is.
    pub fn set_oidc(&mut self, value: Option<&OidcValue>) {
        if !self.exists && self.document.is_empty() {
            self.document
                .insert("$schema".into(), Value::String(SCHEMA_URL.into()));
        }
        match value {
            Some(v) => {
                let oauth = self
                    .document
                    .entry("oauth")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = oauth {
                    map.insert("providers.oidc".into(), v.to_affine_revealed());
                }
            }
            None => {
                if let Some(Value::Object(map)) = self.document.get_mut("oauth") {
                    map.shift_remove("providers.oidc");
                }
            }
        }
    }

    /// Writes the document atomically, keeping the file's mode and owner; a new file is
    /// 0600, since it holds a client secret.
    pub fn save(&self, backup: bool) -> Result<Written> {
        let mut text = serde_json::to_string_pretty(&Value::Object(self.document.clone()))
            .map_err(|e| Error::failed(format!("cannot encode {}: {e}", self.path.display())))?;
        text.push('\n');
        // An existing file keeps its mode: AFFiNE's container reads it as whichever user
        // the deployment chose, and tightening it could lock AFFiNE out of its own config.
        let mode = (!self.exists).then_some(0o600);
        atomic_file::write(
            &self.path,
            text.as_bytes(),
            WriteOptions {
                mode,
                backup,
                secret: false,
            },
        )
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
        file.set_oidc(Some(&value()));
        file.save(false).unwrap();
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
        file.set_oidc(Some(&value()));
        file.save(false).unwrap();
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
}
