//! The client side of `berth status` and `berth logs`: one HTTP/1.1 GET per answer to the API
//! (reqwest, plain HTTP, no proxy: the API binds loopback by default), parsed as JSON or
//! streamed as text; and `encode`, the
//! percent-encoding of a path segment or query value. Owns only those requests. Must not
//! touch: anything on the server; it sends GET requests only.

use super::error::ClientError;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::Value;
use std::time::Duration;

/// Largest answer accepted.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) is escaped:
/// controls, space and the other ASCII punctuation here, non-ASCII bytes always.
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'!')
    .add(b'"')
    .add(b'#')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A client for one API address.
#[derive(Clone)]
pub struct Client {
    address: String,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field(
                "token",
                &self.token.as_ref().map(|_| super::redact::REDACTED),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// `api` is `host:port` or `http://host:port[/]`.
    pub fn new(api: &str, token: Option<String>, timeout: Duration) -> Self {
        let address = api
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Self {
            address,
            token,
            timeout,
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends the GET; a non-2xx answer is an error carrying the API's own message. With
    /// `whole_timeout` false only connecting is bounded by the timeout (a followed log
    /// stream may stay open for days).
    async fn send(
        &self,
        path: &str,
        accept: &str,
        whole_timeout: bool,
    ) -> Result<reqwest::Response, ClientError> {
        let url = reqwest::Url::parse(&format!("http://{}{path}", self.address)).map_err(|e| {
            ClientError::Address {
                api: self.address.clone(),
                source: Box::new(e),
            }
        })?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(self.timeout)
            .user_agent("berth-status");
        if whole_timeout {
            builder = builder.timeout(self.timeout);
        }
        let client = builder.build().map_err(|source| ClientError::Setup {
            address: self.address.clone(),
            source,
        })?;
        let mut request = client.get(url).header("accept", accept);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| self.failed(e))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let body = self.body(response).await?;
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(ClientError::Status {
            address: self.address.clone(),
            status,
            message,
        })
    }

    /// The whole body, at most [`MAX_ANSWER_BYTES`].
    async fn body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.failed(e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ClientError::TooLarge {
                    address: self.address.clone(),
                    limit: MAX_ANSWER_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// GETs `path` (with its query, already percent-encoded) and parses the JSON answer; a
    /// non-2xx answer is an error carrying the API's own message.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let response = self.send(path, "application/json", true).await?;
        let body = self.body(response).await?;
        serde_json::from_slice(&body).map_err(|source| ClientError::NotJson {
            address: self.address.clone(),
            source,
        })
    }

    /// GETs a text answer and hands each chunk to `sink` as it arrives (`berth logs`);
    /// with `follow` the answer may last as long as the server streams it.
    pub async fn stream(
        &self,
        path: &str,
        follow: bool,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let mut response = self.send(path, "text/plain", !follow).await?;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.failed(e))? {
            sink(&chunk).map_err(|source| ClientError::Write { source })?;
        }
        Ok(())
    }

    fn failed(&self, source: reqwest::Error) -> ClientError {
        let address = self.address.clone();
        if source.is_timeout() {
            ClientError::Timeout {
                address,
                seconds: self.timeout.as_secs(),
            }
        } else if source.is_connect() || source.is_request() {
            ClientError::Connect { address, source }
        } else {
            ClientError::Body { address, source }
        }
    }
}

/// Percent-encodes a path segment or query value as UTF-8 (everything but unreserved
/// characters).
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_escapes_reserved() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode("rollout-failed"), "rollout-failed");
        assert_eq!(encode("a.b_c~d"), "a.b_c~d");
        // Every ASCII byte but the unreserved ones is escaped, as the old hand-written
        // encoder did.
        for byte in 0u8..128 {
            let text = (byte as char).to_string();
            let unreserved = byte.is_ascii_alphanumeric() || b"-._~".contains(&byte);
            let expected = if unreserved {
                text.clone()
            } else {
                format!("%{byte:02X}")
            };
            assert_eq!(encode(&text), expected, "{byte}");
        }
    }

    #[test]
    fn address_forms() {
        let t = Duration::from_secs(1);
        assert_eq!(
            Client::new("http://127.0.0.1:7070/", None, t).address(),
            "127.0.0.1:7070"
        );
        assert_eq!(Client::new("localhost:1", None, t).address(), "localhost:1");
        let debug = format!("{:?}", Client::new("a:1", Some("tok".into()), t));
        assert!(!debug.contains("tok\""), "{debug}");
    }

    #[tokio::test]
    async fn a_bad_address_is_a_typed_error() {
        let client = Client::new("not a host:port", None, Duration::from_secs(1));
        let error = client.get("/healthz").await.unwrap_err();
        assert!(matches!(error, ClientError::Address { .. }), "{error:?}");
        assert!(error.to_string().contains("give host:port"), "{error}");
    }
}
