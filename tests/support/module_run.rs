//! One module run the way Ansible makes it: the BUILT binary given one args file (the task's
//! params plus Ansible's `_ansible_*` keys), either as `affine-authentik module <args-file>`
//! or under the module's own name (basename dispatch). Every run is checked for the
//! protocol (stdout is exactly one JSON object, on one line, in UTF-8; a failure has a
//! message; `invocation` is there) and for secrets (none in stdout or stderr).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::affine_standin::AffineStandin;
use super::process::{bin, clear_env, refs, secret_values, Captured, MASKED_FROM};

/// The parameters whose values are secrets in our modules (`no_log`): a run must never show
/// what a task gave them.
const SECRET_PARAMS: [&str; 4] = [
    "admin_password",
    "session_token",
    "client_secret",
    "authentik_token",
];

/// One module invocation.
pub struct ModuleCall {
    pub module: &'static str,
    pub params: Value,
    pub check: bool,
    pub diff: bool,
    pub env: Vec<(String, String)>,
    /// Run the binary under the module's name, as Ansible does, instead of `module`.
    pub basename: bool,
    /// Put `_ansible_module_name` into the args file, as Ansible does.
    pub with_module_name: bool,
    /// Whether the result must hold `invocation`. Only a run that fails before any module
    /// reads its parameters (an unknown module, a panic) may lack it.
    pub expect_invocation: bool,
    /// More values that must not show in the output (beyond those of the secret
    /// parameters and the secret environment variables of this call).
    pub secrets: Vec<String>,
}

/// What a module run printed, parsed.
pub struct ModuleRun {
    pub json: Value,
    pub out: Captured,
    pub elapsed: Duration,
}

impl ModuleRun {
    pub fn changed(&self) -> bool {
        self.json["changed"] == json!(true)
    }
    pub fn failed(&self) -> bool {
        self.json["failed"] == json!(true)
    }
    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or_default()
    }
    pub fn warnings(&self) -> Vec<String> {
        self.json["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            !self.failed(),
            "module failed: {}\nstderr: {}",
            self.out.stdout,
            self.out.stderr
        );
        self
    }
    /// Failed (and unchanged) with a message holding every one of `words`, case-insensitively.
    #[track_caller]
    /// Failed, changed nothing, and `msg` holds every word (case-insensitive).
    pub fn assert_failed_with(&self, words: &[&str]) -> &Self {
        assert_eq!(self.json["changed"], json!(false), "{}", self.out.stdout);
        self.assert_failed_saying(words)
    }

    /// Failed after a write (e.g. a wait that timed out): `changed` stays true.
    pub fn assert_failed_after_a_change_with(&self, words: &[&str]) -> &Self {
        assert_eq!(self.json["changed"], json!(true), "{}", self.out.stdout);
        self.assert_failed_saying(words)
    }

    fn assert_failed_saying(&self, words: &[&str]) -> &Self {
        assert!(self.failed(), "expected a failure: {}", self.out.stdout);
        let msg = self.msg().to_lowercase();
        for w in words {
            assert!(
                msg.contains(&w.to_lowercase()),
                "msg lacks {w:?}: {}",
                self.msg()
            );
        }
        self
    }
}

impl ModuleCall {
    pub fn new(module: &'static str, params: Value) -> Self {
        ModuleCall {
            module,
            params,
            check: false,
            diff: false,
            env: Vec::new(),
            basename: false,
            with_module_name: true,
            expect_invocation: true,
            secrets: Vec::new(),
        }
    }
    pub fn check(mut self) -> Self {
        self.check = true;
        self
    }
    pub fn diff(mut self) -> Self {
        self.diff = true;
        self
    }
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
    /// One more value that must not show in the output.
    pub fn secret(mut self, value: &str) -> Self {
        self.secrets.push(value.into());
        self
    }

    /// Every value this call knows must not show: [`ModuleCall::secrets`], and the string
    /// values of the secret parameters and of the secret environment variables from
    /// [`MASKED_FROM`] characters.
    pub fn known_secrets(&self) -> Vec<String> {
        let mut known = self.secrets.clone();
        known.extend(
            SECRET_PARAMS
                .iter()
                .filter_map(|name| self.params.get(*name)?.as_str())
                .filter(|v| v.len() >= MASKED_FROM)
                .map(str::to_string),
        );
        known.extend(secret_values(&self.env));
        known
    }

