//! One file per subcommand: each turns parsed flags into options, runs the work, and
//! writes data to stdout and diagnostics to stderr.

pub mod apply;
pub mod blueprint;
pub mod install_modules;
pub mod oidc_config;
pub mod verify;

/// Diagnostics go to stderr, one line each, so stdout stays clean data.
pub fn warn(message: &str) {
    eprintln!("warning: {message}");
}
