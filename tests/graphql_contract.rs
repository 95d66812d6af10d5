//! Every GraphQL document the project sends to AFFiNE is valid against AFFiNE's own schema
//! (`$AFFINE_AUTHENTIK_REFERENCE_DIR/affine-schema.gql`, the 0.27 schema). The mutation
//! form of `validateAppConfig` (0.22–0.25) no longer exists there, so it is proven to be
//! the query form with only the operation keyword changed.

#[path = "support/reference.rs"]
mod reference;

use affine_authentik::affine::graphql::{
    CURRENT_SCHEMA_DOCUMENTS, OAUTH_PROVIDERS_QUERY, SERVER_QUERY, STATE_QUERY, UPDATE_MUTATION,
    VALIDATE_MUTATION, VALIDATE_QUERY, VERSION_QUERY,
};
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};

/// AFFiNE's schema, or `None` (with a printed line) when the reference dir is not set.
fn affine_schema() -> Option<Valid<Schema>> {
    let Some(dir) = reference::reference_dir() else {
        eprintln!(
            "graphql_contract: SKIPPED: set AFFINE_AUTHENTIK_REFERENCE_DIR to the folder holding affine-schema.gql"
        );
        return None;
    };
    let path = dir.join("affine-schema.gql");
    let sdl = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("AFFINE_AUTHENTIK_REFERENCE_DIR is set but {path:?}: {e}"));
    match Schema::parse_and_validate(sdl, &path) {
        Ok(schema) => Some(schema),
        Err(with_errors) => panic!("AFFiNE's schema does not parse: {}", with_errors.errors),
    }
}

fn validate(schema: &Valid<Schema>, document: &str) -> Result<(), String> {
    ExecutableDocument::parse_and_validate(schema, document, "document.graphql")
        .map(|_| ())
        .map_err(|e| e.errors.to_string())
}

#[test]
fn every_document_sent_to_affine_validates_against_its_schema() {
    let Some(schema) = affine_schema() else {
        return;
    };
    for document in CURRENT_SCHEMA_DOCUMENTS {
        if let Err(errors) = validate(&schema, document) {
            panic!("{document}\nis not valid against AFFiNE's schema:\n{errors}");
        }
    }
}

#[test]
fn the_current_schema_list_holds_every_document_but_the_retired_mutation() {
    // A document added to graphql.rs but forgotten in the list would go unchecked.
    for document in [
        VERSION_QUERY,
        OAUTH_PROVIDERS_QUERY,
        STATE_QUERY,
        SERVER_QUERY,
        UPDATE_MUTATION,
        VALIDATE_QUERY,
    ] {
        assert!(
            CURRENT_SCHEMA_DOCUMENTS.contains(&document),
            "not checked against the schema: {document}"
        );
    }
    assert!(!CURRENT_SCHEMA_DOCUMENTS.contains(&VALIDATE_MUTATION));
}

#[test]
fn validate_mutation_is_the_validate_query_with_only_the_operation_keyword_changed() {
    let query_body = VALIDATE_QUERY
        .strip_prefix("query ")
        .expect("VALIDATE_QUERY starts with `query `");
    let mutation_body = VALIDATE_MUTATION
        .strip_prefix("mutation ")
        .expect("VALIDATE_MUTATION starts with `mutation `");
    assert_eq!(query_body, mutation_body);
}

#[test]
fn validate_mutation_is_rejected_by_the_current_schema_as_query_only() {
    // Proves the schema check distinguishes the operation types: 0.27 has validateAppConfig
    // only on Query, so the 0.22–0.25 form must fail here (and is therefore not in the list).
    let Some(schema) = affine_schema() else {
        return;
    };
    let errors = validate(&schema, VALIDATE_MUTATION).expect_err("Mutation.validateAppConfig");
    assert!(errors.contains("validateAppConfig"), "{errors}");
}

#[test]
fn a_document_selecting_a_nonexistent_field_fails_validation() {
    let Some(schema) = affine_schema() else {
        return;
    };
    let bad = STATE_QUERY.replace("oauthProviders", "oauthProvidersThatDoNotExist");
    let errors = validate(&schema, &bad).expect_err("a nonexistent field must fail");
    assert!(errors.contains("oauthProvidersThatDoNotExist"), "{errors}");
    let bad_variable = UPDATE_MUTATION.replace("[UpdateAppConfigInput!]!", "String!");
    assert!(
        validate(&schema, &bad_variable).is_err(),
        "a variable of the wrong type must fail"
    );
}
