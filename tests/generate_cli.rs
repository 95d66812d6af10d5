//! `--version` and the hidden `generate` subcommand: completions for bash, zsh and fish and
//! the man pages, made from the clap definitions, each naming every visible subcommand and
//! none of the hidden ones (`module`, `generate`).

#[path = "support/process.rs"]
mod process;

use std::process::{Command, Output};

const SUBCOMMANDS: [&str; 5] = [
    "blueprint",
    "oidc-config",
    "apply",
    "verify",
    "install-modules",
];

fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(process::bin());
    process::clear_env(&mut cmd, &[]);
    cmd.args(args).output().expect("run the binary")
}

fn stdout_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_package_version_and_the_checkouts_commit() {
    let line = stdout_of(&["--version"]);
    let prefix = concat!("affine-authentik ", env!("CARGO_PKG_VERSION"), " (");
    assert!(
        line.starts_with(prefix) && line.ends_with(")\n"),
        "{line:?}"
    );
    // In a git checkout (CI's clone, a developer's tree) the commit is HEAD's; `-dirty`
    // depends on the tree when the binary was built, so only the commit is compared.
    let top = git(&["rev-parse", "--show-toplevel"]);
    let is_checkout_top = top.is_some_and(|t| {
        std::fs::canonicalize(t).ok() == std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).ok()
    });
    if is_checkout_top {
        let head = git(&["rev-parse", "--short=7", "HEAD"]).expect("HEAD");
        assert!(
            line.starts_with(&format!("{prefix}{head}")),
            "{line:?} does not name HEAD {head}"
        );
    } else {
        assert_eq!(line, format!("{prefix}unknown)\n"));
    }
}

#[test]
fn completions_name_every_visible_subcommand_and_no_hidden_one() {
    // What each shell's script says for "offer this subcommand after affine-authentik".
    type Offer = fn(&str) -> String;
    let offered: [(&str, Offer); 3] = [
        ("bash", |s| format!("affine__authentik,{s})")),
        ("zsh", |s| format!("'{s}:")),
        ("fish", |s| format!("-f -a \"{s}\"")),
    ];
    for (shell, offer) in offered {
        let script = stdout_of(&["generate", "completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(
                script.contains(&offer(sub)),
                "{shell}: {sub} is not offered"
            );
        }
        for hidden in ["module", "generate"] {
            assert!(
                !script.contains(&offer(hidden)),
                "{shell}: the hidden subcommand {hidden} is offered"
            );
        }
        // A flag of a subcommand, so the script goes below the first level.
        let flag = if shell == "fish" {
            "-l affine-url"
        } else {
            "--affine-url"
        };
        assert!(script.contains(flag), "{shell}: no {flag}");
    }
}

#[test]
fn bash_completion_completes_a_subcommand_and_its_flags() {
    let script = stdout_of(&["generate", "completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("affine-authentik.bash");
    std::fs::write(&file, script).unwrap();
    // bash calls the completion function with the command, the word being completed and
    // the word before it, with COMP_WORDS/COMP_CWORD set: do the same for two lines.
    let complete = |words: &str, cword: usize| -> String {
        let program = format!(
            "source {file}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _affine__authentik affine-authentik \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file = file.display()
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &program])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(complete("affine-authentik bl", 1).trim(), "blueprint");
    let flags = complete("affine-authentik blueprint --affine", 2);
    assert_eq!(flags.trim(), "--affine-url");
}

#[test]
fn man_pages_one_per_visible_subcommand_and_the_main_page_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let listed = stdout_of(&["generate", "man", dir.path().to_str().unwrap()]);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    let mut want: Vec<String> = SUBCOMMANDS
        .iter()
        .map(|s| format!("affine-authentik-{s}.1"))
        .chain(["affine-authentik.1".to_string()])
        .collect();
    want.sort();
    assert_eq!(pages, want, "pages written");
    assert_eq!(
        listed.lines().count(),
        want.len(),
        "printed paths: {listed}"
    );

    let main = std::fs::read_to_string(dir.path().join("affine-authentik.1")).unwrap();
    assert_eq!(main, stdout_of(&["generate", "man"]), "stdout page == file");
    assert!(main.starts_with(".ie") || main.contains("\n.TH affine-authentik 1 "));
    for sub in SUBCOMMANDS {
        // roff escapes '-' as '\-' in names.
        let reference = format!("affine\\-authentik\\-{}(1)", sub.replace('-', "\\-"));
        assert!(main.contains(&reference), "main page lacks {reference}");
    }
    for absent in ["module", "generate", "help(1)"] {
        assert!(
            !main.contains(&format!("affine\\-authentik\\-{absent}")),
            "main page names {absent}"
        );
    }
    let blueprint =
        std::fs::read_to_string(dir.path().join("affine-authentik-blueprint.1")).unwrap();
    assert!(
        blueprint.contains("\\-\\-affine\\-url"),
        "blueprint page lacks --affine-url"
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = run(&["generate", "completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
