//! Validated blueprint inputs: every later step can trust these.

use std::path::PathBuf;

use crate::authentik_version::AuthentikVersion;
use crate::blueprint::options::{
    default_provider_name, BlueprintOptions, EmailVerified, SecretChoice, DEFAULT_SCOPES,
};
use crate::error::{Error, Result};
use crate::names::NameStyle;
use crate::oidc_client::resolve_client_id;
use crate::secret::Secret;
use crate::slug::Slug;
use crate::web_url::BaseUrl;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(String),
    Inline(Secret),
}

#[derive(Debug, Clone)]
pub struct BlueprintSpec {
    pub affine_url: BaseUrl,
    pub slug: Slug,
    pub name: String,
    pub provider_name: String,
    pub launch_url: BaseUrl,
    pub client_id: String,
    pub client_secret: SecretSource,
    pub authorization_flow: String,
    pub invalidation_flow: String,
    pub signing_key: String,
    /// Scope names (`openid`), mapped to authentik's managed scope mappings by the template;
    /// openid, email and profile first.
    pub scopes: Vec<String>,
    /// The blueprint's own mapping for the `email` scope, in place of the managed one.
    pub email_mapping: Option<EmailMapping>,
    pub group: Option<String>,
    pub version: AuthentikVersion,
    /// A user template: its path (for messages) and its text.
    pub template: Option<(PathBuf, String)>,
}

/// A scope mapping for `email` that the blueprint creates (see [`EmailVerified`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMapping {
    /// Its name, the entry's identifier: one per slug, so two AFFiNE instances on one
    /// authentik keep their own.
    pub name: String,
    pub email_verified: EmailVerified,
}

impl EmailMapping {
    pub fn description(&self) -> &'static str {
        match self.email_verified {
            EmailVerified::Attribute => "Email address for AFFiNE, verified as the user's attribute email_verified says (AFFiNE 0.25.7+ refuses unverified addresses)",
            _ => "Email address for AFFiNE, marked verified: AFFiNE 0.25.7+ refuses a login whose email_verified is false, which authentik's managed mapping sends since 2025.10",
        }
    }
}

impl BlueprintSpec {
    /// Validates options. Returns the spec and warnings for stderr (or the module's
    /// `warnings`). Names inputs in CLI style; see [`Self::from_options_named`].
    pub fn from_options(options: &BlueprintOptions) -> Result<(Self, Vec<String>)> {
        Self::from_options_named(options, NameStyle::Cli)
    }

    pub fn from_options_named(
        o: &BlueprintOptions,
        names: NameStyle,
    ) -> Result<(Self, Vec<String>)> {
        let n = |s: &str| names.name(s);
        let mut warnings = Vec::new();

        let affine_url = BaseUrl::parse(&n("affine_url"), &o.affine_url)?;
        let slug = Slug::parse(&n("slug"), &o.slug)?;
        let provider_name = o
            .provider_name
            .clone()
            .unwrap_or_else(|| default_provider_name(slug.as_str()));
        non_empty_line(&n("provider_name"), &provider_name)?;
        let launch_url = match &o.launch_url {
            Some(u) => BaseUrl::parse(&n("launch_url"), u)?,
            None => affine_url.clone(),
        };
        for (field, value) in [
            ("name", &o.name),
            ("authorization_flow", &o.authorization_flow),
            ("invalidation_flow", &o.invalidation_flow),
            ("signing_key", &o.signing_key),
        ] {
            non_empty_line(&n(field), value)?;
        }
        if let Some(group) = &o.group {
            non_empty_line(&n("group"), group)?;
        }

        let version = AuthentikVersion::parse(&o.authentik_version)?;
        warnings.extend(version.newer_warning());
        warnings.extend(AuthentikVersion::ambiguity_warning(
            &o.authentik_version,
            version,
        ));

        let client_id = resolve_client_id(o.client_id.as_deref(), Some(&affine_url), &slug, names)?;

        let client_secret = match &o.client_secret {
            SecretChoice::Env(var) => {
                if !is_env_var_name(var) {
                    return Err(Error::usage(format!(
                        "{} {var:?} is not an environment variable name (letters, digits, '_', not starting with a digit)",
                        n("client_secret_env")
                    )));
                }
                SecretSource::Env(var.clone())
            }
            SecretChoice::File(path) => {
                if !version.supports_file_tag() {
                    return Err(Error::usage(format!(
                        "{} needs authentik 2025.8 or newer (the !File tag); the target is {version}: use {} instead",
                        n("client_secret_file"),
                        n("client_secret_env")
                    )));
                }
                if !path.starts_with('/') || path.contains('\n') {
                    return Err(Error::usage(format!(
                        "{} {path:?} must be an absolute path inside authentik's container",
                        n("client_secret_file")
                    )));
                }
                SecretSource::File(path.clone())
            }
            SecretChoice::Inline(secret) => {
                if secret.is_empty() {
                    return Err(Error::usage(match names {
                        NameStyle::Cli => "--inline-client-secret reads the secret from the environment variable AFFINE_OIDC_CLIENT_SECRET, which is empty or unset",
                        NameStyle::Module => "client_secret is empty",
                    }));
                }
                // authentik's column is 255 characters: a longer secret fails the import.
                if secret.expose().chars().count() > 255 {
                    return Err(Error::usage(match names {
                        NameStyle::Cli => "the secret in AFFINE_OIDC_CLIENT_SECRET is longer than the 255 characters authentik stores",
                        NameStyle::Module => "client_secret is longer than the 255 characters authentik stores",
                    }));
                }
                warnings.push(format!(
                    "the blueprint holds the client secret in clear text: keep it private (a file: mode 0600) and out of version control, or use {} / {}",
                    n("client_secret_env"),
                    n("client_secret_file")
                ));
                SecretSource::Inline(secret.clone())
            }
        };

        // The CLI repeats `--scope NAME`; the module takes a list `scopes`. Both add to
        // the three AFFiNE always asks for: a provider without them is a login that cannot work.
        let scope_input = match names {
            NameStyle::Cli => "--scope",
            NameStyle::Module => "scopes",
        };
        let mut scopes: Vec<String> = DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect();
        for scope in &o.extra_scopes {
            if scope.is_empty()
                || !scope
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::usage(format!(
                    "{} {scope:?} is not a scope name such as openid, email, profile, offline_access",
                    scope_input
                )));
            }
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }

        let email_mapping = match o.email_verified {
            EmailVerified::True if !version.managed_email_mapping_sends_unverified() => None,
            EmailVerified::Authentik => {
                if version.managed_email_mapping_sends_unverified() {
                    warnings.push(format!(
                        "{} authentik: authentik {version}'s managed email mapping sends email_verified: false, and AFFiNE 0.25.7 and newer refuse that login (\"Email for this account is not verified\"); use {} true or attribute unless your users' addresses are verified in authentik",
                        n("email_verified"),
                        n("email_verified")
                    ));
                }
                None
            }
            mode => Some(EmailMapping {
                name: format!("AFFiNE email ({})", slug.as_str()),
                email_verified: mode,
            }),
        };

        let template = match &o.template {
            Some(path) => {
                let text = crate::input_file::read_capped_to_string(
                    path,
                    &n("template"),
                    crate::input_file::TEMPLATE_LIMIT,
                )?;
                Some((path.clone(), text))
            }
            None => None,
        };

        Ok((
            BlueprintSpec {
                affine_url,
                slug,
                name: o.name.clone(),
                provider_name,
                launch_url,
                client_id,
                client_secret,
                authorization_flow: o.authorization_flow.clone(),
                invalidation_flow: o.invalidation_flow.clone(),
                signing_key: o.signing_key.clone(),
                scopes,
                email_mapping,
                group: o.group.clone(),
                version,
                template,
            },
            warnings,
        ))
    }

    /// The blueprint's `metadata.name`; also the name of the managed blueprint instance the
    /// push creates in authentik, so one authentik can hold one per AFFiNE slug.
    pub fn blueprint_name(&self) -> String {
        format!("AFFiNE OIDC ({})", self.slug.as_str())
    }
}

