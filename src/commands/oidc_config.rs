use crate::affine::oidc_value::OidcValue;
use crate::blueprint::options::DEFAULT_SECRET_ENV;
use crate::cli::OidcConfigArgs;
use crate::commands::warn;
use crate::commands::{resolve_oidc_client, ResolvedOidcClient};
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::web_url::BaseUrl;

/// Stands in for the secret when AFFINE_OIDC_CLIENT_SECRET is unset: obvious to a reader,
/// and not something AFFiNE could take for a real secret by accident.
pub const SECRET_PLACEHOLDER: &str = "REPLACE-WITH-THE-CLIENT-SECRET-FROM-AUTHENTIK";

pub fn run(args: &OidcConfigArgs) -> Result<()> {
    let affine_url = args
        .affine_url
        .as_deref()
        .map(|u| BaseUrl::parse("--affine-url", u))
        .transpose()?;
    let ResolvedOidcClient {
        issuer, client_id, ..
    } = resolve_oidc_client(&args.oidc, affine_url.as_ref())?;
    let client_secret = match std::env::var(DEFAULT_SECRET_ENV) {
        Ok(s) if !s.is_empty() => {
            crate::ansible::params::check_text(DEFAULT_SECRET_ENV, &s)?;
            Secret::new(s)
        }
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
