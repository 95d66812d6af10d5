//! `generate completions SHELL` and `generate man [DIR]`: made from the clap definitions at
//! run time, so a completion or a man page can never name a flag the binary lacks.

use std::io::Write;

use clap::{Command, CommandFactory};

use crate::cli::{Cli, GenerateTarget, VERSION};
use crate::error::{Error, Result};

const BIN_NAME: &str = "affine-authentik";

pub fn run(target: &GenerateTarget) -> Result<()> {
    let cmd = Cli::command();
    match target {
        GenerateTarget::Completions { shell } => {
            let mut out = Vec::new();
            let mut visible = without_hidden_subcommands(&cmd);
            clap_complete::generate(*shell, &mut visible, BIN_NAME, &mut out);
            if *shell == clap_complete::Shell::Bash {
                out = fix_bash_states(&out);
            }
            write_stdout(&out)
        }
        GenerateTarget::Man { dir: None } => {
            let mut out = Vec::new();
            // As clap_mangen::generate_to does: no page exists for clap's `help` subcommand.
            clap_mangen::Man::new(cmd.disable_help_subcommand(true))
                .render(&mut out)
                .map_err(|e| Error::failed(format!("cannot render the man page: {e}")))?;
            write_stdout(&out)
        }
        GenerateTarget::Man { dir: Some(dir) } => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::failed(format!("cannot create {}: {e}", dir.display())))?;
            // One page per visible subcommand (affine-authentik-blueprint.1, ...), as git
            // and cargo ship theirs; hidden subcommands get none.
            clap_mangen::generate_to(cmd, dir).map_err(|e| {
                Error::failed(format!("cannot write man pages to {}: {e}", dir.display()))
            })?;
            let mut pages: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| Error::failed(format!("cannot list {}: {e}", dir.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(BIN_NAME) && n.ends_with(".1"))
                })
                .collect();
            pages.sort();
            for page in pages {
                println!("{}", page.display());
            }
            Ok(())
        }
    }
}

/// The root command with only its visible subcommands. clap_complete (4.6) offers hidden
/// subcommands too, which would put `module` and `generate` under every user's Tab; clap
/// cannot remove a subcommand, so the root is rebuilt around the visible ones (it has no
/// arguments of its own besides --help and --version, which clap adds again).
fn without_hidden_subcommands(cmd: &Command) -> Command {
    let visible: Vec<Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut root = Command::new(BIN_NAME).version(VERSION);
    if let Some(about) = cmd.get_about() {
        root = root.about(about.clone());
    }
    root.subcommands(visible)
}

/// clap_complete 4.6's bash script names a subcommand's state two ways when the binary's
/// name has a hyphen (clap-rs/clap#6421, open): the loop that reads the words sets
/// `affine__authentik__subcmd__blueprint`, the `case` arms wait for
/// `affine__subcmd__authentik__subcmd__blueprint`, so no subcommand's flags ever complete.
/// The arms are respelled the loop's way; tests/generate_cli.rs runs the script in bash.
fn fix_bash_states(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace(
            "affine__subcmd__authentik__subcmd__",
            "affine__authentik__subcmd__",
        )
        .into_bytes()
}

/// One write, and a closed pipe (`| head`) is an error message rather than a panic.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::failed(format!("cannot write to standard output: {e}")))
}