fn non_empty_line(what: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::usage(format!("{what} is empty")));
    }
    if value.contains(['\n', '\r']) {
        return Err(Error::usage(format!("{what} must be one line")));
    }
    Ok(())
}

fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_derive_the_client_id() {
        let (spec, warnings) =
            BlueprintSpec::from_options(&BlueprintOptions::new("https://affine.example.com/"))
                .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(spec.client_id.len(), 40);
        assert_eq!(spec.launch_url.as_str(), "https://affine.example.com");
        assert_eq!(
            spec.client_secret,
            SecretSource::Env("AFFINE_OIDC_CLIENT_SECRET".into())
        );
    }

    #[test]
    fn file_secret_is_refused_before_2025_8() {
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.client_secret = SecretChoice::File("/secrets/affine".into());
        o.authentik_version = "2025.6".into();
        let e = BlueprintSpec::from_options(&o).unwrap_err();
        assert!(e.message().contains("2025.8"), "{e}");
        o.authentik_version = "2025.8.1".into();
        assert!(BlueprintSpec::from_options(&o).is_ok());
    }

    #[test]
    fn module_style_names_inputs_in_snake_case() {
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.provider_name = Some(" ".into());
        let e = BlueprintSpec::from_options_named(&o, NameStyle::Module).unwrap_err();
        assert_eq!(e.message(), "provider_name is empty");
        let e = BlueprintSpec::from_options(&o).unwrap_err();
        assert_eq!(e.message(), "--provider-name is empty");
    }

    #[test]
    fn bad_env_var_names_and_scopes_are_refused() {
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.client_secret = SecretChoice::Env("1BAD".into());
        assert!(BlueprintSpec::from_options(&o).is_err());
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.extra_scopes = vec!["openid email".into()];
        assert!(BlueprintSpec::from_options(&o).is_err());
    }

    #[test]
    fn extra_scopes_add_to_the_three_affine_asks_for() {
        let mut o = BlueprintOptions::new("https://affine.example.com");
        o.extra_scopes = vec!["offline_access".into(), "email".into()];
        let (spec, _) = BlueprintSpec::from_options(&o).unwrap();
        assert_eq!(
            spec.scopes,
            ["openid", "email", "profile", "offline_access"]
        );
    }

    #[test]
    fn the_email_mapping_comes_with_2025_10_or_when_the_attribute_is_asked_for() {
        let spec_for = |version: &str, mode: EmailVerified| {
            let mut o = BlueprintOptions::new("https://affine.example.com");
            o.authentik_version = version.into();
            o.email_verified = mode;
            BlueprintSpec::from_options(&o).unwrap()
        };
        let (spec, warnings) = spec_for("2025.10.0", EmailVerified::True);
        assert_eq!(spec.email_mapping.unwrap().name, "AFFiNE email (affine)");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(spec_for("2025.8.3", EmailVerified::True)
            .0
            .email_mapping
            .is_none());
        assert!(spec_for("2024.10.2", EmailVerified::Attribute)
            .0
            .email_mapping
            .is_some());
        let (spec, warnings) = spec_for("2026.2.2", EmailVerified::Authentik);
        assert!(spec.email_mapping.is_none());
        assert!(
            warnings.iter().any(|w| w.contains("AFFiNE 0.25.7")),
            "{warnings:?}"
        );
        assert!(spec_for("2025.8.3", EmailVerified::Authentik).1.is_empty());
    }
}
