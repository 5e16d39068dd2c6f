//! OpenAPI schemas of the wire types (feature `openapi`), for the hub's generated API
//! document. The ids and codes have hand-written serde, so their schemas are written
//! here too, from the same constants: the pattern and bound that `ids.rs` enforces,
//! the codes that `ErrorCode::as_str` names.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::{ErrorCode, MessageType, PatternName, Role, TeamId, UserId};

fn id_schema(what: &str, max: usize, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .pattern(Some(format!("^[A-Za-z0-9_.:-]{{1,{max}}}$")))
        .min_length(Some(1))
        .max_length(Some(max))
        .description(Some(format!(
            "{what}: 1 to {max} characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'"
        )))
        .examples([serde_json::Value::from(example)])
        .into()
}

impl PartialSchema for TeamId {
    fn schema() -> RefOr<Schema> {
        id_schema("Team id", TeamId::MAX_LEN, "design")
    }
}
impl ToSchema for TeamId {}

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        id_schema("User id", UserId::MAX_LEN, "alice")
    }
}
impl ToSchema for UserId {}

impl PartialSchema for MessageType {
    fn schema() -> RefOr<Schema> {
        id_schema("Message type", MessageType::MAX_LEN, "chat.message")
    }
}
impl ToSchema for MessageType {}

impl PartialSchema for PatternName {
    fn schema() -> RefOr<Schema> {
        id_schema("Pattern name", PatternName::MAX_LEN, "retry-policy")
    }
}
impl ToSchema for PatternName {}

impl PartialSchema for Role {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some([
                Role::Owner.as_str(),
                Role::Admin.as_str(),
                Role::Editor.as_str(),
                Role::Viewer.as_str(),
                "member",
                "developer",
            ]))
            .description(Some(
                "A role in a team; `member` and `developer` are accepted as aliases of \
                 `editor` and never answered",
            ))
            .into()
    }
}
impl ToSchema for Role {}

/// Every code, in declaration order.
const CODES: [ErrorCode; 11] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::RateLimited,
    ErrorCode::TooLarge,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
    ErrorCode::Conflict,
    ErrorCode::PreconditionRequired,
    ErrorCode::QuotaExceeded,
];

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .enum_values(Some(CODES.map(ErrorCode::as_str)))
            .into()
    }
}
impl ToSchema for ErrorCode {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once() {
        let names: std::collections::HashSet<&str> = CODES.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), CODES.len());
        // A code added to the enum must be added here: this match fails to compile.
        for c in CODES {
            match c {
                ErrorCode::BadRequest
                | ErrorCode::Unauthorized
                | ErrorCode::Forbidden
                | ErrorCode::NotFound
                | ErrorCode::RateLimited
                | ErrorCode::TooLarge
                | ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::Conflict
                | ErrorCode::PreconditionRequired
                | ErrorCode::QuotaExceeded => {}
            }
        }
    }
}
