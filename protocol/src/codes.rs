//! Error codes (in `error` frames and REST bodies) and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame or a REST error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed: invalid JSON, unknown op, missing or invalid field.
    BadRequest,
    /// No valid credentials.
    Unauthorized,
    /// Valid credentials, but the role does not allow this (or the type is reserved).
    Forbidden,
    NotFound,
    /// Too many frames or requests; the request was not acted on. Retry later.
    RateLimited,
    /// A body or field is larger than allowed.
    TooLarge,
    /// A backing service is unreachable; the request was not acted on. Retry later.
    Unavailable,
    /// A bug or unexpected failure on the server.
    Internal,
    /// REST only: a write lost a race (stale version).
    Conflict,
    /// REST only: a conditional header was required.
    PreconditionRequired,
    /// The team's plan does not allow this now (its connections or its messages of
    /// the UTC day are used up); nothing was done. Retrying helps only once a
    /// connection leaves or the day turns.
    QuotaExceeded,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PreconditionRequired => "precondition_required",
            ErrorCode::QuotaExceeded => "quota_exceeded",
        }
    }

    /// The HTTP status the REST API answers with for this code.
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::PreconditionRequired => 428,
            ErrorCode::RateLimited | ErrorCode::QuotaExceeded => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// Whether the same request may succeed if simply retried later.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client should do after the server closed its socket with a given code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconnect {
    /// Reconnect at once (to any node) and recover with `since`.
    Immediately,
    /// Reconnect with exponential backoff and jitter.
    WithBackoff,
    /// Obtain a fresh token first, then reconnect.
    AfterNewToken,
    /// Do not reconnect: the same connection would be refused again.
    Never,
}

/// Close codes the server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// Normal closure (the client or server simply finished).
    Normal = 1000,
    /// The peer was silent for longer than the idle timeout.
    IdleTimeout = 1001,
    /// A frame broke RFC 6455 (unmasked, reserved bits or opcode, a control frame
    /// over 125 bytes or fragmented, a bad continuation).
    ProtocolError = 1002,
    /// A text frame (or close reason) that is not valid UTF-8.
    InvalidPayload = 1007,
    /// Seed endpoint: the token has no role in the team.
    NotMember = 1008,
    /// An inbound frame exceeded the configured maximum.
    FrameTooLarge = 1009,
    /// Internal error.
    Internal = 1011,
    /// The node is draining (shutdown): reconnect elsewhere and recover with `since`.
    Draining = 1012,
    /// The connection could not keep up: its outbound queue overflowed.
    Overloaded = 1013,
    /// The token expired and was not refreshed in time.
    TokenExpired = 4001,
    /// Sustained rate-limit violations.
    RateLimited = 4008,
}

impl CloseCode {
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn from_u16(code: u16) -> Option<CloseCode> {
        Some(match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::IdleTimeout,
            1002 => CloseCode::ProtocolError,
            1007 => CloseCode::InvalidPayload,
            1008 => CloseCode::NotMember,
            1009 => CloseCode::FrameTooLarge,
            1011 => CloseCode::Internal,
            1012 => CloseCode::Draining,
            1013 => CloseCode::Overloaded,
            4001 => CloseCode::TokenExpired,
            4008 => CloseCode::RateLimited,
            _ => return None,
        })
    }

    /// The advice the contract gives clients for this code.
    pub const fn reconnect(self) -> Reconnect {
        match self {
            CloseCode::Draining => Reconnect::Immediately,
            CloseCode::Normal
            | CloseCode::IdleTimeout
            | CloseCode::Internal
            | CloseCode::Overloaded => Reconnect::WithBackoff,
            CloseCode::TokenExpired => Reconnect::AfterNewToken,
            // A client that broke the framing would break it again.
            CloseCode::ProtocolError
            | CloseCode::InvalidPayload
            | CloseCode::NotMember
            | CloseCode::FrameTooLarge
            | CloseCode::RateLimited => Reconnect::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip() {
        for c in [
            1000, 1001, 1002, 1007, 1008, 1009, 1011, 1012, 1013, 4001, 4008,
        ] {
            assert_eq!(CloseCode::from_u16(c).map(CloseCode::as_u16), Some(c));
        }
        assert_eq!(CloseCode::from_u16(4000), None);
    }

    #[test]
    fn error_codes_serialise_as_the_contract_names() {
        for code in [
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
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
