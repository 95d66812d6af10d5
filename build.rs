//! Names the git commit a binary was built from, for `--version`
//! (`affine-authentik 0.1.0 (abc1234)`): a static binary copied to many hosts is otherwise
//! impossible to tell apart from the one built a commit later.
//!
//! The commit is `git rev-parse --short=7 HEAD` of this checkout, with `-dirty` when tracked
//! files differ from it; `AFFINE_AUTHENTIK_COMMIT` set at build time wins (a packager building
//! from a tarball can name the commit); without either, "unknown". The value reaches the crate
//! as the compile-time variable `AFFINE_AUTHENTIK_COMMIT`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AFFINE_AUTHENTIK_COMMIT");
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let commit = match std::env::var("AFFINE_AUTHENTIK_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given.trim().to_string(),
        _ => from_git(&manifest_dir).unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=AFFINE_AUTHENTIK_COMMIT={commit}");
}

/// The short commit, `-dirty` marked, when `dir` is the top of a git work tree. A tarball
/// unpacked inside some other repository must not borrow that repository's commit, hence
/// the top-level check.
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if std::fs::canonicalize(&top).ok()? != std::fs::canonicalize(dir).ok()? {
        return None;
    }
    rerun_when_head_moves(dir);
    let short = git(dir, &["rev-parse", "--short=7", "HEAD"])?;
    // Untracked files (dist/, .release-tools/, an editor's swap file) are not the source.
    let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    Some(if dirty {
        format!("{short}-dirty")
    } else {
        short
    })
}

/// Reruns this script when the commit changes (HEAD, the branch's ref, packed refs) or when
/// the sources that make the binary change (so `-dirty` appears and goes). Naming files
/// turns off cargo's default of rerunning on any change in the package, which would miss
/// a commit, since `.git` is not part of the package.
fn rerun_when_head_moves(dir: &Path) {
    for path in ["src", "templates", "Cargo.toml", "Cargo.lock", "build.rs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    // In a `git worktree`, HEAD lives in the worktree's git dir and the refs in the common one.
    let Some(git_dir) = git(dir, &["rev-parse", "--absolute-git-dir"]) else {
        return;
    };
    let git_dir = PathBuf::from(git_dir);
    let common_dir = git(dir, &["rev-parse", "--git-common-dir"])
        .map(|c| dir.join(c))
        .unwrap_or_else(|| git_dir.clone());
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    // Only when it exists: cargo counts a missing file as changed, and would rebuild the
    // crate on every build. When `git pack-refs` creates it later, the loose branch ref
    // below disappears, which triggers the rerun.
    let packed_refs = common_dir.join("packed-refs");
    if packed_refs.exists() {
        println!("cargo:rerun-if-changed={}", packed_refs.display());
    }
    if let Some(branch_ref) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        println!(
            "cargo:rerun-if-changed={}",
            common_dir.join(branch_ref).display()
        );
    }
}

/// One git command's trimmed stdout, or None when git is missing or the command fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}
