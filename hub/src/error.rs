//! The one error type of operations (publish, join, REST calls...).
//!
//! Library errors convert into it with the code the contract gives them; the edges turn
//! it into an `error` frame (`session`) or an HTTP status and body (`http::error`). No
//! other place decides codes.

use teamhub_protocol::{ErrorCode, IdError};

use crate::auth::AuthError;
use crate::broker::BrokerError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OpError {
    pub code: ErrorCode,
    pub message: String,
}

impl OpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl From<BrokerError> for OpError {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::QuotaExceeded => Self::new(
                ErrorCode::QuotaExceeded,
                "the team's plan allows no more messages today (UTC)",
            ),
            BrokerError::Unavailable(_) => {
                tracing::warn!(error = %e, "broker call failed");
                Self::new(ErrorCode::Unavailable, e.to_string())
            }
        }
    }
}

impl From<crate::quota::QuotaError> for OpError {
    fn from(e: crate::quota::QuotaError) -> Self {
        tracing::warn!(error = %e, "quota store call failed");
        Self::new(ErrorCode::Unavailable, e.to_string())
    }
}

impl From<teamhub_presence::PresenceError> for OpError {
    fn from(e: teamhub_presence::PresenceError) -> Self {
        tracing::warn!(error = %e, "presence call failed");
        Self::new(ErrorCode::Unavailable, e.to_string())
    }
}

impl From<AuthError> for OpError {
    fn from(e: AuthError) -> Self {
        Self::new(ErrorCode::Unauthorized, e.to_string())
    }
}

impl From<IdError> for OpError {
    fn from(e: IdError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<teamhub_persistence::StoreError> for OpError {
    fn from(e: teamhub_persistence::StoreError) -> Self {
        use teamhub_persistence::StoreError as E;
        match e {
            E::Rejected(_) => Self::bad_request(e.to_string()),
            E::Unavailable(_) => {
                tracing::warn!(error = %e, "database call failed");
                Self::new(ErrorCode::Unavailable, e.to_string())
            }
            other => {
                tracing::error!(error = %other, "database call failed");
                Self::internal(other.to_string())
            }
        }
    }
}
