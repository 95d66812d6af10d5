//! Bad input and hostile targets, through the BUILT binary (CLI and modules): each case must
//! end with a clear message that names the input, a non-zero exit that is not a panic
//! (101), nothing written but the file asked for, and no secret in any output (issue 9).
//!
//! The README counts these cases; a new case here is a new line there.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::module_run::{ModuleCall, ModuleRun};
use support::process::{command, unreachable_issuer, Captured};

const AFFINE_URL: &str = "https://affine.example.com";
const ISSUER: &str = "https://auth.example.com/application/o/affine/";
/// A literal client secret; "-SECRET" marks every secret of this file.
const SECRET: &str = "client-secret-SECRET-7d41a9";
const OLD_SECRET: &str = "old-client-secret-SECRET-c0ffee";
const SECRETS: [&str; 3] = [SECRET, OLD_SECRET, "-SECRET"];

/// A refused CLI run: exit `code` (never 101), every word of `words` on stderr, nothing on
/// stdout, no secret anywhere.
#[track_caller]
fn assert_refused(r: &Captured, code: i32, words: &[&str]) {
    assert_ne!(r.code, Some(101), "a panic:\n{}", r.stderr);
    assert_eq!(r.code, Some(code), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.is_empty(),
        "stdout on a refusal: {}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    for w in words {
        assert!(
            r.stderr.to_lowercase().contains(&w.to_lowercase()),
            "stderr lacks {w:?}: {}",
            r.stderr
        );
    }
    r.assert_no_secrets(&SECRETS);
}

fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Captured {
    let mut cmd = command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Captured::of(&mut cmd)
}

fn module(name: &'static str, params: Value) -> ModuleCall {
    ModuleCall::new(name, params)
}

#[track_caller]
fn run_module(call: ModuleCall) -> ModuleRun {
    call.run(&SECRETS)
}

