//! Exit codes, in one place so scripts can rely on them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// A runtime failure, or (for `verify`) a check that failed.
    Failure = 1,
    /// Bad input: flags, URLs, versions, templates. Same code clap uses.
    Usage = 2,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}
