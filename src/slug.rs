//! authentik application slugs.

use crate::error::{Error, Result};

/// Slugs authentik refuses for applications: they collide with its OAuth2 endpoints
/// under `/application/o/`.
pub const RESERVED_SLUGS: [&str; 6] = [
    "authorize",
    "token",
    "device",
    "userinfo",
    "introspect",
    "revoke",
];

/// authentik's `SlugField` length (Django's default `max_length`).
pub const MAX_SLUG_LEN: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(what: &str, input: &str) -> Result<Self> {
        if input.is_empty() {
            return Err(Error::usage(format!("{what} is empty")));
        }
        // authentik's slug fields hold at most 50 characters; checked first, so a pasted
        // megabyte is not quoted by the messages below.
        if input.len() > MAX_SLUG_LEN {
            return Err(Error::usage(format!(
                "{what} is {} characters long; authentik takes a slug of at most {MAX_SLUG_LEN}",
                input.chars().count()
            )));
        }
        if let Some(bad) = input
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(Error::usage(format!(
                "{what} {input:?} has the character {bad:?}; a slug may hold only letters, digits, '-' and '_'"
            )));
        }
        if RESERVED_SLUGS.contains(&input) {
            return Err(Error::usage(format!(
                "{what} {input:?} is reserved by authentik (reserved: {})",
                RESERVED_SLUGS.join(", ")
            )));
        }
        Ok(Slug(input.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_letters_digits_dash_underscore() {
        assert_eq!(
            Slug::parse("--slug", "AFFiNE_prod-2").unwrap().as_str(),
            "AFFiNE_prod-2"
        );
    }

    #[test]
    fn rejects_other_characters_empty_and_reserved() {
        for bad in ["", "a b", "a/b", "ä", "a.b", "token", "authorize", "revoke"] {
            assert!(Slug::parse("--slug", bad).is_err(), "{bad:?}");
        }
    }
}
