//! Health probes: one HTTP GET or TCP connect against a container's published loopback
//! port (`probe_once`), and the threshold bookkeeping that turns probe results into a
//! `plan::Health` (`ProbeTracker`). Probes only read; they never change Docker or nginx.

use crate::plan::Health;
use crate::spec::{HealthSpec, Probe};
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probe settings when an app has no `health` block: a TCP connect to its first port
/// (http apps) or "running is healthy" (workers, `None`).
pub fn effective_health(spec: &crate::spec::AppSpec) -> Option<HealthSpec> {
    if let Some(health) = &spec.health {
        return Some(health.clone());
    }
    let port = *spec.ports.first()?;
    Some(HealthSpec {
        probe: Probe::TcpSocket { port },
        interval_seconds: 2,
        timeout_seconds: 1,
        failure_threshold: 3,
        success_threshold: 1,
        initial_delay_seconds: 0,
    })
}

/// The container port a probe targets.
pub fn probe_port(probe: &Probe) -> u16 {
    match probe {
        Probe::HttpGet { port, .. } | Probe::TcpSocket { port } => *port,
    }
}

/// Why one probe failed; the text is what status, events and heal records show.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("container port {port} is not published on 127.0.0.1")]
    NotPublished { port: u16 },
    #[error("connect {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("send to {address}: {source}")]
    Send {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("read from {address}: {source}")]
    Read {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{address}{path}: no HTTP status line in the answer")]
    NoStatusLine { address: String, path: String },
    #[error("{address}{path}: HTTP {status}")]
    Status {
        address: String,
        path: String,
        status: u16,
    },
    #[error("{address}: no answer within {millis} ms")]
    Timeout { address: String, millis: u128 },
}

