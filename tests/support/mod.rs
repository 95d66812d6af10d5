//! Stand-ins for the outside servers the project talks to (CONTRACTS.md §1 and §2), used by
//! integration tests, benchmarks and the `standins` example.
pub mod affine_standin;
pub mod authentik_standin;
pub mod http_standin;
