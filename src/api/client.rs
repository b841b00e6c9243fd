//! The client side of `berth status`: one HTTP/1.1 GET over a tokio `TcpStream` to the
//! API (plain HTTP; the API binds loopback by default), answer parsed as JSON. Owns only
//! that request. Must not touch: anything on the server; it sends GET requests only.

use super::ApiError;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer accepted.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

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

    /// GETs `path` (with its query) and parses the JSON answer; a non-2xx answer is an
    /// error carrying the API's own message.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        let (status, body) = tokio::time::timeout(self.timeout, self.exchange(path))
            .await
            .map_err(|_| ApiError::Connect {
                address: self.address.clone(),
                message: format!("no answer within {} s", self.timeout.as_secs()),
            })??;
        let value: Result<Value, _> = serde_json::from_slice(&body);
        if !(200..300).contains(&status) {
            let message = value
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(ApiError::Status {
                address: self.address.clone(),
                status,
                message,
            });
        }
        value.map_err(|e| self.protocol(format!("the body is not json: {e}")))
    }

    fn protocol(&self, message: impl Into<String>) -> ApiError {
        ApiError::Protocol {
            address: self.address.clone(),
            message: message.into(),
        }
    }

    async fn exchange(&self, path: &str) -> Result<(u16, Vec<u8>), ApiError> {
        let connect = |message: String| ApiError::Connect {
            address: self.address.clone(),
            message,
        };
        let mut stream = TcpStream::connect(&self.address)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: berth-status\r\nConnection: close\r\n",
            self.address
        );
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| connect(e.to_string()))?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| connect(e.to_string()))?;
        parse_response(&answer).map_err(|m| self.protocol(m))
    }
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Status and (de-chunked) body of a complete HTTP/1.1 answer.
pub fn parse_response(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| "the headers are not utf-8")?;
    let body = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".to_string());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (404, b"{\"a\":1}".to_vec())
        );
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn encode_escapes_reserved() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode("rollout-failed"), "rollout-failed");
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
}
