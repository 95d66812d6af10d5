//! Which issuer and client id AFFiNE should use, from what the user gave: one rule for
//! `oidc-config`, `verify`, `apply` and the `affine_oidc` module.

use crate::blueprint::options::DEFAULT_SLUG;
use crate::client_id::derive_client_id;
use crate::error::{Error, Result};
use crate::names::NameStyle;
use crate::slug::Slug;
use crate::web_url::BaseUrl;

/// The application slug: as given, else the one inside an authentik issuer
/// (`.../application/o/<slug>/`), else `affine`. The slug feeds the derived client id, so an
/// issuer for application `team` must not be paired with the id of application `affine`.
pub fn resolve_slug(slug: Option<&str>, issuer: Option<&str>, names: NameStyle) -> Result<Slug> {
    let from_issuer = issuer.and_then(|i| {
        let path = i.trim().trim_end_matches('/');
        let (before, last) = path.rsplit_once('/')?;
        before.ends_with("/application/o").then_some(last)
    });
    Slug::parse(
        &names.name("slug"),
        slug.or(from_issuer).unwrap_or(DEFAULT_SLUG),
    )
}

/// `issuer` as given (checked to be a URL, kept as written: AFFiNE concatenates it), else
/// authentik's issuer for the application, `<authentik_url>/application/o/<slug>/`.
pub fn resolve_issuer(
    issuer: Option<&str>,
    authentik_url: Option<&str>,
    slug: &Slug,
    names: NameStyle,
) -> Result<String> {
    let n = |s: &str| names.name(s);
    match (issuer, authentik_url) {
        (Some(issuer), _) => {
            BaseUrl::parse(&n("issuer"), issuer)?;
            Ok(issuer.trim().to_string())
        }
        (None, Some(authentik)) => {
            Ok(BaseUrl::parse(&n("authentik_url"), authentik)?.authentik_issuer(slug.as_str()))
        }
        (None, None) => Err(Error::usage(format!(
            "give {}, or {} (with {})",
            n("issuer"),
            n("authentik_url"),
            n("slug")
        ))),
    }
}

/// `client_id` as given, else derived from the AFFiNE URL and slug as `blueprint` derives it.
pub fn resolve_client_id(
    client_id: Option<&str>,
    affine_url: Option<&BaseUrl>,
    slug: &Slug,
    names: NameStyle,
) -> Result<String> {
    let n = |s: &str| names.name(s);
    match (client_id, affine_url) {
        // authentik stores up to 255 characters; a space or control character would not
        // survive the authorize URL's query intact.
        (Some(id), _)
            if id.is_empty()
                || id.len() > 255
                || id.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(Error::usage(format!(
                "{} must be 1 to 255 characters without spaces",
                n("client_id")
            )))
        }
        (Some(id), _) => Ok(id.to_string()),
        (None, Some(url)) => Ok(derive_client_id(url, slug)),
        (None, None) => Err(Error::usage(format!(
            "give {}, or {} to derive it the way the blueprint does",
            n("client_id"),
            n("affine_url")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slug_comes_from_the_flag_else_the_authentik_issuer_else_affine() {
        let issuer = Some("https://auth.example.com/application/o/team/");
        assert_eq!(
            resolve_slug(None, issuer, NameStyle::Cli).unwrap().as_str(),
            "team"
        );
        assert_eq!(
            resolve_slug(Some("x"), issuer, NameStyle::Cli)
                .unwrap()
                .as_str(),
            "x"
        );
        assert_eq!(
            resolve_slug(
                None,
                Some("https://idp.example.com/realms/a"),
                NameStyle::Cli
            )
            .unwrap()
            .as_str(),
            "affine"
        );
        assert_eq!(
            resolve_slug(None, None, NameStyle::Cli).unwrap().as_str(),
            "affine"
        );
    }
}
