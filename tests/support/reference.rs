//! Where the upstream interface files are (AFFiNE's GraphQL schema, authentik's blueprint
//! schema, the authentik recordings): `AFFINE_AUTHENTIK_REFERENCE_DIR`, else the workplace's
//! `../shared/reference` beside this checkout, so a plain `cargo test` checks the contracts
//! too instead of passing them unchecked. `None` only when neither exists; the callers then
//! say they skipped.

// Used by the contract tests only; every test binary compiles the support folder.
#![allow(dead_code)]

use std::path::PathBuf;

pub const ENV: &str = "AFFINE_AUTHENTIK_REFERENCE_DIR";

pub fn reference_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    beside.is_dir().then_some(beside)
}
