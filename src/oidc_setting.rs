//! Reconciling AFFiNE's OIDC provider setting: read the current value, compare it with the
//! wanted one as AFFiNE would, write only when they differ (never in check mode), and
//! report. The `affine_oidc` module and the `apply` command both run this.

use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::affine::client::{AffineClient, Credentials};
use crate::affine::config_file::{ConfigFile, RESTART_WARNING};
use crate::affine::oidc_value::OidcValue;
use crate::affine::version::AffineVersion;
use crate::error::{Error, Result};
use crate::http::HttpOptions;
use crate::secret::Redactor;
use crate::web_url::BaseUrl;

#[derive(Debug, Clone)]
pub enum Backend {
    /// AFFiNE 0.21+'s admin API: takes effect at once.
    Api {
        url: BaseUrl,
        credentials: Credentials,
        http: HttpOptions,
        wait: Option<Duration>,
    },
    /// AFFiNE's config.json: takes effect at the next server start. `force` replaces a
    /// read-only file too.
    File {
        path: PathBuf,
        backup: bool,
        force: bool,
    },
}

#[derive(Debug, Clone)]
pub enum Desired {
    Present(OidcValue),
    /// AFFiNE's defaults (API) or no `providers.oidc` key (file).
    Absent,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub backend: Backend,
    pub desired: Desired,
    pub check_mode: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changed: bool,
    /// The value before; `None` when nothing was set (file without the key).
    pub before: Option<OidcValue>,
    /// The value after (in check mode: what it would be).
    pub after: Option<OidcValue>,
    /// Which fields differ (`issuer`, `clientId`, `clientSecret`, `args`).
    pub changed_fields: Vec<&'static str>,
    pub msg: String,
    pub warnings: Vec<String>,
    pub server_version: Option<String>,
    pub oidc_registered: Option<bool>,
    pub backup_file: Option<PathBuf>,
    /// Set when the task fails after its write (OIDC not registered in time): the result
    /// must still say `changed` if the write happened.
    pub failure: Option<String>,
}

pub fn reconcile(request: &Request, redactor: &mut Redactor) -> Result<Outcome> {
    match &request.backend {
        Backend::Api {
            url,
            credentials,
            http,
            wait,
        } => reconcile_api(
            url,
            credentials,
            http,
            *wait,
            &request.desired,
            request.check_mode,
            redactor,
        ),
        Backend::File {
            path,
            backup,
            force,
        } => reconcile_file(path, *backup, *force, &request.desired, request.check_mode),
    }
}

fn reconcile_api(
    url: &BaseUrl,
    credentials: &Credentials,
    http: &HttpOptions,
    wait: Option<Duration>,
    desired: &Desired,
    check_mode: bool,
    redactor: &mut Redactor,
) -> Result<Outcome> {
    let mut client = AffineClient::new(url.clone(), http)?;
    // The version first: an AFFiNE without the admin API (0.20 and older) is told so, with
    // the variables it takes instead, before a rate-limited sign-in is spent on it.
    client.admin_config_version()?;
    let session = client.authenticate(credentials)?;
    redactor.add(&session);
    let state = client.read_state()?;
    let before = state
        .oidc
        .as_ref()
        .map(OidcValue::from_affine)
        .unwrap_or_else(OidcValue::empty);
    let mut version_warnings = Vec::new();
    let wanted = match desired {
        Desired::Present(v) => fit_to_version(v.clone(), state.version, &mut version_warnings),
        Desired::Absent => OidcValue::empty(),
    };
    let changed_fields = before.differences(&wanted);
    let unregistered_after_single_try = matches!(desired, Desired::Present(_))
        && changed_fields.is_empty()
        && state.version.registers_after_single_discovery()
        && !state.oidc_registered();
    // AFFiNE 0.22-0.26 try discovery once per change: when that try failed (authentik not
    // ready yet, say), only saving the value again makes AFFiNE try again. Do that when the
    // task waits for registration, i.e. when registration is part of what was asked.
    let resave = unregistered_after_single_try && wait.is_some();
    let mut outcome = Outcome {
        changed: !changed_fields.is_empty() || resave,
        before: Some(before),
        after: Some(wanted.clone()),
        changed_fields,
        server_version: Some(state.version.to_string()),
        oidc_registered: Some(state.oidc_registered()),
        ..Outcome::default()
    };
    // A newer AFFiNE than the tool knows gets the newest known rules, and one warning.
    outcome.warnings.extend(state.version.newer_than_known());
    outcome.warnings.extend(version_warnings);
    if unregistered_after_single_try && !resave {
        outcome.warnings.push(format!(
            "AFFiNE {} has not registered OIDC: its one discovery attempt for this value failed, and it retries only when the value is saved again; run with wait (--wait) to save it again and wait, or restart AFFiNE",
            state.version
        ));
    }
    if outcome.changed {
        if check_mode {
            if let Some(reason) = client.validate_oidc(state.version, &wanted)? {
                return Err(Error::failed(format!(
                    "AFFiNE {} would reject the OIDC value: {reason}",
                    state.version
                )));
            }
        } else {
            client.write_oidc(&wanted)?;
        }
    }
    outcome.msg = if resave {
        let verb = if check_mode { "would save" } else { "saved" };
        format!(
            "AFFiNE {} had not registered OIDC (its one discovery attempt for this value failed); {verb} the same value again so that it retries",
            state.version
        )
    } else {
        summary(&outcome, check_mode, "AFFiNE's OIDC provider")
    };

    if let (Some(limit), Desired::Present(_), false) = (wait, desired, check_mode) {
        if outcome.changed || !state.oidc_registered() {
            match wait_for_registration(&client, limit, state.version) {
                Ok(()) => outcome.oidc_registered = Some(true),
                Err(e) => {
                    outcome.oidc_registered = Some(false);
                    outcome.failure = Some(e.to_string());
                }
            }
        } else {
            outcome.oidc_registered = Some(true);
        }
    }
    Ok(outcome)
}

