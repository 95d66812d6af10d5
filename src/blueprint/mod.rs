//! The authentik blueprint for AFFiNE: options → validated spec → rendered YAML → checked.
//!
//! - [`options`]: what the user asked for, as given (CLI flags or module parameters).
//! - [`spec`]: the same, validated and resolved (URLs parsed, client id derived, version rules).
//! - [`render`]: the minijinja template turned into YAML text.
//! - [`check`]: the YAML parsed back and checked against what the target version needs,
//!   so a custom template that drops a required field fails before anything is written.

pub mod check;
pub mod options;
pub mod render;
pub mod sandbox;
pub mod spec;

pub use options::{BlueprintOptions, SecretChoice};
pub use spec::{BlueprintSpec, SecretSource};

use crate::error::Result;

/// A blueprint ready to write: its YAML text and the warnings collected on the way.
#[derive(Debug)]
pub struct Rendered {
    pub yaml: String,
    pub warnings: Vec<String>,
    pub spec: BlueprintSpec,
}

/// The whole pipeline: validate, render, check. Nothing touches the file system but reading
/// a custom template.
pub fn build(options: &BlueprintOptions) -> Result<Rendered> {
    let (spec, warnings) = BlueprintSpec::from_options(options)?;
    build_from_spec(spec, warnings)
}

/// Render and check an already validated spec. The clear-text secret warning is already
/// among `warnings`: [`BlueprintSpec::from_options_named`] adds it, naming the options the
/// way the caller (CLI or module) does.
pub fn build_from_spec(spec: BlueprintSpec, warnings: Vec<String>) -> Result<Rendered> {
    let yaml = render::render(&spec)?;
    check::check(&yaml, &spec)?;
    Ok(Rendered {
        yaml,
        warnings,
        spec,
    })
}
