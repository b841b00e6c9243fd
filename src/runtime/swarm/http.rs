//! The one engine call bollard 0.18 does not have: `GET /tasks` (list tasks with filters).
//! A plain HTTP/1.0 GET over the same endpoint bollard uses (`unix://` socket or plain
//! `tcp://`, the only schemes berth supports), so the answer ends when the engine closes
//! the connection (no chunked encoding). Read-only; must not send anything but GET.

use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest answer read (a tasks list of thousands of tasks is a few MiB).
const MAX_ANSWER: u64 = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

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
pub async fn get_json<T: DeserializeOwned>(endpoint: &str, path: &str) -> Result<T, String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: berth\r\n\r\n");
    let answer = tokio::time::timeout(TIMEOUT, async {
        if let Some(socket) = endpoint
            .strip_prefix("unix://")
            .or_else(|| endpoint.starts_with('/').then_some(endpoint))
        {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .map_err(|e| format!("cannot connect to {socket}: {e}"))?;
            exchange(stream, &request).await
        } else {
            let address = endpoint
                .strip_prefix("tcp://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .unwrap_or(endpoint)
                .trim_end_matches('/');
            let stream = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|e| format!("cannot connect to {address}: {e}"))?;
            exchange(stream, &request).await
        }
    })
    .await
    .map_err(|_| "the request timed out".to_string())??;
    let (status, body) = split_answer(&answer)?;
    if status != 200 {
        let text = String::from_utf8_lossy(body);
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.trim().to_string());
        return Err(format!("{message} (http {status})"));
    }
    serde_json::from_slice(body).map_err(|e| format!("cannot parse the engine's answer: {e}"))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(answer)
}

/// Status code and body of a raw HTTP/1.x answer.
fn split_answer(answer: &[u8]) -> Result<(u16, &[u8]), String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the engine's answer has no header end")?;
    let head = String::from_utf8_lossy(&answer[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("the engine's answer has no status line")?;
    Ok((status, &answer[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_split_into_status_and_body() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[{\"ID\":\"x\"}]";
        let (status, body) = split_answer(raw).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, b"[{\"ID\":\"x\"}]");
        assert!(split_answer(b"HTTP/1.0 200 OK\r\n").is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode_query(r#"{"service":["a b"]}"#),
            "%7B%22service%22%3A%5B%22a%20b%22%5D%7D"
        );
    }
}
