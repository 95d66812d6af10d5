//! What the tests share. The stand-ins for the outside servers the project talks to
//! (CONTRACTS.md §1 and §2), used by integration tests, benchmarks and the `standins`
//! example; and the harness of the tests that run the BUILT binary: as a command
//! ([`process`]), as an Ansible module on an args file ([`module_run`]) and under real
//! `ansible-playbook` ([`ansible`]).
//!
//! Included with `mod support;` by each test file that needs it (Cargo makes every
//! `tests/*.rs` its own binary, so a shared module lives in a directory).
pub mod affine_standin;
pub mod ansible;
pub mod authentik_standin;
pub mod http_standin;
pub mod module_run;
pub mod process;
pub mod reference;
