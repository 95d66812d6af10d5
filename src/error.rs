//! The one error type commands return. Its `Display` is the sentence a user reads on stderr.

use std::fmt;

use crate::exit_codes::ExitCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The user's input is wrong (flags, URLs, versions, templates): exit 2, nothing written.
    Usage(String),
    /// Something outside failed (network, server, file system): exit 1.
    Failed(String),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn failed(msg: impl Into<String>) -> Self {
        Error::Failed(msg.into())
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Usage(m) | Error::Failed(m) => m,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) => ExitCode::Usage,
            Error::Failed(_) => ExitCode::Failure,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

impl From<crate::web_url::UrlError> for Error {
    fn from(e: crate::web_url::UrlError) -> Self {
        Error::Usage(e.0)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
