//! Webhook trigger: `POST /hooks/git` on its own listener, authenticated with the shared-secret
//! HMAC-SHA256 that GitHub (`X-Hub-Signature-256: sha256=<hex>`), Gitea (`X-Gitea-Signature`)
//! and Gogs (`X-Gogs-Signature`) send. A valid call only wakes the git poll at once; the
//! payload is never trusted or interpreted (the poll fetches and decides). Must not touch:
//! Docker, nginx, the store, the spec parser.

use super::{Source, SourceError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

/// The only route.
pub const PATH: &str = "/hooks/git";
/// Largest body accepted (GitHub push payloads are far smaller in practice).
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;
/// Shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// Why a webhook call was refused (the text is sent back with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature: send X-Hub-Signature-256 (GitHub) or X-Gitea-Signature (Gitea)")]
    Missing,
    #[error("malformed signature: expected the hex HMAC-SHA256 of the body")]
    Malformed,
    #[error("signature does not match: check that the webhook secret equals berth's")]
    Mismatch,
}

/// Checks the HMAC-SHA256 signature of `body` (constant-time compare).
pub fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hex_sig = if let Some(v) = header("x-hub-signature-256") {
        v.trim()
            .strip_prefix("sha256=")
            .ok_or(VerifyError::Malformed)?
    } else if let Some(v) = header("x-gitea-signature").or_else(|| header("x-gogs-signature")) {
        v.trim()
    } else {
        return Err(VerifyError::Missing);
    };
    let signature = hex::decode(hex_sig).map_err(|_| VerifyError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| VerifyError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| VerifyError::Mismatch)
}

/// `sha256=<hex>` for `body`: what a sender puts in `X-Hub-Signature-256` (for tests and
/// the benchmark).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Hook {
    secret: Vec<u8>,
    source: Arc<Source>,
    accepted: AtomicU64,
}

async fn handle(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    match verify(&hook.secret, &headers, &body) {
        Ok(()) => {
            hook.accepted.fetch_add(1, Ordering::Relaxed);
            info!("webhook accepted: polling the git source now");
            hook.source.poll_now();
            (StatusCode::ACCEPTED, "poll scheduled\n".to_string())
        }
        Err(e) => {
            warn!("webhook refused: {e}");
            (StatusCode::UNAUTHORIZED, format!("{e}\n"))
        }
    }
}

/// The router (exposed for tests that drive it without a socket).
pub fn router(secret: Vec<u8>, source: Arc<Source>) -> Router {
    let hook = Arc::new(Hook {
        secret,
        source,
        accepted: AtomicU64::new(0),
    });
    Router::new()
        .route(PATH, post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(hook)
}

/// Binds `addr` and returns the bound address (useful with port 0) and the task that serves
/// the webhook, for the composition root to run (it serves until dropped or aborted).
pub async fn bind(
    addr: &str,
    secret: Vec<u8>,
    source: Arc<Source>,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), SourceError> {
    let fail = |message: String| SourceError::Webhook {
        addr: addr.to_string(),
        message,
    };
    if secret.len() < MIN_SECRET_BYTES {
        return Err(fail(format!(
            "the webhook secret is shorter than {MIN_SECRET_BYTES} bytes: set a longer one in $BERTH_WEBHOOK_SECRET"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let local = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let app = router(secret, source);
    let task = async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("webhook listener stopped: {e}");
        }
    };
    info!(addr = %local, path = PATH, "webhook listener ready");
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn github_documented_example_verifies() {
        // The example from GitHub's "Validating webhook deliveries" documentation.
        let body = b"Hello, World!";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, body), expected);
        assert_eq!(
            verify(SECRET, &headers("x-hub-signature-256", expected), body),
            Ok(())
        );
    }

    #[test]
    fn gitea_and_gogs_send_bare_hex() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let hex_sig = sign(SECRET, body).trim_start_matches("sha256=").to_string();
        assert_eq!(
            verify(SECRET, &headers("x-gitea-signature", &hex_sig), body),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, &headers("x-gogs-signature", &hex_sig), body),
            Ok(())
        );
    }

    #[test]
    fn refusals() {
        let body = b"payload";
        assert_eq!(
            verify(SECRET, &HeaderMap::new(), body),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(SECRET, &headers("x-hub-signature-256", "sha1=abcd"), body),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(SECRET, &headers("x-hub-signature-256", "sha256=zz"), body),
            Err(VerifyError::Malformed)
        );
        let good = sign(SECRET, body);
        assert_eq!(
            verify(
                b"another secret entirely",
                &headers("x-hub-signature-256", &good),
                body
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, &headers("x-hub-signature-256", &good), b"tampered"),
            Err(VerifyError::Mismatch)
        );
        // Truncated signature.
        assert_eq!(
            verify(SECRET, &headers("x-hub-signature-256", &good[..23]), body),
            Err(VerifyError::Mismatch)
        );
    }
}
