//! The release binary (scripts/release.sh): static, stripped, for the architecture its name
//! says, and doing what the debug build of the same sources does. Size work (opt-level,
//! fat LTO, one codegen unit) and another libc must not change an output byte.
//!
//! The binary is named by `AFFINE_AUTHENTIK_STATIC_BIN` (the release script sets it, and
//! `.ci/run` after building the x86_64 one); `AFFINE_AUTHENTIK_STATIC_RUNNER` runs it through
//! an emulator (`qemu-aarch64` for the aarch64 binary on an x86_64 machine). Without the
//! first, each test passes without checking and prints that it skipped.

#[path = "support/process.rs"]
mod process;

use std::path::PathBuf;
use std::process::{Command, Output};

/// ELF `e_machine` values.
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
/// Program header type of the dynamic loader's path: a dynamically linked program has one.
const PT_INTERP: u32 = 3;
/// Section types of symbol tables: `strip` removes `.symtab`.
const SHT_SYMTAB: u32 = 2;

struct StaticBin {
    path: PathBuf,
    runner: Option<String>,
}

impl StaticBin {
    fn from_env(test: &str) -> Option<StaticBin> {
        let Some(path) = std::env::var_os("AFFINE_AUTHENTIK_STATIC_BIN") else {
            println!("{test}: skipped, AFFINE_AUTHENTIK_STATIC_BIN names no binary (scripts/release.sh sets it)");
            return None;
        };
        let runner = std::env::var("AFFINE_AUTHENTIK_STATIC_RUNNER")
            .ok()
            .filter(|r| !r.is_empty());
        Some(StaticBin {
            path: PathBuf::from(path),
            runner,
        })
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.runner {
            Some(runner) => {
                let mut c = Command::new(runner);
                c.arg(&self.path);
                c
            }
            None => Command::new(&self.path),
        };
        process::clear_env(&mut cmd, &[]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.path.display()))
    }
}

fn debug_build(args: &[&str]) -> Output {
    let mut cmd = Command::new(process::bin());
    process::clear_env(&mut cmd, &[]);
    cmd.args(args).output().expect("run the debug build")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The fields of an ELF64 little-endian header this test needs, read by hand: `file`
/// is not on every machine, and its wording differs between versions.
struct Elf {
    machine: u16,
    has_interpreter: bool,
    has_symtab: bool,
}

fn read_elf(bytes: &[u8]) -> Elf {
    assert!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF",
        "not an ELF file"
    );
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    assert_eq!(bytes[5], 1, "not a little-endian ELF file");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54) as usize, u16_at(56) as usize);
    let (shoff, shentsize, shnum) = (u64_at(40), u16_at(58) as usize, u16_at(60) as usize);
    Elf {
        machine: u16_at(18),
        has_interpreter: (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP),
        has_symtab: (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == SHT_SYMTAB),
    }
}

#[test]
fn is_a_static_stripped_elf_for_the_architecture_its_name_says() {
    let Some(bin) = StaticBin::from_env("static_binary") else {
        return;
    };
    let bytes = std::fs::read(&bin.path).expect("read the binary");
    let elf = read_elf(&bytes);
    let name = bin.path.file_name().unwrap().to_string_lossy().into_owned();
    let expected = if name.contains("aarch64") {
        EM_AARCH64
    } else if name.contains("x86_64") {
        EM_X86_64
    } else {
        elf.machine
    };
    assert!(
        [EM_X86_64, EM_AARCH64].contains(&elf.machine),
        "{name}: ELF machine {} is neither x86_64 nor aarch64",
        elf.machine
    );
    assert_eq!(
        elf.machine, expected,
        "{name}: built for another architecture"
    );
    assert!(
        !elf.has_interpreter,
        "{name}: has a dynamic loader (PT_INTERP): not a static binary"
    );
    assert!(!elf.has_symtab, "{name}: has a symbol table: not stripped");
    assert!(
        bytes.len() < 5_000_000,
        "{name}: {} bytes, over the 5 MB limit",
        bytes.len()
    );
}

