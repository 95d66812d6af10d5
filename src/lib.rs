//! affine-authentik: wire a self-hosted AFFiNE to authentik single sign-on.
//!
//! Data flow: inputs (CLI flags or Ansible module args) → validated spec → desired state →
//! compare with current state (AFFiNE API, config file, authentik) → plan → apply or report.
//! Each outside contract is known in one place: `affine/` (AFFiNE), `authentik/`
//! (authentik's API), `authentik_version` (blueprint version rules), `ansible/` (the
//! binary-module protocol).

pub mod affine;
pub mod ansible;
pub mod atomic_file;
pub mod authentik;
pub mod authentik_version;
pub mod blueprint;
pub mod cli;
pub mod client_id;
pub mod commands;
pub mod error;
pub mod exit_codes;
pub mod http;
pub mod names;
pub mod oidc_setting;
pub mod secret;
pub mod slug;
pub mod verify;
pub mod web_url;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit_codes::ExitCode;

/// Entry point: an Ansible module when installed under a module's name and given one
/// argument (the args file), else the command line.
pub fn run() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() == 2 {
        if let Some(name) = argv[0].to_str().and_then(ansible::module_name_for_binary) {
            let code = ansible::protocol::run(std::path::Path::new(&argv[1]), Some(name));
            return if code == 0 {
                ExitCode::Success
            } else {
                ExitCode::Failure
            };
        }
    }
    run_cli()
}

/// The command-line mode.
pub fn run_cli() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Blueprint(args) => commands::blueprint::run(args),
        Command::OidcConfig(args) => commands::oidc_config::run(args),
        Command::Apply(args) => commands::apply::run(args),
        Command::Verify(args) => match commands::verify::run(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::Failure,
            Err(e) => Err(e),
        },
        Command::InstallModules { dir } => commands::install_modules::run(dir),
        Command::Module { args_file } => {
            return if ansible::protocol::run(args_file, None) == 0 {
                ExitCode::Success
            } else {
                ExitCode::Failure
            };
        }
    };
    match result {
        Ok(()) => ExitCode::Success,
        Err(e) => {
            eprintln!("affine-authentik: error: {e}");
            e.exit_code()
        }
    }
}