/// The scope AFFiNE before 0.25.7 must ask authentik for: with `offline_access`, so that
/// authentik's token answer holds the `refresh_token` those versions require.
pub const SCOPE_WITH_REFRESH_TOKEN: &str = "openid profile email offline_access";

/// The wanted value as this AFFiNE needs it. Before 0.25.7 AFFiNE refuses a token answer
/// without a `refresh_token` ("Validation error … refresh_token … Required", AFFiNE issues
/// #8752 and #12774), and authentik sends one only for the `offline_access` scope (which
/// the generated blueprint maps): without a scope of the user's, ask for it; with one that
/// lacks it, say so.
fn fit_to_version(
    mut wanted: OidcValue,
    version: AffineVersion,
    warnings: &mut Vec<String>,
) -> OidcValue {
    if !version.requires_refresh_token() {
        return wanted;
    }
    match wanted.args.get("scope").map(serde_json::Value::as_str) {
        None => {
            wanted
                .args
                .insert("scope".into(), SCOPE_WITH_REFRESH_TOKEN.into());
        }
        // Not a string: AFFiNE's own validation refuses it, naming args.scope.
        Some(None) => {}
        Some(Some(scope)) if !scope.split_whitespace().any(|s| s == "offline_access") => {
            warnings.push(format!(
                "AFFiNE {version} requires a refresh_token at login, which authentik issues only for the offline_access scope, and args.scope {scope:?} lacks it: the login will fail (\"refresh_token … Required\"); add offline_access, or upgrade AFFiNE to 0.25.7 or newer"
            ));
        }
        Some(Some(_)) => {}
    }
    wanted
}

/// AFFiNE registers the OIDC provider after a successful discovery of the issuer, in the
/// background on 0.27+: poll the public server config until it lists `OIDC`.
fn wait_for_registration(
    client: &AffineClient,
    limit: Duration,
    version: crate::affine::version::AffineVersion,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if client.server_state()?.oidc_registered() {
            return Ok(());
        }
        if started.elapsed() >= limit {
            let mut hint = String::from(
                "AFFiNE could not fetch the issuer's discovery document (<issuer>/.well-known/openid-configuration); \
                 check that AFFiNE's server can reach the issuer and that the blueprint is applied in authentik",
            );
            if version.registers_after_single_discovery() {
                hint.push_str(&format!(
                    "; AFFiNE {version} tries discovery once per change, so after fixing it rewrite the setting or restart AFFiNE"
                ));
            }
            if version.has_ssrf_guard() {
                hint.push_str(&format!(
                    "; AFFiNE {version} refuses issuers on loopback, private or link-local addresses"
                ));
            }
            return Err(Error::failed(format!(
                "OIDC did not appear among AFFiNE's login providers within {}s: {hint}",
                limit.as_secs()
            )));
        }
        sleep(
            Duration::from_millis(500).min(
                limit
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(50)),
            ),
        );
    }
}

fn reconcile_file(
    path: &std::path::Path,
    backup: bool,
    force: bool,
    desired: &Desired,
    check_mode: bool,
) -> Result<Outcome> {
    let mut file = ConfigFile::load(path)?;
    let before = file.oidc();
    let after = match desired {
        Desired::Present(v) => Some(v.clone()),
        Desired::Absent => None,
    };
    let changed_fields = match (&before, &after) {
        // AFFiNE 0.22+ refuses a stored value without `args`: that is a difference too.
        (Some(b), Some(a)) if file.oidc_lacks_args() => {
            let mut fields = b.differences(a);
            if !fields.contains(&"args") {
                fields.push("args");
            }
            fields
        }
        (Some(b), Some(a)) => b.differences(a),
        (None, Some(a)) => OidcValue::empty()
            .differences(a)
            .into_iter()
            .chain(std::iter::once("providers.oidc"))
            .collect(),
        (Some(_), None) => vec!["providers.oidc"],
        (None, None) => vec![],
    };
    let mut outcome = Outcome {
        changed: !changed_fields.is_empty(),
        before,
        after: after.clone(),
        changed_fields,
        ..Outcome::default()
    };
    if outcome.changed {
        // Check mode too: it fails on a read-only file where the run would.
        file.check_replaceable(force)?;
        if !check_mode {
            file.set_oidc(after.as_ref())?;
            let written = file.save(backup, force)?;
            outcome.backup_file = written.backup_file;
            outcome.warnings.extend(written.warnings);
        }
        outcome.warnings.push(RESTART_WARNING.to_string());
    }
    outcome.msg = summary(
        &outcome,
        check_mode,
        &format!("OIDC provider in {}", path.display()),
    );
    Ok(outcome)
}

fn summary(outcome: &Outcome, check_mode: bool, what: &str) -> String {
    if !outcome.changed {
        return format!("{what} is already as wanted");
    }
    let fields = outcome.changed_fields.join(", ");
    if check_mode {
        format!("{what} would change ({fields}); check mode, nothing written")
    } else {
        format!("{what} changed ({fields})")
    }
}
