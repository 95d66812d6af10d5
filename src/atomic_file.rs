//! Writing files so that a reader sees the old content or the new, never half of either:
//! a temporary file in the target's own folder, fsync, rename, fsync of the folder.
//!
//! The one writer behind `blueprint -o`, `config_file`, `dest` and `install-modules`, and
//! built so it cannot destroy what sits at the path: a device, a FIFO, a socket or a folder
//! is refused (a rename would replace `/dev/null` itself, as root); a symlink is followed and
//! the file it points to is replaced in ITS folder, so the link stays a link and the real
//! target gets the content; a read-only file is refused (someone made it so on purpose).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Every temporary file this writer makes starts so; a file of that name older than
/// [`STALE_AFTER`] is left over from a killed run and is removed by the next write.
pub const TEMP_PREFIX: &str = ".affine-authentik-";

/// Long enough that no live write (even of a large binary over slow storage) is still
/// filling a temporary file this old.
/// The random part of a temporary file's name (set explicitly, not left to `tempfile`'s
/// default, since the stale-file cleanup matches it).
const TEMP_RANDOM_LEN: usize = 6;

pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Mode for the file. `None`: keep the existing file's mode, or 0644 for a new file
    /// (0600 with `secret`).
    pub mode: Option<u32>,
    /// Copy the existing file to `<path>.<pid>.<YYYY-MM-DD@HH:MM:SS>~` first (Ansible's
    /// backup naming).
    pub backup: bool,
    /// Replace the file even when it is read-only (no write bit for anyone), as `cp -f`
    /// does; by default a read-only file is refused, since someone made it so on purpose.
    /// The new file keeps the read-only mode unless `mode` says otherwise.
    pub replace_read_only: bool,
    /// The content holds a literal secret: a new file is 0600, and an existing file that
    /// group or others may read loses those bits (with a warning in [`Written`]), unless
    /// `mode` says otherwise.
    pub secret: bool,
}

/// What a write did, for the caller's report.
#[derive(Debug, Default)]
pub struct Written {
    pub backup_file: Option<PathBuf>,
    /// Said to the user: a mode tightened for a secret, stale temporary files removed.
    pub warnings: Vec<String>,
}

/// The file a write to `path` replaces: `path` itself, or the file a symlink at `path`
/// points to (resolved through every link). `Ok(None)` when nothing exists at `path` yet.
/// Anything but a regular file, a dangling link and a missing folder are errors that say
/// what is there and what to give instead. Call it before reading the file too: a FIFO
/// would block the read, a device never end it.
pub fn resolve_target(path: &Path) -> Result<(PathBuf, Option<fs::Metadata>)> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent_dir(path);
            match fs::metadata(&dir) {
                Ok(m) if m.is_dir() => Ok((path.to_path_buf(), None)),
                Ok(_) => Err(Error::failed(format!(
                    "cannot write {shown}: {} is not a folder",
                    dir.display()
                ))),
                Err(_) => Err(Error::failed(format!(
                    "cannot write {shown}: the folder {} does not exist; create it first",
                    dir.display()
                ))),
            }
        }
        Err(e) => Err(Error::failed(format!("cannot look at {shown}: {e}"))),
        Ok(link) => {
            let target = if link.file_type().is_symlink() {
                follow_link(path)?
            } else {
                path.to_path_buf()
            };
            let meta = fs::metadata(&target)
                .map_err(|e| Error::failed(format!("cannot look at {shown}: {e}")))?;
            let what = not_a_file(&meta.file_type());
            if what.is_none() {
                if let Some(stream) = a_stream_of_this_process(path, &meta) {
                    return Err(Error::failed(format!(
                        "{shown} is {stream} (the file{} it is redirected to), not a file to replace: \
                         it was left alone; leave out -o to print, or give the path of a file",
                        if target != path {
                            format!(" {}", target.display())
                        } else {
                            String::new()
                        }
                    )));
                }
            }
            if let Some(what) = what {
                let via = if target != path {
                    format!(" (through the link to {})", target.display())
                } else {
                    String::new()
                };
                return Err(Error::failed(format!(
                    "{shown}{via} is {what}, not a regular file: it was left alone; give the path of a file"
                )));
            }
            Ok((target, Some(meta)))
        }
    }
}