/// A failed module run: the message holds `words`, is not the "internal error" of a
/// panic, and nothing changed.
#[track_caller]
fn assert_module_refused(run: &ModuleRun, words: &[&str]) {
    assert_ne!(run.out.code, Some(101), "{}", run.out.stderr);
    assert!(
        !run.msg().contains("internal error"),
        "a panic: {}",
        run.msg()
    );
    run.assert_failed_with(words);
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// The folder's entries, sorted: what a run left there.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------
// Targets that are not a plain file

#[test]
fn blueprint_output_to_a_device_fifo_socket_or_folder_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    let cases = [
        ("/dev/null".to_string(), "a device"),
        ("/dev/stdout".to_string(), "not a regular file"),
        (fifo.display().to_string(), "a FIFO"),
        (dir.path().join("sock").display().to_string(), "a socket"),
        (dir.path().display().to_string(), "a folder"),
    ];
    for (target, what) in &cases {
        let r = run_cli(
            &["blueprint", "--affine-url", AFFINE_URL, "-o", target],
            &[],
        );
        assert_refused(&r, 1, &[what, "left alone", "leave out -o"]);
    }
    assert!(fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(entries(dir.path()), ["fifo", "sock"]);
}

/// `-o /dev/stdout >> build.log` reaches build.log through /proc/self/fd/1: replacing it
/// would drop what the shell appended before and send the rest to a deleted file.
#[test]
fn output_to_the_file_stdout_or_stderr_is_redirected_to_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("build.log");
    for (target, stream) in [
        ("/dev/stdout", 1),
        ("/dev/stderr", 2),
        ("/proc/self/fd/1", 1),
        (log.to_str().unwrap(), 1),
    ] {
        fs::write(&log, "precious\n").unwrap();
        let redirected = fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut cmd = command(&["blueprint", "--affine-url", AFFINE_URL, "-o", target]);
        if stream == 1 {
            cmd.stdout(redirected);
        } else {
            cmd.stderr(redirected);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{target}");
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("precious\n"), "{target}: {text}");
        assert!(
            !text.contains("authentik_providers_oauth2"),
            "{target}: {text}"
        );
        let said = format!("{}{}", String::from_utf8_lossy(&out.stderr), text);
        assert!(said.contains("leave out -o"), "{target}: {said}");
    }
    assert_eq!(entries(dir.path()), ["build.log"]);
    // Files under /dev that are files (tmpfs /dev/shm) are written as any other.
    if Path::new("/dev/shm").is_dir() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let bp = shm.path().join("bp.yaml");
        let r = run_cli(
            &[
                "blueprint",
                "--affine-url",
                AFFINE_URL,
                "-o",
                bp.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(bp.is_file());
    }
}

#[test]
fn module_dest_and_config_file_on_a_fifo_are_refused_without_blocking_on_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let started = Instant::now();
    let run = run_module(module(
        "authentik_blueprint",
        json!({"affine_url": AFFINE_URL, "dest": fifo.to_str().unwrap()}),
    ));
    assert_module_refused(&run, &["FIFO"]);
    let run = run_module(module(
        "affine_oidc",
        json!({"config_file": fifo.to_str().unwrap(), "issuer": unreachable_issuer(),
               "client_id": "id", "client_secret": SECRET}),
    ));
    assert_module_refused(&run, &["FIFO"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // A sparse 20 GiB file at dest is the wrong path, not something to read into memory.
    let huge = dir.path().join("huge.yaml");
    fs::File::create(&huge).unwrap().set_len(20 << 30).unwrap();
    let run = run_module(module(
        "authentik_blueprint",
        json!({"affine_url": AFFINE_URL, "dest": huge.to_str().unwrap()}),
    ));
    assert_module_refused(&run, &["right path"]);
    assert_eq!(fs::metadata(&huge).unwrap().len(), 20 << 30);
}

#[test]
fn a_symlinked_target_stays_a_link_and_the_file_it_points_to_gets_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    fs::create_dir(&volume).unwrap();
    // blueprint -o
    let real = volume.join("affine.yaml");
    fs::write(&real, "old\n").unwrap();
    let link = dir.path().join("affine.yaml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let r = run_cli(
        &[
            "blueprint",
            "--affine-url",
            AFFINE_URL,
            "-o",
            link.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::read_to_string(&real).unwrap().contains("version: 1"));
    // apply --config-file, the common /etc/affine/config.json → volume case
    let real_config = volume.join("config.json");
    fs::write(&real_config, "{\"server\": {\"name\": \"n\"}}\n").unwrap();
    let config_link = dir.path().join("config.json");
    std::os::unix::fs::symlink(&real_config, &config_link).unwrap();
    let r = run_cli(
        &[
            "apply",
            "--config-file",
            config_link.to_str().unwrap(),
            "--issuer",
            unreachable_issuer(),
            "--client-id",
            "id",
        ],
        &[("AFFINE_OIDC_CLIENT_SECRET", SECRET)],
    );
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    r.assert_no_secrets(&SECRETS);
    assert!(fs::symlink_metadata(&config_link)
        .unwrap()
        .file_type()
        .is_symlink());
    let doc: Value = serde_json::from_str(&fs::read_to_string(&real_config).unwrap()).unwrap();
    assert_eq!(
        doc["oauth"]["providers.oidc"]["clientSecret"],
        json!(SECRET)
    );
    // No temporary file left in either folder.
    assert_eq!(entries(&volume), ["affine.yaml", "config.json"]);
    assert_eq!(
        entries(dir.path()),
        ["affine.yaml", "config.json", "volume"]
    );
}

#[test]
fn a_read_only_file_and_a_missing_folder_are_refused_with_their_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("affine.yaml");
    fs::write(&ro, "keep\n").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
    let r = run_cli(
        &[
            "blueprint",
            "--affine-url",
            AFFINE_URL,
            "-o",
            ro.to_str().unwrap(),
        ],
        &[],
    );
    assert_refused(&r, 1, &["read-only", "--force", "chmod u+w"]);
    assert_eq!(fs::read_to_string(&ro).unwrap(), "keep\n");
    assert_eq!(mode_of(&ro), 0o444);

    let missing = dir.path().join("no/such/affine.yaml");
    let r = run_cli(
        &[
            "blueprint",
            "--affine-url",
            AFFINE_URL,
            "-o",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert_refused(&r, 1, &["does not exist", "create it first"]);
    assert!(!r.stderr.contains(".affine-authentik-"), "{}", r.stderr);
    assert_eq!(entries(dir.path()), ["affine.yaml"]);
}

/// A read-only file is replaced only when asked (`--force`, `force: true`), keeps its
/// read-only mode then, and check mode fails on it exactly as the run would.
#[test]
fn a_read_only_target_is_replaced_only_when_forced_and_check_mode_says_so_first() {
    let dir = tempfile::tempdir().unwrap();
    let read_only = |name: &str, content: &str| {
        let path = dir.path().join(name);
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        path
    };

    // The CLI: -o with --force.
    let bp = read_only("cli.yaml", "old\n");
    let bp_arg = bp.to_str().unwrap();
    let r = run_cli(
        &[
            "blueprint",
            "--affine-url",
            AFFINE_URL,
            "-o",
            bp_arg,
            "--force",
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(fs::read_to_string(&bp)
        .unwrap()
        .contains("authentik_providers_oauth2"));
    assert_eq!(mode_of(&bp), 0o444);
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);
    // --force without -o is a usage error, not a silent no-op.
    let r = run_cli(&["blueprint", "--affine-url", AFFINE_URL, "--force"], &[]);
    assert_refused(&r, 2, &["--output"]);

    // authentik_blueprint: check mode fails as the run would; force replaces.
    let dest = read_only("dest.yaml", "old\n");
    let params = json!({"affine_url": AFFINE_URL, "dest": dest.to_str().unwrap()});
    let run = run_module(module("authentik_blueprint", params.clone()).check());
    assert_module_refused(&run, &["read-only", "force: true"]);
    let run = run_module(module("authentik_blueprint", params.clone()));
    assert_module_refused(&run, &["read-only", "force: true"]);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
    let mut forced = params.clone();
    forced["force"] = json!(true);
    let run = run_module(module("authentik_blueprint", forced.clone()).check());
    run.assert_ok();
    assert!(run.changed());
    assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
    let run = run_module(module("authentik_blueprint", forced.clone()));
    run.assert_ok();
    assert!(run.changed());
    assert_eq!(mode_of(&dest), 0o444);
    // Up to date now: a read-only file that needs no change is fine without force.
    let run = run_module(module("authentik_blueprint", params.clone()));
    run.assert_ok();
    assert!(!run.changed(), "{}", run.msg());
    // Removing is replacing with nothing.
    let mut absent = params.clone();
    absent["state"] = json!("absent");
    let run = run_module(module("authentik_blueprint", absent.clone()));
    assert_module_refused(&run, &["read-only"]);
    assert!(dest.exists());
    absent["force"] = json!(true);
    run_module(module("authentik_blueprint", absent)).assert_ok();
    assert!(!dest.exists());

    // affine_oidc on config.json, and apply --config-file --force.
    let config = read_only("config.json", "{\"server\": {\"name\": \"x\"}}\n");
    let params = json!({"config_file": config.to_str().unwrap(), "issuer": ISSUER,
                        "client_id": "id", "client_secret": SECRET});
    let run = run_module(module("affine_oidc", params.clone()).check());
    assert_module_refused(&run, &["read-only", "force: true"]);
    let r = run_cli(
        &[
            "apply",
            "--config-file",
            config.to_str().unwrap(),
            "--issuer",
            ISSUER,
            "--client-id",
            "id",
        ],
        &[("AFFINE_OIDC_CLIENT_SECRET", SECRET)],
    );
    assert_refused(&r, 1, &["read-only", "--force"]);
    let r = run_cli(
        &[
            "apply",
            "--config-file",
            config.to_str().unwrap(),
            "--issuer",
            ISSUER,
            "--client-id",
            "id",
            "--force",
        ],
        &[("AFFINE_OIDC_CLIENT_SECRET", SECRET)],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    r.assert_no_secrets(&SECRETS);
    let doc: Value = serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(doc["oauth"]["providers.oidc"]["clientId"], json!("id"));
    assert_eq!(doc["server"]["name"], json!("x"));
    assert_eq!(mode_of(&config), 0o444);
    assert_eq!(entries(dir.path()), ["cli.yaml", "config.json"]);
}

#[test]
fn stale_temporary_files_of_a_killed_run_are_removed_by_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join(".affine-authentik-Kx9dQ2");
    fs::write(&stale, format!("{{\"clientSecret\": \"{SECRET}\"}}")).unwrap();
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let out = dir.path().join("affine.yaml");
    let r = run_cli(
        &[
            "blueprint",
            "--affine-url",
            AFFINE_URL,
            "-o",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("removed 1 temporary file"),
        "{}",
        r.stderr
    );
    assert_eq!(entries(dir.path()), ["affine.yaml"]);
}

#[test]
fn a_kill_9_mid_write_leaves_old_or_new_and_the_next_run_cleans_up() {
    // install-modules writes this ~90 MB binary twice: long enough to be killed mid-write.
    let binary_len = fs::metadata(support::process::bin()).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library");
    for delay_ms in [30, 120, 300] {
        let mut child = command(&["install-modules", library.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no destructor, no cleanup of its own
        let _ = child.wait();
        for module in ["affine_oidc", "authentik_blueprint"] {
            let path = library.join(module);
            if let Ok(meta) = fs::metadata(&path) {
                // Never a half-written module: the whole binary or nothing.
                assert_eq!(meta.len(), binary_len, "{module} after {delay_ms} ms");
            }
        }
    }
    // What a killed run left, aged past the cleanup threshold.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let mut left = 0;
    for entry in fs::read_dir(&library).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".affine-authentik-")
        {
            left += 1;
            fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
    }
    eprintln!("{left} temporary file(s) left by the kills");
    let r = run_cli(&["install-modules", library.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        entries(&library),
        [
            "affine_oidc",
            "affine_oidc.yml",
            "authentik_blueprint",
            "authentik_blueprint.yml"
        ],
        "{left} temporary file(s) were left by the kills"
    );
}

#[test]
fn a_literal_secret_tightens_an_existing_0644_dest_to_0600_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    fs::write(&dest, "old\n").unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
    let run = run_module(module(
        "authentik_blueprint",
        json!({"affine_url": AFFINE_URL, "dest": dest.to_str().unwrap(), "client_secret": SECRET}),
    ));
    run.assert_ok();
    assert_eq!(mode_of(&dest), 0o600);
    assert!(
        run.warnings().iter().any(|w| w.contains("0644")),
        "{:?}",
        run.warnings()
    );
}

// ---------------------------------------------------------------------------------------
// Bounded: bodies, templates, timeouts

/// A loopback server that reads each request's first bytes, sends `head`, then calls
/// `body` until it reports the connection gone. Returns its base URL; the thread lives as
/// long as the test process.
fn fault_server(head: &'static [u8], body: fn(&mut std::net::TcpStream) -> bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(head);
                while body(&mut stream) {}
            });
        }
    });
    url
}

/// 200 and a body that never ends.
fn endless_body_server() -> String {
    fault_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[",
        |stream| stream.write_all(&[b' '; 64 * 1024]).is_ok(),
    )
}

/// 200, `Content-Length: 1000`, then one byte of the body a second: each read gets
/// something, so only a deadline for the whole answer ends it.
fn slow_drip_server() -> String {
    fault_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        |stream| {
            let sent = stream.write_all(b" ").is_ok();
            std::thread::sleep(Duration::from_secs(1));
            sent
        },
    )
}

