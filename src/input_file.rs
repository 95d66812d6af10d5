//! Reading a file the user names as input (a template, a token or password file, a CA
//! bundle, a module's args file): only a regular file, only up to a limit. A FIFO would
//! block the open until a writer comes (no timeout helps), and a device such as /dev/zero
//! never ends, so both are refused from a stat, before the file is opened. Messages name the
//! input and the path, never the content: it may be a secret.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A token or a password file: [`crate::ansible::params::MAX_TEXT_LEN`], the most any value
/// here may be.
pub const SECRET_FILE_LIMIT: u64 = crate::ansible::params::MAX_TEXT_LEN as u64;
/// A blueprint template: real ones are a few kB.
pub const TEMPLATE_LIMIT: u64 = 1 << 20;
/// A PEM CA bundle: the whole Mozilla list is about 200 kB.
pub const CA_BUNDLE_LIMIT: u64 = 4 << 20;
/// A module's args file: Ansible's own keys and the task's parameters, which may be large
/// (a long template inline), but not without end.
pub const ARGS_FILE_LIMIT: u64 = 16 << 20;

/// The bytes of the regular file at `path` (symlinks followed), at most `limit` of them.
/// `what` names the input in messages (`--template`, `ca_path (--ca-path)`). A FIFO, a
/// device, a folder or a socket is refused without being opened; a file larger than `limit`
/// without being read; one that grows past it while read is cut and refused.
pub fn read_capped(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let shown = path.display();
    let cannot_read = |e: std::io::Error| Error::usage(format!("cannot read {what} {shown}: {e}"));
    let meta = fs::metadata(path).map_err(cannot_read)?;
    check_regular(&meta, path, what)?;
    check_size(meta.len(), path, what, limit)?;
    let file = fs::File::open(path).map_err(cannot_read)?;
    // The path may have been swapped between the stat and the open: the open file decides.
    let meta = file.metadata().map_err(cannot_read)?;
    check_regular(&meta, path, what)?;
    let mut bytes = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    check_size(bytes.len() as u64, path, what, limit)?;
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text, without a leading byte-order mark (a Windows editor's: it
/// says nothing, and would end up in a token, a template's output or before an args file's
/// JSON).
pub fn read_capped_to_string(path: &Path, what: &str, limit: u64) -> Result<String> {
    text_of(read_capped(path, what, limit)?, path, what)
}

fn text_of(bytes: Vec<u8>, path: &Path, what: &str) -> Result<String> {
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::usage(format!(
            "{what} {} is not UTF-8 text (invalid byte at {}); save it as UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// How long a secret file that is a pipe may take to deliver its content.
pub const PIPE_WAIT: Duration = Duration::from_secs(3);

/// A token or password file: at most [`SECRET_FILE_LIMIT`] bytes of text, as
/// [`read_capped_to_string`] reads it. A pipe is welcome, since it keeps a secret off the
/// disk (`--authentik-token-file <(pass show authentik/token)`): it is opened without waiting
/// for a writer and read until its writer closes it, for at most [`PIPE_WAIT`]; a FIFO
/// nobody writes to is an error after that wait instead of a hang.
pub fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    use std::os::unix::fs::FileTypeExt;
    if fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) {
        text_of(
            read_pipe(path, what, SECRET_FILE_LIMIT, PIPE_WAIT)?,
            path,
            what,
        )
    } else {
        read_capped_to_string(path, what, SECRET_FILE_LIMIT)
    }
}

/// Reads a pipe opened non-blocking (so a FIFO without a writer cannot block the open):
/// until end of file, at most `limit` bytes, within `wait`.
fn read_pipe(path: &Path, what: &str, limit: u64, wait: Duration) -> Result<Vec<u8>> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let shown = path.display();
    let cannot_read = |e: std::io::Error| Error::usage(format!("cannot read {what} {shown}: {e}"));
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot_read)?;
    if !file.metadata().map_err(cannot_read)?.file_type().is_fifo() {
        // Swapped for something else between the look and the open: read it as a file.
        return read_capped(path, what, limit);
    }
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk) {
            // End of file with nothing read: no writer has opened it yet (a FIFO whose
            // writer starts after us), or one opened and closed it without a word. Wait
            // for one, as a blocking open would, but not for ever.
            Ok(0) if bytes.is_empty() && started.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(0) => break,
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                check_size(bytes.len() as u64, path, what, limit)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if started.elapsed() >= wait {
                    return Err(Error::usage(format!(
                        "{what} {shown} is a pipe whose writer sent no end within {} s; \
                         give a regular file, or a command that exits",
                        wait.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(cannot_read(e)),
        }
    }
    if bytes.is_empty() {
        return Err(Error::usage(format!(
            "{what} {shown} is a FIFO (named pipe) nobody wrote to within {} s; give a \
             regular file, or start the writer first",
            wait.as_secs()
        )));
    }
    Ok(bytes)
}

fn check_regular(meta: &fs::Metadata, path: &Path, what: &str) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Some(kind) = crate::atomic_file::not_a_file(&meta.file_type()) else {
        return Ok(());
    };
    let instead = if meta.is_dir() {
        "give the path of the file in it"
    } else if meta.file_type().is_fifo() {
        "reading it would wait for a writer; write the content to a regular file and give its path"
    } else {
        "give the path of a regular file"
    };
    Err(Error::usage(format!(
        "{what} {} is {kind}, not a regular file; {instead}",
        path.display()
    )))
}

fn check_size(len: u64, path: &Path, what: &str, limit: u64) -> Result<()> {
    if len > limit {
        return Err(Error::usage(format!(
            "{what} {} is larger than {}, more than this input may be; is it the right file?",
            path.display(),
            size_words(limit)
        )));
    }
    Ok(())
}

/// `limit` in words: "4 MiB", "4 KiB (4096 bytes)", "100 bytes".
fn size_words(limit: u64) -> String {
    if limit >= 1 << 20 && limit % (1 << 20) == 0 {
        format!("{} MiB", limit >> 20)
    } else if limit >= 1 << 10 && limit % (1 << 10) == 0 {
        format!("{} KiB ({limit} bytes)", limit >> 10)
    } else {
        format!("{limit} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn message(r: Result<impl std::fmt::Debug>) -> String {
        r.expect_err("refused").to_string()
    }

    #[test]
    fn a_regular_file_is_read_and_a_symlink_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, "hello").unwrap();
        assert_eq!(read_capped(&path, "--x", 5).unwrap(), b"hello");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert_eq!(read_capped_to_string(&link, "--x", 5).unwrap(), "hello");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_naming_the_limit_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, "secret-value!").unwrap();
        let m = message(read_capped(&path, "--x", 12));
        assert!(m.contains("--x") && m.contains("12 bytes"), "{m}");
        assert!(!m.contains("secret"), "{m}");
        fs::File::create(&path)
            .unwrap()
            .set_len((1 << 20) + 1)
            .unwrap();
        let m = message(read_capped(&path, "--template", TEMPLATE_LIMIT));
        assert!(m.contains("larger than 1 MiB"), "{m}");
        assert_eq!(size_words(4096), "4 KiB (4096 bytes)");
        assert_eq!(size_words(4 << 20), "4 MiB");
    }

    #[test]
    fn a_fifo_a_device_and_a_folder_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let started = Instant::now();
        let m = message(read_capped(&fifo, "--authentik-token-file", 10));
        assert!(
            m.contains("--authentik-token-file") && m.contains("FIFO"),
            "{m}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        let m = message(read_capped(Path::new("/dev/zero"), "ca_path", 10));
        assert!(m.contains("a device"), "{m}");
        let m = message(read_capped(dir.path(), "template", 10));
        assert!(m.contains("a folder"), "{m}");
        let m = message(read_capped(&dir.path().join("none"), "template", 10));
        assert!(m.contains("cannot read template"), "{m}");
    }

    #[test]
    fn text_must_be_utf8_and_a_secret_loses_its_byte_order_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, b"ab\xff").unwrap();
        let m = message(read_capped_to_string(&path, "--x", 10));
        assert!(m.contains("not UTF-8") && m.contains("byte at 2"), "{m}");
        fs::write(&path, "\u{feff}token-value\n").unwrap();
        assert_eq!(read_secret_file(&path, "--x").unwrap(), "token-value\n");
        fs::write(&path, "token-value").unwrap();
        assert_eq!(read_secret_file(&path, "--x").unwrap(), "token-value");
    }
}
