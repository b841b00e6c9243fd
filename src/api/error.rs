//! `ApiError`: the one error type of the API boundary, server side (what a request can run
//! into, with its HTTP status) and client side (`berth status` talking to the API). Owns
//! the wording and the status code of every API failure. Must not touch: anything but
//! describing failures.

use crate::store::StoreError;
use axum::http::StatusCode;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("app {name:?} not found: it is neither in the store nor in the last pass")]
    AppNotFound { name: String },

    #[error("no route for {path}; see /api/v1/openapi.json")]
    NoRoute { path: String },

    #[error("bad query parameter {name}: {message}")]
    BadQuery { name: String, message: String },

    #[error("method {method} not allowed: this api is read-only (GET and HEAD only)")]
    MethodNotAllowed { method: String },

    #[error("missing or wrong bearer token: send 'authorization: bearer <token>'")]
    Unauthorized,

    #[error("not ready: {reason}")]
    NotReady { reason: String },

    #[error("cannot read the store: {0}")]
    Store(#[from] StoreError),

    #[error("cannot compute the pending plan: {message}")]
    Plan { message: String },

    #[error("cannot read the api token file {}: {message}", path.display())]
    TokenFile { path: PathBuf, message: String },

    #[error("cannot listen on {address} for the api: {message} (choose another --api-listen)")]
    Bind { address: String, message: String },

    #[error("the api server stopped: {message}")]
    Serve { message: String },

    #[error("cannot reach the berth api at {address}: {message} (is `berth serve` running? point --api at its --api-listen)")]
    Connect { address: String, message: String },

    #[error("the berth api at {address} answered {status}: {message}")]
    Status {
        address: String,
        status: u16,
        message: String,
    },

    #[error("the berth api at {address} sent an unreadable answer: {message}")]
    Protocol { address: String, message: String },
}

impl ApiError {
    /// The HTTP status this error answers with (server side).
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::AppNotFound { .. } | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::BadQuery { .. } => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotReady { .. } | ApiError::Store(_) | ApiError::Plan { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::TokenFile { .. }
            | ApiError::Bind { .. }
            | ApiError::Serve { .. }
            | ApiError::Connect { .. }
            | ApiError::Status { .. }
            | ApiError::Protocol { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn bad_query(name: &str, message: impl Into<String>) -> Self {
        ApiError::BadQuery {
            name: name.to_string(),
            message: message.into(),
        }
    }
}