/// The three runs that read a server's answers, pointed at `server`: `apply` (AFFiNE's
/// API), the `authentik_blueprint` module (authentik's API) and `verify` (the issuer).
fn apply_against(server: &str, timeout: u32) -> Captured {
    run_cli(
        &[
            "apply",
            "--affine-url",
            server,
            "--admin-email",
            "admin@example.com",
            "--issuer",
            unreachable_issuer(),
            "--client-id",
            "id",
            "--timeout",
            &timeout.to_string(),
        ],
        &[
            ("AFFINE_ADMIN_PASSWORD", "admin-password-SECRET"),
            ("AFFINE_OIDC_CLIENT_SECRET", SECRET),
        ],
    )
}

fn module_against(server: &str, timeout: u32) -> ModuleRun {
    run_module(module(
        "authentik_blueprint",
        json!({"affine_url": AFFINE_URL, "authentik_url": server,
               "authentik_token": "token-SECRET-1234", "timeout": timeout}),
    ))
}

fn verify_against(server: &str, timeout: u32) -> Captured {
    let issuer = format!("{server}/application/o/affine/");
    run_cli(
        &[
            "verify",
            "--affine-url",
            server,
            "--issuer",
            &issuer,
            "--timeout",
            &timeout.to_string(),
        ],
        &[],
    )
}