#[test]
fn version_names_the_version_and_a_commit() {
    let Some(bin) = StaticBin::from_env("version") else {
        return;
    };
    let out = bin.run(&["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    let rest = line
        .strip_prefix(concat!(
            "affine-authentik ",
            env!("CARGO_PKG_VERSION"),
            " ("
        ))
        .and_then(|r| r.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("unexpected --version output {line:?}"));
    let commit = rest.strip_suffix("-dirty").unwrap_or(rest);
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "no commit in {line:?}"
    );
}

#[test]
fn blueprint_is_byte_identical_to_the_debug_build() {
    let Some(bin) = StaticBin::from_env("blueprint") else {
        return;
    };
    for args in [
        &["blueprint", "--affine-url", "https://a.example.com"][..],
        &[
            "blueprint",
            "--affine-url",
            "https://affine.example.com/sub",
            "--authentik-version",
            "2024.8.4",
            "--group",
            "affine-users",
        ][..],
    ] {
        let (got, want) = (bin.run(args), debug_build(args));
        assert!(got.status.success(), "{args:?}: {}", text(&got.stderr));
        assert!(!got.stdout.is_empty());
        assert_eq!(text(&got.stdout), text(&want.stdout), "{args:?}");
    }
    // Bad input: the same one line and exit 2.
    let args = ["blueprint", "--affine-url", "ftp://a.example.com"];
    let (got, want) = (bin.run(&args), debug_build(&args));
    assert_eq!(got.status.code(), Some(2));
    assert_eq!(text(&got.stderr), text(&want.stderr));
}

#[test]
fn verify_against_a_closed_port_fails_naming_discovery() {
    let Some(bin) = StaticBin::from_env("verify") else {
        return;
    };
    // A port that was just free: nothing listens, so every fetch is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = bin.run(&[
        "verify",
        "--affine-url",
        &url,
        "--authentik-url",
        &url,
        "--timeout",
        "5",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    // The same checks, details and fixes as the debug build's, line for line.
    let want = debug_build(&[
        "verify",
        "--affine-url",
        &url,
        "--authentik-url",
        &url,
        "--timeout",
        "5",
    ]);
    assert_eq!(stdout, text(&want.stdout));
    let discovery = stdout
        .lines()
        .find(|l| l.contains("discovery"))
        .unwrap_or_else(|| panic!("no discovery check in {stdout}"));
    assert!(discovery.contains("FAIL"), "{discovery}");
}

#[test]
fn runs_as_an_ansible_module_and_answers_one_json_object() {
    let Some(bin) = StaticBin::from_env("module") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let args = dir.path().join("args");
    // No affine_url: the module's own argument check fails the task by name.
    std::fs::write(&args, r#"{"_ansible_module_name": "affine_oidc"}"#).unwrap();
    let out = bin.run(&["module", args.to_str().unwrap()]);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", text(&out.stdout)));
    assert_eq!(result["failed"], true, "{result}");
    assert!(
        result["msg"].as_str().unwrap_or("").contains("affine_url"),
        "{result}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn generates_the_same_completions_and_man_page_as_the_debug_build() {
    let Some(bin) = StaticBin::from_env("generate") else {
        return;
    };
    for args in [
        &["generate", "completions", "bash"][..],
        &["generate", "man"][..],
    ] {
        let (got, want) = (bin.run(args), debug_build(args));
        assert!(got.status.success(), "{args:?}: {}", text(&got.stderr));
        // The man page holds --version (title and VERSION section), whose commit differs when
        // the two builds are of different commits or one is -dirty: each build's own version
        // is replaced by a placeholder, and everything else must match.
        let (got_version, want_version) = (
            version_of(bin.run(&["--version"])),
            version_of(debug_build(&["--version"])),
        );
        // roff writes '-' as '\-' in the VERSION section.
        let placeholder = |out: &Output, version: &str| {
            text(&out.stdout)
                .replace(version, "VERSION")
                .replace(&version.replace('-', "\\-"), "VERSION")
        };
        assert_eq!(
            placeholder(&got, &got_version),
            placeholder(&want, &want_version),
            "{args:?}"
        );
    }
}

/// `0.1.0 (abc1234)` out of `affine-authentik 0.1.0 (abc1234)`.
fn version_of(out: Output) -> String {
    let line = text(&out.stdout);
    let version = line
        .trim_end()
        .strip_prefix("affine-authentik ")
        .unwrap_or_else(|| panic!("--version said {line:?}"));
    version.to_string()
}