/// One probe against `127.0.0.1:<host_port>`. Ok on a TCP connect, or an HTTP status
/// 200..=399; Err says what went wrong.
pub async fn probe_once(
    probe: &Probe,
    host_port: u16,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let address = format!("127.0.0.1:{host_port}");
    let attempt = async {
        let mut stream =
            TcpStream::connect(&address)
                .await
                .map_err(|source| ProbeError::Connect {
                    address: address.clone(),
                    source,
                })?;
        let Probe::HttpGet { path, .. } = probe else {
            return Ok(());
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: berth-probe\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|source| ProbeError::Send {
                address: address.clone(),
                source,
            })?;
        let mut head = [0u8; 64];
        let mut filled = 0;
        while filled < 12 {
            let n = stream
                .read(&mut head[filled..])
                .await
                .map_err(|source| ProbeError::Read {
                    address: address.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let status = parse_status(&head[..filled]).ok_or_else(|| ProbeError::NoStatusLine {
            address: address.clone(),
            path: path.clone(),
        })?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(ProbeError::Status {
                address: address.clone(),
                path: path.clone(),
                status,
            })
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout {
            address,
            millis: timeout.as_millis(),
        }),
    }
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Consecutive results for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeRecord {
    pub successes: u32,
    pub failures: u32,
    pub health: Option<Health>,
    /// Unix ms of the last probe.
    pub last_probe_at: i64,
    pub last_error: Option<String>,
}

/// Health by container id, driven by probe results and the app's thresholds.
#[derive(Debug, Default, Clone)]
pub struct ProbeTracker {
    records: HashMap<String, ProbeRecord>,
}

impl ProbeTracker {
    /// Records one result; returns the new health when it changed.
    pub fn record(
        &mut self,
        id: &str,
        result: Result<(), ProbeError>,
        spec: &HealthSpec,
        now: i64,
    ) -> Option<Health> {
        let record = self.records.entry(id.to_string()).or_default();
        record.last_probe_at = now;
        let before = record.health;
        match result {
            Ok(()) => {
                record.successes += 1;
                record.failures = 0;
                record.last_error = None;
                if record.successes >= spec.success_threshold.max(1) {
                    record.health = Some(Health::Healthy);
                }
            }
            Err(error) => {
                record.failures += 1;
                record.successes = 0;
                record.last_error = Some(error.to_string());
                if record.failures >= spec.failure_threshold.max(1) {
                    record.health = Some(Health::Unhealthy);
                }
            }
        }
        (record.health != before).then_some(record.health?)
    }

    /// Marks a container healthy without probing (workers without a health check, and
    /// containers that just passed their startup probes during a rollout).
    pub fn set(&mut self, id: &str, health: Health, now: i64) {
        let record = self.records.entry(id.to_string()).or_default();
        record.health = Some(health);
        record.last_probe_at = now;
    }

    pub fn health(&self, id: &str) -> Health {
        self.records
            .get(id)
            .and_then(|r| r.health)
            .unwrap_or(Health::Starting)
    }

    pub fn record_of(&self, id: &str) -> Option<&ProbeRecord> {
        self.records.get(id)
    }

    /// Is a probe due for this container at `now` (interval elapsed)?
    pub fn due(&self, id: &str, spec: &HealthSpec, now: i64) -> bool {
        self.next_due(id, spec).is_none_or(|at| now >= at)
    }

    /// When (unix ms) the next probe of this container is due; `None` when it never was
    /// probed (due now).
    pub fn next_due(&self, id: &str, spec: &HealthSpec) -> Option<i64> {
        self.records
            .get(id)
            .map(|r| r.last_probe_at + i64::from(spec.interval_seconds) * 1000)
    }

    /// Forget containers that no longer exist.
    pub fn retain(&mut self, alive: impl Fn(&str) -> bool) {
        self.records.retain(|id, _| alive(id));
    }

    pub fn snapshot(&self) -> std::collections::BTreeMap<String, Health> {
        self.records
            .iter()
            .filter_map(|(id, r)| Some((id.clone(), r.health?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(failure: u32, success: u32) -> HealthSpec {
        HealthSpec {
            probe: Probe::TcpSocket { port: 1 },
            interval_seconds: 1,
            timeout_seconds: 1,
            failure_threshold: failure,
            success_threshold: success,
            initial_delay_seconds: 0,
        }
    }

    #[test]
    fn thresholds_gate_transitions() {
        let s = spec(3, 2);
        let mut t = ProbeTracker::default();
        assert_eq!(t.record("a", Ok(()), &s, 0), None);
        assert_eq!(t.health("a"), Health::Starting);
        assert_eq!(t.record("a", Ok(()), &s, 1), Some(Health::Healthy));
        assert_eq!(
            t.record("a", Err(ProbeError::NotPublished { port: 1 }), &s, 2),
            None
        );
        assert_eq!(
            t.record("a", Err(ProbeError::NotPublished { port: 1 }), &s, 3),
            None
        );
        assert_eq!(t.health("a"), Health::Healthy);
        assert_eq!(
            t.record("a", Err(ProbeError::NotPublished { port: 1 }), &s, 4),
            Some(Health::Unhealthy)
        );
        assert_eq!(
            t.record_of("a").unwrap().last_error.as_deref(),
            Some("container port 1 is not published on 127.0.0.1")
        );
        assert_eq!(t.record("a", Ok(()), &s, 5), None);
        assert_eq!(t.record("a", Ok(()), &s, 6), Some(Health::Healthy));
    }

    #[test]
    fn due_follows_interval() {
        let s = spec(1, 1);
        let mut t = ProbeTracker::default();
        assert!(t.due("a", &s, 0));
        t.record("a", Ok(()), &s, 10_000);
        assert!(!t.due("a", &s, 10_500));
        assert!(t.due("a", &s, 11_000));
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(parse_status(b"SSH-2.0-x"), None);
    }

    #[tokio::test]
    async fn probes_against_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in ["HTTP/1.1 200 OK\r\n\r\nok", "HTTP/1.1 500 Oops\r\n\r\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let probe = Probe::HttpGet {
            path: "/healthz".into(),
            port: 8080,
        };
        let timeout = Duration::from_secs(2);
        assert!(probe_once(&probe, port, timeout).await.is_ok());
        let err = probe_once(&probe, port, timeout).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::Status { status: 500, .. }),
            "{err:?}"
        );
        assert!(err.to_string().ends_with("/healthz: HTTP 500"), "{err}");
        let unused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = unused.local_addr().unwrap().port();
        drop(unused);
        let closed = probe_once(&Probe::TcpSocket { port: 8080 }, closed_port, timeout).await;
        let closed = closed.unwrap_err();
        assert!(matches!(closed, ProbeError::Connect { .. }), "{closed:?}");
        assert!(
            closed.to_string().starts_with("connect 127.0.0.1:"),
            "{closed}"
        );
    }
}
