//! One test's Ansible world in a temp dir: `library/` with both modules (installed by the
//! binary itself), `ansible.cfg`, an inventory with group/host vars, and HOME and Ansible's
//! temp dirs of its own, so tests running side by side never meet. Commands come from the
//! pinned ansible-core and inherit nothing that could change Ansible's behaviour or hand a
//! module credentials.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{ansible_bin, install_modules, Captured, TOOL_ENV};

pub struct Lab {
    dir: tempfile::TempDir,
    ansible: PathBuf,
}

/// One ansible-* run.
pub struct Run {
    pub what: String,
    pub out: Captured,
    pub elapsed: Duration,
}

impl Lab {
    pub fn new() -> Lab {
        let ansible = ansible_bin();
        let dir = tempfile::Builder::new()
            .prefix("affine-authentik-lab-")
            .tempdir()
            .expect("temp dir");
        let lab = Lab { dir, ansible };
        for d in ["home/.ansible", "tmp/local", "tmp/remote", "inventory"] {
            std::fs::create_dir_all(lab.path(d)).expect("mkdir");
        }
        install_modules(&lab.path("library"));
        lab.write(
            "ansible.cfg",
            &format!(
                "[defaults]\nlibrary = {root}/library\nlocal_tmp = {root}/tmp/local\n\
                 remote_tmp = {root}/tmp/remote\nretry_files_enabled = False\n\
                 host_key_checking = False\nnocolor = True\n\
                 interpreter_python = {python}\n",
                root = lab.root().display(),
                python = lab.python().display()
            ),
        );
        lab
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn python(&self) -> PathBuf {
        self.ansible.join("python")
    }

    /// Writes `rel` with mode 0600 (some files hold secrets), making its directory.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// `inventory/hosts.ini`: localhost (where every task is delegated), then `rest`.
    pub fn inventory(&self, rest: &str) {
        self.write(
            "inventory/hosts.ini",
            &format!(
                "localhost ansible_connection=local ansible_python_interpreter={}\n\n{rest}",
                self.python().display()
            ),
        );
    }

    /// A command of the pinned ansible-core, run in the lab, with none of the outer
    /// ANSIBLE_* or the tool's variables.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.ansible.join(name));
        cmd.current_dir(self.root());
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("ANSIBLE_") || k.starts_with("AFFINE_") {
                cmd.env_remove(&key);
            }
        }
        for name in TOOL_ENV {
            cmd.env_remove(name);
        }
        cmd.env("ANSIBLE_CONFIG", self.path("ansible.cfg"))
            .env("HOME", self.path("home"))
            .env("ANSIBLE_HOME", self.path("home/.ansible"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// `ansible-playbook -i inventory/hosts.ini PLAYBOOK ARGS...` with `env` added.
    pub fn playbook(&self, playbook: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.tool("ansible-playbook");
        cmd.arg("-i")
            .arg(self.path("inventory/hosts.ini"))
            .arg(playbook)
            .args(args);
        cmd.envs(env.iter().copied());
        let what = format!("ansible-playbook {} {}", playbook.display(), args.join(" "));
        let started = Instant::now();
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        Run {
            what,
            out: Captured::from_output(out),
            elapsed: started.elapsed(),
        }
    }
}

impl Run {
    pub fn show(&self) -> String {
        format!(
            "{} (exit {:?}, {:.1}s)\n--- stdout\n{}\n--- stderr\n{}",
            self.what,
            self.out.code,
            self.elapsed.as_secs_f64(),
            self.out.stdout,
            self.out.stderr
        )
    }

    /// PLAY RECAP: host → {ok, changed, unreachable, failed, skipped, rescued, ignored}.
    pub fn recap(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let recap = self
            .out
            .stdout
            .split("PLAY RECAP")
            .nth(1)
            .unwrap_or_else(|| panic!("no PLAY RECAP in {}", self.show()));
        let mut hosts = BTreeMap::new();
        for line in recap.lines().filter(|l| l.contains(" : ")) {
            let (host, counts) = line.split_once(" : ").expect("recap line");
            let counts = counts
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().expect("a count")))
                .collect();
            hosts.insert(host.trim().to_string(), counts);
        }
        hosts
    }

    /// Exit 0 and `key=value` for every listed host in the recap.
    #[track_caller]
    pub fn assert_recap(&self, hosts: &[&str], expect: &[(&str, u64)]) {
        assert_eq!(self.out.code, Some(0), "{}", self.show());
        let recap = self.recap();
        for host in hosts {
            let counts = recap
                .get(*host)
                .unwrap_or_else(|| panic!("{host} missing from the recap of {}", self.show()));
            for (key, want) in expect {
                assert_eq!(
                    counts.get(*key),
                    Some(want),
                    "{host}: {key} in the recap of {}",
                    self.show()
                );
            }
        }
    }

    /// The output of the task named `name`: from its `TASK [name]` banner to the next banner.
    pub fn task(&self, name: &str) -> &str {
        let banner = format!("TASK [{name}]");
        let stdout = &self.out.stdout;
        let start = stdout
            .find(&banner)
            .unwrap_or_else(|| panic!("no task {name:?} in {}", self.show()));
        let rest = &stdout[start + banner.len()..];
        let end = ["TASK [", "PLAY RECAP"]
            .iter()
            .filter_map(|b| rest.find(b))
            .min()
            .unwrap_or(rest.len());
        &rest[..end]
    }
}
