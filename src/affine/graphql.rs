//! Every GraphQL document the project sends to AFFiNE, in one place, so a contract test can
//! check each one against AFFiNE's schema.

/// The one query every AFFiNE answers (0.17 on): asked first, because 0.17-0.20 answer a
/// document naming any field they lack with a bare "Internal Server Error", which hides
/// which field it was.
pub const VERSION_QUERY: &str = "query affineAuthentikVersion { serverConfig { version } }";

/// 0.17-0.20: `oauthProviders` exists only while the OAuth plugin is on, so it is asked
/// alone, and a refusal means "no OAuth login on this server".
pub const OAUTH_PROVIDERS_QUERY: &str =
    "query affineAuthentikOauthProviders { serverConfig { oauthProviders } }";

/// Version, registered providers and the whole app config in one request (0.21+): an
/// unchanged reconcile costs this request and the version query only (plus a sign-in when
/// using a password).
pub const STATE_QUERY: &str =
    "query affineAuthentikState { serverConfig { version oauthProviders } appConfig }";

/// Public: no login needed (0.21+, where `oauthProviders` always exists). For verify and for
/// polling registration.
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

/// Who the session belongs to: after `verify --login`, the authentik user's account.
pub const CURRENT_USER_QUERY: &str =
    "query affineAuthentikCurrentUser { currentUser { id email } }";

/// Documents valid against the current schema, for the contract test.
pub const CURRENT_SCHEMA_DOCUMENTS: [&str; 7] = [
    CURRENT_USER_QUERY,
    VERSION_QUERY,
    OAUTH_PROVIDERS_QUERY,
    STATE_QUERY,
    SERVER_QUERY,
    UPDATE_MUTATION,
    VALIDATE_QUERY,
];
