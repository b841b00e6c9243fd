//! The one engine call bollard 0.18 does not have: `GET /tasks` (list tasks with filters).
//! One HTTP/1.1 GET with hyper's client on a new connection to the endpoint bollard uses
//! (`unix://` socket or plain `tcp://`, the only schemes berth supports). Read-only; must
//! not send anything but GET.

use http_body_util::BodyExt as _;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long one tasks list may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong asking the engine for its tasks.
#[derive(Debug, thiserror::Error)]
pub enum TasksError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the request could not be built: {source}")]
    Request {
        #[source]
        source: hyper::http::Error,
    },
    #[error("the exchange with {endpoint} failed: {source}")]
    Http {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },
    #[error("no answer from {endpoint} within 60 s")]
    Timeout { endpoint: String },
    #[error("{message} (http {status})")]
    Refused { status: u16, message: String },
    #[error("cannot parse the engine's answer: {source}")]
    Parse {
        #[source]
        source: serde_json::Error,
    },
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 2);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// GET `path` (with its query) from the engine at `endpoint` (`unix:///...` or
/// `tcp://host:port`) and parses a 200 answer's JSON body.
pub async fn get_json<T: DeserializeOwned>(endpoint: &str, path: &str) -> Result<T, TasksError> {
    let request = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::USER_AGENT, "berth")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|source| TasksError::Request { source })?;
    let connect = |source| TasksError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    let exchange = async {
        if let Some(socket) = endpoint
            .strip_prefix("unix://")
            .or_else(|| endpoint.starts_with('/').then_some(endpoint))
        {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(connect)?;
            send(endpoint, stream, request).await
        } else {
            let address = endpoint
                .strip_prefix("tcp://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .unwrap_or(endpoint)
                .trim_end_matches('/');
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(connect)?;
            send(endpoint, stream, request).await
        }
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| TasksError::Timeout {
            endpoint: endpoint.to_string(),
        })??;
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(TasksError::Refused { status, message });
    }
    serde_json::from_slice(&body).map_err(|source| TasksError::Parse { source })
}

/// Sends `request` on `stream`; the answer's status and body.
async fn send<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    endpoint: &str,
    stream: S,
    request: hyper::Request<http_body_util::Empty<hyper::body::Bytes>>,
) -> Result<(u16, Vec<u8>), TasksError> {
    let http = |source| TasksError::Http {
        endpoint: endpoint.to_string(),
        source,
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(http)?;
    // The connection is driven here, beside the request: it ends once the request is
    // answered and `sender` is dropped (no task is spawned).
    let exchange = async move {
        let answer = sender.send_request(request).await.map_err(http)?;
        let status = answer.status().as_u16();
        let bytes = answer.into_body().collect().await.map_err(http)?.to_bytes();
        drop(sender);
        Ok::<_, TasksError>((status, bytes.to_vec()))
    };
    let (answer, _) = tokio::join!(exchange, connection);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query(r#"{"service":["a b"]}"#),
            "%7B%22service%22%3A%5B%22a%20b%22%5D%7D"
        );
    }

    #[tokio::test]
    async fn an_unreachable_engine_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("unix://{}/none.sock", dir.path().display());
        let err = get_json::<serde_json::Value>(&socket, "/tasks")
            .await
            .unwrap_err();
        assert!(matches!(err, TasksError::Connect { .. }), "{err}");
        assert!(
            err.to_string().starts_with("cannot connect to unix://"),
            "{err}"
        );
    }
}