/// What is at a path that is not a regular file ("a FIFO (named pipe)", "a folder"...), for
/// a message; `None` for a regular file. The readers of input files say it the same way.
pub fn not_a_file(ft: &fs::FileType) -> Option<&'static str> {
    Some(if ft.is_file() {
        return None;
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    })
}

/// Whether `path` (a regular file, `meta`) is reached through this process's own streams:
/// `/dev/stdout` → `/proc/self/fd/1` → the file a shell redirected stdout to (`>> build.log`).
/// Replacing that file would throw away what the shell appended before and send everything
/// after to a deleted file. Seen by the link chain (`/dev/stdout`, `/dev/fd/…`, `/proc/…`) or by the file being
/// the one standard output or error is open on.
fn a_stream_of_this_process(path: &Path, meta: &fs::Metadata) -> Option<&'static str> {
    let mut hop = path.to_path_buf();
    for _ in 0..40 {
        // Not all of /dev: /dev/shm holds ordinary files.
        let stream_path = ["/dev/stdin", "/dev/stdout", "/dev/stderr"]
            .iter()
            .any(|p| hop == Path::new(p));
        if stream_path || hop.starts_with("/dev/fd") || hop.starts_with("/proc") {
            return Some("a stream of this process");
        }
        let Ok(next) = fs::read_link(&hop) else {
            break;
        };
        hop = match hop.parent() {
            Some(dir) if next.is_relative() => dir.join(next),
            _ => next,
        };
    }
    use std::os::fd::{AsFd, BorrowedFd};
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let streams: [(BorrowedFd, &str); 2] = [
        (stdout.as_fd(), "this run's standard output"),
        (stderr.as_fd(), "this run's standard error"),
    ];
    for (fd, name) in streams {
        let Ok(stream) = fd.try_clone_to_owned().map(fs::File::from) else {
            continue;
        };
        if let Ok(m) = stream.metadata() {
            if m.dev() == meta.dev() && m.ino() == meta.ino() {
                return Some(name);
            }
        }
    }
    None
}

/// The file a symlink points to, through every link. `/dev/stdout` → `/proc/self/fd/1` →
/// `pipe:[…]` has no path, but stat knows what it is: the link itself is returned, and the
/// caller's type check refuses it. A link to nothing is an error naming where it points.
fn follow_link(path: &Path) -> Result<PathBuf> {
    match fs::canonicalize(path) {
        Ok(target) => Ok(target),
        Err(_) if fs::metadata(path).is_ok() => Ok(path.to_path_buf()),
        Err(_) => {
            let to = fs::read_link(path)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            Err(Error::failed(format!(
                "{} is a symbolic link to {to}, which does not exist (or is not reachable); \
                 create the file it points to, or remove the link",
                path.display()
            )))
        }
    }
}

/// The largest existing file a caller reads back to compare (a blueprint, a config.json):
/// both are kilobytes; a larger one is the wrong path, and reading it whole would cost its
/// size in memory.
pub const MAX_READ_BACK_BYTES: u64 = 16 << 20;

