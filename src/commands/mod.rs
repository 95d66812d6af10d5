//! One file per subcommand: each turns parsed flags into options, runs the work, and
//! writes data to stdout and diagnostics to stderr.

pub mod apply;
use crate::cli::{HttpArgs, OidcClientArgs};
use crate::error::Result;
use crate::http::HttpOptions;
use crate::names::NameStyle;
use crate::oidc_client::{resolve_client_id, resolve_issuer, resolve_slug};
use crate::slug::Slug;
use crate::web_url::BaseUrl;

pub mod blueprint;
pub mod generate;
pub mod install_modules;
pub mod oidc_config;
pub mod verify;

/// Diagnostics go to stderr, one line each, so stdout stays clean data.
pub fn warn(message: &str) {
    eprintln!("warning: {message}");
}

/// The slug, issuer and client id the shared `--issuer/--authentik-url/--slug/--client-id`
/// flags mean; the client id is derived from `affine_url` when not given.
pub struct ResolvedOidcClient {
    pub slug: Slug,
    pub issuer: String,
    pub client_id: String,
}

pub fn resolve_oidc_client(
    args: &OidcClientArgs,
    affine_url: Option<&BaseUrl>,
) -> Result<ResolvedOidcClient> {
    let slug = resolve_slug(args.slug.as_deref(), args.issuer.as_deref(), NameStyle::Cli)?;
    let issuer = resolve_issuer(
        args.issuer.as_deref(),
        args.authentik_url.as_deref(),
        &slug,
        NameStyle::Cli,
    )?;
    let client_id =
        resolve_client_id(args.client_id.as_deref(), affine_url, &slug, NameStyle::Cli)?;
    Ok(ResolvedOidcClient {
        slug,
        issuer,
        client_id,
    })
}

/// `--insecure`, `--ca-path`, `--timeout` as the modules' `validate_certs`, `ca_path`, `timeout`.
/// `--timeout 0` is refused, as `apply` refuses it, and so is one over an hour.
pub fn http_options(args: &HttpArgs) -> Result<HttpOptions> {
    Ok(HttpOptions {
        validate_certs: !args.insecure,
        ca_path: args.ca_path.clone(),
        timeout: crate::http::timeout_from_secs("--timeout", args.timeout)?,
    })
}
