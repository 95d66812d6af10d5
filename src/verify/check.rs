//! One line of verify's report: which link of the chain, how it stands, what was seen, and
//! for a failure or a warning what to change where.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Warn,
    /// The check could not run (what it needs is missing); the detail says how to enable it.
    Skip,
}

impl Status {
    /// The word that starts the check's line in the human output.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Warn => "WARN",
            Status::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(id: &'static str, detail: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn skip(id: &'static str, detail: impl Into<String>) -> Self {
        Check {
            id,
            status: Status::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    /// The same check as a SKIP for each id, one reason: the links after a broken one.
    pub fn skip_all(ids: &[&'static str], detail: &str) -> Vec<Check> {
        ids.iter().map(|id| Check::skip(id, detail)).collect()
    }
}

/// No check failed (warnings and skips do not fail a run).
pub fn all_passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}
