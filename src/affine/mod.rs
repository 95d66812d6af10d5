//! Everything that knows AFFiNE's contracts: its OIDC value, its GraphQL admin API, its
//! version differences and its `config.json`.

pub mod client;
pub mod config_file;
pub mod graphql;
pub mod oidc_value;
pub mod version;
