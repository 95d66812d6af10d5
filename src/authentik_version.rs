//! authentik versions and what each one needs from a blueprint or accepts over its API.
//! The only place in the project that compares authentik versions.

use std::fmt;

use crate::error::{Error, Result};

/// Release series this tool knows (year.month). An unknown version older than the newest
/// of these is refused rather than guessed at: a wrong guess yields a blueprint authentik
/// rejects or, worse, imports into a provider where every login fails. A version NEWER than
/// the newest is taken with the newest rules and a warning ([`AuthentikVersion::newer_warning`]):
/// authentik ships a release every two or three months, and refusing each one would break
/// every user's playbook on the day they upgrade, while the newest rules are what a new
/// release most likely still wants.
pub const KNOWN_SERIES: [(u16, u8); 13] = [
    (2024, 6),
    (2024, 8),
    (2024, 10),
    (2024, 12),
    (2025, 2),
    (2025, 4),
    (2025, 6),
    (2025, 8),
    (2025, 10),
    (2025, 12),
    (2026, 2),
    (2026, 5),
    (2026, 8),
];

/// The default target: the newest supported release.
pub const DEFAULT_VERSION: &str = "2026.8";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuthentikVersion {
    pub year: u16,
    pub month: u8,
    pub patch: u16,
}

impl AuthentikVersion {
    /// Parses `X.Y` or `X.Y.Z` (a leading `v` and a `-rc1` style suffix are tolerated).
    /// `X.Y` means `X.Y.0`.
    pub fn parse(input: &str) -> Result<Self> {
        let trimmed = input.trim().trim_start_matches('v');
        let core = trimmed.split(['-', '+']).next().unwrap_or_default();
        let parts: Vec<&str> = core.split('.').collect();
        let bad = || {
            Error::usage(format!(
                "unknown authentik version {input:?}: give YEAR.MONTH[.PATCH], one of {} or a newer release",
                supported_list()
            ))
        };
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        let year: u16 = parts[0].parse().map_err(|_| bad())?;
        let month: u8 = parts[1].parse().map_err(|_| bad())?;
        let patch: u16 = match parts.get(2) {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 0,
        };
        let newest = KNOWN_SERIES[KNOWN_SERIES.len() - 1];
        let newer_than_known = (year, month) > newest && (1..=12).contains(&month);
        if !KNOWN_SERIES.contains(&(year, month)) && !newer_than_known {
            return Err(bad());
        }
        Ok(AuthentikVersion { year, month, patch })
    }

    /// Whether this is a release after the newest series the tool knows.
    pub fn is_newer_than_known(self) -> bool {
        let (year, month) = KNOWN_SERIES[KNOWN_SERIES.len() - 1];
        (self.year, self.month) > (year, month)
    }

    /// The one warning for a version newer than the tool knows, naming it.
    pub fn newer_warning(self) -> Option<String> {
        let (year, month) = KNOWN_SERIES[KNOWN_SERIES.len() - 1];
        self.is_newer_than_known().then(|| {
            format!(
                "authentik {self} is newer than this tool knows (up to {year}.{month}): the blueprint follows {year}.{month}'s rules; check the release notes of authentik {}.{} for changes to OAuth2 providers and update affine-authentik",
                self.year, self.month
            )
        })
    }

    const fn at(year: u16, month: u8, patch: u16) -> Self {
        AuthentikVersion { year, month, patch }
    }

    /// `redirect_uris` became a list of `{matching_mode, url}` in 2024.8.5 and, on the
    /// 2024.10 branch, in 2024.10.3; before that it is a newline-separated regex string.
    pub fn redirect_uris_as_list(self) -> bool {
        match (self.year, self.month) {
            (2024, 8) => self.patch >= 5,
            (2024, 10) => self.patch >= 3,
            _ => self >= Self::at(2024, 12, 0),
        }
    }

    /// `invalidation_flow` is required on providers from 2024.10.
    pub fn requires_invalidation_flow(self) -> bool {
        self >= Self::at(2024, 10, 0)
    }

    /// From 2026.5 a blueprint-created provider without `grant_types` gets `[]`, and every
    /// login fails; earlier versions don't know the field.
    pub fn requires_grant_types(self) -> bool {
        self >= Self::at(2026, 5, 0)
    }

