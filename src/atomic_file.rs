//! Writing files so that a reader sees the old content or the new, never half of either:
//! a temporary file in the same directory, fsync, rename, fsync of the directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Mode for the file. `None`: keep the existing file's mode, or 0644 for a new file.
    pub mode: Option<u32>,
    /// Copy the existing file to `<path>.<pid>.<YYYY-MM-DD@HH:MM:SS>~` first (Ansible's
    /// backup naming).
    pub backup: bool,
}

/// What a write did, for the caller's report.
#[derive(Debug, Default)]
pub struct Written {
    pub backup_file: Option<PathBuf>,
}

pub fn write(path: &Path, contents: &[u8], options: WriteOptions) -> Result<Written> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let existing = fs::metadata(path).ok();
    let mode = options
        .mode
        .or_else(|| existing.as_ref().map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);

    let io_err = |what: &str, e: std::io::Error| {
        Error::failed(format!("cannot {what} {}: {e}", path.display()))
    };

    let mut written = Written::default();
    if options.backup && existing.is_some() {
        let backup = backup_path(path);
        fs::copy(path, &backup).map_err(|e| io_err("back up", e))?;
        written.backup_file = Some(backup);
    }

    let mut tmp = tempfile::Builder::new()
        .prefix(".affine-authentik-")
        .tempfile_in(&dir)
        .map_err(|e| {
            Error::failed(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })?;
    tmp.write_all(contents).map_err(|e| io_err("write", e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("set the mode of", e))?;
    if let Some(meta) = &existing {
        // Keep the owner a deployment gave the file. Only root may give a file away; an
        // unprivileged writer keeps its own ownership, as `cp` would.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    }
    tmp.as_file().sync_all().map_err(|e| io_err("flush", e))?;
    tmp.persist(path).map_err(|e| io_err("replace", e.error))?;
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(written)
}

fn backup_path(path: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.{}~", std::process::id(), utc_timestamp(secs)));
    PathBuf::from(name)
}

/// `YYYY-MM-DD@HH:MM:SS` in UTC, from seconds since the epoch (Howard Hinnant's
/// days-to-civil algorithm; saves a date crate for one timestamp).
fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}@{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01@00:00:00");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29@00:00:00");
        assert_eq!(utc_timestamp(1_796_086_923), "2026-12-01@01:02:03");
    }

    #[test]
    fn replaces_content_keeps_mode_and_backs_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let w = write(
            &path,
            b"new",
            WriteOptions {
                mode: None,
                backup: true,
            },
        )
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let backup = w.backup_file.expect("a backup");
        assert_eq!(fs::read(&backup).unwrap(), b"old");
        // Only the file, its backup: no temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn new_file_gets_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bp.yaml");
        write(
            &path,
            b"x",
            WriteOptions {
                mode: Some(0o600),
                backup: true,
            },
        )
        .unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_missing_directory_fails_without_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/bp.yaml");
        assert!(write(&path, b"x", WriteOptions::default()).is_err());
        assert!(!path.exists());
    }
}
