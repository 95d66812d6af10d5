//! Child processes of the tests: the built binary's path, the one environment every child
//! starts without, a child's output as text and the secret check every output must pass.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::OnceLock;

/// The binary under test, built by Cargo for the integration tests.
///
/// A function, not a constant: Cargo names the binary (`CARGO_BIN_EXE_*`) to integration
/// tests only, and the `standins` example compiles this directory too (it never calls this).
pub fn bin() -> &'static str {
    match option_env!("CARGO_BIN_EXE_affine-authentik") {
        Some(path) => path,
        None => panic!("the built binary is known to integration tests only"),
    }
}

/// Removed from every child, so the outer environment cannot change what a test sees (or
/// leak a real credential into it): every variable the tool reads, and the proxy variables
/// (the stand-ins listen on loopback; no outer proxy may carry a test's requests).
pub const CLEARED_ENV: [&str; 14] = [
    "AFFINE_URL",
    "AFFINE_ADMIN_EMAIL",
    "AFFINE_ADMIN_PASSWORD",
    "AFFINE_SESSION_TOKEN",
    "AFFINE_OIDC_CLIENT_SECRET",
    "AUTHENTIK_URL",
    "AUTHENTIK_TOKEN",
    "AUTHENTIK_VERSION",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

/// Also removed: any other variable of the outer environment with these prefixes (one a
/// later version of the tool reads, say).
pub const CLEARED_PREFIXES: [&str; 2] = ["AFFINE_", "AUTHENTIK_"];

/// Removes from `cmd`'s environment [`CLEARED_ENV`] and every outer variable that starts
/// with one of [`CLEARED_PREFIXES`] or of `prefixes`. Variables set on `cmd` afterwards stay.
pub fn clear_env<'c>(cmd: &'c mut Command, prefixes: &[&str]) -> &'c mut Command {
    for name in CLEARED_ENV {
        cmd.env_remove(name);
    }
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if CLEARED_PREFIXES
            .iter()
            .chain(prefixes)
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// `affine-authentik ARGS`, the outer environment cleared ([`clear_env`]).
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    clear_env(&mut cmd, &[]).args(args);
    cmd
}

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// An OIDC issuer on a loopback port nobody listens on (one per test binary): AFFiNE's
/// discovery attempt after a write is refused at once, with no DNS involved. Trailing
/// slash, as authentik writes it.
pub fn unreachable_issuer() -> &'static str {
    static ISSUER: OnceLock<String> = OnceLock::new();
    ISSUER.get_or_init(|| format!("http://127.0.0.1:{}/application/o/affine/", closed_port()))
}

/// The output of one command, as text.
pub struct Captured {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    /// Panics unless both streams are UTF-8 (what every command here must write).
    #[track_caller]
    pub fn from_output(out: Output) -> Self {
        let text = |bytes: Vec<u8>, stream: &str| {
            String::from_utf8(bytes).unwrap_or_else(|e| {
                let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                panic!("{stream} is not UTF-8 ({}):\n{lossy}", e.utf8_error())
            })
        };
        Captured {
            code: out.status.code(),
            stdout: text(out.stdout, "stdout"),
            stderr: text(out.stderr, "stderr"),
        }
    }

    /// Runs `cmd` to its end.
    #[track_caller]
    pub fn of(cmd: &mut Command) -> Self {
        Captured::from_output(cmd.output().expect("the command runs"))
    }

    /// stdout, then stderr.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Neither stream holds any of `secrets`, whatever its length (an empty value, which
    /// every text holds, is passed over).
    #[track_caller]
    pub fn assert_no_secrets(&self, secrets: &[&str]) {
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(
                !self.stdout.contains(s),
                "a secret ({s:?}) is in stdout:\n{}",
                self.stdout
            );
            assert!(
                !self.stderr.contains(s),
                "a secret ({s:?}) is in stderr:\n{}",
                self.stderr
            );
        }
    }
}

/// Secrets shorter than this are not looked for unless a test names them: the tool masks
/// secrets from 4 characters (src/secret.rs), so a shorter value may show by chance.
pub const MASKED_FROM: usize = 4;

/// The values of `env` that its names mark as secret (`PASSWORD`, `TOKEN`, `SECRET`), from
/// [`MASKED_FROM`] characters.
pub fn secret_values<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> Vec<String> {
    env.iter()
        .filter(|(k, _)| {
            let k = k.as_ref();
            k.contains("PASSWORD") || k.contains("TOKEN") || k.contains("SECRET")
        })
        .map(|(_, v)| v.as_ref().to_string())
        .filter(|v| v.len() >= MASKED_FROM)
        .collect()
}

/// `values` as `&str`s, for the slices the checks take.
pub fn refs(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}
