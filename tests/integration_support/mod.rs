//! Helpers shared by the tests that run the BUILT binary (as an Ansible module, as `verify`)
//! and real `ansible-playbook`: the binary's path, the pinned ansible-core's bin directory,
//! one module run through an args file, and the secret checks every run must pass.
//!
//! Included with `mod integration_support;` by each test file that needs it (Cargo makes every
//! `tests/*.rs` its own binary, so a shared module lives in a directory).
#![allow(dead_code)]

pub mod ansible;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// The binary under test, built by Cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_affine-authentik");

/// Environment variables any of our commands reads; removed from every child so the outer
/// environment cannot change what a test sees (or leak a real credential into it).
pub const TOOL_ENV: [&str; 8] = [
    "AFFINE_URL",
    "AFFINE_ADMIN_EMAIL",
    "AFFINE_ADMIN_PASSWORD",
    "AFFINE_SESSION_TOKEN",
    "AFFINE_OIDC_CLIENT_SECRET",
    "AUTHENTIK_URL",
    "AUTHENTIK_TOKEN",
    "AUTHENTIK_VERSION",
];

/// A loopback port nobody listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The pinned ansible-core's `bin/`: `AFFINE_AUTHENTIK_ANSIBLE_BIN` (set by scripts/test.sh),
/// else `.venv/bin` of the checkout when it exists. Anything else is a failure, not a skip:
/// these tests prove the module under real Ansible.
pub fn ansible_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("AFFINE_AUTHENTIK_ANSIBLE_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("ansible-playbook").is_file(),
            "AFFINE_AUTHENTIK_ANSIBLE_BIN={} has no ansible-playbook; run scripts/test.sh",
            dir.display()
        );
        return dir;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    assert!(
        venv.join("ansible-playbook").is_file(),
        "no pinned ansible-core: AFFINE_AUTHENTIK_ANSIBLE_BIN is unset and {} has no \
         ansible-playbook; run scripts/test.sh (it installs scripts/ansible-requirements.txt \
         into .venv/)",
        venv.display()
    );
    venv
}

/// `affine-authentik install-modules DIR`: the modules and their docs for Ansible.
pub fn install_modules(dir: &Path) {
    let out = Command::new(BIN)
        .arg("install-modules")
        .arg(dir)
        .output()
        .expect("run install-modules");
    assert!(
        out.status.success(),
        "install-modules failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The output of one command, as text.
pub struct Captured {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn from_output(out: Output) -> Self {
        Captured {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Neither stream holds any of `secrets` (values shorter than 4 characters are skipped:
    /// they would match by chance).
    #[track_caller]
    pub fn assert_no_secrets(&self, secrets: &[&str]) {
        for s in secrets.iter().filter(|s| s.len() >= 4) {
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

/// One module invocation the way Ansible makes it: `affine-authentik module <args-file>`,
/// where the args file holds the task's params and Ansible's `_ansible_*` keys.
pub struct ModuleCall {
    pub module: &'static str,
    pub params: Value,
    pub check: bool,
    pub diff: bool,
    pub env: Vec<(String, String)>,
}

/// What a module run printed: stdout must be exactly one JSON object.
pub struct ModuleRun {
    pub json: Value,
    pub out: Captured,
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
    pub fn assert_failed_with(&self, words: &[&str]) -> &Self {
        assert!(self.failed(), "expected a failure: {}", self.out.stdout);
        assert_eq!(self.json["changed"], json!(false), "{}", self.out.stdout);
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

    /// Runs the module; panics unless stdout is exactly one JSON object or when any of
    /// `secrets` shows in stdout or stderr.
    #[track_caller]
    pub fn run(&self, secrets: &[&str]) -> ModuleRun {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = self.params.as_object().cloned().unwrap_or_default();
        args.insert("_ansible_module_name".into(), json!(self.module));
        args.insert("_ansible_check_mode".into(), json!(self.check));
        args.insert("_ansible_diff".into(), json!(self.diff));
        args.insert("_ansible_verbosity".into(), json!(0));
        args.insert("_ansible_no_log".into(), json!(false));
        args.insert("_ansible_version".into(), json!("2.19.0"));
        let args_path = dir.path().join("args");
        fs::write(&args_path, Value::Object(args).to_string()).expect("write args");

        let mut cmd = Command::new(BIN);
        cmd.arg("module").arg(&args_path).current_dir(dir.path());
        for name in TOOL_ENV {
            cmd.env_remove(name);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = Captured::from_output(cmd.output().expect("run the module"));
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
        let run = ModuleRun { json, out };
        if run.failed() {
            assert!(
                !run.msg().is_empty(),
                "a failure without msg: {}",
                run.out.stdout
            );
        }
        assert!(
            run.json.get("invocation").is_some(),
            "no invocation: {}",
            run.out.stdout
        );
        run
    }
}
