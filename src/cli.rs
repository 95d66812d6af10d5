//! Command-line definitions (clap) and nothing else: meaning lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::authentik_version::DEFAULT_VERSION;
use crate::blueprint::options::{
    EmailVerified, DEFAULT_AUTHORIZATION_FLOW, DEFAULT_INVALIDATION_FLOW, DEFAULT_NAME,
    DEFAULT_SIGNING_KEY, DEFAULT_SLUG,
};

/// `affine-authentik 0.1.0 (abc1234)`: the commit (build.rs) tells copies of a static binary
/// apart; "unknown" when built outside a git checkout, `-dirty` from a changed one.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("AFFINE_AUTHENTIK_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "affine-authentik",
    version = VERSION,
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
        affine-authentik blueprint --affine-url https://affine.example.com \\\n      \
        --authentik-version 2024.8.4 -o affine.yaml\n  \
        affine-authentik blueprint --affine-url https://affine.example.com \\\n      \
        --group affine-users --client-secret-file /run/secrets/affine\n\n\
        The client secret never goes on the command line: by default the blueprint says\n\
        `client_secret: !Env AFFINE_OIDC_CLIENT_SECRET` and authentik reads its own environment.")]
    Blueprint(BlueprintArgs),

    /// Print the JSON object for AFFiNE's Admin Panel > Settings > OAuth > OIDC.
    #[command(after_help = "Examples:\n  \
        affine-authentik oidc-config --authentik-url https://auth.example.com \\\n      \
        --affine-url https://affine.example.com\n  \
        affine-authentik oidc-config --client-id abc \\\n      \
        --issuer https://auth.example.com/application/o/affine/\n\n\
        The client secret comes from the environment variable AFFINE_OIDC_CLIENT_SECRET; without it\n\
        the output holds a placeholder to replace.")]
    OidcConfig(OidcConfigArgs),

    /// Set AFFiNE's OIDC provider now (the affine_oidc module's reconcile, for a shell).
    #[command(after_help = "Examples:\n  \
        export AFFINE_ADMIN_PASSWORD AFFINE_OIDC_CLIENT_SECRET  # secrets: env only\n  \
        affine-authentik apply --affine-url https://affine.example.com \\\n      \
        --admin-email admin@example.com --authentik-url https://auth.example.com \\\n      \
        --check --diff\n  \
        affine-authentik apply --config-file ~/.affine/self-host/config/config.json \\\n      \
        --authentik-url https://auth.example.com --client-id affine\n\n\
        Secrets: AFFINE_ADMIN_PASSWORD or AFFINE_SESSION_TOKEN, and AFFINE_OIDC_CLIENT_SECRET.")]
    Apply(ApplyArgs),

    /// Check the whole login path (discovery, issuer, AFFiNE, authentik) without a browser.
    #[command(after_help = "Examples:\n  \
        affine-authentik verify --affine-url https://affine.example.com \\\n      \
        --authentik-url https://auth.example.com\n  \
        affine-authentik verify --json --authentik-token-file /run/secrets/authentik \\\n      \
        --affine-url https://affine.example.com --authentik-url https://auth.example.com\n\n\
        Exit status 0 only when no check fails (warnings and skips do not). Every check prints a line;\n\
        one that cannot run says what it needs. Secrets only from the environment, never flags:\n\
        - authentik's provider: AUTHENTIK_TOKEN (or --authentik-token-file) with --authentik-url;\n\
        - AFFiNE's stored setting: AFFINE_ADMIN_EMAIL + AFFINE_ADMIN_PASSWORD, or AFFINE_SESSION_TOKEN;\n\
        - the client secret on both ends: both of the above.")]
    Verify(VerifyArgs),

    /// Install the Ansible modules (affine_oidc, authentik_blueprint) and their docs into DIR.
    #[command(after_help = "Examples:\n  \
        affine-authentik install-modules ./library\n  \
        ansible-doc -M ./library affine_oidc")]
    InstallModules {
        /// An Ansible library directory (created if missing), e.g. `library/` beside a playbook.
        dir: std::path::PathBuf,
    },

    /// Run as an Ansible module on an args file (dispatching on `_ansible_module_name`).
    #[command(hide = true)]
    Module { args_file: std::path::PathBuf },

    /// Shell completions and man pages from these definitions, for packagers
    /// (scripts/release.sh puts them in dist/). Hidden: not a task of an AFFiNE operator.
    #[command(hide = true, subcommand)]
    Generate(GenerateTarget),
}

#[derive(Debug, Subcommand)]
pub enum GenerateTarget {
    /// Print the completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (affine-authentik.1 and one per subcommand) into DIR, or print
    /// affine-authentik.1 on stdout without DIR.
    Man { dir: Option<PathBuf> },
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

    /// Name of the OAuth2 provider, its identifier in the blueprint
    /// [default: "Provider for AFFiNE", or "Provider for AFFiNE (<slug>)" for another slug].
    #[arg(long, value_name = "NAME")]
    pub provider_name: Option<String>,

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

