use std::path::Path;

use crate::ansible::MODULES;
use crate::atomic_file::{self, WriteOptions};
use crate::commands::warn;
use crate::error::{Error, Result};

/// Copies this binary into `dir` once per module name, each with its sidecar docs
/// (`<name>.yml`) so `ansible-doc -M dir <name>` works. Prints the written paths.
pub fn run(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            // create_dir_all says only "File exists" for a file or a dangling link there.
            Error::failed(format!(
                "{} is there but is not a folder (a file, or a link to nothing); give a library folder's path",
                dir.display()
            ))
        } else {
            Error::failed(format!("cannot create {}: {e}", dir.display()))
        }
    })?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find this program's file: {e}")))?;
    let binary = std::fs::read(&exe)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", exe.display())))?;
    for module in MODULES.iter() {
        let target = dir.join(module.name);
        let written = atomic_file::write(
            &target,
            &binary,
            WriteOptions {
                mode: Some(0o755),
                ..WriteOptions::default()
            },
        )?;
        written.warnings.iter().for_each(|w| warn(w));
        let docs = dir.join(format!("{}.yml", module.name));
        let written = atomic_file::write(
            &docs,
            module.docs.as_bytes(),
            WriteOptions {
                mode: Some(0o644),
                ..WriteOptions::default()
            },
        )?;
        written.warnings.iter().for_each(|w| warn(w));
        println!("{}", target.display());
        println!("{}", docs.display());
    }
    Ok(())
}