    /// From 2025.10 authentik's managed `email` scope mapping sends `email_verified: false`
    /// (true before; authentik's 2025.10 release notes), which AFFiNE 0.25.7+ refuses.
    pub fn managed_email_mapping_sends_unverified(self) -> bool {
        self >= Self::at(2025, 10, 0)
    }

    /// The `!File` tag exists from 2025.8.
    pub fn supports_file_tag(self) -> bool {
        self >= Self::at(2025, 8, 0)
    }

    /// Where scope mappings are listed: property mappings moved under `provider/` in 2024.8.
    pub fn scope_mappings_endpoint(self) -> &'static str {
        if self >= Self::at(2024, 8, 0) {
            "/api/v3/propertymappings/provider/scope/"
        } else {
            "/api/v3/propertymappings/scope/"
        }
    }

    /// `2024.8` and `2024.10` without a patch are ambiguous: the redirect URI format
    /// changed inside those series. The caller warns.
    pub fn ambiguity_warning(input: &str, parsed: Self) -> Option<String> {
        let has_patch = input
            .trim()
            .trim_start_matches('v')
            .split(['-', '+'])
            .next()?
            .split('.')
            .count()
            == 3;
        if has_patch || !matches!((parsed.year, parsed.month), (2024, 8) | (2024, 10)) {
            return None;
        }
        let changed_in = if parsed.month == 8 {
            "2024.8.5"
        } else {
            "2024.10.3"
        };
        Some(format!(
            "authentik version {input} taken as {parsed}; the redirect_uris format changed in {changed_in}, so give the full version (e.g. {changed_in})"
        ))
    }
}

impl fmt::Display for AuthentikVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.year, self.month, self.patch)
    }
}

fn supported_list() -> String {
    KNOWN_SERIES
        .iter()
        .map(|(y, m)| format!("{y}.{m}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> AuthentikVersion {
        AuthentikVersion::parse(s).unwrap()
    }

    #[test]
    fn redirect_uri_format_follows_the_two_backported_cutovers() {
        assert!(!v("2024.6.4").redirect_uris_as_list());
        assert!(!v("2024.8.4").redirect_uris_as_list());
        assert!(v("2024.8.5").redirect_uris_as_list());
        assert!(!v("2024.10.0").redirect_uris_as_list());
        assert!(!v("2024.10.2").redirect_uris_as_list());
        assert!(v("2024.10.3").redirect_uris_as_list());
        assert!(v("2024.12.0").redirect_uris_as_list());
        assert!(v("2026.8").redirect_uris_as_list());
    }

    #[test]
    fn invalidation_flow_from_2024_10_grant_types_from_2026_5_file_tag_from_2025_8() {
        assert!(!v("2024.8.5").requires_invalidation_flow());
        assert!(v("2024.10.0").requires_invalidation_flow());
        assert!(!v("2026.2.3").requires_grant_types());
        assert!(v("2026.5.0").requires_grant_types());
        assert!(!v("2025.6.4").supports_file_tag());
        assert!(v("2025.8.0").supports_file_tag());
    }

    #[test]
    fn unknown_and_malformed_versions_are_refused() {
        for bad in [
            "",
            "2026",
            "2026.3",
            "2023.10.1",
            "2024.1",
            "2027.13",
            "2027.0",
            "latest",
            "2026.8.x",
            "1.2.3.4",
        ] {
            assert!(AuthentikVersion::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(v("v2025.10.1-rc1"), AuthentikVersion::at(2025, 10, 1));
    }

    #[test]
    fn a_version_newer_than_known_gets_the_newest_rules_and_one_warning() {
        let next = v("2026.11.0-rc1");
        assert_eq!(next, AuthentikVersion::at(2026, 11, 0));
        assert!(next.requires_grant_types() && next.redirect_uris_as_list());
        let warning = next.newer_warning().expect("a warning");
        assert!(
            warning.contains("2026.11.0") && warning.contains("2026.8"),
            "{warning}"
        );
        assert!(v("2027.2").newer_warning().is_some());
        assert!(v("2026.8.6").newer_warning().is_none());
        assert!(v("2024.6").newer_warning().is_none());
    }

    #[test]
    fn short_versions_in_the_split_series_warn() {
        assert!(AuthentikVersion::ambiguity_warning("2024.10", v("2024.10")).is_some());
        assert!(AuthentikVersion::ambiguity_warning("2024.10.3", v("2024.10.3")).is_none());
        assert!(AuthentikVersion::ambiguity_warning("2025.10", v("2025.10")).is_none());
    }
}
