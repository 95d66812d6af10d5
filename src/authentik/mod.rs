//! authentik's REST API (`/api/v3/`): managed blueprint instances, and the provider and
//! application a blueprint created, for `verify`.

pub mod client;
