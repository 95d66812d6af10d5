//! Command-line definitions (clap) and nothing else: meaning lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::authentik_version::DEFAULT_VERSION;
use crate::blueprint::options::{
    DEFAULT_AUTHORIZATION_FLOW, DEFAULT_INVALIDATION_FLOW, DEFAULT_NAME, DEFAULT_PROVIDER_NAME,
    DEFAULT_SIGNING_KEY, DEFAULT_SLUG,
};

#[derive(Debug, Parser)]
#[command(
    name = "affine-authentik",
    version,
    about = "Wire a self-hosted AFFiNE to authentik single sign-on (OIDC)",
    long_about = "Wire a self-hosted AFFiNE to authentik single sign-on (OIDC).\n\n\
        Generates the authentik blueprint (provider + application), sets AFFiNE's OIDC \
        configuration, and verifies the login path. Also an Ansible module: installed as \
        `affine_oidc` or `authentik_blueprint` (see `install-modules`).",
    after_help = "Examples:\n  \
        affine-authentik blueprint --affine-url https://affine.example.com > affine.yaml\n  \
        affine-authentik oidc-config --authentik-url https://auth.example.com --affine-url https://affine.example.com\n  \
        affine-authentik install-modules ./library"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print (or write with -o) the authentik blueprint for AFFiNE.
    #[command(after_help = "Examples:\n  \
        affine-authentik blueprint --affine-url https://affine.example.com\n  \
        affine-authentik blueprint --affine-url https://affine.example.com --authentik-version 2024.8.4 -o affine.yaml\n  \
        affine-authentik blueprint --affine-url https://affine.example.com --group affine-users --client-secret-file /run/secrets/affine\n\n\
        The client secret never goes on the command line: by default the blueprint says\n\
        `client_secret: !Env AFFINE_OIDC_CLIENT_SECRET` and authentik reads its own environment.")]
    Blueprint(BlueprintArgs),

    /// Print the JSON object for AFFiNE's Admin Panel > Settings > OAuth > OIDC.
    #[command(after_help = "Examples:\n  \
        affine-authentik oidc-config --authentik-url https://auth.example.com --affine-url https://affine.example.com\n  \
        AFFINE_OIDC_CLIENT_SECRET=... affine-authentik oidc-config --issuer https://auth.example.com/application/o/affine/ --client-id abc\n\n\
        The client secret comes from the environment variable AFFINE_OIDC_CLIENT_SECRET; without it\n\
        the output holds a placeholder to replace.")]
    OidcConfig(OidcConfigArgs),
}

#[derive(Debug, Args)]
pub struct BlueprintArgs {
    /// AFFiNE's public URL (may carry a sub-path); the callback is <URL>/oauth/callback.
    #[arg(long, env = "AFFINE_URL", value_name = "URL")]
    pub affine_url: String,

    /// authentik application slug; the issuer becomes <authentik>/application/o/<slug>/.
    #[arg(long, default_value = DEFAULT_SLUG)]
    pub slug: String,

    /// Application name shown in authentik's library.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,

    /// Name of the OAuth2 provider (its identifier in the blueprint).
    #[arg(long, default_value = DEFAULT_PROVIDER_NAME)]
    pub provider_name: String,

    /// Launch URL in authentik's library [default: the AFFiNE URL].
    #[arg(long, value_name = "URL")]
    pub launch_url: Option<String>,

    /// OAuth2 client id [default: derived with SHA-256 from the AFFiNE URL and the slug].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    #[command(flatten)]
    pub secret: SecretArgs,

    /// Slug of the authorization flow.
    #[arg(long, default_value = DEFAULT_AUTHORIZATION_FLOW, value_name = "SLUG")]
    pub authorization_flow: String,

    /// Slug of the invalidation flow (authentik 2024.10+).
    #[arg(long, default_value = DEFAULT_INVALIDATION_FLOW, value_name = "SLUG")]
    pub invalidation_flow: String,

    /// Name of the certificate-key pair that signs tokens.
    #[arg(long, default_value = DEFAULT_SIGNING_KEY, value_name = "NAME")]
    pub signing_key: String,

    /// Scope to grant, by authentik's managed scope mapping (repeat) [default: openid, email, profile].
    #[arg(long = "scope", value_name = "NAME")]
    pub scopes: Vec<String>,

    /// Only members of this authentik group may use AFFiNE (adds a policy binding).
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,

    /// Target authentik version, YEAR.MONTH[.PATCH].
    #[arg(long, default_value = DEFAULT_VERSION, value_name = "VERSION")]
    pub authentik_version: String,

    /// Your own minijinja template instead of the built-in one.
    #[arg(long, value_name = "PATH")]
    pub template: Option<PathBuf>,

    /// Write to FILE (atomically) instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct SecretArgs {
    /// Blueprint reads the secret from authentik's environment variable VAR (`!Env VAR`)
    /// [default: AFFINE_OIDC_CLIENT_SECRET].
    #[arg(long, value_name = "VAR")]
    pub client_secret_env: Option<String>,

    /// Blueprint reads the secret from PATH inside authentik's container (`!File`, 2025.8+).
    #[arg(long, value_name = "PATH")]
    pub client_secret_file: Option<String>,

    /// Write the literal secret, taken from this process's AFFINE_OIDC_CLIENT_SECRET.
    #[arg(long)]
    pub inline_client_secret: bool,
}

#[derive(Debug, Args)]
pub struct OidcConfigArgs {
    /// The issuer URL as-is (takes precedence over --authentik-url + --slug).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// authentik's URL; with --slug gives the issuer <URL>/application/o/<slug>/.
    #[arg(long, env = "AUTHENTIK_URL", value_name = "URL")]
    pub authentik_url: Option<String>,

    /// authentik application slug.
    #[arg(long, default_value = DEFAULT_SLUG)]
    pub slug: String,

    /// OAuth2 client id [default: derived from --affine-url and --slug, as `blueprint` does].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// AFFiNE's URL, to derive the default client id.
    #[arg(long, env = "AFFINE_URL", value_name = "URL")]
    pub affine_url: Option<String>,
}
