//! authentik's REST API (`/api/v3/`) and what this tool does through it.
//!
//! - [`client`]: the requests, and nothing else: one place that knows authentik's routes,
//!   its answers and its refusals.
//! - [`references`]: the objects a blueprint finds with `!Find`, looked up before sending.
//! - [`browser_login`]: authentik's side of a login, walked without a browser (`verify --login`).
//! - [`blueprint_instance`]: a blueprint as a managed instance: read, compare as authentik
//!   stores, check references, plan, write, apply, wait, report.

pub mod blueprint_instance;
pub mod browser_login;
pub mod client;
pub mod references;