#[test]
fn an_endless_body_is_cut_at_the_cap_with_a_message_not_read_into_memory() {
    let server = endless_body_server();
    let started = Instant::now();
    assert_refused(&apply_against(&server, 30), 1, &["larger than 4 MiB"]);
    assert_module_refused(&module_against(&server, 30), &["larger than 4 MiB"]);
    // verify reports each link: the ones that read the endless body fail, none hangs.
    let r = verify_against(&server, 30);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("MiB"), "{}", r.stdout);
    // Well inside the timeout: the cap, not the clock, ended all three.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_template_that_loops_or_floods_stops_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let looping = dir.path().join("loop.j2");
    fs::write(
        &looping,
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let flood = dir.path().join("flood.j2");
    fs::write(
        &flood,
        "{% for i in range(50000) %}{{ 'x' * 1000 }}{% endfor %}",
    )
    .unwrap();
    // One step, a gigabyte: fuel cannot see it; the renderer's memory limit stops it, and
    // the module still answers with JSON (an aborted process would answer nothing).
    let bomb = dir.path().join("bomb.j2");
    fs::write(
        &bomb,
        "{{ ('x' * 100000000) | replace('x', 'xxxxxxxxxx') }}",
    )
    .unwrap();
    let started = Instant::now();
    for (template, words) in [
        (&looping, &["did not finish", "loop"][..]),
        (&flood, &["more than 1 MiB"][..]),
        (
            &bomb,
            &["more than 1024 MiB of memory", "fix the template"][..],
        ),
    ] {
        let out = dir.path().join("bp.yaml");
        let r = run_cli(
            &[
                "blueprint",
                "--affine-url",
                AFFINE_URL,
                "--template",
                template.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert_refused(&r, 2, words);
        assert!(!out.exists());
        let run = run_module(module(
            "authentik_blueprint",
            json!({"affine_url": AFFINE_URL, "template": template.to_str().unwrap(),
                   "dest": out.to_str().unwrap()}),
        ));
        assert_module_refused(&run, words);
        assert!(!out.exists());
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_server_that_drips_its_answer_is_cut_at_the_timeout() {
    let server = slow_drip_server();
    // Each run makes a request or a few, each cut 2 s after it started.
    let bound = Duration::from_secs(2 + 3);
    let started = Instant::now();
    assert_refused(&apply_against(&server, 2), 1, &["too slowly", "timeout"]);
    assert!(
        started.elapsed() < bound,
        "apply took {:?}",
        started.elapsed()
    );

    let run = module_against(&server, 2);
    assert_module_refused(&run, &["too slowly", "timeout"]);
    assert!(run.elapsed < bound, "the module took {:?}", run.elapsed);

    // verify makes one request per link it checks (two here: the issuer and AFFiNE), each
    // with its own 2 s.
    let started = Instant::now();
    let r = verify_against(&server, 2);
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("too slowly"), "{}", r.stdout);
    assert!(!r.stdout.contains("more than AFFiNE reads"), "{}", r.stdout);
    assert!(
        started.elapsed() < Duration::from_secs(2 * 2 + 4),
        "verify took {:?}: {}",
        started.elapsed(),
        r.stdout
    );
}

// ---------------------------------------------------------------------------------------
// Input files that are not a plain file, or too large

#[test]
fn input_files_on_a_fifo_are_refused_at_once_naming_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    let out = dir.path().join("bp.yaml");
    let out = out.to_str().unwrap();
    let apply_env = [
        ("AFFINE_ADMIN_PASSWORD", "admin-password-SECRET"),
        ("AFFINE_OIDC_CLIENT_SECRET", SECRET),
    ];
    let cases = [
        (
            vec![
                "verify",
                "--affine-url",
                AFFINE_URL,
                "--authentik-url",
                "https://auth.example.com",
                "--authentik-token-file",
                fifo,
            ],
            "--authentik-token-file",
        ),
        (
            vec![
                "verify",
                "--affine-url",
                AFFINE_URL,
                "--issuer",
                ISSUER,
                "--login",
                "tester",
                "--login-password-file",
                fifo,
            ],
            "--login-password-file",
        ),
        (
            vec![
                "blueprint",
                "--affine-url",
                AFFINE_URL,
                "--template",
                fifo,
                "-o",
                out,
            ],
            "--template",
        ),
        (
            vec![
                "apply",
                "--affine-url",
                AFFINE_URL,
                "--admin-email",
                "admin@example.com",
                "--issuer",
                unreachable_issuer(),
                "--client-id",
                "id",
                "--ca-path",
                fifo,
            ],
            "--ca-path",
        ),
    ];
    for (args, flag) in &cases {
        // verify reads no secret it is not asked for; apply wants its credentials.
        let env: &[(&str, &str)] = if args[0] == "apply" { &apply_env } else { &[] };
        let started = Instant::now();
        let r = run_cli(args, env);
        assert_refused(&r, 2, &[flag, "FIFO", "regular file"]);
        // A secret file may be a pipe (verify waits 3 s for its writer); nothing else may.
        assert!(started.elapsed() < Duration::from_secs(8), "{args:?}");
    }
    for params in [
        json!({"affine_url": AFFINE_URL, "template": fifo, "dest": out}),
        json!({"affine_url": AFFINE_URL, "authentik_url": "https://auth.example.com",
               "authentik_token": "token-SECRET-1234", "ca_path": fifo}),
    ] {
        let run = run_module(module("authentik_blueprint", params.clone()));
        let name = if params.get("template").is_some() {
            "template"
        } else {
            "ca_path"
        };
        assert_module_refused(&run, &[name, "FIFO"]);
        assert!(run.elapsed < Duration::from_secs(5), "{params}");
    }
    // The args file itself: still the one JSON object of a failure.
    let started = Instant::now();
    let r = run_cli(&["module", fifo], &[]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_ne!(r.code, Some(0));
    assert_ne!(r.code, Some(101), "{}", r.stderr);
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("one JSON object");
    assert_eq!(v["failed"], json!(true), "{v}");
    let msg = v["msg"].as_str().unwrap();
    assert!(msg.contains("args file") && msg.contains("FIFO"), "{msg}");
    assert!(!out_exists(out));
    assert!(fs::metadata(fifo).unwrap().file_type().is_fifo());
}

fn out_exists(path: &str) -> bool {
    Path::new(path).exists()
}

#[test]
fn a_device_or_an_oversize_file_as_template_or_ca_path_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bp.yaml");
    let out = out.to_str().unwrap();
    // Sparse: 1 MiB and a byte, with no disk or memory spent on it.
    let big = dir.path().join("big.j2");
    fs::File::create(&big)
        .unwrap()
        .set_len((1 << 20) + 1)
        .unwrap();
    let big = big.to_str().unwrap();
    let started = Instant::now();
    for (template, words) in [
        ("/dev/zero", &["a device", "regular file"][..]),
        (big, &["larger than 1 MiB"][..]),
    ] {
        let r = run_cli(
            &[
                "blueprint",
                "--affine-url",
                AFFINE_URL,
                "--template",
                template,
                "-o",
                out,
            ],
            &[],
        );
        assert_refused(&r, 2, &[&["--template"][..], words].concat());
        let run = run_module(module(
            "authentik_blueprint",
            json!({"affine_url": AFFINE_URL, "template": template, "dest": out}),
        ));
        assert_module_refused(&run, &[&["template"][..], words].concat());
    }
    let r = run_cli(
        &[
            "apply",
            "--affine-url",
            AFFINE_URL,
            "--admin-email",
            "admin@example.com",
            "--issuer",
            unreachable_issuer(),
            "--client-id",
            "id",
            "--ca-path",
            "/dev/zero",
        ],
        &[
            ("AFFINE_ADMIN_PASSWORD", "admin-password-SECRET"),
            ("AFFINE_OIDC_CLIENT_SECRET", SECRET),
        ],
    );
    assert_refused(&r, 2, &["--ca-path", "a device"]);
    let run = run_module(module(
        "authentik_blueprint",
        json!({"affine_url": AFFINE_URL, "authentik_url": "https://auth.example.com",
               "authentik_token": "token-SECRET-1234", "ca_path": "/dev/zero"}),
    ));
    assert_module_refused(&run, &["ca_path", "a device"]);
    assert!(!out_exists(out));
    // Refused from a stat: nothing was read.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn huge_and_zero_timeouts_are_refused_not_a_panic() {
    let big = "18446744073709551615";
    for args in [
        vec![
            "verify",
            "--affine-url",
            AFFINE_URL,
            "--issuer",
            ISSUER,
            "--timeout",
            big,
        ],
        vec![
            "verify",
            "--affine-url",
            AFFINE_URL,
            "--issuer",
            ISSUER,
            "--timeout",
            "0",
        ],
        vec![
            "verify",
            "--affine-url",
            AFFINE_URL,
            "--issuer",
            ISSUER,
            "--timeout",
            "3601",
        ],
        vec![
            "apply",
            "--affine-url",
            AFFINE_URL,
            "--admin-email",
            "a@example.com",
            "--issuer",
            unreachable_issuer(),
            "--timeout",
            big,
        ],
    ] {
        // verify reads no secret it is not asked for; apply wants its credentials.
        let env: &[(&str, &str)] = if args[0] == "apply" {
            &[
                ("AFFINE_ADMIN_PASSWORD", "admin-password-SECRET"),
                ("AFFINE_OIDC_CLIENT_SECRET", SECRET),
            ]
        } else {
            &[]
        };
        let r = run_cli(&args, env);
        assert_refused(&r, 2, &["--timeout"]);
    }
    for timeout in [
        json!(1e20),
        json!(-1),
        json!(86400),
        json!("99999999999999999999"),
    ] {
        let run = run_module(module(
            "authentik_blueprint",
            json!({"affine_url": AFFINE_URL, "authentik_url": "http://127.0.0.1:9",
                   "authentik_token": "token-SECRET-1234", "timeout": timeout}),
        ));
        assert_module_refused(&run, &["timeout"]);
    }
}

// ---------------------------------------------------------------------------------------
// Exact input

#[test]
fn bad_module_parameters_are_refused_with_a_message_that_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let d = dest.to_str().unwrap();
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"affine_url": "https://affine.example.com\u{0}x"}),
            &["affine_url", "control character"],
        ),
        (
            json!({"affine_url": format!("https://{}.example.com", "a".repeat(120_000))}),
            &["affine_url", "4096"],
        ),
        (
            json!({"affine_url": format!("https://{}.example.com", "a".repeat(300))}),
            &["affine_url", "253"],
        ),
        (
            json!({"affine_url": "https://affine.example.com:0"}),
            &["port 0"],
        ),
        (json!({"slug": "a".repeat(1 << 20)}), &["slug", "4096"]),
        (json!({"slug": "a".repeat(51)}), &["slug", "at most 50"]),
        (json!({"name": "AFFiNE\nx"}), &["name", "newline"]),
        (
            json!({"authentik_version": 2025.1}),
            &["authentik_version", "quote it"],
        ),
        (
            json!({"client_secret": 1.5}),
            &["client_secret", "quote it"],
        ),
        (json!({"mode": 0o7777}), &["setuid", "0777"]),
        (json!({"mode": "7777"}), &["setuid"]),
        (json!({"mode": "0600\n"}), &["mode", "newline"]),
        // Shown in one order, read in another ("Trojan Source"), or a line break to YAML.
        (
            json!({"name": "AFFiNE\u{202E}x"}),
            &["name", "U+202E", "invisible"],
        ),
        (json!({"group": "users\u{2028}"}), &["group", "U+2028"]),
        (
            json!({"client_secret": "\u{feff}s3cret"}),
            &["client_secret", "U+FEFF"],
        ),
        (
            json!({"affine_url": format!("https://{}.example.com", "a".repeat(64))}),
            &["affine_url", "63"],
        ),
        (
            json!({"scopes": ["ok", "bad\u{7}"]}),
            &["scopes", "control character"],
        ),
        (
            json!({"affine_url": "https://bob:Pw#x-SECRET@affine.example.com"}),
            &["affine_url"],
        ),
    ];
    for (patch, words) in &cases {
        let mut params = json!({"affine_url": AFFINE_URL, "dest": d});
        for (k, v) in patch.as_object().unwrap() {
            params[k] = v.clone();
        }
        let run = run_module(module("authentik_blueprint", params));
        assert_module_refused(&run, words);
        assert!(run.msg().len() < 600, "an echoed value: {}", run.msg());
        // Nor in the invocation echo (a megabyte value made a megabyte result).
        assert!(
            run.out.stdout.len() < 20_000,
            "{} bytes",
            run.out.stdout.len()
        );
        assert!(!dest.exists(), "{patch}");
    }
    let config = dir.path().join("config.json");
    let c = config.to_str().unwrap();
    let oidc_cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"issuer": "https://auth.example.com/application/o/affine/\u{0}"}),
            &["issuer", "control character"],
        ),
        (json!({"args": "=x"}), &["args"]),
        (json!({"args": {"scope": 1.5}}), &["args", "quote it"]),
        (
            json!({"client_id": "id\r\n"}),
            &["client_id", "control character"],
        ),
    ];
    for (patch, words) in &oidc_cases {
        let mut params = json!({"config_file": c, "issuer": unreachable_issuer(),
                                "client_id": "id", "client_secret": SECRET});
        for (k, v) in patch.as_object().unwrap() {
            params[k] = v.clone();
        }
        let run = run_module(module("affine_oidc", params));
        assert_module_refused(&run, words);
        assert!(!config.exists(), "{patch}");
    }
}

