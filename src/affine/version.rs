//! AFFiNE server versions and what each one offers. The only place that compares them.

use std::fmt;

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
}
