//! Read-only container logs (the API's `GET /api/v1/apps/{name}/logs`): one engine logs
//! call per container, stdout and stderr with the engine's timestamps, split into lines.
//!
//! Must not touch: anything but the logs endpoint of a container this runtime owns (the
//! ownership is checked with one inspect before the call).

use super::connect::map_error;
use super::DockerRuntime;
use crate::runtime::{LogLine, LogLines, LogRequest, RuntimeError};
use bollard::container::{LogOutput, LogsOptions};
use futures_util::StreamExt;

/// Splits one engine frame (`<RFC 3339 timestamp> <text>`, possibly several lines) into
/// lines; a line without a timestamp of its own takes the frame's.
pub(super) fn lines_of(output: &LogOutput) -> Vec<LogLine> {
    let (stderr, bytes) = match output {
        LogOutput::StdErr { message } => (true, message),
        LogOutput::StdOut { message }
        | LogOutput::Console { message }
        | LogOutput::StdIn { message } => (false, message),
    };
    let text = String::from_utf8_lossy(bytes);
    let mut stamp = String::new();
    let mut out = Vec::new();
    for raw in text.trim_end_matches('\n').split('\n') {
        let raw = raw.trim_end_matches('\r');
        let (timestamp, line) = match raw.split_once(' ') {
            Some((first, rest)) if looks_like_timestamp(first) => (first.to_string(), rest),
            _ if raw.len() >= 20 && looks_like_timestamp(raw) => (raw.to_string(), ""),
            _ => (stamp.clone(), raw),
        };
        stamp.clone_from(&timestamp);
        out.push(LogLine {
            timestamp,
            stderr,
            text: line.to_string(),
        });
    }
    out
}

/// `2026-12-01T20:57:45.123456789Z` (what the engine prefixes with `timestamps=true`).
fn looks_like_timestamp(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && (word.ends_with('Z') || word[19..].contains(['+', '-']))
}

impl DockerRuntime {
    /// The logs call of one owned container.
    pub(super) async fn logs_of(
        &self,
        id: &str,
        request: &LogRequest,
    ) -> Result<LogLines, RuntimeError> {
        if self.owned("logs", id).await?.is_none() {
            return Err(RuntimeError::Engine {
                operation: "logs".to_string(),
                message: format!("container {id} is gone"),
            });
        }
        let options = LogsOptions::<String> {
            follow: request.follow,
            stdout: true,
            stderr: true,
            since: request.since_seconds.unwrap_or(0).max(0),
            until: 0,
            timestamps: true,
            tail: request
                .tail
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        let endpoint = self.endpoint.clone();
        let docker = self.docker.clone();
        let id = id.to_string();
        let stream = async_stream(docker, id, options).flat_map(move |item| {
            let lines: Vec<Result<LogLine, RuntimeError>> = match item {
                Ok(output) => lines_of(&output).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(map_error(&endpoint, "logs", e))],
            };
            futures_util::stream::iter(lines)
        });
        Ok(stream.boxed())
    }
}

/// The engine's stream, owning its client (so it outlives the runtime borrow).
fn async_stream(
    docker: bollard::Docker,
    id: String,
    options: LogsOptions<String>,
) -> impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send + 'static {
    futures_util::stream::once(async move { docker.logs(&id, Some(options)) }).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_become_lines_with_timestamps() {
        let frame = LogOutput::StdOut {
            message:
                b"2026-12-01T20:57:45.123456789Z hello world\n2026-12-01T20:57:46.000000001Z bye\n"
                    .to_vec()
                    .into(),
        };
        let lines = lines_of(&frame);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].timestamp, "2026-12-01T20:57:45.123456789Z");
        assert_eq!(lines[0].text, "hello world");
        assert!(!lines[0].stderr);
        assert_eq!(lines[1].text, "bye");
        let frame = LogOutput::StdErr {
            message: b"2026-12-01T20:57:45.1Z oops\r\ncontinued\n"
                .to_vec()
                .into(),
        };
        let lines = lines_of(&frame);
        assert!(lines[0].stderr);
        assert_eq!(lines[1].timestamp, "2026-12-01T20:57:45.1Z");
        assert_eq!(lines[1].text, "continued");
        let empty = LogOutput::StdOut {
            message: b"2026-12-01T20:57:45.1Z \n".to_vec().into(),
        };
        assert_eq!(lines_of(&empty)[0].text, "");
    }
}
