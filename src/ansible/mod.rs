//! Ansible binary modules: the protocol, parameter checking, and the modules themselves.

pub mod affine_oidc;
pub mod authentik_blueprint;
pub mod params;
pub mod protocol;

use protocol::Module;

/// Every module this binary provides, by the name Ansible calls it.
pub static MODULES: [Module; 2] = [
    Module {
        name: affine_oidc::NAME,
        spec: &affine_oidc::SPEC,
        run: affine_oidc::run,
        docs: affine_oidc::DOCS,
    },
    Module {
        name: authentik_blueprint::NAME,
        spec: &authentik_blueprint::SPEC,
        run: authentik_blueprint::run,
        docs: authentik_blueprint::DOCS,
    },
];

/// When the binary is installed as a module (its file name is a module's name) and given
/// one argument, it is a module. Ansible names the remote copy after the module.
pub fn module_name_for_binary(argv0: &str) -> Option<&'static str> {
    let base = std::path::Path::new(argv0).file_name()?.to_str()?;
    let base = base.strip_prefix("AnsiballZ_").unwrap_or(base);
    MODULES
        .iter()
        .map(|m| m.name)
        .chain([COLLECTION_BINARY])
        .find(|n| *n == base)
}

/// The binary's file name in the Ansible collection (`plugins/modules/__bin__/<arch>/`): a
/// module whose args file names which module it is (`protocol::COLLECTION_MODULE_KEY`).
pub const COLLECTION_BINARY: &str = "affine_authentik";
