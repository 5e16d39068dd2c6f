//! The OpenAPI 3 document of the REST API, generated from the handlers' `#[utoipa::path]`
//! annotations and the body types of `teamhub_protocol::rest`, served at
//! `GET /api/v1/openapi.json`.
//!
//! Adding an endpoint: annotate its handler with `#[utoipa::path(...)]` (errors with
//! [`ErrorBody`], see the existing handlers) and add the handler to the one `paths(...)`
//! list below. `scripts/checks/openapi-fuzz.sh` then fuzzes it against a real node.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use teamhub_protocol::rest::ErrorBody;
use teamhub_protocol::{MessageType, TeamId, UserId};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{activity, api, keys, members, patterns, usage, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "teamhub REST API",
        description = "REST API of a teamhub node (wire contract version 1). Every \
                       endpoint takes `Authorization: Bearer <token>` (a JWT or an API \
                       key) and answers errors as `{\"error\":{\"code\",\"message\"}}`.",
    ),
    paths(
        api::publish,
        api::presence,
        api::history,
        activity::activity,
        keys::create,
        keys::list,
        keys::delete,
        members::revoke,
        patterns::list,
        patterns::get,
        patterns::put,
        patterns::delete,
        usage::usage,
        webhooks::create,
        webhooks::list,
        webhooks::update,
        webhooks::delete,
        webhooks::rotate,
        webhooks::deliveries,
        webhooks::retry,
    ),
    components(schemas(ErrorBody, ActivityFormat)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "messages", description = "Publishing to a team"),
        (name = "presence", description = "Who is online"),
        (name = "history", description = "Recent messages"),
        (name = "activity", description = "The team's activity log"),
        (name = "api-keys", description = "API keys of a team"),
        (name = "members", description = "Revoking a member"),
        (name = "patterns", description = "The team's pattern library (versioned, with ETags)"),
        (name = "usage", description = "The team's use per day and its plan's quotas"),
        (name = "webhooks", description = "Webhook endpoints of a team (Standard Webhooks signatures) and their deliveries"),
    )
)]
pub struct ApiDoc;

/// The error answers every endpoint can give, with the contract's error body.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    /// Malformed request: a team id, parameter or body the contract does not allow.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing, malformed, expired or unknown token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token's role in the team does not allow this (or it has none).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// A backing service (broker, database) is unreachable; retry later.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The answer to a body over the size limit.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum TooLarge {
    /// The body is larger than the node's limit (`--max-frame-bytes`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
}

/// The answer when the thing named in the path does not exist.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum NotFound {
    /// No such key or pattern in the team.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// The answer to a write without its conditional header.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum PreconditionRequired {
    /// Neither `If-None-Match: *` nor `If-Match: "<version>"` was sent.
    #[response(status = 428)]
    PreconditionRequired(ErrorBody),
}

/// The answer of a caller over the REST rate limit, or of a publish over its team's
/// daily quota.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum RateLimited {
    /// `rate_limited` (with `Retry-After` in seconds) or, for a publish,
    /// `quota_exceeded`.
    #[response(status = 429)]
    RateLimited(ErrorBody),
}

/// Query of `GET /api/v1/teams/{team}/usage` (documentation only; `usage.rs` parses).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct UsageParams {
    /// First UTC day, `YYYY-MM-DD` (default: the first of the current month).
    #[param(format = Date)]
    from: Option<String>,
    /// Last UTC day, inclusive (default: the last of the current month); at most 366
    /// days after `from`.
    #[param(format = Date)]
    to: Option<String>,
}

/// Query of `GET /api/v1/teams/{team}/patterns` (documentation only).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PatternsParams {
    /// Patterns changed after this version (default 0: all of them).
    #[param(format = "uint64", minimum = 0)]
    since_version: Option<u64>,
}

/// Query of `GET /api/v1/teams/{team}/webhooks/{id}/deliveries` (documentation only).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeliveriesParams {
    /// At most this many deliveries (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Query of `GET /api/v1/teams/{team}/history` (documentation only; `api.rs` parses).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryParams {
    /// Messages with an offset greater than this (default 0; any unsigned 64-bit
    /// integer).
    #[param(format = "uint64", minimum = 0)]
    since: Option<u64>,
    /// At most this many messages (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Query of `GET /api/v1/teams/{team}/activity` (documentation only; `activity.rs`
/// parses).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ActivityParams {
    /// Only rows of this user.
    user: Option<UserId>,
    /// Only rows with this action (a message type or a hub action).
    action: Option<MessageType>,
    /// Only rows with this resource type.
    #[param(value_type = Option<TeamId>)]
    resource_type: Option<String>,
    /// Rows created at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    /// Rows created before this RFC 3339 time.
    #[param(format = DateTime)]
    until: Option<String>,
    /// Rows per page, 1 to 1000 (default 100; `format=json` only).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page (empty: the first page).
    #[param(pattern = "^[A-Za-z0-9_-]*$", max_length = 40)]
    cursor: Option<String>,
    /// `json` (default) pages; `csv` and `ndjson` stream every matching row.
    format: Option<ActivityFormat>,
}

/// The `format` of an activity request.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ActivityFormat {
    Json,
    Csv,
    Ndjson,
}

/// Declares the bearer scheme every operation uses.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A JWT or an API key (`thk_...`)"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc.to_json().expect("the OpenAPI document serialises")
    })
}

/// `GET /api/v1/openapi.json` (no token needed: it describes, it does not expose).
pub async fn serve() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_endpoint_with_error_bodies() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/v1/teams/{team}/messages", "post"),
            ("/api/v1/teams/{team}/presence", "get"),
            ("/api/v1/teams/{team}/history", "get"),
            ("/api/v1/teams/{team}/activity", "get"),
            ("/api/v1/teams/{team}/api-keys", "post"),
            ("/api/v1/teams/{team}/api-keys", "get"),
            ("/api/v1/teams/{team}/api-keys/{id}", "delete"),
            ("/api/v1/teams/{team}/members/{user}/revoke", "post"),
            ("/api/v1/teams/{team}/patterns", "get"),
            ("/api/v1/teams/{team}/patterns/{name}", "get"),
            ("/api/v1/teams/{team}/patterns/{name}", "put"),
            ("/api/v1/teams/{team}/patterns/{name}", "delete"),
            ("/api/v1/teams/{team}/webhooks", "post"),
            ("/api/v1/teams/{team}/webhooks", "get"),
            ("/api/v1/teams/{team}/webhooks/{id}", "patch"),
            ("/api/v1/teams/{team}/webhooks/{id}", "delete"),
            ("/api/v1/teams/{team}/webhooks/{id}/rotate-secret", "post"),
            ("/api/v1/teams/{team}/webhooks/{id}/deliveries", "get"),
            (
                "/api/v1/teams/{team}/webhooks/{id}/deliveries/{delivery}/retry",
                "post",
            ),
        ] {
            let op = &paths[path][method];
            assert!(op.is_object(), "{method} {path} missing");
            for status in ["400", "401", "403"] {
                assert_eq!(
                    op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
