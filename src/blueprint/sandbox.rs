//! A user's template is rendered in a child process of this same binary, under an
//! address-space limit. minijinja's fuel stops a template that loops, but one step can
//! allocate gigabytes (`("x"*100000000)|replace("x","xxxxxxxxxx")`, or `s ~ s` doubled a few
//! times), and an allocation that fails aborts the process: as a module, Ansible would get
//! no JSON at all. In the child the abort is contained, and the parent says what happened.
//!
//! The job (template and values, the client secret among them when it is inline) goes over
//! the child's stdin, never its command line.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::blueprint::render::{render_source, MAX_OUTPUT_BYTES};
use crate::error::{Error, Result};
use crate::exit_codes::ExitCode;

/// The hidden first argument that makes the binary a template renderer.
pub const CHILD_ARG: &str = "__render-template";

/// Address space the child may use: far above a blueprint's few MB (and the binary's own
/// mappings), far below what would strain a small host.
pub const MEMORY_LIMIT: u64 = 1 << 30;

/// The most the child may send back: the capped output, JSON-escaped.
const MAX_ANSWER_BYTES: u64 = 8 * MAX_OUTPUT_BYTES as u64;

/// The most a job may be: a template (1 MiB at most) and its values.
const MAX_JOB_BYTES: u64 = 4 << 20;

#[derive(Serialize, Deserialize)]
struct Job {
    name: String,
    source: String,
    context: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
enum Answer {
    Rendered(String),
    Refused(String),
}

pub fn render_in_child(name: &str, source: &str, context: serde_json::Value) -> Result<String> {
    let failed = |what: &str, e: std::io::Error| {
        Error::failed(format!("cannot render template {name}: {what}: {e}"))
    };
    let exe = std::env::current_exe().map_err(|e| failed("this program's file", e))?;
    let job = serde_json::to_vec(&Job {
        name: name.to_string(),
        source: source.to_string(),
        context,
    })
    .map_err(|e| Error::failed(format!("cannot pass template {name} its values: {e}")))?;
    let mut command = Command::new(exe);
    command
        .arg(CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // The child's only words on stderr would be the allocator's abort message.
        .stderr(Stdio::null());
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe and
    // touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT as libc::rlim_t,
                rlim_max: MEMORY_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| failed("starting the renderer", e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A child that died early closes its end: the write fails, and the status says why.
    let _ = stdin.write_all(&job);
    drop(stdin);
    let mut answer = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("stdout is piped")
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer);
    let status = child
        .wait()
        .map_err(|e| failed("waiting for the renderer", e))?;
    let parsed = read
        .ok()
        .filter(|_| status.success())
        .and_then(|_| serde_json::from_slice::<Answer>(&answer).ok());
    match parsed {
        Some(Answer::Rendered(text)) => Ok(text),
        Some(Answer::Refused(message)) => Err(Error::usage(message)),
        None => Err(Error::usage(format!(
            "template {name} needed more than {} MiB of memory while rendering (a string grown \
             without bound?) and was stopped; fix the template, a blueprint needs a few MB",
            MEMORY_LIMIT >> 20
        ))),
    }
}

/// The child's side: one job from stdin, one answer on stdout.
pub fn run_child() -> ExitCode {
    let mut job = Vec::new();
    if std::io::stdin()
        .take(MAX_JOB_BYTES)
        .read_to_end(&mut job)
        .is_err()
    {
        return ExitCode::Failure;
    }
    let Ok(job) = serde_json::from_slice::<Job>(&job) else {
        return ExitCode::Failure;
    };
    let answer = match render_source(&job.name, &job.source, &job.context) {
        Ok(text) => Answer::Rendered(text),
        Err(e) => Answer::Refused(e.message().to_string()),
    };
    let Ok(text) = serde_json::to_vec(&answer) else {
        return ExitCode::Failure;
    };
    let mut out = std::io::stdout().lock();
    if out.write_all(&text).and_then(|_| out.flush()).is_err() {
        return ExitCode::Failure;
    }
    ExitCode::Success
}
