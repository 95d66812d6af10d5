//! Every GraphQL document the project sends to AFFiNE, in one place, so a contract test can
//! check each one against AFFiNE's schema.

/// Version, registered providers and the whole app config in one request: an unchanged
/// reconcile costs this request only (plus a sign-in when using a password).
pub const STATE_QUERY: &str =
    "query affineAuthentikState { serverConfig { version oauthProviders } appConfig }";

/// Public: no login needed. For old servers (no `appConfig`) and for polling registration.
pub const SERVER_QUERY: &str =
    "query affineAuthentikServer { serverConfig { version oauthProviders } }";

/// Replaces the stored value of each key (no deep merge).
pub const UPDATE_MUTATION: &str = "mutation affineAuthentikUpdate($updates: [UpdateAppConfigInput!]!) { updateAppConfig(updates: $updates) }";

/// `validateAppConfig` as a Query (0.26+). `value` is not selected: it echoes the secret.
pub const VALIDATE_QUERY: &str = "query affineAuthentikValidate($updates: [UpdateAppConfigInput!]!) { validateAppConfig(updates: $updates) { module key valid error } }";

/// The same as a Mutation (0.22–0.25). The reference schema (0.27) no longer has this
/// form, so the contract test checks it is [`VALIDATE_QUERY`] with only the operation
/// type changed.
pub const VALIDATE_MUTATION: &str = "mutation affineAuthentikValidate($updates: [UpdateAppConfigInput!]!) { validateAppConfig(updates: $updates) { module key valid error } }";

/// Documents valid against the current schema, for the contract test.
pub const CURRENT_SCHEMA_DOCUMENTS: [&str; 4] =
    [STATE_QUERY, SERVER_QUERY, UPDATE_MUTATION, VALIDATE_QUERY];
