use crate::affine::oidc_value::OidcValue;
use crate::blueprint::options::DEFAULT_SECRET_ENV;
use crate::cli::OidcConfigArgs;
use crate::client_id::derive_client_id;
use crate::commands::warn;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::slug::Slug;
use crate::web_url::BaseUrl;

/// Stands in for the secret when AFFINE_OIDC_CLIENT_SECRET is unset: obvious to a reader,
/// and not something AFFiNE could take for a real secret by accident.
pub const SECRET_PLACEHOLDER: &str = "REPLACE-WITH-THE-CLIENT-SECRET-FROM-AUTHENTIK";

pub fn run(args: &OidcConfigArgs) -> Result<()> {
    let slug = Slug::parse("--slug", &args.slug)?;
    let issuer = match (&args.issuer, &args.authentik_url) {
        (Some(issuer), _) => {
            BaseUrl::parse("--issuer", issuer)?;
            issuer.trim().to_string()
        }
        (None, Some(authentik)) => {
            BaseUrl::parse("--authentik-url", authentik)?.authentik_issuer(slug.as_str())
        }
        (None, None) => {
            return Err(Error::usage(
                "give --issuer, or --authentik-url (with --slug)",
            ))
        }
    };
    let client_id = match (&args.client_id, &args.affine_url) {
        (Some(id), _) if !id.trim().is_empty() => id.clone(),
        (Some(_), _) => return Err(Error::usage("--client-id is empty")),
        (None, Some(affine)) => derive_client_id(&BaseUrl::parse("--affine-url", affine)?, &slug),
        (None, None) => {
            return Err(Error::usage(
                "give --client-id, or --affine-url to derive it the way `blueprint` does",
            ))
        }
    };
    let client_secret = match std::env::var(DEFAULT_SECRET_ENV) {
        Ok(s) if !s.is_empty() => Secret::new(s),
        _ => {
            warn(&format!(
                "{DEFAULT_SECRET_ENV} is not set: clientSecret holds a placeholder to replace with the provider's secret"
            ));
            Secret::new(SECRET_PLACEHOLDER)
        }
    };
    let value = OidcValue {
        issuer,
        client_id,
        client_secret,
        args: Default::default(),
    };
    // Printing the secret is the point of this command: the user pastes this object.
    let text = serde_json::to_string_pretty(&value.to_affine_revealed())
        .map_err(|e| Error::failed(format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
