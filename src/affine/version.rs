//! AFFiNE server versions and what each one offers. The only place that compares them.
//!
//! A version newer than [`NEWEST_KNOWN`] (0.27.x) gets the newest known rules: every cut-over
//! below is "from version X on", so a newer server takes the 0.27 side of each, and
//! [`AffineVersion::newer_than_known`] words the one warning a caller shows. Refusing it
//! instead would break every playbook on the day AFFiNE releases.

use std::fmt;

/// The newest AFFiNE minor release whose behaviour this tool knows (any patch of it).
pub const NEWEST_KNOWN: AffineVersion = AffineVersion::at(27, 0);

/// AFFiNE 0.20 and older take OIDC only from their environment (no admin API). Each message
/// that meets such a server names these.
pub const OIDC_ENVIRONMENT_VARIABLES: &str = "OAUTH_OIDC_ISSUER, OAUTH_OIDC_CLIENT_ID, \
    OAUTH_OIDC_CLIENT_SECRET, OAUTH_OIDC_SCOPE and OAUTH_OIDC_CLAIM_MAP_*";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AffineVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// How `validateAppConfig` is reached on a server, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidateForm {
    Mutation,
    Query,
}

impl AffineVersion {
    /// `0.25.3`, `v0.26.0-beta.2`, `0.27.0-canary.5` (the pre-release part is ignored).
    pub fn parse(input: &str) -> Option<Self> {
        let core = input
            .trim()
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next()?.ok()?;
        let patch = match parts.next() {
            Some(p) => p.ok()?,
            None => 0,
        };
        Some(AffineVersion {
            major,
            minor,
            patch,
        })
    }

    const fn at(minor: u32, patch: u32) -> Self {
        AffineVersion {
            major: 0,
            minor,
            patch,
        }
    }

    /// `Some(warning)` when this is newer than the newest release the tool knows: it is then
    /// treated by the newest known rules, and the warning (one, naming the version) says so.
    pub fn newer_than_known(self) -> Option<String> {
        let newer = (self.major, self.minor) > (NEWEST_KNOWN.major, NEWEST_KNOWN.minor);
        newer.then(|| {
            format!(
                "AFFiNE {self} is newer than the newest version this tool knows ({}.{}.x); it is treated as {}.{}. \
                 If something fails, look for a newer affine-authentik",
                NEWEST_KNOWN.major, NEWEST_KNOWN.minor, NEWEST_KNOWN.major, NEWEST_KNOWN.minor
            )
        })
    }

    /// `appConfig` / `updateAppConfig` exist from 0.21.
    pub fn has_admin_config_api(self) -> bool {
        self >= Self::at(21, 0)
    }

    /// From 0.22 AFFiNE checks the OIDC value (issuer a URL, `args` required).
    pub fn validates_oidc_value(self) -> bool {
        self >= Self::at(22, 0)
    }

    /// Mutation in 0.22–0.25, Query (and a deprecated Mutation) in 0.26.0, Query only from
    /// 0.26.1; absent before 0.22.
    pub fn validate_form(self) -> Option<ValidateForm> {
        if self >= Self::at(26, 0) {
            Some(ValidateForm::Query)
        } else if self >= Self::at(22, 0) {
            Some(ValidateForm::Mutation)
        } else {
            None
        }
    }

    /// 0.21 registers OIDC as soon as id and secret are set; 0.22–0.26 try discovery once
    /// per change; 0.27+ retry with backoff.
    pub fn registers_after_single_discovery(self) -> bool {
        self >= Self::at(22, 0) && self < Self::at(27, 0)
    }

    /// 0.27+ refuses discovery/JWKS on loopback, private and link-local addresses.
    pub fn has_ssrf_guard(self) -> bool {
        self >= Self::at(27, 0)
    }

    /// Before 0.25.7 AFFiNE's token answer schema requires a `refresh_token` (AFFiNE issues
    /// #8752, #12774: "Validation error … refresh_token … Required"), which authentik issues
    /// only for the `offline_access` scope; from 0.25.7 it is optional.
    pub fn requires_refresh_token(self) -> bool {
        self < Self::at(25, 7)
    }

    /// 0.25.7+ refuses a login whose `email_verified` claim is false (AFFiNE PR #14061), and
    /// verifies the id_token against the JWKS.
    pub fn refuses_unverified_email(self) -> bool {
        self >= Self::at(25, 7)
    }

    /// 0.26+ requires the discovery document's `issuer` to equal the configured one.
    pub fn checks_issuer_equality(self) -> bool {
        self >= Self::at(26, 0)
    }
}

impl fmt::Display for AffineVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> AffineVersion {
        AffineVersion::parse(s).unwrap()
    }

    #[test]
    fn validate_app_config_moves_from_mutation_to_query() {
        assert_eq!(v("0.21.4").validate_form(), None);
        assert_eq!(v("0.22.0").validate_form(), Some(ValidateForm::Mutation));
        assert_eq!(v("0.25.9").validate_form(), Some(ValidateForm::Mutation));
        assert_eq!(v("0.26.0").validate_form(), Some(ValidateForm::Query));
        assert_eq!(v("0.26.1").validate_form(), Some(ValidateForm::Query));
    }

    #[test]
    fn feature_cutovers() {
        assert!(!v("0.20.9").has_admin_config_api());
        assert!(v("0.21.0").has_admin_config_api());
        assert!(!v("0.21.0").validates_oidc_value());
        assert!(v("0.26.1").registers_after_single_discovery());
        assert!(!v("0.27.0").registers_after_single_discovery());
        assert!(v("v0.27.0-beta.1").has_ssrf_guard());
        assert!(AffineVersion::parse("latest").is_none());
    }

    #[test]
    fn only_a_version_past_0_27_x_is_newer_than_known_and_it_gets_0_27s_rules() {
        for known in [
            "0.17.0",
            "0.25.3",
            "0.27.0",
            "0.27.3",
            "0.27.99",
            "v0.27.4-beta.1",
        ] {
            assert_eq!(v(known).newer_than_known(), None, "{known}");
        }
        for newer in ["0.28.0", "0.28.0-canary.1", "1.0.0"] {
            let warning = v(newer).newer_than_known().expect(newer);
            assert!(warning.contains(&v(newer).to_string()), "{warning}");
            assert!(warning.contains("0.27.x"), "{warning}");
            assert!(v(newer).has_ssrf_guard() && v(newer).checks_issuer_equality());
            assert!(!v(newer).registers_after_single_discovery());
            assert_eq!(v(newer).validate_form(), Some(ValidateForm::Query));
        }
        for malformed in ["", "0", "0.x.1", "next"] {
            assert!(AffineVersion::parse(malformed).is_none(), "{malformed:?}");
        }
    }
}
