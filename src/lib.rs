//! affine-authentik: wire a self-hosted AFFiNE to authentik single sign-on.
//!
//! Data flow: inputs (CLI flags or Ansible module args) → validated spec → desired state →
//! compare with current state (AFFiNE API, config file, authentik) → plan → apply or report.
//! Each outside contract is known in one place: `affine/` (AFFiNE), `authentik/`
//! (authentik's API), `authentik_version` (blueprint version rules), `ansible/` (the
//! binary-module protocol).

pub mod affine;
pub mod atomic_file;
pub mod authentik_version;
pub mod blueprint;
pub mod cli;
pub mod client_id;
pub mod commands;
pub mod error;
pub mod exit_codes;
pub mod names;
pub mod secret;
pub mod slug;
pub mod web_url;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit_codes::ExitCode;

/// Entry point for the command-line mode.
pub fn run_cli() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Blueprint(args) => commands::blueprint::run(args),
        Command::OidcConfig(args) => commands::oidc_config::run(args),
    };
    match result {
        Ok(()) => ExitCode::Success,
        Err(e) => {
            eprintln!("affine-authentik: error: {e}");
            e.exit_code()
        }
    }
}
