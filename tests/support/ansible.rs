//! One test's Ansible world in a temp dir: `library/` with both modules (installed by the
//! binary itself), `ansible.cfg`, an inventory, and HOME and Ansible's temp dirs of its own,
//! so tests running side by side never meet. Commands come from the pinned ansible-core and
//! inherit nothing that could change Ansible's behaviour or hand a module credentials.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{clear_env, command, Captured};

/// The pinned ansible-core's `bin/`: `AFFINE_AUTHENTIK_ANSIBLE_BIN` (set by scripts/test.sh),
/// else `.venv/bin` of the checkout when it exists. Anything else is a failure, not a skip:
/// these tests prove the modules under real Ansible.
pub fn ansible_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("AFFINE_AUTHENTIK_ANSIBLE_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("ansible-playbook").is_file(),
            "AFFINE_AUTHENTIK_ANSIBLE_BIN={} holds no ansible-playbook; run scripts/test.sh",
            dir.display()
        );
        return dir;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin");
    if venv.join("ansible-playbook").is_file() {
        return venv;
    }
    panic!(
        "these tests run the real ansible-playbook of the pinned ansible-core, and none was found \
         (AFFINE_AUTHENTIK_ANSIBLE_BIN is unset and {} has no ansible-playbook): run \
         scripts/test.sh, which installs scripts/ansible-requirements.txt into .venv/ and runs \
         the tests",
        venv.display()
    );
}

/// `affine-authentik install-modules DIR`: the modules and their docs for Ansible.
pub fn install_modules(dir: &Path) {
    let out = Captured::of(command(&["install-modules"]).arg(dir));
    assert_eq!(out.code, Some(0), "install-modules failed: {}", out.stderr);
}

pub struct Lab {
    dir: tempfile::TempDir,
    ansible: PathBuf,
    /// The inventory file, relative to the lab.
    inventory: &'static str,
}

/// One ansible-* run.
pub struct Run {
    pub what: String,
    pub out: Captured,
    pub elapsed: Duration,
}

impl Lab {
    /// A lab for playbooks kept anywhere: `ansible.cfg` names `library/`, and the inventory
    /// is `inventory/hosts.ini`, its group and host vars beside it in `inventory/`.
    pub fn new() -> Lab {
        Lab::create("inventory/hosts.ini", true)
    }

    /// The layout playbooks/README.md documents: the playbooks, `library/`, `inventory.ini`,
    /// `group_vars/` and `host_vars/` side by side in the lab. `ansible.cfg` does not name
    /// `library/`, so Ansible finds the modules only beside the playbook (or through
    /// `-M library`), as a user's Ansible does.
    pub fn documented_layout() -> Lab {
        Lab::create("inventory.ini", false)
    }

    fn create(inventory: &'static str, library_in_cfg: bool) -> Lab {
        let ansible = ansible_bin();
        let dir = tempfile::Builder::new()
            .prefix("affine-authentik-lab-")
            .tempdir()
            .expect("temp dir");
        let lab = Lab {
            dir,
            ansible,
            inventory,
        };
        for d in ["home/.ansible", "tmp/local", "tmp/remote"] {
            std::fs::create_dir_all(lab.path(d)).expect("mkdir");
        }
        install_modules(&lab.path("library"));
        let library = if library_in_cfg {
            format!("library = {}/library\n", lab.root().display())
        } else {
            String::new()
        };
        lab.write(
            "ansible.cfg",
            &format!(
                "[defaults]\n{library}local_tmp = {root}/tmp/local\n\
                 remote_tmp = {root}/tmp/remote\nretry_files_enabled = False\n\
                 host_key_checking = False\nnocolor = True\n\
                 interpreter_python = {python}\n",
                root = lab.root().display(),
                python = lab.python().display()
            ),
        );
        lab.inventory("");
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

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// The inventory file (written by [`Lab::inventory`]).
    pub fn inventory_file(&self) -> PathBuf {
        self.path(self.inventory)
    }

    /// The inventory: localhost (where every task is delegated), then `rest`. A new lab has
    /// it with nothing more.
    pub fn inventory(&self, rest: &str) {
        self.write(
            self.inventory,
            &format!(
                "localhost ansible_connection=local ansible_python_interpreter={}\n\n{rest}",
                self.python().display()
            ),
        );
    }

    /// A command of the pinned ansible-core, run in the lab, with none of the outer
    /// ANSIBLE_* or the variables [`clear_env`] removes.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.ansible.join(name));
        cmd.current_dir(self.root());
        clear_env(&mut cmd, &["ANSIBLE_"]);
        cmd.env("ANSIBLE_CONFIG", self.path("ansible.cfg"))
            .env("HOME", self.path("home"))
            .env("ANSIBLE_HOME", self.path("home/.ansible"))
            .env("ANSIBLE_LOCAL_TEMP", self.path("tmp/local"))
            .env("ANSIBLE_REMOTE_TEMP", self.path("tmp/remote"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// Runs `cmd` (from [`Lab::tool`]) to its end; `what` names it in messages.
    pub fn run(&self, mut cmd: Command, what: String) -> Run {
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

    /// `ansible-playbook -i INVENTORY PLAYBOOK ARGS...` with `env` added; a relative
    /// `playbook` is in the lab.
    pub fn playbook(&self, playbook: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Run {
        let playbook = playbook.as_ref();
        let mut cmd = self.tool("ansible-playbook");
        cmd.arg("-i")
            .arg(self.inventory_file())
            .arg(playbook)
            .args(args);
        cmd.envs(env.iter().copied());
        let what = format!("ansible-playbook {} {}", playbook.display(), args.join(" "));
        self.run(cmd, what)
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

    /// Neither stream holds any of `secrets` (see [`Captured::assert_no_secrets`]).
    #[track_caller]
    pub fn assert_no_secrets(&self, secrets: &[&str]) {
        self.out.assert_no_secrets(secrets);
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