    /// A scope to grant besides openid, email and profile (which AFFiNE always asks for), by
    /// authentik's managed scope mapping (repeat).
    #[arg(long = "scope", value_name = "NAME")]
    pub scopes: Vec<String>,

    /// What the email scope says in email_verified: `true` (the blueprint's own mapping on
    /// authentik 2025.10+, whose managed one says false, which AFFiNE 0.25.7+ refuses),
    /// `attribute` (the user's attribute email_verified) or `authentik` (the managed mapping).
    #[arg(long, value_name = "MODE", default_value = "true",
          value_parser = clap::builder::PossibleValuesParser::new(EmailVerified::NAMES))]
    pub email_verified: String,

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

    /// With -o: replace FILE even when it is read-only, as `cp -f` does (it stays read-only).
    #[arg(short, long, requires = "output")]
    pub force: bool,
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
    #[command(flatten)]
    pub oidc: OidcClientArgs,

    /// AFFiNE's URL, to derive the default client id.
    #[arg(long, env = "AFFINE_URL", value_name = "URL")]
    pub affine_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// AFFiNE's base URL.
    #[arg(long, env = "AFFINE_URL", value_name = "URL")]
    pub affine_url: Option<String>,

    /// An AFFiNE administrator's e-mail (password from AFFINE_ADMIN_PASSWORD).
    #[arg(long, env = "AFFINE_ADMIN_EMAIL", value_name = "EMAIL")]
    pub admin_email: Option<String>,

    /// Edit AFFiNE's config.json instead of using the API.
    #[arg(long, value_name = "PATH")]
    pub config_file: Option<String>,

    /// With --config-file: keep a timestamped copy before changing it.
    #[arg(long)]
    pub backup: bool,

    /// With --config-file: replace the file even when it is read-only (it stays read-only).
    #[arg(short, long, requires = "config_file")]
    pub force: bool,

    #[command(flatten)]
    pub oidc: OidcClientArgs,

    /// An `args` entry, KEY=VALUE (repeat): scope, claim_id, claim_email, claim_name, claim_email_verified.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,

    /// Remove the provider (AFFiNE's empty defaults) instead of setting it.
    #[arg(long)]
    pub absent: bool,

    #[command(flatten)]
    pub http: HttpArgs,

    /// Wait until AFFiNE lists OIDC among its login providers, up to SECONDS (bare --wait: 120);
    /// on AFFiNE 0.22-0.26 an unregistered OIDC is saved again so that AFFiNE retries discovery.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "120")]
    pub wait: Option<u64>,

    /// Show what would change; write nothing.
    #[arg(long)]
    pub check: bool,

    /// Show the value before and after (secrets masked).
    #[arg(long)]
    pub diff: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// AFFiNE's public URL.
    #[arg(long, env = "AFFINE_URL", value_name = "URL")]
    pub affine_url: String,

    #[command(flatten)]
    pub oidc: OidcClientArgs,

    /// A file holding an authentik API token (else env AUTHENTIK_TOKEN), for the authentik checks.
    #[arg(long, value_name = "PATH")]
    pub authentik_token_file: Option<PathBuf>,

    /// Log in as this authentik user, as a browser would, and name the first step that
    /// fails. The password comes from env AUTHENTIK_LOGIN_PASSWORD or --login-password-file.
    /// A first login creates the user in AFFiNE: use a dedicated test user.
    #[arg(long, value_name = "USERNAME")]
    pub login: Option<String>,

    /// A file holding the --login user's password (else env AUTHENTIK_LOGIN_PASSWORD).
    #[arg(long, value_name = "PATH", requires = "login")]
    pub login_password_file: Option<PathBuf>,

    /// Machine-readable output: one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub http: HttpArgs,
}

/// Which issuer and client id: shared by `oidc-config`, `apply` and `verify`.
#[derive(Debug, Args)]
pub struct OidcClientArgs {
    /// The issuer URL as-is (takes precedence over --authentik-url + --slug).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// authentik's URL; with --slug gives the issuer <URL>/application/o/<slug>/.
    #[arg(long, env = "AUTHENTIK_URL", value_name = "URL")]
    pub authentik_url: Option<String>,

    /// authentik application slug [default: the one in --issuer's /application/o/<slug>/,
    /// else affine].
    #[arg(long)]
    pub slug: Option<String>,

    /// OAuth2 client id [default: derived from the AFFiNE URL and the slug, as `blueprint` does].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
}

/// TLS and timeout flags, as the modules' `validate_certs`, `ca_path` and `timeout`.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Do not verify TLS certificates (test servers only).
    #[arg(long)]
    pub insecure: bool,

    /// PEM file of CA certificates to trust.
    #[arg(long, value_name = "PATH")]
    pub ca_path: Option<PathBuf>,

    /// Seconds per HTTP request.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub timeout: u64,
}
