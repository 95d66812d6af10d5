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
pub mod input_file;
pub mod names;
pub mod oidc_client;
pub mod oidc_setting;
pub mod secret;
pub mod slug;
pub mod verify;
pub mod web_url;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit_codes::ExitCode;

/// Entry point: an Ansible module when installed under a module's name and given one
/// argument (the args file), else the command line.
pub fn run() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // This binary, started by itself to render a user's template under a memory limit.
    if argv.len() == 2 && argv[1] == blueprint::sandbox::CHILD_ARG {
        return blueprint::sandbox::run_child();
    }
    // `library/affine_oidc --help` is a person, not Ansible: that goes to the CLI's help.
    let is_flag = argv
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with('-'));
    if argv.len() == 2 && !is_flag {
        if let Some(name) = argv[0].to_str().and_then(ansible::module_name_for_binary) {
            return ansible::protocol::run(std::path::Path::new(&argv[1]), Some(name));
        }
    }
    run_cli()
}

/// The command-line mode.
pub fn run_cli() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: data, on stdout.
            let _ = e.print();
            return ExitCode::Success;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Bare `affine-authentik`: the overview, on stderr since nothing was asked.
            eprint!("{}", e.render());
            return ExitCode::Usage;
        }
        Err(e) => {
            eprintln!("affine-authentik: error: {}", one_line_usage_error(&e));
            return ExitCode::Usage;
        }
    };
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
        Command::Module { args_file } => return ansible::protocol::run(args_file, None),
        Command::Generate(target) => commands::generate::run(target),
    };
    match result {
        Ok(()) => ExitCode::Success,
        Err(e) => {
            eprintln!("affine-authentik: error: {e}");
            e.exit_code()
        }
    }
}

/// clap's message folded into one line (its usage block and hint dropped), so every bad
/// input, ours or clap's, reads the same: one line on stderr, exit 2.
fn one_line_usage_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let text = message.join(" ");
    let text = text.strip_prefix("error: ").unwrap_or(&text).to_string();
    if matches!(
        e.kind(),
        ErrorKind::InvalidSubcommand | ErrorKind::MissingSubcommand
    ) {
        format!("{text} (see affine-authentik --help)")
    } else {
        format!("{text} (see --help)")
    }
}