    /// Runs the module; panics unless the output keeps the protocol, or when any of
    /// `secrets` or of [`ModuleCall::known_secrets`] shows in stdout or stderr.
    #[track_caller]
    pub fn run(&self, secrets: &[&str]) -> ModuleRun {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = self.params.as_object().cloned().unwrap_or_default();
        if self.with_module_name {
            args.insert("_ansible_module_name".into(), json!(self.module));
        }
        args.insert("_ansible_check_mode".into(), json!(self.check));
        args.insert("_ansible_diff".into(), json!(self.diff));
        args.insert("_ansible_verbosity".into(), json!(3));
        args.insert("_ansible_no_log".into(), json!(false));
        args.insert("_ansible_version".into(), json!("2.19.0"));
        // A key a future ansible-core may add: must be ignored, not rejected.
        args.insert(
            "_ansible_foo_from_the_future".into(),
            json!({"anything": [1, 2]}),
        );
        let args_path = dir.path().join("args");
        fs::write(&args_path, Value::Object(args).to_string()).expect("write args");

        let mut cmd = if self.basename {
            Command::new(module_binary(self.module))
        } else {
            let mut c = Command::new(bin());
            c.arg("module");
            c
        };
        cmd.arg(&args_path).current_dir(dir.path());
        clear_env(&mut cmd, &[]);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let output = cmd.output().expect("run the module");
        let elapsed = started.elapsed();
        let out = Captured::from_output(output);
        let json: Value = match serde_json::from_str(out.stdout.trim_end()) {
            Ok(v @ Value::Object(_)) => v,
            _ => panic!(
                "stdout is not exactly one JSON object:\n{}\nstderr:\n{}",
                out.stdout, out.stderr
            ),
        };
        assert_eq!(
            out.stdout.trim_end().lines().count(),
            1,
            "stdout must be one JSON line: {}",
            out.stdout
        );
        out.assert_no_secrets(secrets);
        out.assert_no_secrets(&refs(&self.known_secrets()));
        let run = ModuleRun { json, out, elapsed };
        // A failure needs a message; Ansible needs `invocation` for its logs.
        if run.failed() {
            assert!(
                !run.msg().is_empty(),
                "a failure without msg: {}",
                run.out.stdout
            );
        }
        if self.expect_invocation {
            assert!(
                run.json.get("invocation").is_some(),
                "no invocation: {}",
                run.out.stdout
            );
        }
        run
    }

    /// [`ModuleCall::run`] against `affine`, whose request log then gives the session
    /// material (see [`AffineStandin::session_material`]) that must not show either.
    #[track_caller]
    pub fn run_against(&self, affine: &AffineStandin) -> ModuleRun {
        let run = self.run(&[]);
        let sessions: Vec<String> = affine.session_material().into_iter().collect();
        run.out.assert_no_secrets(&refs(&sessions));
        run
    }
}

/// The binary under the module's name, for basename dispatch (how Ansible runs it).
fn module_binary(module: &'static str) -> PathBuf {
    static LINKED: Mutex<BTreeMap<&'static str, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut linked = LINKED.lock().unwrap_or_else(|e| e.into_inner());
    linked
        .entry(module)
        .or_insert_with(|| {
            let Some(tmp) = option_env!("CARGO_TARGET_TMPDIR") else {
                panic!("Cargo gives integration tests only a temp dir under target/");
            };
            let dir = PathBuf::from(tmp).join("module_binaries");
            fs::create_dir_all(&dir).expect("create dir");
            // Link (or copy) under a private name, then rename: concurrent test processes
            // never see a half-written binary.
            let staged = dir.join(format!(".{module}.{}", std::process::id()));
            let _ = fs::remove_file(&staged);
            if fs::hard_link(bin(), &staged).is_err() {
                fs::copy(bin(), &staged).expect("copy the binary");
            }
            let path = dir.join(module);
            fs::rename(&staged, &path).expect("rename the binary");
            path
        })
        .clone()
}