/// `meta` (of the file at `path`) is small enough to read back, or an error saying why not.
pub fn check_read_back_size(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.len() > MAX_READ_BACK_BYTES {
        return Err(Error::failed(format!(
            "{} is {} MiB, far larger than the file this writes ({} MiB at most); is it the right path? It was left alone",
            path.display(),
            meta.len() >> 20,
            MAX_READ_BACK_BYTES >> 20
        )));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether the file found at `path` (`target` and `existing` from [`resolve_target`]) may be
/// replaced or removed:
/// an error naming the way out for a read-only file, unless `replace_read_only`; then the
/// warning to give. Callers in check mode ask it too, so check mode fails where the run
/// would.
pub fn check_replaceable(
    path: &Path,
    target: &Path,
    existing: Option<&fs::Metadata>,
    replace_read_only: bool,
) -> Result<Option<String>> {
    let Some(meta) = existing else {
        return Ok(None);
    };
    let mode = meta.permissions().mode() & 0o7777;
    // No write bit for anyone: someone made it read-only on purpose; root could replace
    // it, and must not behind their back.
    if mode & 0o222 != 0 {
        return Ok(None);
    }
    if replace_read_only {
        return Ok(Some(format!(
            "{} was read-only (mode {mode:04o}) and was replaced, as force asked",
            path.display()
        )));
    }
    Err(Error::failed(format!(
        "{} is read-only (mode {mode:04o}): it was left alone; to replace it, give --force \
         (in a task: force: true) or make it writable (chmod u+w {})",
        path.display(),
        target.display()
    )))
}

pub fn write(path: &Path, contents: &[u8], options: WriteOptions) -> Result<Written> {
    let (target, existing) = resolve_target(path)?;
    let read_only_warning =
        check_replaceable(path, &target, existing.as_ref(), options.replace_read_only)?;
    let dir = parent_dir(&target);
    let mut written = Written::default();
    written.warnings.extend(read_only_warning);
    let existing_mode = existing.as_ref().map(|m| m.permissions().mode() & 0o7777);
    let mode = match (options.mode, existing_mode) {
        (Some(m), _) => m,
        (None, Some(m)) if options.secret && m & 0o077 != 0 => {
            let tightened = m & !0o077;
            written.warnings.push(format!(
                "{} was mode {m:04o}, readable by others, and now holds a literal client secret: \
                 its mode is now {tightened:04o}",
                path.display()
            ));
            tightened
        }
        (None, Some(m)) => m,
        (None, None) if options.secret => 0o600,
        (None, None) => 0o644,
    };

    let io_err = |what: &str, e: std::io::Error| {
        Error::failed(format!("cannot {what} {}: {e}", path.display()))
    };

    if options.backup && existing.is_some() {
        let backup = backup_path(&target);
        fs::copy(&target, &backup).map_err(|e| io_err("back up", e))?;
        written.backup_file = Some(backup);
    }

    // Dropped on every error path below, which removes the temporary file.
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .rand_bytes(TEMP_RANDOM_LEN)
        .tempfile_in(&dir)
        .map_err(|e| {
            Error::failed(format!(
                "cannot write {}: creating a file in {} failed: {e}",
                path.display(),
                dir.display()
            ))
        })?;
    // The temporary file is 0600 while it fills: a secret is never readable by others.
    tmp.write_all(contents).map_err(|e| io_err("write", e))?;
    if let Some(meta) = &existing {
        // Keep the owner a deployment gave the file. Only root may give a file away; an
        // unprivileged writer keeps its own ownership, as `cp` would.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    }
    // After chown, which would clear setuid/setgid bits.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("set the mode of", e))?;
    tmp.as_file().sync_all().map_err(|e| io_err("flush", e))?;
    let own_uid = tmp.as_file().metadata().map(|m| m.uid()).ok();
    tmp.persist(&target)
        .map_err(|e| io_err("replace", e.error))?;
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    if let Some(uid) = own_uid {
        let removed = remove_stale_temp_files(&dir, uid, STALE_AFTER);
        if removed > 0 {
            written.warnings.push(format!(
                "removed {removed} temporary file(s) {TEMP_PREFIX}* in {} left by an earlier run that was killed",
                dir.display()
            ));
        }
    }
    Ok(written)
}

/// Removes this writer's temporary files in `dir` (by name, owned by `uid`, regular files)
/// not modified for `older_than`: copies of a config.json, secret included, that a killed
/// run left behind. Returns how many were removed; a file it cannot remove is left.
pub fn remove_stale_temp_files(dir: &Path, uid: u32, older_than: Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !is_own_temp_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= older_than);
        if meta.file_type().is_file()
            && meta.uid() == uid
            && old
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// `.affine-authentik-` and the 6 random letters or digits `tempfile` adds: exactly the
/// names this writer makes, so a user's `.affine-authentik-notes.txt` is never one.
fn is_own_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX).is_some_and(|rest| {
        rest.len() == TEMP_RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
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
                backup: true,
                ..Default::default()
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
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_folder_is_named_as_such_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/bp.yaml");
        let e = write(&path, b"x", WriteOptions::default()).unwrap_err();
        assert!(
            e.message().contains("does not exist; create it first"),
            "{e}"
        );
        assert!(!path.exists());
    }

    #[test]
    fn devices_fifos_sockets_and_folders_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        for (path, what) in [
            (PathBuf::from("/dev/null"), "a device"),
            (fifo.clone(), "a FIFO"),
            (dir.path().join("sock"), "a socket"),
            (dir.path().to_path_buf(), "a folder"),
        ] {
            let e = write(&path, b"x", WriteOptions::default()).unwrap_err();
            assert!(e.message().contains(what), "{}: {e}", path.display());
        }
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
        // Nothing but what the test made.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_symlink_stays_a_link_and_its_target_gets_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("volume");
        fs::create_dir(&volume).unwrap();
        let real = volume.join("config.json");
        fs::write(&real, b"old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("config.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write(&link, b"new", WriteOptions::default()).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(mode_of(&real), 0o640);
        // The temporary file was made beside the real file, and is gone.
        assert_eq!(fs::read_dir(&volume).unwrap().count(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_dangling_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("bp.yaml");
        std::os::unix::fs::symlink(dir.path().join("gone/x"), &link).unwrap();
        let e = write(&link, b"x", WriteOptions::default()).unwrap_err();
        assert!(e.message().contains("does not exist"), "{e}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_read_only_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bp.yaml");
        fs::write(&path, b"keep").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let e = write(&path, b"x", WriteOptions::default()).unwrap_err();
        assert!(
            e.message().contains("read-only") && e.message().contains("chmod u+w"),
            "{e}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"keep");
        assert_eq!(mode_of(&path), 0o444);
    }

    #[test]
    fn a_read_only_file_is_replaced_when_asked_and_stays_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bp.yaml");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        let options = WriteOptions {
            replace_read_only: true,
            ..WriteOptions::default()
        };
        let written = write(&path, b"new", options).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o444);
        assert!(
            written.warnings.iter().any(|w| w.contains("read-only")),
            "{:?}",
            written.warnings
        );
    }

    #[test]
    fn a_secret_tightens_an_existing_readable_file_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bp.yaml");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let secret = WriteOptions {
            secret: true,
            ..Default::default()
        };
        let w = write(&path, b"s3cret", secret).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert!(
            w.warnings.iter().any(|m| m.contains("0644")),
            "{:?}",
            w.warnings
        );
        // Already private: no word.
        assert!(write(&path, b"s3cret2", secret)
            .unwrap()
            .warnings
            .is_empty());
        let fresh = dir.path().join("new.yaml");
        write(&fresh, b"s3cret", secret).unwrap();
        assert_eq!(mode_of(&fresh), 0o600);
    }

    #[test]
    fn stale_temporary_files_of_a_killed_run_are_removed_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{TEMP_PREFIX}old123"));
        let fresh = dir.path().join(format!("{TEMP_PREFIX}new456"));
        let other = dir.path().join(".someone-else-tmp");
        // Our prefix, not our name: a user's file, kept however old (found in an audit).
        let users = dir.path().join(format!("{TEMP_PREFIX}notes.txt"));
        for p in [&stale, &fresh, &other, &users] {
            fs::write(p, b"secret copy").unwrap();
        }
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for p in [&stale, &other, &users] {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
        let w = write(&dir.path().join("bp.yaml"), b"x", WriteOptions::default()).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists() && other.exists() && users.exists());
        assert!(
            w.warnings.iter().any(|m| m.contains("removed 1")),
            "{:?}",
            w.warnings
        );
    }
}