/// YAML 1.1 reads `client_secret: 0123` as the number 83: a secret that arrives as a number
/// may not be the one written, and nobody sees it. The task warns (Ansible itself converts).
#[test]
fn a_secret_given_as_a_yaml_number_is_used_with_a_warning_to_quote_it() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let run = run_module(
        module(
            "authentik_blueprint",
            json!({"affine_url": AFFINE_URL, "dest": dest.to_str().unwrap(), "client_secret": 73519}),
        )
        .secret("73519"),
    );
    run.assert_ok();
    let warnings = run.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("client_secret") && w.contains("quote it")),
        "{warnings:?}"
    );
    assert!(fs::read_to_string(&dest).unwrap().contains("73519"));
    // Text stays silent.
    let run = run_module(module(
        "authentik_blueprint",
        json!({"affine_url": AFFINE_URL, "dest": dest.to_str().unwrap(), "client_secret": SECRET}),
    ));
    run.assert_ok();
    assert!(!run.warnings().iter().any(|w| w.contains("YAML number")));
}

#[test]
fn bad_flags_are_refused_with_exit_2_and_a_message_that_names_them() {
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["blueprint", "--affine-url", AFFINE_URL, "--name", "a\nb"],
            &["--name", "newline"],
        ),
        (
            vec![
                "blueprint",
                "--affine-url",
                "https://bob:Pw#x-SECRET@affine.example.com",
            ],
            &["--affine-url"],
        ),
        (
            vec![
                "blueprint",
                "--affine-url",
                "bob:pw-SECRET@affine.example.com",
            ],
            &["--affine-url"],
        ),
        (
            vec!["blueprint", "--affine-url", "https://affine.example.com:0"],
            &["port 0"],
        ),
        (
            vec![
                "apply",
                "--config-file",
                "/nonexistent/c.json",
                "--issuer",
                "https://a.example.com/",
                "--arg",
                "=x",
            ],
            &["--arg", "KEY=VALUE"],
        ),
        (
            vec![
                "verify",
                "--affine-url",
                "https://affine.example.com/\u{1b}[31m",
            ],
            &["control character"],
        ),
    ];
    for (args, words) in &cases {
        let r = run_cli(args, &[("AFFINE_OIDC_CLIENT_SECRET", SECRET)]);
        assert_refused(&r, 2, words);
    }
    // The test user's name and password (what verify --login sends) follow the rule too.
    let login = [
        "verify",
        "--affine-url",
        AFFINE_URL,
        "--issuer",
        ISSUER,
        "--login",
    ];
    let mut bad_user = login.to_vec();
    bad_user.push("ak\u{1}admin");
    assert_refused(
        &run_cli(&bad_user, &[]),
        2,
        &["--login", "control character"],
    );
    let mut user = login.to_vec();
    user.push("akadmin");
    let r = run_cli(&user, &[("AUTHENTIK_LOGIN_PASSWORD", "pw-SECRET\nx")]);
    assert_refused(&r, 2, &["AUTHENTIK_LOGIN_PASSWORD", "newline"]);
    // install-modules onto a file: named as such, not "File exists (os error 17)".
    let file = tempfile::NamedTempFile::new().unwrap();
    let r = run_cli(&["install-modules", file.path().to_str().unwrap()], &[]);
    assert_refused(&r, 1, &["not a folder"]);
    // The client secret from the environment follows the rule too (oidc-config printed it).
    let r = run_cli(
        &[
            "oidc-config",
            "--affine-url",
            AFFINE_URL,
            "--issuer",
            ISSUER,
        ],
        &[("AFFINE_OIDC_CLIENT_SECRET", "cs-SECRET\u{1}x")],
    );
    assert_refused(&r, 2, &["AFFINE_OIDC_CLIENT_SECRET", "control character"]);
    // A token with a newline inside and a megabyte token file name their source.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("token");
    fs::write(&big, "t-SECRET".repeat(1 << 17)).unwrap();
    let verify = [
        "verify",
        "--affine-url",
        AFFINE_URL,
        "--authentik-url",
        "https://auth.example.com",
    ];
    let r = run_cli(&verify, &[("AUTHENTIK_TOKEN", "tok-SECRET\nen")]);
    assert_refused(&r, 2, &["AUTHENTIK_TOKEN", "newline"]);
    let mut with_file = verify.to_vec();
    with_file.extend(["--authentik-token-file", big.to_str().unwrap()]);
    let r = run_cli(&with_file, &[]);
    assert_refused(&r, 2, &["--authentik-token-file", "4096"]);
}

