//! The API's two error boundaries, kept apart: `ApiError` is the server side (what a request
//! or serving the API can run into; each request error knows its HTTP status) and
//! `ClientError` is the client side (`berth status` talking to an API). Owns the wording and
//! the status code of every API failure. Must not touch: anything but describing failures.

use crate::store::StoreError;
use axum::http::StatusCode;
use std::path::PathBuf;

/// Server side: a request's failure (answered as `{"error": ...}` with `status()`), or
/// setting up and serving the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("app {name:?} not found: it is neither in the store nor in the last pass")]
    AppNotFound { name: String },

    #[error("no route for {path}; see /api/v1/openapi.json")]
    NoRoute { path: String },

    #[error("bad query parameter {name}: {message}")]
    BadQuery { name: String, message: String },

    #[error("bad path {path}: {message}; percent-encode the app name as utf-8")]
    BadPath { path: String, message: String },

    #[error("method {method} not allowed: this api is read-only (GET and HEAD only)")]
    MethodNotAllowed { method: String },

    #[error("missing or wrong bearer token: send 'authorization: bearer <token>'")]
    Unauthorized,

    #[error("not ready: {reason}")]
    NotReady { reason: String },

    #[error("cannot read the store (retry; check berth's log and the state directory)")]
    Store(#[from] StoreError),

    #[error("cannot compute the pending plan (retry, or ask for ?source=last)")]
    Plan {
        #[source]
        source: crate::reconcile::ReconcileError,
    },

    #[error("cannot read the logs of {container} from the container engine (retry; check that docker is running)")]
    Logs {
        container: String,
        #[source]
        source: crate::runtime::RuntimeError,
    },

    #[error("cannot render the dashboard page: {message} (a bug: please report it)")]
    Render { message: String },

    #[error("internal error: the request handler panicked; berth's log has the details, please report it")]
    Panicked,

    #[error("cannot read the api token file {}: check the path and its permissions", path.display())]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("the api token file {} is empty: write the token on its first line", path.display())]
    TokenFileEmpty { path: PathBuf },

    #[error("cannot listen on {address} for the api (choose another --api-listen)")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the api server stopped (restart berth serve)")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::AppNotFound { .. } | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::BadQuery { .. } | ApiError::BadPath { .. } => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotReady { .. }
            | ApiError::Store(_)
            | ApiError::Plan { .. }
            | ApiError::Logs { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Panicked
            | ApiError::Render { .. }
            | ApiError::TokenFile { .. }
            | ApiError::TokenFileEmpty { .. }
            | ApiError::Bind { .. }
            | ApiError::Serve { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message and its causes, `outer: cause: cause` (what an error body says).
    pub fn chain(&self) -> String {
        chain(self)
    }

    pub(crate) fn bad_query(name: &str, message: impl Into<String>) -> Self {
        ApiError::BadQuery {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

/// Client side: `berth status` asking an API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad api address {api:?}: give host:port or http://host:port")]
    Address {
        api: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("cannot set up the http client for {address}")]
    Setup {
        address: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("cannot reach the berth api at {address} (is `berth serve` running? point --api at its --api-listen)")]
    Connect {
        address: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("cannot reach the berth api at {address}: no answer within {seconds} s (is `berth serve` running and not stuck? check its log)")]
    Timeout { address: String, seconds: u64 },

    #[error("the berth api at {address} answered {status}: {message}")]
    Status {
        address: String,
        status: u16,
        message: String,
    },

    #[error("the berth api at {address} broke off its answer (retry; check berth's log)")]
    Body {
        address: String,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "the berth api at {address} sent more than {limit} bytes (is --api pointing at berth?)"
    )]
    TooLarge { address: String, limit: usize },

    #[error("cannot write the answer to standard output")]
    Write {
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the berth api at {address} sent an answer that is not json (is --api pointing at berth?)"
    )]
    NotJson {
        address: String,
        #[source]
        source: serde_json::Error,
    },
}

/// `error: cause: cause`, without repeating a cause whose text the outer one already holds.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_appends_causes_once() {
        let error = ApiError::Bind {
            address: "127.0.0.1:1".into(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(
            error.chain(),
            "cannot listen on 127.0.0.1:1 for the api (choose another --api-listen): address in use"
        );
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(std::error::Error::source(&error).is_some());
    }
}
