//! Ansible's binary-module protocol: `<module> <args-file>`, one JSON object on stdout.
//! Whatever happens (bad args file, failure, panic) the output is that one object, passed
//! through the redactor last, because Ansible masks nothing for a binary module.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::ansible::params::{self, Params, Spec};
use crate::ansible::MODULES;
use crate::error::Result;
use crate::exit_codes::ExitCode;
use crate::secret::Redactor;

/// One module: its parameter spec and the function that does the work. The function
/// returns the result fields (`changed`, `msg`, ...); the protocol adds `invocation` when
/// Ansible wants it (see [`wants_invocation`]).
pub struct Module {
    pub name: &'static str,
    pub spec: &'static Spec,
    pub run: fn(&Params, &mut Redactor) -> Result<Map<String, Value>>,
    /// The sidecar documentation (`DOCUMENTATION`, `EXAMPLES`, `RETURN`) for ansible-doc.
    pub docs: &'static str,
}

/// The args-file key by which the collection's action plugin
/// (`collection/plugins/plugin_utils/binary_module.py`) names the module it runs.
pub const COLLECTION_MODULE_KEY: &str = "_affine_authentik_module";

/// Runs the module named by `COLLECTION_MODULE_KEY`, else by the args file's `_ansible_module_name`, else `fallback_name`
/// (the binary's own name).
pub fn run(args_path: &Path, fallback_name: Option<&str>) -> ExitCode {
    let mut redactor = Redactor::new();
    let result = run_guarded(args_path, fallback_name, &mut redactor);
    emit(result, &redactor)
}

fn run_guarded(
    args_path: &Path,
    fallback_name: Option<&str>,
    redactor: &mut Redactor,
) -> Map<String, Value> {
    // Through the capped reader: a FIFO or a device as the args file is refused, not waited
    // on or read without end, and the refusal is still the one JSON object.
    let read = crate::input_file::read_capped_to_string(
        args_path,
        "the args file",
        crate::input_file::ARGS_FILE_LIMIT,
    );
    let raw: Value = match read {
        // The reader drops a byte-order mark (an args file written by hand on Windows).
        Ok(text) => match serde_json::from_str(&text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return failure(format!(
                    "the args file {} is not a JSON object",
                    args_path.display()
                ))
            }
        },
        Err(e) => return failure(e.to_string()),
    };
    // The collection's action plugin runs one binary per architecture under its own module
    // name (`<ns>.<name>.__bin__.<arch>.affine_authentik`) and says which module it stands for.
    let mut raw = raw;
    let chosen = raw
        .as_object_mut()
        .and_then(|m| m.remove(COLLECTION_MODULE_KEY))
        .and_then(|v| v.as_str().map(str::to_string));
    let name = chosen
        .or_else(|| {
            raw.get("_ansible_module_name")
                .and_then(Value::as_str)
                .map(|n| n.rsplit('.').next().unwrap_or(n).to_string())
        })
        .or_else(|| fallback_name.map(str::to_string))
        .unwrap_or_default();
    let Some(module) = MODULES.iter().find(|m| m.name == name) else {
        let known: Vec<&str> = MODULES.iter().map(|m| m.name).collect();
        return failure(format!(
            "unknown module {name:?}; this binary provides {}",
            known.join(", ")
        ));
    };

    // A panic must still end as one JSON object; its message goes through the redactor
    // like everything else. The default hook would print to stderr: silence it.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let parsed = params::parse(module.spec, &raw, redactor);
        let mut result = match &parsed {
            Ok(p) => (module.run)(p, redactor).unwrap_or_else(|e| failure(e.to_string())),
            Err(e) => failure(e.to_string()),
        };
        if let Ok(p) = &parsed {
            add_warnings(&mut result, &p.warnings);
        }
        if wants_invocation(&raw) {
            result.insert(
                "invocation".into(),
                params::invocation(module.spec, parsed.as_ref().ok(), &raw),
            );
        }
        result
    }));
    outcome.unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into());
        failure(format!(
            "internal error in {name} (please report it): {text}"
        ))
    })
}

/// Whether the result carries `invocation`, exactly when a Python module's would.
/// ansible-core 2.21 sends `_ansible_inject_invocation` (its `INJECT_INVOCATION` setting,
/// default false) and `AnsibleModule` adds `invocation` only when it is true. 2.17 to 2.20
/// send no such key, and their `AnsibleModule` always adds it (their strategy drops it from
/// `register`ed results; `-vvv` shows it). Any other value is read as "no": leaving it out
/// can hide nothing a user needs, and shows no parameter.
pub fn wants_invocation(args: &Value) -> bool {
    match args.get("_ansible_inject_invocation") {
        None => true,
        Some(value) => value.as_bool() == Some(true),
    }
}

/// The parameters' own warnings, first, in the result's `warnings`.
fn add_warnings(result: &mut Map<String, Value>, warnings: &[String]) {
    if warnings.is_empty() {
        return;
    }
    let mut all: Vec<Value> = warnings.iter().cloned().map(Value::String).collect();
    if let Some(Value::Array(existing)) = result.remove("warnings") {
        all.extend(existing);
    }
    result.insert("warnings".into(), Value::Array(all));
}

pub fn failure(msg: String) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("failed".into(), Value::Bool(true));
    m.insert("changed".into(), Value::Bool(false));
    m.insert("msg".into(), Value::String(msg));
    m
}

fn emit(result: Map<String, Value>, redactor: &Redactor) -> ExitCode {
    let failed = result
        .get("failed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut value = Value::Object(result);
    redactor.json(&mut value);
    let text = serde_json::to_string(&value)
        .unwrap_or_else(|_| json!({"failed": true, "msg": "cannot encode result"}).to_string());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
    // Ansible reads the JSON, not the exit code; 1 for a failure keeps shell use honest.
    if failed {
        ExitCode::Failure
    } else {
        ExitCode::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_follows_ansible_inject_invocation_and_defaults_on_before_2_21() {
        // 2.17-2.20: no key, always.
        assert!(wants_invocation(&json!({"_ansible_check_mode": false})));
        // 2.21: as the setting says.
        assert!(wants_invocation(
            &json!({"_ansible_inject_invocation": true})
        ));
        assert!(!wants_invocation(
            &json!({"_ansible_inject_invocation": false})
        ));
        assert!(!wants_invocation(
            &json!({"_ansible_inject_invocation": null})
        ));
    }
}
