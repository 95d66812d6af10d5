//! Every input a fuzz target ever failed on (`fuzz/regressions/<target>/`), replayed on
//! every test run through the same checks the fuzzer applies (`fuzz/src/checks.rs`), so a
//! fixed bug stays fixed without a fuzzer or libFuzzer on the machine.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut replayed = 0;
    for dir in [dir, seeds] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            eprintln!("{target}: {}", path.display());
            check(&data);
            replayed += 1;
        }
    }
    // The seeds are committed: a target with none would be a layout mistake, not a pass.
    assert!(replayed > 0, "no inputs found for {target}");
}

#[test]
fn module_args() {
    replay("module_args", checks::module_args);
}

#[test]
fn config_json() {
    replay("config_json", checks::config_json);
}

#[test]
fn blueprint_yaml() {
    replay("blueprint_yaml", checks::blueprint_yaml);
}

#[test]
fn url_rules() {
    replay("url_rules", checks::url_rules);
}
