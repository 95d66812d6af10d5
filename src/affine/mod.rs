//! Everything that knows AFFiNE's contracts: its OIDC value, its GraphQL admin API and
//! its `config.json`.

pub mod oidc_value;
