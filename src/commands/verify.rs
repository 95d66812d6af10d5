use crate::affine::client::Credentials;
use crate::cli::VerifyArgs;
use crate::commands::{http_options, resolve_oidc_client, ResolvedOidcClient};
use crate::error::{Error, Result};
use crate::secret::{Redactor, Secret};
use crate::verify::login::LoginUser;
use crate::verify::{self, AuthentikAccess, Check, Status, VerifyInput};
use crate::web_url::BaseUrl;

/// Runs the checks and prints them. `Ok(true)` when every check passed.
pub fn run(args: &VerifyArgs) -> Result<bool> {
    let affine_url = BaseUrl::parse("--affine-url", &args.affine_url)?;
    let ResolvedOidcClient {
        slug,
        issuer,
        client_id,
    } = resolve_oidc_client(&args.oidc, Some(&affine_url))?;
    let authentik_url = args
        .oidc
        .authentik_url
        .as_deref()
        .map(|u| BaseUrl::parse("--authentik-url", u))
        .transpose()?;
    let token = match &args.authentik_token_file {
        Some(path) => Some(Secret::new(
            crate::input_file::read_secret_file(path, "--authentik-token-file")?.trim(),
        )),
        None => std::env::var("AUTHENTIK_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    };
    // A token with a newline inside, or a megabyte file given by mistake, would fail later as
    // "failed to parse header value" or an HTTP 431: say which input is wrong instead.
    if let Some(t) = &token {
        let source = match &args.authentik_token_file {
            Some(path) => format!("--authentik-token-file {}", path.display()),
            None => "AUTHENTIK_TOKEN".to_string(),
        };
        crate::ansible::params::check_text(&source, t.expose())?;
    }
    let authentik = match (token, authentik_url) {
        (Some(token), Some(url)) => Ok(AuthentikAccess {
            slug: slug.as_str().to_string(),
            url,
            token,
        }),
        // A token file is an explicit request for the authentik checks; AUTHENTIK_TOKEN
        // exported for other tools is not, so without a URL those checks are skipped.
        (Some(_), None) if args.authentik_token_file.is_some() => {
            return Err(Error::usage(
                "--authentik-token-file needs --authentik-url for the authentik checks",
            ))
        }
        (Some(_), None) => Err(
            "reading authentik's provider needs authentik's URL besides AUTHENTIK_TOKEN: give --authentik-url (or AUTHENTIK_URL)"
                .to_string(),
        ),
        (None, _) => Err(
            "reading authentik's provider needs an API token: export AUTHENTIK_TOKEN, or give --authentik-token-file, with --authentik-url"
                .to_string(),
        ),
    };
    let affine_credentials = Credentials::from_environment()?;
    let mut redactor = Redactor::new();
    if let Ok(access) = &authentik {
        redactor.add(&access.token);
    }
    if let Some(credentials) = &affine_credentials {
        redactor.add(credentials.secret());
    }
    let login = login_user(args)?;
    let input = VerifyInput {
        affine_url,
        issuer,
        client_id,
        affine_credentials,
        authentik,
        login,
        http: http_options(&args.http)?,
    };
    let checks = verify::run(&input, &mut redactor)?;
    let ok = verify::all_passed(&checks);
    if args.json {
        let mut value = serde_json::json!({"ok": ok, "checks": checks});
        redactor.json(&mut value);
        println!("{value}");
    } else {
        for check in &checks {
            println!("{}", redactor.text(&human_line(check)));
        }
        let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
        println!(
            "{}",
            if ok {
                "all checks passed".to_string()
            } else {
                format!("{failed} check(s) failed")
            }
        );
    }
    Ok(ok)
}

/// `--login`'s user and password, or why there is no login. The password never comes from a
/// flag: a command line is visible to every user of the machine and kept in shell history.
fn login_user(args: &VerifyArgs) -> Result<std::result::Result<LoginUser, String>> {
    let Some(username) = args.login.clone() else {
        return Ok(Err(
            "a login needs an authentik test user: give --login USERNAME, with its password in AUTHENTIK_LOGIN_PASSWORD or --login-password-file"
                .to_string(),
        ));
    };
    if username.trim().is_empty() {
        return Err(Error::usage("--login needs an authentik user name"));
    }
    crate::ansible::params::check_text("--login", &username)?;
    let password = match &args.login_password_file {
        Some(path) => {
            let text = crate::input_file::read_secret_file(path, "--login-password-file")?;
            // A file's final newline is not part of the password.
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string()
        }
        None => std::env::var("AUTHENTIK_LOGIN_PASSWORD").unwrap_or_default(),
    };
    // A newline or NUL would be sent into the password stage as part of the password.
    let source = if args.login_password_file.is_some() {
        "--login-password-file"
    } else {
        "AUTHENTIK_LOGIN_PASSWORD"
    };
    crate::ansible::params::check_text(source, &password)?;
    if password.is_empty() {
        return Err(Error::usage(
            "--login needs the user's password: export AUTHENTIK_LOGIN_PASSWORD, or give --login-password-file PATH",
        ));
    }
    Ok(Ok(LoginUser {
        username,
        password: Secret::new(password),
    }))
}

fn human_line(check: &Check) -> String {
    let mut line = format!("{} {:<24} {}", check.status.mark(), check.id, check.detail);
    if let Some(fix) = &check.fix {
        line.push_str(&format!("\n     fix: {fix}"));
    }
    line
}
