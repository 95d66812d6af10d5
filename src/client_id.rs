//! The default OAuth2 client id: derived, so that the blueprint, the AFFiNE config and
//! `verify` agree without anyone copying an id around.

use sha2::{Digest, Sha256};

use crate::slug::Slug;
use crate::web_url::BaseUrl;

/// 40 lowercase hex characters of SHA-256 over a versioned, unambiguous input
/// (`affine-authentik/client-id/v1`, the normalized AFFiNE URL and the slug, newline-
/// separated). The same AFFiNE URL written with or without trailing slash or default
/// port gives the same id. Changing this function changes every user's client id:
/// don't, or bump the `v1`.
pub fn derive_client_id(affine_url: &BaseUrl, slug: &Slug) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"affine-authentik/client-id/v1\n");
    hasher.update(affine_url.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(slug.as_str().as_bytes());
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(40);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(url: &str, slug: &str) -> String {
        derive_client_id(
            &BaseUrl::parse("u", url).unwrap(),
            &Slug::parse("s", slug).unwrap(),
        )
    }

    #[test]
    fn is_40_lowercase_hex_and_stable_across_url_spellings() {
        let a = id("https://affine.example.com", "affine");
        assert_eq!(a.len(), 40);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert_eq!(a, id("https://AFFINE.example.com:443/", "affine"));
    }

    #[test]
    fn differs_by_url_and_by_slug() {
        let a = id("https://affine.example.com", "affine");
        assert_ne!(a, id("https://affine2.example.com", "affine"));
        assert_ne!(a, id("https://affine.example.com", "affine2"));
        assert_ne!(a, id("https://affine.example.com/sub", "affine"));
    }
}
