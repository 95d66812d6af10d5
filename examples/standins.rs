//! Starts one stand-in server (see `tests/support/`) for benchmarks and manual tries, prints its
//! base URL on stdout (one line) and serves until killed.
//!
//! ```text
//! cargo run --example standins -- affine --version 0.25 --admin-email a@b --admin-password-env VAR [--port N]
//! cargo run --example standins -- authentik --version 2026.8 --token-env VAR [--port N] [--provider SLUG]...
//! ```
//! Secrets come from environment variables so they never show in a process list.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::ExitCode;

use support::affine_standin::{AffineOptions, AffineStandin};
use support::authentik_standin::{AuthentikOptions, AuthentikStandin, ProviderState};

const USAGE: &str = "usage:
  standins affine --version V --admin-email EMAIL --admin-password-env VAR [--port N]
  standins authentik --version V --token-env VAR [--port N] [--provider SLUG]...";

struct Args {
    kind: String,
    version: Option<String>,
    admin_email: Option<String>,
    admin_password_env: Option<String>,
    token_env: Option<String>,
    port: u16,
    providers: Vec<String>,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let kind = argv.next().ok_or("missing the stand-in kind")?;
    if kind != "affine" && kind != "authentik" {
        return Err(format!("unknown stand-in `{kind}`"));
    }
    let mut a = Args {
        kind,
        version: None,
        admin_email: None,
        admin_password_env: None,
        token_env: None,
        port: 0,
        providers: Vec::new(),
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--version" => a.version = Some(value()?),
            "--admin-email" => a.admin_email = Some(value()?),
            "--admin-password-env" => a.admin_password_env = Some(value()?),
            "--token-env" => a.token_env = Some(value()?),
            "--provider" => a.providers.push(value()?),
            "--port" => {
                a.port = value()?
                    .parse()
                    .map_err(|_| "--port needs a number".to_string())?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn env(var: &Option<String>, flag: &str) -> Result<String, String> {
    let var = var.as_ref().ok_or(format!("{flag} is required"))?;
    std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
}

fn run(a: Args) -> Result<(), String> {
    let version = a.version.clone().ok_or("--version is required")?;
    let announce = |url: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{url}");
        let _ = out.flush();
    };
    if a.kind == "affine" {
        let mut opts = AffineOptions::new(&version);
        opts.admin_email = a.admin_email.clone().ok_or("--admin-email is required")?;
        opts.admin_password = env(&a.admin_password_env, "--admin-password-env")?;
        let standin = AffineStandin::start_on(opts, a.port);
        announce(standin.url());
        standin.serve_forever();
    } else {
        let mut opts = AuthentikOptions::new(&version);
        opts.token = env(&a.token_env, "--token-env")?;
        let standin = AuthentikStandin::start_on(opts, a.port);
        for slug in &a.providers {
            standin.add_provider(slug, ProviderState::new(slug));
        }
        announce(standin.url());
        standin.serve_forever();
    }
    Ok(())
}

fn main() -> ExitCode {
    let asked_for_help = std::env::args()
        .skip(1)
        .any(|a| a == "--help" || a == "-h" || a == "help");
    if asked_for_help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("standins: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
