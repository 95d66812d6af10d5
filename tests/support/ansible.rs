//! One test's Ansible world in a temp dir: `library/` with both modules (installed by the
//! binary itself) or the collection built from it (`ansible-galaxy collection install`, on any
//! of the pinned ansible-core series), `ansible.cfg`, an inventory, and HOME and Ansible's temp dirs of its own,
//! so tests running side by side never meet. Commands come from the pinned ansible-core and
//! inherit nothing that could change Ansible's behaviour or hand a module credentials.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::process::{clear_env, command, Captured};

/// The newest pinned ansible-core's `bin/`: `AFFINE_AUTHENTIK_ANSIBLE_BIN` (set by
/// scripts/test.sh), else the newest `.venv/ansible-<X.Y>/bin` of the checkout. Anything else is a failure, not a skip:
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
    if let Some((_, newest)) = checkout_venvs().pop() {
        return newest;
    }
    panic!(
        "these tests run the real ansible-playbook of the pinned ansible-core, and none was found \
         (AFFINE_AUTHENTIK_ANSIBLE_BIN is unset and {}/.venv has no ansible-<X.Y>/bin): run \
         scripts/test.sh, which installs scripts/ansible-requirements-<X.Y>.txt into \
         .venv/ansible-<X.Y>/ and runs the tests",
        env!("CARGO_MANIFEST_DIR")
    );
}

/// Every pinned ansible-core's `bin/`, by series (`"2.17"`), oldest first:
/// `AFFINE_AUTHENTIK_ANSIBLE_BINS` (colon-separated, set by scripts/test.sh), else the
/// checkout's `.venv/ansible-<X.Y>/bin`.
pub fn ansible_bins() -> Vec<(String, PathBuf)> {
    match std::env::var_os("AFFINE_AUTHENTIK_ANSIBLE_BINS") {
        Some(list) => std::env::split_paths(&list)
            .map(|bin| (series_of(&bin), bin))
            .collect(),
        None => checkout_venvs(),
    }
}

/// The `bin/` of ansible-core `series` (`"2.17"`); a failure when scripts/test.sh made none.
pub fn ansible_bin_of(series: &str) -> PathBuf {
    let all = ansible_bins();
    all.iter()
        .find(|(s, _)| s == series)
        .map(|(_, bin)| bin.clone())
        .unwrap_or_else(|| {
            panic!(
                "no ansible-core {series} among {all:?}: run scripts/test.sh, which makes one \
                 virtualenv per scripts/ansible-requirements-<X.Y>.txt"
            )
        })
}

/// `.../ansible-2.17/bin` → `2.17`.
fn series_of(bin: &Path) -> String {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("ansible-"))
        .unwrap_or_else(|| panic!("{} is not a .venv/ansible-<X.Y>/bin", bin.display()))
        .to_string()
}

fn checkout_venvs() -> Vec<(String, PathBuf)> {
    let venvs = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
    let mut found: Vec<(Vec<u32>, String, PathBuf)> = std::fs::read_dir(&venvs)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("ansible-playbook").is_file())
        .map(|bin| {
            let series = series_of(&bin);
            let key = series.split('.').filter_map(|n| n.parse().ok()).collect();
            (key, series, bin)
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, s, b)| (s, b)).collect()
}

/// The collection tarball of the binary under test, built once per test process by
/// scripts/build-collection.sh (with the newest ansible-galaxy) from a stripped copy of the
/// binary (the debug build's symbols would make it six times larger and slower to pack).
pub fn built_collection() -> &'static Path {
    static TARBALL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &TARBALL
        .get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("affine-authentik-collection-")
                .tempdir()
                .expect("temp dir");
            let binary = dir.path().join("affine-authentik");
            std::fs::copy(super::process::bin(), &binary).expect("copy the binary");
            // strip is binutils; without it the unstripped copy still works, only bigger.
            let _ = Command::new("strip").arg(&binary).status();
            let arch = match std::env::consts::ARCH {
                "aarch64" => "aarch64",
                _ => "x86_64",
            };
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-collection.sh");
            let mut cmd = Command::new("bash");
            cmd.arg(&script)
                .arg("--binary")
                .arg(format!("{arch}={}", binary.display()))
                .arg("--output")
                .arg(dir.path().join("out"))
                .env("ANSIBLE_BIN", ansible_bin());
            clear_env(&mut cmd, &["ANSIBLE_"]);
            let out = Captured::of(&mut cmd);
            assert_eq!(
                out.code,
                Some(0),
                "build-collection.sh failed:\n{}",
                out.text()
            );
            let tarball = PathBuf::from(out.stdout.trim());
            assert!(tarball.is_file(), "no tarball at {}", tarball.display());
            (dir, tarball)
        })
        .1
}

/// `affine-authentik install-modules DIR`: the modules and their docs for Ansible.
pub fn install_modules(dir: &Path) {
    let out = Captured::of(command(&["install-modules"]).arg(dir));
    assert_eq!(out.code, Some(0), "install-modules failed: {}", out.stderr);
}

/// Where a lab's modules come from.
#[derive(PartialEq, Eq)]
enum Library {
    /// `library/`, named by `ansible.cfg`.
    InCfg,
    /// `library/`, found only beside the playbook.
    BesidePlaybooks,
    /// No `library/`; the installed collection.
    None,
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

    /// A lab on ansible-core `bin` (one of [`ansible_bins`]) with no `library/`: the built
    /// collection is installed by `ansible-galaxy collection install` into `collections/`,
    /// the only collections path of `ansible.cfg`, as a user installs it.
    pub fn with_collection(bin: PathBuf) -> Lab {
        let lab = Lab::create_with(bin, "inventory/hosts.ini", Library::None);
        let mut install = lab.tool("ansible-galaxy");
        install
            .args(["collection", "install", "-p"])
            .arg(lab.path("collections"))
            .arg(built_collection());
        let run = lab.run(install, "ansible-galaxy collection install".into());
        assert_eq!(run.out.code, Some(0), "{}", run.show());
        lab
    }

    /// The layout playbooks/README.md documents: the playbooks, `library/`, `inventory.ini`,
    /// `group_vars/` and `host_vars/` side by side in the lab. `ansible.cfg` does not name
    /// `library/`, so Ansible finds the modules only beside the playbook (or through
    /// `-M library`), as a user's Ansible does.
    pub fn documented_layout() -> Lab {
        Lab::create("inventory.ini", false)
    }

    fn create(inventory: &'static str, library_in_cfg: bool) -> Lab {
        let library = if library_in_cfg {
            Library::InCfg
        } else {
            Library::BesidePlaybooks
        };
        Lab::create_with(ansible_bin(), inventory, library)
    }

    fn create_with(ansible: PathBuf, inventory: &'static str, library: Library) -> Lab {
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
        if library != Library::None {
            install_modules(&lab.path("library"));
        }
        let library = match library {
            Library::InCfg => format!("library = {}/library\n", lab.root().display()),
            Library::BesidePlaybooks => String::new(),
            Library::None => format!("collections_path = {}/collections\n", lab.root().display()),
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
