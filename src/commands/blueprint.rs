use std::io::Write;

use crate::ansible::params;
use crate::atomic_file::{self, WriteOptions};
use crate::blueprint::options::{EmailVerified, DEFAULT_SECRET_ENV};
use crate::blueprint::{self, BlueprintOptions, SecretChoice, SecretSource};
use crate::cli::BlueprintArgs;
use crate::commands::warn;
use crate::error::{Error, Result};
use crate::secret::{Redactor, Secret};

pub fn options_from_args(args: &BlueprintArgs) -> Result<BlueprintOptions> {
    check_flags(args)?;
    let mut o = BlueprintOptions::new(&args.affine_url);
    o.slug = args.slug.clone();
    o.name = args.name.clone();
    o.provider_name = args.provider_name.clone();
    o.launch_url = args.launch_url.clone();
    o.client_id = args.client_id.clone();
    o.client_secret = if let Some(var) = &args.secret.client_secret_env {
        SecretChoice::Env(var.clone())
    } else if let Some(path) = &args.secret.client_secret_file {
        SecretChoice::File(path.clone())
    } else if args.secret.inline_client_secret {
        SecretChoice::Inline(Secret::new(
            std::env::var(DEFAULT_SECRET_ENV).unwrap_or_default(),
        ))
    } else {
        SecretChoice::Env(DEFAULT_SECRET_ENV.into())
    };
    o.authorization_flow = args.authorization_flow.clone();
    o.invalidation_flow = args.invalidation_flow.clone();
    o.signing_key = args.signing_key.clone();
    o.extra_scopes = args.scopes.clone();
    o.group = args.group.clone();
    o.authentik_version = args.authentik_version.clone();
    o.template = args.template.clone();
    o.email_verified = EmailVerified::parse("--email-verified", &args.email_verified)?;
    Ok(o)
}

/// The modules' rule for text, for the flags: no control character, no megabyte.
fn check_flags(args: &BlueprintArgs) -> Result<()> {
    let one = |flag: &str, value: Option<&str>| match value {
        Some(v) => params::check_text(flag, v),
        None => Ok(()),
    };
    one("--affine-url", Some(&args.affine_url))?;
    one("--slug", Some(&args.slug))?;
    one("--name", Some(&args.name))?;
    one("--provider-name", args.provider_name.as_deref())?;
    one("--launch-url", args.launch_url.as_deref())?;
    one("--client-id", args.client_id.as_deref())?;
    one(
        "--client-secret-env",
        args.secret.client_secret_env.as_deref(),
    )?;
    one(
        "--client-secret-file",
        args.secret.client_secret_file.as_deref(),
    )?;
    one("--authorization-flow", Some(&args.authorization_flow))?;
    one("--invalidation-flow", Some(&args.invalidation_flow))?;
    one("--signing-key", Some(&args.signing_key))?;
    one("--group", args.group.as_deref())?;
    one("--authentik-version", Some(&args.authentik_version))?;
    for scope in &args.scopes {
        one("--scope", Some(scope))?;
    }
    if args.secret.inline_client_secret {
        let secret = std::env::var(DEFAULT_SECRET_ENV).unwrap_or_default();
        one(DEFAULT_SECRET_ENV, Some(&secret))?;
    }
    Ok(())
}

pub fn run(args: &BlueprintArgs) -> Result<()> {
    let options = options_from_args(args)?;
    // Diagnostics never show an inline secret, even one that also occurs in a URL or name.
    let mut redactor = Redactor::new();
    if let SecretChoice::Inline(secret) = &options.client_secret {
        redactor.add(secret);
    }
    let rendered = blueprint::build(&options).map_err(|e| match e {
        Error::Usage(m) => Error::Usage(redactor.text(&m)),
        Error::Failed(m) => Error::Failed(redactor.text(&m)),
    })?;
    for w in &rendered.warnings {
        warn(&redactor.text(w));
    }
    match &args.output {
        Some(path) => {
            // A file holding a literal secret is readable by its owner only, a new one and
            // one already in place alike.
            let secret = matches!(rendered.spec.client_secret, SecretSource::Inline(_));
            let written = atomic_file::write(
                path,
                rendered.yaml.as_bytes(),
                WriteOptions {
                    secret,
                    replace_read_only: args.force,
                    ..WriteOptions::default()
                },
            )
            .map_err(|e| match e {
                // `-o /dev/stdout` and the like: the way to print is no -o at all.
                Error::Failed(m) if m.contains("not a regular file") => {
                    Error::Failed(format!("{m}; to print the blueprint, leave out -o"))
                }
                other => other,
            })?;
            for w in &written.warnings {
                warn(&redactor.text(w));
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(rendered.yaml.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| Error::failed(format!("cannot write to standard output: {e}")))?;
        }
    }
    Ok(())
}
