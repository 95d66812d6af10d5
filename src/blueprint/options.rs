//! Blueprint options as the user gives them, before any validation. The CLI's
//! `blueprint` command and the `authentik_blueprint` module both fill this one struct.

use std::path::PathBuf;

use crate::authentik_version::DEFAULT_VERSION;
use crate::error::{Error, Result};
use crate::secret::Secret;

pub const DEFAULT_SLUG: &str = "affine";
pub const DEFAULT_NAME: &str = "AFFiNE";
pub const DEFAULT_PROVIDER_NAME: &str = "Provider for AFFiNE";

/// The provider's name is its identifier in the blueprint: two AFFiNE instances (two slugs)
/// on one authentik must not share it, or the second blueprint would take over the first
/// one's provider. `Provider for AFFiNE` for the default slug, `Provider for AFFiNE (<slug>)`
/// for any other.
pub fn default_provider_name(slug: &str) -> String {
    if slug == DEFAULT_SLUG {
        DEFAULT_PROVIDER_NAME.to_string()
    } else {
        format!("{DEFAULT_PROVIDER_NAME} ({slug})")
    }
}
pub const DEFAULT_AUTHORIZATION_FLOW: &str = "default-provider-authorization-implicit-consent";
pub const DEFAULT_INVALIDATION_FLOW: &str = "default-provider-invalidation-flow";
pub const DEFAULT_SIGNING_KEY: &str = "authentik Self-signed Certificate";
/// The scopes every blueprint maps: the three AFFiNE asks for (its default `openid profile
/// email`), and `offline_access`, without which authentik issues no refresh token, which
/// AFFiNE before 0.25.7 requires (affine_oidc asks for it there).
pub const DEFAULT_SCOPES: [&str; 4] = ["openid", "email", "profile", "offline_access"];
/// The environment variable authentik reads the client secret from, by default.
pub const DEFAULT_SECRET_ENV: &str = "AFFINE_OIDC_CLIENT_SECRET";

/// What the provider's `email` scope tells AFFiNE in `email_verified`.
///
/// AFFiNE 0.25.7+ refuses a login whose `email_verified` is false, and authentik's managed
/// `email` mapping sends false from 2025.10 (true before). So by default the blueprint
/// brings its own mapping for the `email` scope on 2025.10+.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmailVerified {
    /// `email_verified: true` for every user, what authentik sent before 2025.10.
    #[default]
    True,
    /// The user's attribute `email_verified` (for sites whose enrollment verifies addresses).
    Attribute,
    /// authentik's managed mapping unchanged (false on 2025.10+: AFFiNE 0.25.7+ refuses).
    Authentik,
}

impl EmailVerified {
    pub const NAMES: [&'static str; 3] = ["true", "attribute", "authentik"];

    pub fn parse(what: &str, value: &str) -> Result<Self> {
        match value {
            "true" => Ok(EmailVerified::True),
            "attribute" => Ok(EmailVerified::Attribute),
            "authentik" => Ok(EmailVerified::Authentik),
            other => Err(Error::usage(format!(
                "{what} {other:?} is not one of {}",
                Self::NAMES.join(", ")
            ))),
        }
    }
}

/// Where the provider's client secret comes from when authentik applies the blueprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretChoice {
    /// `!Env VAR` in the blueprint: authentik's own environment holds the secret.
    Env(String),
    /// `!File PATH` (authentik 2025.8+): a file inside authentik's container.
    File(String),
    /// The literal value, written into the blueprint.
    Inline(Secret),
}

#[derive(Debug, Clone)]
pub struct BlueprintOptions {
    pub affine_url: String,
    pub slug: String,
    pub name: String,
    /// `None`: [`default_provider_name`] of the slug.
    pub provider_name: Option<String>,
    pub launch_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: SecretChoice,
    pub authorization_flow: String,
    pub invalidation_flow: String,
    pub signing_key: String,
    /// Scopes besides openid, email and profile, which AFFiNE always asks for.
    pub extra_scopes: Vec<String>,
    pub email_verified: EmailVerified,
    pub group: Option<String>,
    pub authentik_version: String,
    pub template: Option<PathBuf>,
}

impl BlueprintOptions {
    /// The defaults for everything but the AFFiNE URL.
    pub fn new(affine_url: impl Into<String>) -> Self {
        BlueprintOptions {
            affine_url: affine_url.into(),
            slug: DEFAULT_SLUG.into(),
            name: DEFAULT_NAME.into(),
            provider_name: None,
            launch_url: None,
            client_id: None,
            client_secret: SecretChoice::Env(DEFAULT_SECRET_ENV.into()),
            authorization_flow: DEFAULT_AUTHORIZATION_FLOW.into(),
            invalidation_flow: DEFAULT_INVALIDATION_FLOW.into(),
            signing_key: DEFAULT_SIGNING_KEY.into(),
            extra_scopes: Vec::new(),
            email_verified: EmailVerified::default(),
            group: None,
            authentik_version: DEFAULT_VERSION.into(),
            template: None,
        }
    }
}