// ---------------------------------------------------------------------------------------
// Secrets in a diff, a checksum and config.json

#[test]
fn a_rotation_diff_masks_the_old_secret_in_a_block_scalar_and_the_checksum_holds_none() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("affine.yaml");
    let existing = format!(
        "version: 1\nentries:\n  - model: authentik_providers_oauth2.oauth2provider\n    attrs:\n      \"client_secret\": >-\n        {OLD_SECRET}\n      name: x\n"
    );
    fs::write(&dest, &existing).unwrap();
    let run = run_module(
        module(
            "authentik_blueprint",
            json!({"affine_url": AFFINE_URL, "dest": dest.to_str().unwrap(), "client_secret": SECRET}),
        )
        .diff(),
    );
    run.assert_ok();
    let text = run.out.stdout.clone();
    assert!(
        !text.contains(OLD_SECRET) && !text.contains(SECRET),
        "{text}"
    );
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(fs::read(&dest).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_ne!(run.json["checksum"], json!(digest));
}

#[test]
fn a_config_json_rewrite_changes_only_the_oidc_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let before = "\u{feff}{\n  \"big\": 12345678901234567890123,\n  \"exp\": 1.5e3,\n  \"huge\": 1e400,\n  \"oauth\": {\n    \"providers.oidc\": {\"issuer\": \"ISSUER\", \"clientId\": \"id\", \"clientSecret\": \"SEC\"}\n  }\n}\n";
    let issuer = unreachable_issuer();
    fs::write(
        &path,
        before.replace("ISSUER", issuer).replace("SEC", OLD_SECRET),
    )
    .unwrap();
    let args = [
        "apply",
        "--config-file",
        path.to_str().unwrap(),
        "--issuer",
        issuer,
        "--client-id",
        "id",
        "--diff",
    ];
    // Same issuer, id and secret, but no `args`: AFFiNE 0.22+ refuses that, so a change.
    let r = run_cli(&args, &[("AFFINE_OIDC_CLIENT_SECRET", OLD_SECRET)]);
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("changed: "), "{}", r.stdout);
    r.assert_no_secrets(&SECRETS);
    let after = fs::read_to_string(&path).unwrap();
    for kept in [
        "\u{feff}{\n  \"big\": 12345678901234567890123,",
        "\"exp\": 1.5e3,",
        "\"huge\": 1e400,",
    ] {
        assert!(after.contains(kept), "{kept} lost:\n{after}");
    }
    assert!(after.contains("\"args\": {}"), "{after}");
    let again = run_cli(&args, &[("AFFINE_OIDC_CLIENT_SECRET", OLD_SECRET)]);
    assert!(again.stdout.starts_with("ok: "), "{}", again.stdout);

    fs::write(&path, r#"{"oauth": {"providers.oidc": "not an object"}}"#).unwrap();
    let r = run_cli(&args, &[("AFFINE_OIDC_CLIENT_SECRET", SECRET)]);
    assert_refused(&r, 1, &["providers.oidc", "not an object"]);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        r#"{"oauth": {"providers.oidc": "not an object"}}"#
    );
}
